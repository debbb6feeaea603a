"""Speech datasets for training: load any ASR source, compute speech units once, mix in rehearsal text.

Sources (`--dataset`):
    a folder with `metadata.csv` / `metadata.jsonl` (audiofolder layout: `file_name` + transcript column),
    a folder of audio files each with a `.txt` transcript beside it,
    a `.csv` / `.jsonl` / `.json` file (audio paths relative to the file),
    a `datasets` Dataset / DatasetDict saved with `save_to_disk`,
    or a Hub dataset id (`--dataset_config`, `--streaming` for IterableDataset).

Before any work, `check_asr_rows` reads the transcripts and audio references (not the audio) of the rows a run will use
and reports every empty/missing transcript and missing audio file with its row (0-based dataset index; for a CSV/JSONL
also the file's line); `check_local_or_hub` tells a missing local path from a Hub id. A column named by
`--audio_column`/`--text_column` must exist; only the defaults fall back (`file_name`; `transcription`, ...).

Speech units are computed once with `datasets.map` (batched, `num_proc` workers). The map carries an explicit
fingerprint (source fingerprint + speech tokenizer settings and fitted state), so on Arrow-backed datasets the result is
cached and a second run or epoch does not tokenize again. Streaming datasets map lazily (each pass re-tokenizes).
"""

import logging
import os
from pathlib import Path

import datasets
from datasets.fingerprint import Hasher

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
TEXT_COLUMNS = ("text", "transcription", "transcript", "sentence", "normalized_text")
DEFAULT_AUDIO, DEFAULT_TEXT = "audio", "text"  # the flags' defaults: only these fall back to other column names
UNITS = "unit_ids"


def _read_table(path: Path, audio_column: str) -> datasets.Dataset:
    builder = "csv" if path.suffix == ".csv" else "json"
    ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    # the audiofolder convention `file_name` stands in for the default column only, never for one named by a flag
    column = audio_column if audio_column in ds.column_names or audio_column != DEFAULT_AUDIO else "file_name"
    if column not in ds.column_names:
        also = " (nor 'file_name')" if audio_column == DEFAULT_AUDIO else ""
        raise ValueError(f"{path}: no audio column {audio_column!r}{also}; columns are {ds.column_names}")
    root = path.parent

    def absolute(batch):
        return {audio_column: [p if os.path.isabs(p) else str(root / p) for p in batch[column]]}

    ds = ds.map(absolute, batched=True, desc="resolve audio paths")
    return ds if column == audio_column else ds.remove_columns(column)


def _read_sidecar_folder(folder: Path, audio_column: str, text_column: str) -> datasets.Dataset:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder}: no metadata.csv/metadata.jsonl and no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    missing = [str(p) for p in files if not p.with_suffix(".txt").exists()]
    if missing:
        raise ValueError(f"{folder}: audio without a transcript .txt beside it: {missing[:3]}")
    texts = [p.with_suffix(".txt").read_text().strip() for p in files]
    return datasets.Dataset.from_dict({audio_column: [str(p) for p in files], text_column: texts})


def load_asr_dataset(source: str, split: str = "train", config: str | None = None, audio_column: str = "audio",
                     text_column: str = "text", streaming: bool = False):
    """A Dataset (or IterableDataset) with `audio_column` (paths or Audio) and `text_column`, from any source."""
    path = Path(source)
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{source}: no split {split!r}; splits are {list(ds)}")
            ds = ds[split]
    elif path.is_dir():
        meta = [path / n for n in ("metadata.csv", "metadata.jsonl") if (path / n).exists()]
        ds = _read_table(meta[0], audio_column) if meta else _read_sidecar_folder(path, audio_column, text_column)
    elif path.suffix in (".csv", ".jsonl", ".json"):
        if not path.exists():
            raise ValueError(f"dataset file {source} does not exist")
        ds = _read_table(path, audio_column)
    else:
        check_local_or_hub(source, "--dataset")
        ds = datasets.load_dataset(source, config, split=split, streaming=streaming)
    if streaming and isinstance(ds, datasets.Dataset):  # local data read lazily too, when asked
        ds = ds.to_iterable_dataset()
    columns = ds.column_names or []
    if audio_column not in columns:
        raise ValueError(f"{source}: no audio column {audio_column!r}; columns are {columns}")
    if text_column not in columns:
        guess = [c for c in TEXT_COLUMNS if c in columns] if text_column == DEFAULT_TEXT else []
        if not guess:
            raise ValueError(f"{source}: no transcript column {text_column!r}; columns are {columns}")
        logger.warning("%s: no column %r, using %r as the transcript (--text_column chooses)", source, text_column,
                       guess[0])
        ds = ds.rename_column(guess[0], text_column)
    return ds


