"""Run every benchmark and write bench/results.json and bench/results.md.

    PYTHONPATH=. python -m bench.run [--quick] [--device cpu|cuda] [--dtype float32|bfloat16] [--threads N]

Sections: train_step (MDU Transformer / MDU E-Branchformer / full fine-tuning / rank-matched LoRA), logits_at_labels,
generation, text_bypass, tokenizer (speech tokenizer real-time factor, from bench/bench_tokenizer.py when present),
front_end (the phonetic tokenizer's phoneme error rate, leave one synthesizer family out: bench/front_end.py; it
builds three corpora and fits four tokenizers, ~30-40 more minutes on 2 cores; `--only` to leave it out), and the
performance levers of issue 20: recompute (frozen segments recomputed in backward), packing (padding-free batches),
decode (decoding without host syncs, dynamic / static cache; `--decode-compile` adds torch.compile), ebf_cost
(E-Branchformer profile and cheaper widths / kernels), fp8 (FP8 frozen base linears: loss curves and step times; a
speed lever on Hopper GPUs only).
`--quick` runs them on a tiny random Llama in well under a minute (what tests/test_bench.py checks); the default
uses SmolLM2-135M-Instruct from cache/base/ (random weights with the same architecture if it is missing) with
sizes that fit ~10 minutes on a 2-core CPU. Targets from issue 8 are printed as pass/miss; nothing is asserted.
"""

import argparse
import importlib.util
import json
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import (
    decode,
    ebf_cost,
    fp8,
    front_end,
    generation,
    logits_at_labels,
    packing,
    recompute,
    text_bypass,
    train_step,
)
from .common import BenchSetup, hardware, hardware_line, targets_md

SECTIONS = ("train_step", "logits_at_labels", "generation", "text_bypass", "tokenizer", "front_end",
            "recompute", "packing", "decode", "ebf_cost", "fp8")
LEVERS = {"recompute": recompute, "packing": packing, "decode": decode, "ebf_cost": ebf_cost, "fp8": fp8}  # issue 20
HERE = Path(__file__).resolve().parent


def run_tokenizer(setup: BenchSetup, progress=print) -> dict:
    """Speech tokenizer RTF per backend, from bench/bench_tokenizer.py (owned by the speech-tokenizer work)."""
    if importlib.util.find_spec("bench.bench_tokenizer") is None:
        return {"skipped": "bench/bench_tokenizer.py is not there"}
    from . import bench_tokenizer

    progress("  tokenizer: real-time factor per backend ...")
    grad = torch.is_grad_enabled()
    try:
        rtf = bench_tokenizer.run(setup.quick)
    finally:
        torch.set_grad_enabled(grad)  # bench_tokenizer switches autograd off globally
    return {"setup": {"device": "cpu", "audio": "synthetic 5 s chirps at 16 kHz", "batch": "all clips in one call",
                      "note": "RTF = processing seconds / audio seconds (lower is faster); see bench/bench_tokenizer.py"},
            "results": rtf}


RUNNERS = {
    "train_step": lambda setup, args, progress: train_step.run(setup, isolate=not args.no_isolate, progress=progress),
    "logits_at_labels": lambda setup, args, progress: logits_at_labels.run(setup, progress=progress),
    "generation": lambda setup, args, progress: generation.run(setup, progress=progress),
    "text_bypass": lambda setup, args, progress: text_bypass.run(setup, progress=progress),
    "tokenizer": lambda setup, args, progress: run_tokenizer(setup, progress=progress),
    "front_end": lambda setup, args, progress: front_end.run(setup.quick, progress=progress),
    "recompute": lambda setup, args, progress: recompute.run(setup, isolate=not args.no_isolate, progress=progress),
    "packing": lambda setup, args, progress: packing.run(setup, progress=progress),
    "decode": lambda setup, args, progress: decode.run(setup, progress=progress, compile=args.decode_compile),
    "ebf_cost": lambda setup, args, progress: ebf_cost.run(setup, progress=progress),
    "fp8": lambda setup, args, progress: fp8.run(setup, progress=progress),
}


# ------------------------------------------------------------------ markdown
def _mib(b):
    return f"{b / 2**20:,.1f}" if b is not None else "–"


def _x(r):
    return f"{r:.2f}×" if r is not None else "–"


def _params(n):
    return f"{n / 1e6:,.2f}M" if n >= 1e5 else f"{n:,}"


