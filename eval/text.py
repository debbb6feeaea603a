"""Text capability of any causal LM (base Llama, MDU, full fine-tuned, LoRA; remote code or not) and its Δ to the base.

    python -m eval.text --model outputs/mdu --base cache/base/SmolLM2-135M-Instruct      # offline suite, Δ vs base
    python -m eval.text --model outputs/mdu --base_results runs/eval/text-base/results.json
    python -m eval.text --model outputs/mdu --suite paper                                # lm-eval, 8 paper tasks

Suites:
  offline (default) — shipped in the repo, tasks in lm-evaluation-harness's YAML format (`eval/tasks/`, data in
      `eval/data/`): perplexity on held-out news text and three multiple-choice tasks (cloze, word order,
      arithmetic), zero-shot, scored by log-likelihood of each choice as the harness does (`eval/loglik.py`).
  paper — ARC-Easy, ARC-Challenge, BoolQ, HellaSwag, OpenBookQA, PIQA, WinoGrande, MMLU through lm-evaluation-harness
      (`pip install lm-eval`; needs the Hub datasets).
score = mean primary accuracy in points (0-100). Δ = adapted − base in absolute points; perplexity as a ratio
(adapted / base, > 1 = worse). An MDU model is scored on text-only input through its full up-scaled stack.
"""

import argparse
import json
import math
from pathlib import Path

import jinja2
import yaml

from .loglik import encode_pair, rolling_requests, score_requests
from .rundir import make_run_dir, write_json

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
REPO_ROOT = TASKS_DIR.parent.parent
PAPER_TASKS = ["arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande", "mmlu"]
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined)


def load_task(path) -> tuple[dict, list[dict]]:
    """(task config, documents) of a harness-format task YAML whose data is a local JSON/JSONL file."""
    config = yaml.safe_load(Path(path).read_text())
    if config.get("dataset_path") != "json":
        raise ValueError(f"{path}: the offline scorer reads dataset_path: json tasks only")
    rel = config["dataset_kwargs"]["data_files"][config.get("test_split", "test")]
    data = next((p for p in (Path(path).parent / rel, REPO_ROOT / rel) if p.exists()), None)
    if data is None:
        raise FileNotFoundError(f"{path}: data file {rel} not found")
    docs = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    return config, docs


def _field(spec, doc):
    """Harness semantics: a column name gives that column, anything else is a Jinja template."""
    if isinstance(spec, str) and spec in doc:
        return doc[spec]
    return _JINJA.from_string(str(spec)).render(**doc)


def _prefix_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def score_multiple_choice(model, tokenizer, config, docs, batch_size=16, max_length=512, vocab_limit=None) -> dict:
    requests, spans = [], []
    for doc in docs:
        context, choices = _field(config.get("doc_to_text", ""), doc), _field(config["doc_to_choice"], doc)
        delim = config.get("target_delimiter", " ")
        spans.append((len(requests), choices, int(_field(config["doc_to_target"], doc))))
        requests += [encode_pair(tokenizer, context, delim + c, _prefix_id(tokenizer)) for c in choices]
    scores = score_requests(model, requests, batch_size, max_length, _pad_id(tokenizer), config["task"], vocab_limit)
    acc = acc_norm = 0
    for start, choices, label in spans:
        ll = [scores[start + k][0] for k in range(len(choices))]
        norm = [x / len(c) for x, c in zip(ll, choices)]
        acc += max(range(len(ll)), key=ll.__getitem__) == label
        acc_norm += max(range(len(norm)), key=norm.__getitem__) == label
    primary = (config.get("metadata") or {}).get("primary_metric", "acc")
    out = {"acc": 100.0 * acc / len(docs), "acc_norm": 100.0 * acc_norm / len(docs), "n": len(docs), "primary": primary}
    out["score"] = out[primary]
    return out


def score_perplexity(model, tokenizer, config, docs, batch_size=16, max_length=512, vocab_limit=None) -> dict:
    requests, words, nbytes = [], 0, 0
    for doc in docs:
        text = _field(config.get("doc_to_target", "text"), doc)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        requests += rolling_requests(ids, _prefix_id(tokenizer), max_length)
        words += len(text.split())
        nbytes += len(text.encode("utf-8"))
    scores = score_requests(model, requests, batch_size, max_length, _pad_id(tokenizer), config["task"], vocab_limit)
    nll = -sum(s for s, _ in scores)
    tokens = sum(len(c) for _, c in requests)
    return {"token_perplexity": math.exp(nll / tokens), "word_perplexity": math.exp(nll / words),
            "byte_perplexity": math.exp(nll / nbytes), "bits_per_byte": nll / nbytes / math.log(2),
            "tokens": tokens, "documents": len(docs)}


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _model_context(model, max_length: int) -> int:
    return min(max_length, getattr(model.config, "max_position_embeddings", max_length) or max_length)


