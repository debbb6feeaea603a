"""Speech datasets for training: load any ASR source, compute speech units once, mix in rehearsal text.

Sources (`--dataset`):
    a folder with `metadata.csv` / `metadata.jsonl` (audiofolder layout: `file_name` + transcript column),
    a folder of audio files each with a `.txt` transcript beside it,
    a `.csv` / `.jsonl` / `.json` / `.parquet` file (audio paths relative to the file),
    a `datasets` Dataset / DatasetDict saved with `save_to_disk`,
    or a Hub dataset id (`--dataset_config`, `--streaming` for IterableDataset).
Any of them may hold precomputed speech units instead of audio: a `units` column (`--units_column`) of speech-tokenizer
codebook ids (0 .. codebook_size - 1) per row, next to the transcript. Such a dataset is read without decoding or
encoding audio (`add_unit_ids`); `python -m training.precompute_units` writes one from any audio dataset, with a copy
of its speech tokenizer and `units_info.json` (which tokenizer made the units) beside it.

Before any work, `check_asr_rows` reads the transcripts and audio references (not the audio) of the rows a run will use
and reports every empty/missing transcript and missing audio file with its row (0-based dataset index; for a CSV/JSONL
also the file's line); `check_local_or_hub` tells a missing local path from a Hub id. A column named by
`--audio_column`/`--text_column` must exist; only the defaults fall back (`file_name`; `transcription`, ...).
For unit datasets `check_unit_rows` reports every row whose units are missing, empty or outside the speech tokenizer's
codebook, or whose transcript is empty, the same way; `check_units_tokenizer` refuses a speech tokenizer other than
the one `units_info.json` names.

Speech units are computed once with `datasets.map` (batched, `num_proc` workers). The map carries an explicit
fingerprint (source fingerprint + speech tokenizer settings and fitted state), so on Arrow-backed datasets the result is
cached and a second run or epoch does not tokenize again. Streaming datasets map lazily (each pass re-tokenizes).
"""

import json
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
DEFAULT_UNITS = "units"  # precomputed speech units: speech-tokenizer codebook ids (not model-vocabulary ids)
UNITS_INFO, UNITS_TOKENIZER = "units_info.json", "speech_tokenizer"  # beside a unit dataset (training.precompute_units)


def _read_table(path: Path, audio_column: str, units_column: str = DEFAULT_UNITS) -> datasets.Dataset:
    builder = {".csv": "csv", ".parquet": "parquet"}.get(path.suffix, "json")
    ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    if units_column in ds.column_names:  # precomputed speech units: no audio to find
        return ds
    # the audiofolder convention `file_name` stands in for the default column only, never for one named by a flag
    column = audio_column if audio_column in ds.column_names or audio_column != DEFAULT_AUDIO else "file_name"
    if column not in ds.column_names:
        also = " (nor 'file_name')" if audio_column == DEFAULT_AUDIO else ""
        raise ValueError(f"{path}: no audio column {audio_column!r}{also}; columns are {ds.column_names}")
    root = path.parent
    if getattr(ds.features[column], "dtype", None) not in ("string", "large_string"):  # e.g. parquet Audio structs
        return ds if column == audio_column else ds.rename_column(column, audio_column)

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
                     text_column: str = "text", streaming: bool = False, units_column: str = DEFAULT_UNITS):
    """A Dataset (or IterableDataset) with `audio_column` (paths or Audio) and `text_column`, from any source; or,
    for a dataset of precomputed speech units, with `units_column` and `text_column` (`is_unit_dataset`)."""
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
    elif path.suffix in (".csv", ".jsonl", ".json", ".parquet"):
        if not path.exists():
            raise ValueError(f"dataset file {source} does not exist")
        ds = _read_table(path, audio_column, units_column)
    else:
        check_local_or_hub(source, "--dataset")
        ds = datasets.load_dataset(source, config, split=split, streaming=streaming)
    if streaming and isinstance(ds, datasets.Dataset):  # local data read lazily too, when asked
        ds = ds.to_iterable_dataset()
    columns = ds.column_names or []
    if audio_column not in columns and units_column not in columns:
        raise ValueError(f"{source}: no audio column {audio_column!r} (nor precomputed speech units in "
                         f"{units_column!r}); columns are {columns}")
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


# ---------------------------------------------------------------- precomputed speech units


def is_unit_dataset(ds, units_column: str = DEFAULT_UNITS) -> bool:
    """True when `ds` holds precomputed speech units (then its audio, if any, is never decoded)."""
    return units_column in (ds.column_names or [])


def speech_tokenizer_identity(tok) -> str:
    """What decides a speech tokenizer's units: its settings (not where it was loaded from) and its fitted state."""
    where = ("encoder_name_or_path", "encoder_subfolder", "auto_map", "processor_class", "batch_size")
    return Hasher.hash([{k: v for k, v in sorted(tok.to_dict().items()) if k not in where}, tok.state_digest()])


def read_units_info(source: str) -> dict | None:
    """units_info.json of a folder written by training.precompute_units (None for other sources)."""
    path = Path(source) / UNITS_INFO
    return json.loads(path.read_text()) if path.is_file() else None


def unit_dataset_tokenizer(source: str, given: str | None, units_column: str = DEFAULT_UNITS) -> str:
    """The speech tokenizer for a unit dataset: `given` (--speech_tokenizer), else the copy beside the units."""
    if given:
        return given
    beside = Path(source) / UNITS_TOKENIZER
    if (beside / "preprocessor_config.json").is_file():
        return str(beside)
    raise ValueError(f"--dataset {source} holds precomputed speech units (column {units_column!r}) and no speech "
                     f"tokenizer beside them ({beside}): pass --speech_tokenizer, the fitted speech tokenizer that "
                     "computed them (the checkpoint's processor needs it to encode audio later)")


