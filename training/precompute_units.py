"""Precompute speech units once: any audio dataset -> a dataset of speech-unit ids + transcripts, which
`train_hf.py --dataset` trains on without decoding or encoding audio (so without ffmpeg or an audio stack).

    python -m training.precompute_units --dataset cache/data/multi-demo \
        --speech_tokenizer outputs/demo/speech_tokenizer --output_dir cache/units/multi-demo --num_proc 2
    python train_hf.py configs/mdu_interleaved_ebf.yaml --dataset cache/units/multi-demo ...  # tokenizer found beside

Input: what `train_hf.py --dataset` takes (audio folder, CSV/JSONL/parquet table, save_to_disk folder, Hub id with
--dataset_config), read by training.data.load_asr_dataset; --splits (default: every split of a saved DatasetDict or of
the Hub dataset, else train; `NAME=SPEC` writes split NAME from the source split SPEC, e.g. Hub split arithmetic
`train=train.clean.100+train.clean.360+train.other.500`). Every row's transcript and audio file is checked first
(training.data.check_asr_rows).

Output (--output_dir): a DatasetDict saved with `save_to_disk`, per split the columns `units` (int32 codebook ids of
the speech tokenizer, 0 .. codebook_size - 1: not model-vocabulary ids, so one unit dataset serves any base model),
`text`, `source_row` (the row of the source it came from) and --keep_columns; beside it `speech_tokenizer/` (a copy of
the tokenizer, which train_hf.py puts in the checkpoint's processor) and `units_info.json` (source, splits and row
counts, the tokenizer's identity, rows left out).

Resumable: a split is encoded in shards of --shard_size rows (`datasets.map`, --num_proc workers, its progress bar per
shard); each finished shard is saved under `output_dir/shards/`, and a second run skips finished shards, so a killed
run loses one shard at most. A run with other settings than the shards' (`shards/job.json`) is refused. Rows whose
audio gives no unit at all (silence, shorter than a frame) are left out and named (log and units_info.json); audio that
does not decode stops the run naming its row (and file and line for CSV/JSONL sources): fix or drop it in the source
and run again (finished shards are kept).
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import datasets
import numpy as np

from training.data import (
    DEFAULT_UNITS,
    UNITS_INFO,
    UNITS_TOKENIZER,
    check_asr_rows,
    describe_source,
    load_asr_dataset,
    speech_tokenizer_identity,
)

logger = logging.getLogger("precompute_units")
FORMAT = "mdu-speech precomputed units 1"


def default_splits(source: str, config: str | None) -> list[str]:
    """Every split of a saved DatasetDict or of a Hub dataset (asks the Hub); "train" for other local sources."""
    path = Path(source)
    if (path / "dataset_dict.json").is_file():
        return json.loads((path / "dataset_dict.json").read_text())["splits"]
    if path.exists() or source.endswith((".csv", ".json", ".jsonl", ".parquet")):
        return ["train"]
    return datasets.get_dataset_split_names(source, config)


def encode_shard(shard, tok, start: int, source: str, audio_column: str, text_column: str, keep: list[str],
                 num_proc: int | None, batch_size: int, desc: str):
    """`units` (int32 codebook ids), `text`, `source_row` and the kept columns of one shard (rows start..), in memory.
    Audio that does not decode is named by its row (and line of a CSV/JSONL source)."""
    name, first_line = describe_source(source)
    threads = max(1, (os.cpu_count() or 1) // num_proc) if num_proc and num_proc > 1 else None

    def where(row):
        return f"{name}: row {row}" + (f" (line {row + first_line})" if first_line is not None else "")

    def encode(batch, indices):
        if threads:  # each worker its share of the cores, not all of them
            import torch

            torch.set_num_threads(threads)
        rows = [start + i for i in indices]
        try:
            units = tok(batch[audio_column])
        except Exception as err:  # find the row: encode the batch's items one by one
            for row, audio in zip(rows, batch[audio_column]):
                try:
                    tok([audio])
                except Exception as item_err:
                    path = audio.get("path") if isinstance(audio, dict) else audio if isinstance(audio, str) else None
                    raise ValueError(f"{where(row)}{f' ({path})' if path else ''}: {item_err}") from item_err
            raise ValueError(f"{where(rows[0])}-{rows[-1]}: {err}") from err
        return {DEFAULT_UNITS: [np.asarray(u, dtype=np.int32) for u in units], "text": batch[text_column],
                "source_row": rows, **{c: batch[c] for c in keep}}

    drop = [c for c in shard.column_names if c not in keep and c != "text"]
    return shard.map(encode, batched=True, with_indices=True, batch_size=batch_size, num_proc=num_proc,
                     remove_columns=drop, keep_in_memory=True, desc=desc)


def precompute_split(args, tok, split: str, spec: str, shard_root: Path) -> tuple[datasets.Dataset, list[int]]:
    """Split `split` from the source split `spec`, shard by shard (finished shards are read back, not encoded again);
    (units dataset, source rows left out because their audio gave no unit)."""
    import pyarrow.compute as pc

    ds = load_asr_dataset(args.dataset, spec, args.dataset_config, args.audio_column, args.text_column)
    if args.max_examples is not None:
        ds = ds.select(range(min(args.max_examples, len(ds))))
    if len(ds) == 0:
        raise ValueError(f"{args.dataset} [{split}]: no rows")
    missing = [c for c in args.keep_columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{args.dataset} [{split}]: no column(s) {missing} to keep; columns are {ds.column_names}")
    check_asr_rows(ds, f"{args.dataset} [{spec}]" if spec != "train" else args.dataset, args.audio_column,
                   args.text_column)
    starts = list(range(0, len(ds), args.shard_size))
    parts, left_out, encoded_rows, t0 = [], [], 0, time.perf_counter()
    for k, start in enumerate(starts):
        end = min(start + args.shard_size, len(ds))
        folder = shard_root / split / f"{k:05d}"
        if not (folder / "left_out.json").is_file():
            desc = f"speech units [{split}] shard {k + 1}/{len(starts)} (rows {start}-{end - 1})"
            encoded = encode_shard(ds.select(range(start, end)), tok, start, args.dataset, args.audio_column,
                                   args.text_column, args.keep_columns, args.num_proc, args.batch_size, desc)
            table = encoded.with_format("arrow")
            has_units = pc.greater(pc.list_value_length(table[DEFAULT_UNITS]), 0).to_numpy(zero_copy_only=False)
            empty = [int(r) for r in table["source_row"].to_numpy()[~has_units]]
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            encoded.select(np.flatnonzero(has_units)).save_to_disk(str(tmp))
            (tmp / "left_out.json").write_text(json.dumps(empty) + "\n")  # written last: the shard is complete
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            encoded_rows += end - start
            logger.info("[%s] %d/%d rows (%.1f rows/s)", split, end, len(ds), encoded_rows / (time.perf_counter() - t0))
        parts.append(datasets.load_from_disk(str(folder)))
        left_out += json.loads((folder / "left_out.json").read_text())
    if left_out:
        logger.warning("%s [%s]: %d row(s) give no speech unit at all (silence, or shorter than a frame) and are left "
                       "out: rows %s", args.dataset, split, len(left_out), left_out[:20])
    return datasets.concatenate_datasets(parts), left_out


def job_settings(args, tok) -> dict:
    """What decides the output: a folder's shards are only reused by a run with the same settings."""
    return dict(format=FORMAT, dataset=str(args.dataset), dataset_config=args.dataset_config, splits=args.splits,
                audio_column=args.audio_column, text_column=args.text_column, keep_columns=args.keep_columns,
                max_examples=args.max_examples, shard_size=args.shard_size,
                speech_tokenizer=speech_tokenizer_identity(tok))


