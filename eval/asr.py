"""ASR evaluation: batched greedy decoding over a dataset, WER and CER after English normalisation.

    python -m eval.asr --model outputs/mdu --dataset cache/data/espeak --split test [--max_examples 200]

Writes `hypotheses.jsonl` (one line per utterance) and `summary.json` into a new run dir (`runs/eval/asr-<time>`) or
`--output_dir` (which must be empty unless `--overwrite`). WER/CER come from the `evaluate` metrics shipped in
`eval/metrics/` (loaded by path, no Hub fetch).
"""

import argparse
import json
import time
from pathlib import Path

import evaluate
import jiwer
from tqdm.auto import tqdm

from .normalize import normalize_text
from .rundir import make_run_dir, write_json

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def load_metric(name: str):
    """The local `evaluate` metric `wer` or `cer`."""
    return evaluate.load(str(METRICS_DIR / name))


def error_rates(references: list[str], hypotheses: list[str], numbers_to_words: bool = True) -> dict:
    """Corpus WER/CER (after normalisation) and the word edit counts."""
    refs = [normalize_text(r, numbers_to_words) for r in references]
    hyps = [normalize_text(h, numbers_to_words) for h in hypotheses]
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        raise ValueError(f"references {empty[:5]} are empty after normalisation: WER undefined (drop those items)")
    words = jiwer.process_words(refs, hyps)
    return {
        "wer": load_metric("wer").compute(predictions=hyps, references=refs)["wer"],
        "cer": load_metric("cer").compute(predictions=hyps, references=refs)["cer"],
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "reference_words": sum(len(r.split()) for r in refs),
    }


def listening_check(references: list[str], hypotheses: list[str], numbers_to_words: bool = True) -> dict:
    """Does the model listen? A speech LM that learned only the text prior answers (nearly) one sentence for every
    input: then `distinct_hypotheses` is ~1 and its WER is no better than `wer_if_always_most_common`, the WER of
    answering the model's most frequent hypothesis to every utterance."""
    from collections import Counter

    norm = [normalize_text(h, numbers_to_words) for h in hypotheses]
    common, count = Counter(norm).most_common(1)[0]
    return {"distinct_hypotheses": len(set(norm)), "most_common_hypothesis": common, "most_common_count": count,
            "wer_if_always_most_common": error_rates(references, [common] * len(references), numbers_to_words)["wer"]}


def evaluate_asr(model, processor, dataset, batch_size: int = 8, max_new_tokens: int = 128, audio_column: str = "audio",
                 text_column: str = "text", output_dir=None, overwrite: bool = False, numbers_to_words: bool = True,
                 max_examples: int | None = None, split: str = "test") -> dict:
    """Transcribes `dataset` (a `datasets.Dataset`, or a source `training.data.load_asr_dataset` reads: saved
    dataset, Hub id, CSV/JSONL, audio folder) greedily and scores it. Returns the summary dict; with `output_dir`
    also writes `hypotheses.jsonl` and `summary.json` there."""
    source = str(dataset) if isinstance(dataset, (str, Path)) else getattr(getattr(dataset, "info", None), "dataset_name", None)
    if isinstance(dataset, (str, Path)):
        from training.data import load_asr_dataset

        dataset = load_asr_dataset(str(dataset), split, audio_column=audio_column, text_column=text_column)
    for column in (audio_column, text_column):
        if column not in dataset.column_names:
            raise ValueError(f"dataset has no column {column!r}; columns are {dataset.column_names}")
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    ids = dataset["id"] if "id" in dataset.column_names else list(range(len(dataset)))
    references, hypotheses = list(dataset[text_column]), []
    start = time.perf_counter()
    for i in tqdm(range(0, len(dataset), batch_size), desc="asr", unit="batch"):
        audio = dataset[i : i + batch_size][audio_column]
        hypotheses += processor.transcribe(model, audio, batch_size=batch_size, max_new_tokens=max_new_tokens)
    seconds = time.perf_counter() - start
    summary = {
        "task": "asr",
        "dataset": str(source) if source else None,
        "split": split,
        "num_utterances": len(dataset),
        **error_rates(references, hypotheses, numbers_to_words),
        "listening_check": listening_check(references, hypotheses, numbers_to_words),
        "normalization": {"numbers_to_words": numbers_to_words},
        "decoding": {"greedy": True, "batch_size": batch_size, "max_new_tokens": max_new_tokens},
        "decode_seconds": round(seconds, 3),
        "model": getattr(model.config, "_name_or_path", None),
    }
    if output_dir is not None:
        out = make_run_dir(output_dir, "asr", overwrite)
        lines = []
        for uid, ref, hyp in zip(ids, references, hypotheses):
            r, h = normalize_text(ref, numbers_to_words), normalize_text(hyp, numbers_to_words)
            row = {"id": uid, "reference": ref, "hypothesis": hyp, "reference_norm": r, "hypothesis_norm": h,
                   "wer": jiwer.wer(r, h) if r else None}
            lines.append(json.dumps(row, ensure_ascii=False))
        (out / "hypotheses.jsonl").write_text("\n".join(lines) + "\n")
        write_json(out / "summary.json", summary, overwrite)
        summary["output_dir"] = str(out)
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="MDU checkpoint folder (model + processor)")
    p.add_argument("--processor", default=None, help="processor folder (default: --model)")
    p.add_argument("--dataset", required=True, help="saved dataset, Hub id, CSV/JSONL or audio folder")
    p.add_argument("--split", default="test")
    p.add_argument("--audio_column", default="audio")
    p.add_argument("--text_column", default="text")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--max_examples", type=int, default=None)
    p.add_argument("--keep_digits", action="store_true", help="do not spell numbers as words before scoring")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--output_dir", default=None, help="default: a new runs/eval/asr-<time> folder")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    from .loading import load_model, load_processor

    model, _ = load_model(a.model, dtype=a.dtype, device=a.device)
    processor = load_processor(a.processor or a.model)
    output_dir = make_run_dir(a.output_dir, "asr", a.overwrite)
    summary = evaluate_asr(model, processor, a.dataset, a.batch_size, a.max_new_tokens, a.audio_column, a.text_column,
                           output_dir, overwrite=True, numbers_to_words=not a.keep_digits, max_examples=a.max_examples,
                           split=a.split)
    print(json.dumps({k: summary[k] for k in ("wer", "cer", "num_utterances", "output_dir")}, indent=2))
    return summary


if __name__ == "__main__":
    main()