def _caption(hw_line: str, setup: dict, extra: str = "") -> str:
    seq = setup.get("seq_len")
    parts = [f"hardware: {hw_line}", f"model: {setup.get('model')}"]
    if setup.get("base_params"):
        parts.append(f"base params {_params(setup['base_params'])}")
    if seq is not None:
        parts.append(f"seq len {seq}")
    if setup.get("batch_size") is not None:
        parts.append(f"batch {setup['batch_size']}")
    if setup.get("dtype"):
        parts.append(setup["dtype"])
    return "_" + "; ".join(parts) + (f"; {extra}" if extra else "") + "_"


def to_markdown(results: dict) -> str:
    meta = results["meta"]
    hw = hardware_line(meta["hardware"])
    lines = [
        "# mdu-speech benchmarks",
        "",
        f"Written by `python -m bench.run{' --quick' if meta['quick'] else ''} --device {meta['device']}` on "
        f"{meta['started']} in {meta['elapsed_s']:.0f} s. Hardware: {hw}; {meta['hardware'].get('cpu_cores')} CPU "
        f"cores, load average {meta['hardware'].get('load_average_1m')} at start, {meta.get('load_average_1m_end')} at "
        f"the end (above 0: other processes shared the machine and timings are noisier). Medians of the timed repetitions; the raw times are in results.json.",
        "",
    ]
    sec = results.get("train_step", {})
    if "methods" in sec:
        s = sec["setup"]
        lora = s["lora"]
        lines += ["## Training step (same ASR batch, same base, AdamW)", "",
                  _caption(hw, s, f"{s['speech_units']} speech units + {s['transcript_tokens']} transcript tokens; "
                                  f"median of {s['timed_steps']} steps after {s['warmup_steps']} warm-up; memory = {s['memory']}; "
                                  f"LoRA rank {lora['rank']} on q,k,v,o,gate,up,down"), "",
                  "| method | trainable params | × full | step time (s) | × full | peak memory (MiB) | × full | optimizer state (MiB) | × full |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sec["methods"].values():
            q = r["ratio_to_full"]
            lines.append(f"| {r['method']} | {_params(r['trainable_params'])} | {_x(q['trainable_params'])} | "
                         f"{r['step_time_s']:.3f} | {_x(q['step_time_s'])} | {_mib(r['peak_memory_bytes'])} | "
                         f"{_x(q['peak_memory_bytes'])} | {_mib(r['optimizer_state_bytes'])} | {_x(q['optimizer_state_bytes'])} |")
        lines += [""] + targets_md(sec["targets"]) + [""]
    sec = results.get("logits_at_labels", {})
    if "speedup" in sec:
        s = sec["setup"]
        lines += ["## Loss from logits at label positions only (ASR batch: long speech prompt, short transcript)", "",
                  _caption(hw, s, f"{s['speech_units']} speech units, {s['labelled_tokens_per_example']} labelled tokens per "
                                  f"example; vocab {s['vocab_size']:,}; {_params(s['total_params'])} params"), "",
                  "| logits | step time (s) | speedup |", "|---|---:|---:|",
                  f"| full (every position) | {sec['full_logits']['step_time_s']:.3f} | 1.00× |",
                  f"| at labels only | {sec['labels_only']['step_time_s']:.3f} | {_x(sec['speedup'])} |", ""]
        lines += targets_md(sec["targets"]) + [""]
    sec = results.get("generation", {})
    if "models" in sec:
        s = sec["setup"]
        lines += ["## Generation after a speech prompt (greedy)", "",
                  _caption(hw, s, f"prompt {s['prompt_len']} tokens + {s['new_tokens']} new tokens; {s['tokens_per_s']}"), "",
                  "| model | params | layers | cached tokens/s | × base cached | uncached tokens/s | × base cached |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in sec["models"].values():
            q = r["ratio_to_base_cached"]
            lines.append(f"| {r['model']} | {_params(r['total_params'])} | {r['layers']} | {r['cached']['tokens_per_s']:.1f} | "
                         f"{_x(q['cached'])} | {r['uncached']['tokens_per_s']:.1f} | {_x(q['uncached'])} |")
        lines += [""] + targets_md(sec["targets"]) + [""]
    sec = results.get("text_bypass", {})
    if "models" in sec:
        s = sec["setup"]
        lines += ["## Text-only forward: text_bypass on / off vs base", "",
                  _caption(hw, s, f"{s['forward']}; median of {s['timed_reps']}"), "",
                  "| model | params | layers | forward time (s) | × base |", "|---|---:|---:|---:|---:|"]
        for r in sec["models"].values():
            lines.append(f"| {r['model']} | {_params(r['total_params'])} | {r['layers']} | {r['forward_time_s']:.4f} | {_x(r['ratio_to_base'])} |")
        lines += [""] + targets_md(sec["targets"]) + [""]
    sec = results.get("tokenizer", {})
    if "results" in sec:
        s = sec["setup"]
        lines += ["## Speech tokenizer real-time factor", "",
                  f"_hardware: {meta['hardware']['cpu']} (CPU, {sec['results'].get('threads')} threads); {s['audio']}, "
                  f"{sec['results'].get('audio_seconds')} s of audio; {s['batch']}; {s['note']}_", "",
                  "| backend / input | RTF |", "|---|---:|"]
        for k, v in sec["results"].items():
            if k.endswith("rtf") or "_rtf_" in k:
                lines.append(f"| {k} | {v:.4f} |")
        lines.append("")
    elif "skipped" in sec:
        lines += ["## Speech tokenizer real-time factor", "", f"skipped: {sec['skipped']}", ""]
    sec = results.get("front_end", {})
    if "folds" in sec:
        lines += [front_end.to_markdown(sec, hw)]
    elif "skipped" in sec:
        lines += ["## Front end: phoneme error rate, leave one synthesizer family out", "", f"skipped: {sec['skipped']}", ""]
    for name, module in LEVERS.items():
        if "targets" in results.get(name, {}):
            lines += [module.to_markdown(results[name], hw)]
        elif "skipped" in results.get(name, {}):
            lines += [f"## Lever {name}: skipped", "", results[name]["skipped"], ""]
    for name in SECTIONS:
        if "error" in results.get(name, {}):
            lines += [f"## {name}: failed", "", "```", results[name]["error"], "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def all_targets(results: dict) -> list[dict]:
    return [t for name in SECTIONS for t in results.get(name, {}).get("targets", [])]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random Llama, few steps (sanity run)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice; 1 on --quick). On a CPU shared with "
                             "other busy processes, 1 thread gives far steadier timings")
    parser.add_argument("--base", default=None, help="base LlamaForCausalLM directory (default cache/base/SmolLM2-135M-Instruct)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="run these sections only")
    parser.add_argument("--no-isolate", action="store_true", help="train_step in this process (CPU peak memory then not per method)")
    parser.add_argument("--decode-compile", action="store_true",
                        help="decode section: also time a static cache with torch.compile (CompileConfig; on a CPU the "
                             "compilation takes minutes)")
    parser.add_argument("--out", default=str(HERE), help="directory for results.json and results.md (default bench/)")
    args = parser.parse_args(argv)

    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    setup = BenchSetup.create(args.device, args.dtype, args.quick, args.base, threads)
    started = time.time()
    results = {"meta": {"quick": args.quick, "device": args.device, "dtype": args.dtype, "hardware": hardware(args.device),
                        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "setup": setup.to_dict()}}
    hw = results["meta"]["hardware"]
    print(f"bench on {hardware_line(hw)}; model: {setup.base_name}", flush=True)
    if args.device == "cpu" and hw["torch_threads"] > 1 and (hw["load_average_1m"] or 0) > 0.5:
        print(f"note: load average {hw['load_average_1m']} — other processes use this CPU; with {hw['torch_threads']} "
              "torch threads timings can be many times slower and erratic. --threads 1 is steadier.", flush=True)
    progress = lambda msg: print(msg, flush=True)  # noqa: E731
    for name in args.only:
        t0 = time.time()
        progress(f"[{name}]")
        try:
            results[name] = RUNNERS[name](setup, args, progress)
        except Exception:  # record and go on: one broken section should not hide the others' numbers
            results[name] = {"error": traceback.format_exc(limit=8)}
            progress(f"  FAILED:\n{results[name]['error']}")
        if isinstance(results[name], dict):
            results[name]["elapsed_s"] = time.time() - t0
    results["meta"]["elapsed_s"] = time.time() - started
    results["meta"]["load_average_1m_end"] = round(__import__("os").getloadavg()[0], 2)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(to_markdown(results))
    print("\ntargets (issues 8 and 20):")
    for t in all_targets(results):
        print(f"  {'PASS' if t['pass'] else 'MISS'}  {t['name']}: {t['value']:.2f} (target {t['target']})")
    failed = [n for n in args.only if "error" in results[n]]
    print(f"\nwrote {out / 'results.json'} and {out / 'results.md'} in {results['meta']['elapsed_s']:.0f} s"
          + (f"; FAILED sections: {failed}" if failed else ""))
    return results


if __name__ == "__main__":
    res = main()
    sys.exit(1 if any("error" in res.get(n, {}) for n in SECTIONS) else 0)