def precompute_units(args) -> Path:
    from modeling_mdu import MDUSpeechTokenizer

    out = Path(args.output_dir)
    tok = MDUSpeechTokenizer.from_pretrained(args.speech_tokenizer)
    if not tok.is_fitted:
        raise ValueError(f"--speech_tokenizer {args.speech_tokenizer} is not fitted (fit_speech_tokenizer.py, "
                         "fit_phonetic_tokenizer.py)")
    args.splits = args.splits or default_splits(args.dataset, args.dataset_config)
    job = job_settings(args, tok)
    shard_root = out / "shards"
    if (out / UNITS_INFO).is_file() and json.loads((out / UNITS_INFO).read_text()).get("job") == job:
        logger.info("%s: already written with these settings", out)
        return out
    previous = json.loads((shard_root / "job.json").read_text()) if (shard_root / "job.json").is_file() else None
    if previous is not None and previous != job:
        changed = sorted(k for k in job if previous.get(k) != job[k])
        raise ValueError(f"{out} holds shards of a run with other settings (changed: {changed}): pass another "
                         "--output_dir or delete that folder")
    if previous is None and (out / "dataset_dict.json").exists():
        raise ValueError(f"{out} already holds a dataset written with other settings: pass another --output_dir")
    shard_root.mkdir(parents=True, exist_ok=True)
    (shard_root / "job.json").write_text(json.dumps(job, indent=2) + "\n")

    t0 = time.perf_counter()
    splits, info = {}, {}
    for entry in args.splits:
        split, _, spec = entry.partition("=")
        splits[split], empty = precompute_split(args, tok, split, spec or split, shard_root)
        info[split] = {"source_split": spec or split, "rows": len(splits[split]), "left_out_no_units": empty}
    staging = out / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    datasets.DatasetDict(splits).save_to_disk(str(staging))
    for split in splits:  # the splits first, dataset_dict.json last: a folder that loads is complete
        shutil.rmtree(out / split, ignore_errors=True)
        os.replace(staging / split, out / split)
    os.replace(staging / "dataset_dict.json", out / "dataset_dict.json")
    shutil.rmtree(staging)
    tok.save_pretrained(out / UNITS_TOKENIZER)
    record = {"format": FORMAT, "units_column": DEFAULT_UNITS, "text_column": "text",
              "speech_tokenizer": {"path": str(args.speech_tokenizer), "copy": UNITS_TOKENIZER, "backend": tok.backend,
                                   "codebook_size": tok.codebook_size, "identity": job["speech_tokenizer"]},
              "source": {"dataset": str(args.dataset), "config": args.dataset_config,
                         "audio_column": args.audio_column, "text_column": args.text_column},
              "splits": info, "seconds": round(time.perf_counter() - t0, 1), "job": job}
    (out / UNITS_INFO).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(shard_root)
    logger.info("%s: %s", out, {s: i["rows"] for s, i in info.items()})
    return out


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True,
                   help="audio folder, CSV/JSONL/parquet table, save_to_disk folder or Hub id")
    p.add_argument("--dataset_config", default=None, help="Hub dataset configuration name")
    p.add_argument("--splits", default=None, type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   help="comma-separated splits, each SPLIT or NAME=SOURCE_SPLIT (default: every split of a saved "
                        "DatasetDict or Hub dataset, else train)")
    p.add_argument("--speech_tokenizer", required=True, help="fitted MDUSpeechTokenizer folder")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--audio_column", default="audio")
    p.add_argument("--text_column", default="text")
    p.add_argument("--keep_columns", default=[], type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   help="comma-separated source columns to copy (e.g. id,speaker_id)")
    p.add_argument("--max_examples", type=int, default=None, help="only the first N rows of each split")
    p.add_argument("--num_proc", type=int, default=None, help="worker processes of the datasets.map")
    p.add_argument("--batch_size", type=int, default=16, help="utterances per speech-tokenizer call")
    p.add_argument("--shard_size", type=int, default=10000, help="rows per resumable shard")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    return precompute_units(parse(argv))


if __name__ == "__main__":
    main()