# ---------------------------------------------------------------- checks before any work


def check_local_or_hub(value: str, flag: str) -> None:
    """Raises FileNotFoundError when `value` names a local path that does not exist; a Hub repo id passes.

    A path: it exists, or it starts with `/`, `.` or `~`, ends with `/`, has more than one `/`, is not a valid repo id,
    or its first component is an existing local folder (`outputs/base` where `outputs/` exists)."""
    if os.path.exists(os.path.expanduser(value)):
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
        valid_id = True
    except HFValidationError:
        valid_id = False
    first = value.split("/")[0]
    looks_local = (value.startswith(("/", ".", "~")) or value.endswith("/") or value.count("/") > 1 or not valid_id
                   or ("/" in value and os.path.isdir(first)))
    if looks_local:
        where = os.path.abspath(os.path.expanduser(value))
        raise FileNotFoundError(f"{flag} {value}: no such file or folder ({where})")


def describe_source(source: str) -> tuple[str, int | None]:
    """(file to name in messages, line of row 0 in it or None): metadata.csv/.jsonl of a folder, a CSV/JSONL file."""
    path = Path(source)
    if path.is_dir():
        meta = [path / n for n in ("metadata.csv", "metadata.jsonl") if (path / n).exists()]
        if meta and not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            path = meta[0]
    if path.is_file() and path.suffix in (".csv", ".jsonl", ".json"):
        return str(path), 2 if path.suffix == ".csv" else 1  # CSV: a header line first
    return source, None


def _audio_refs(ds, audio_column: str) -> list[str | None]:
    """Per row: the local audio file a row needs to exist (None: the row carries its bytes or an array)."""
    feature = ds.features.get(audio_column) if ds.features else None
    if isinstance(feature, datasets.Audio):
        column = ds.with_format("arrow")[audio_column]  # storage struct<bytes, path>: no decoding, no copy of bytes
        refs = []
        for chunk in getattr(column, "chunks", [column]):
            has_bytes, paths = chunk.field("bytes").is_valid().to_pylist(), chunk.field("path").to_pylist()
            refs += [None if b else p for b, p in zip(has_bytes, paths)]
        return refs
    values = ds[audio_column]
    return [v if isinstance(v, str) else (v.get("path") if isinstance(v, dict) and v.get("bytes") is None
                                          and v.get("array") is None else None) for v in values]


def check_asr_rows(ds, source: str, audio_column: str = "audio", text_column: str = "text", show: int = 10) -> None:
    """Raises ValueError listing every row with an empty/missing transcript or a missing audio file (row = dataset
    index; with the file and line for CSV/JSONL sources). Streaming datasets are checked row by row as they are read
    (`add_speech_units`)."""
    if isinstance(ds, datasets.IterableDataset):
        return
    name, first_line = describe_source(source)
    problems = []
    for row, (text, audio) in enumerate(zip(ds[text_column], _audio_refs(ds, audio_column))):
        where = f"row {row}" + (f" (line {row + first_line})" if first_line is not None else "")
        if not isinstance(text, str) or not text.strip():
            kind = "missing" if text is None else "empty" if isinstance(text, str) else type(text).__name__
            for_file = f" for {audio}" if audio else ""
            problems.append(f"{where}: {kind} transcript in column {text_column!r}{for_file}")
        if audio is not None and not os.path.isfile(audio):
            problems.append(f"{where}: audio file {audio} does not exist")
    if problems:
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        listed = "\n  ".join(problems[:show])
        raise ValueError(f"{name}: {len(problems)} problem(s) in {len(ds)} rows:\n  {listed}{more}")


def _tokenizer_fingerprint(processor) -> str:
    """Config + fitted state (codebook, recognizer weights) + unit offset: equal only when the units are."""
    fe = processor.feature_extractor
    return Hasher.hash([fe.to_json_string(), fe.state_digest(), processor.speech_token_start])