def check_units_tokenizer(source: str, tok, tokenizer_path: str) -> None:
    """Raises ValueError when units_info.json beside the units names another speech tokenizer than `tok`."""
    info = read_units_info(source)
    if info is None:  # a table made elsewhere: only the codebook range can be checked (check_unit_rows)
        return
    made_by = info["speech_tokenizer"]
    if made_by["identity"] != speech_tokenizer_identity(tok):
        raise ValueError(f"--dataset {source}: its units were computed by the speech tokenizer {made_by['path']} "
                         f"({made_by['backend']}, {made_by['codebook_size']} units, identity {made_by['identity']}); "
                         f"--speech_tokenizer {tokenizer_path} is another one ({tok.backend}, {tok.codebook_size} "
                         f"units, identity {speech_tokenizer_identity(tok)}): units of one tokenizer mean nothing to "
                         "another")


def unit_row_problems(units, text, codebook_size: int, units_column: str = DEFAULT_UNITS,
                      text_column: str = "text") -> list[str]:
    """What is wrong with one precomputed row: units missing, empty, not integers or outside [0, codebook_size);
    transcript empty or missing."""
    problems = []
    if units is None:
        problems.append(f"missing speech units in column {units_column!r}")
    elif len(units) == 0:
        problems.append(f"no speech units in column {units_column!r} (empty list)")
    elif not all(isinstance(u, int) and not isinstance(u, bool) for u in units):
        bad = next(u for u in units if not isinstance(u, int) or isinstance(u, bool))
        problems.append(f"unit {bad!r} in column {units_column!r} is not an integer id")
    elif min(units) < 0 or max(units) >= codebook_size:
        bad = min(units) if min(units) < 0 else max(units)
        problems.append(f"unit id {bad} in column {units_column!r} is outside the speech tokenizer's codebook "
                        f"[0, {codebook_size})")
    if not isinstance(text, str) or not text.strip():
        kind = "missing" if text is None else "empty" if isinstance(text, str) else type(text).__name__
        problems.append(f"{kind} transcript in column {text_column!r}")
    return problems


def check_unit_rows(ds, source: str, codebook_size: int, units_column: str = DEFAULT_UNITS, text_column: str = "text",
                    show: int = 10, batch_size: int = 10000) -> None:
    """Raises ValueError listing every precomputed row with missing/empty/out-of-range units or an empty/missing
    transcript (row = dataset index; with the file and line for JSONL/CSV sources), read in batches (no full copy).
    Streaming datasets are checked row by row as they are read (`add_unit_ids`)."""
    if isinstance(ds, datasets.IterableDataset):
        return
    name, first_line = describe_source(source)
    feature = ds.features.get(units_column)
    dtype = getattr(getattr(feature, "feature", None), "dtype", "")
    if not (isinstance(dtype, str) and dtype.startswith(("int", "uint"))):
        raise ValueError(f"{name}: column {units_column!r} must hold lists of integer unit ids (speech-tokenizer "
                         f"codebook ids); it holds {feature}")
    problems, columns = [], ds.select_columns([units_column, text_column])
    for start in range(0, len(ds), batch_size):
        batch = columns[start : start + batch_size]
        for i, (units, text) in enumerate(zip(batch[units_column], batch[text_column])):
            row = start + i
            where = f"row {row}" + (f" (line {row + first_line})" if first_line is not None else "")
            found = unit_row_problems(units, text, codebook_size, units_column, text_column)
            problems += [f"{where}: {p}" for p in found]
    if problems:
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        listed = "\n  ".join(problems[:show])
        raise ValueError(f"{name}: {len(problems)} problem(s) in {len(ds)} rows of precomputed speech units:\n  "
                         f"{listed}{more}")


def add_unit_ids(ds, processor, units_column: str = DEFAULT_UNITS, text_column: str = "text",
                 num_proc: int | None = None, batch_size: int = 1000):
    """Precomputed units (codebook ids) -> `unit_ids` (model-vocabulary ids) + `text`, what `add_speech_units` gives
    from audio, without decoding anything. Cached like it (explicit fingerprint); a streamed row that fails the checks
    of `check_unit_rows` is named by its row as it is read."""
    offset, size = processor.speech_token_start, processor.feature_extractor.codebook_size

    def to_model_ids(batch, rows):
        out = []
        for row, units, text in zip(rows, batch[units_column], batch[text_column]):
            problems = unit_row_problems(units, text, size, units_column, text_column)
            if problems:
                raise ValueError(f"row {row}: {'; '.join(problems)}")
            out.append([u + offset for u in units])
        return {UNITS: out, "text": batch[text_column]}

    drop = [c for c in (ds.column_names or []) if c != "text"]
    kwargs = dict(batched=True, with_indices=True, batch_size=batch_size, remove_columns=drop)
    if isinstance(ds, datasets.IterableDataset):
        return ds.map(to_model_ids, **kwargs)
    fingerprint = Hasher.hash([ds._fingerprint, "unit ids", size, offset, units_column, text_column])
    return ds.map(to_model_ids, num_proc=num_proc, new_fingerprint=fingerprint, desc="speech units (precomputed)",
                  **kwargs)


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