def run_offline(model, tokenizer, max_items=None, batch_size=16, max_length=512, vocab_limit=None, tasks_dir=TASKS_DIR) -> dict:
    max_length = _model_context(model, max_length)
    kw = dict(batch_size=batch_size, max_length=max_length, vocab_limit=vocab_limit)
    tasks, perplexity = {}, None
    for path in sorted(Path(tasks_dir).glob("*.yaml")):
        config, docs = load_task(path)
        docs = docs[:max_items] if max_items else docs
        if config["output_type"] == "multiple_choice":
            tasks[config["task"]] = score_multiple_choice(model, tokenizer, config, docs, **kw)
        elif config["output_type"] == "loglikelihood_rolling":
            perplexity = {"task": config["task"], **score_perplexity(model, tokenizer, config, docs, **kw)}
        else:
            raise ValueError(f"{path}: output_type {config['output_type']!r} is not supported offline")
    return {"tasks": tasks, "perplexity": perplexity}


def run_paper(model, tokenizer, max_items=None, batch_size=16) -> dict:
    """The paper's 8 tasks through lm-evaluation-harness (zero-shot; acc_norm where the harness reports it)."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise ImportError("suite='paper' needs lm-evaluation-harness (`pip install lm-eval`) and Hub access") from e
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    raw = lm_eval.simple_evaluate(model=lm, tasks=PAPER_TASKS, limit=max_items, num_fewshot=0)["results"]
    tasks = {}
    for name in PAPER_TASKS:
        r = raw[name]
        primary = "acc_norm" if "acc_norm,none" in r else "acc"
        tasks[name] = {"acc": 100 * r.get("acc,none", float("nan")), "acc_norm": 100 * r.get("acc_norm,none", float("nan")),
                       "primary": primary, "score": 100 * r[f"{primary},none"]}
    return {"tasks": tasks, "perplexity": None}


def text_delta(results: dict, base: dict) -> dict:
    """Δ = adapted − base in points per task and for the mean score; perplexity as adapted / base."""
    for key in ("suite", "max_items"):
        if results.get(key) != base.get(key):
            raise ValueError(f"base results have {key}={base.get(key)!r}, these {results.get(key)!r}: not comparable")
    missing = set(results["tasks"]) - set(base["tasks"])
    if missing:
        raise ValueError(f"base results lack tasks {sorted(missing)}")
    delta = {"score": results["score"] - base["score"],
             "tasks": {t: r["score"] - base["tasks"][t]["score"] for t, r in results["tasks"].items()}}
    if results.get("perplexity") and base.get("perplexity"):
        delta["perplexity_ratio"] = results["perplexity"]["token_perplexity"] / base["perplexity"]["token_perplexity"]
    return delta


def evaluate_text(model, tokenizer, suite: str = "offline", base_results=None, max_items: int | None = None,
                  batch_size: int = 16, max_length: int = 512, text_vocab_only: bool = False) -> dict:
    """Text capability of `model` (eval mode, any causal LM taking text ids). `base_results`: the dict (or a JSON
    path) this function returned for the base model; then the result carries `base_score` and `delta`.
    By default probabilities are normalised over the model's whole vocabulary, as the harness does (an MDU model's
    speech rows take some mass); `text_vocab_only` normalises over the text ids [0, config.text_vocab_size) only."""
    vocab_limit = getattr(model.config, "text_vocab_size", None) if text_vocab_only else None
    if suite == "offline":
        out = run_offline(model, tokenizer, max_items, batch_size, max_length, vocab_limit)
    elif suite == "paper":
        out = run_paper(model, tokenizer, max_items, batch_size)
    else:
        raise ValueError(f"suite must be 'offline' or 'paper', got {suite!r}")
    scores = [t["score"] for t in out["tasks"].values()]
    results = {"suite": suite, "max_items": max_items, "text_vocab_only": text_vocab_only, "score": sum(scores) / len(scores), **out,
               "model": getattr(model.config, "_name_or_path", None)}
    if base_results is not None:
        base = json.loads(Path(base_results).read_text()) if isinstance(base_results, (str, Path)) else base_results
        results["base_score"] = base["score"]
        results["delta"] = text_delta(results, base)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder (Llama, MDU, PEFT adapter)")
    p.add_argument("--base", default=None, help="base model folder: evaluated too, for Δ")
    p.add_argument("--base_results", default=None, help="results.json of an earlier run on the base model")
    p.add_argument("--suite", default="offline", choices=["offline", "paper"])
    p.add_argument("--max_items", type=int, default=None, help="first N items of each task (same for base and model)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--text_vocab_only", action="store_true", help="normalise over the text vocabulary only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--output_dir", default=None, help="default: a new runs/eval/text-<time> folder")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    from .loading import load_model

    out = make_run_dir(a.output_dir, "text", a.overwrite)
    kw = dict(suite=a.suite, max_items=a.max_items, batch_size=a.batch_size, max_length=a.max_length,
              text_vocab_only=a.text_vocab_only)
    base_results = a.base_results
    if a.base:
        base, base_tok = load_model(a.base, dtype=a.dtype, device=a.device)
        base_results = evaluate_text(base, base_tok, **kw)
        write_json(out / "base_results.json", base_results, a.overwrite)
        del base
    model, tokenizer = load_model(a.model, dtype=a.dtype, device=a.device)
    results = evaluate_text(model, tokenizer, base_results=base_results, **kw)
    write_json(out / "results.json", results, a.overwrite)
    print(json.dumps({k: results.get(k) for k in ("score", "base_score", "delta")}, indent=2))
    print(f"written to {out}")
    return results


if __name__ == "__main__":
    main()