def add_speech_units(ds, processor, audio_column: str = "audio", text_column: str = "text", num_proc: int | None = None,
                     batch_size: int = 16):
    """Adds `unit_ids` (model-vocabulary ids of the speech units) and keeps only `unit_ids` + `text`. An item that
    fails is named by its dataset row (not its place in the map batch)."""

    def encode(batch, rows):
        for row, text in zip(rows, batch[text_column]):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"row {row}: empty or missing transcript in column {text_column!r}")
        try:
            units = processor.encode_speech(batch[audio_column])
        except Exception as err:  # find the row: encode the batch's items one by one
            for row, audio in zip(rows, batch[audio_column]):
                try:
                    processor.encode_speech([audio])
                except Exception as item_err:
                    raise ValueError(f"row {row}: {item_err}") from item_err
            raise ValueError(f"rows {rows[0]}-{rows[-1]}: {err}") from err
        return {UNITS: units, "text": batch[text_column]}

    drop = [c for c in (ds.column_names or []) if c != "text"]
    if isinstance(ds, datasets.IterableDataset):
        return ds.map(encode, batched=True, with_indices=True, batch_size=batch_size, remove_columns=drop)
    fingerprint = Hasher.hash([ds._fingerprint, _tokenizer_fingerprint(processor), audio_column, text_column])
    return ds.map(encode, batched=True, with_indices=True, batch_size=batch_size, num_proc=num_proc,
                  remove_columns=drop, new_fingerprint=fingerprint, desc="speech units")


def drop_long(ds, max_length: int | None, text_tokenizer):
    """Drops (and logs how many) examples whose ASR sequence exceeds `max_length`; nothing is truncated."""
    if not max_length or isinstance(ds, datasets.IterableDataset):
        return ds
    before = len(ds)

    def fits(batch):
        n_text = [len(ids) + 1 for ids in text_tokenizer(batch["text"], add_special_tokens=False)["input_ids"]]
        return [len(u) + 2 + t <= max_length for u, t in zip(batch[UNITS], n_text)]

    ds = ds.filter(fits, batched=True, desc=f"drop > {max_length} tokens")
    if len(ds) < before:
        logger.warning("dropped %d of %d examples longer than max_length=%d tokens", before - len(ds), before, max_length)
    if len(ds) == 0:
        raise ValueError(f"every example is longer than max_length={max_length} tokens")
    return ds


def load_text_dataset(source: str, text_column: str = "text") -> datasets.Dataset:
    """Rehearsal text: a .txt file (one example a line), CSV/JSONL with a text column, or a save_to_disk dataset."""
    path = Path(source)
    if path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        ds = datasets.Dataset.from_dict({text_column: lines})
    elif path.suffix in (".csv", ".jsonl", ".json"):
        ds = datasets.load_dataset("csv" if path.suffix == ".csv" else "json", data_files=str(path), split="train")
    elif path.is_dir():
        ds = datasets.load_from_disk(str(path))
        ds = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    else:
        ds = datasets.load_dataset(source, split="train")
    if text_column not in ds.column_names:
        raise ValueError(f"{source}: no text column {text_column!r}; columns are {ds.column_names}")
    ds = ds.select_columns([text_column])
    return ds if text_column == "text" else ds.rename_column(text_column, "text")


def mix_text(speech_ds, text_ds, ratio: float, seed: int = 0):
    """Interleaves text-only examples (empty `unit_ids`) so that about `ratio` of the examples are text."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"text_mix_ratio must be in (0, 1), got {ratio}")
    text_ds = text_ds.map(lambda b: {UNITS: [[] for _ in b["text"]]}, batched=True, desc="rehearsal text")
    # empty lists infer a null item type, which a streamed speech set (features unknown) cannot be aligned with
    text_ds = text_ds.cast_column(UNITS, datasets.Sequence(datasets.Value("int64")))
    if isinstance(speech_ds, datasets.IterableDataset):
        text_ds = text_ds.to_iterable_dataset()
    if speech_ds.features is not None:
        text_ds = text_ds.cast(speech_ds.features)
    return datasets.interleave_datasets([speech_ds, text_ds], probabilities=[1 - ratio, ratio], seed=seed,
                                        stopping_strategy="first_exhausted")
