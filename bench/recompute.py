"""Lever 1 of issue 20: recomputation of frozen base segments in backward (`config.recompute_frozen_segments`).

Same ASR batch, same base, AdamW, logits at label positions only (as train_hf.py trains) for every method: full
fine-tuning, MDU Transformer and MDU E-Branchformer with and without the flag. Each method runs in a fresh process
(bench/train_step.py's `measure`), so its peak memory is its own. Recorded per method:
    peak memory      CPU: peak RSS during the steps minus RSS before the model (weights, gradients, optimizer
                     state, activations, allocator slack); CUDA: torch.cuda.max_memory_allocated;
    saved activations  bytes of the tensors autograd keeps for backward after one forward (saved_tensors_hooks;
                     parameters excluded): what the lever acts on, free of allocator effects;
    step time        median of the timed steps (all kept: the spread on a shared machine).
Fresh processes run one after the other, so a busy spell of a shared machine can hit one method only; the time the
flag costs is also measured in one process on one model, flag off and on alternating step by step.
Target (issue 20): MDU Transformer with the flag <= 0.5x full fine-tuning's peak memory at the same batch.
"""

import torch

from . import train_step
from .common import BenchSetup, asr_batch, load_base, ratio, targets_md, time_round_robin, upscale

METHODS = ("full", "mdu_transformer", "mdu_transformer_recompute", "mdu_e_branchformer", "mdu_e_branchformer_recompute")
FIELDS = ("step_time_s", "peak_memory_bytes", "saved_activation_bytes")
TARGET = 0.5  # MDU Transformer with recomputation: peak memory <= 0.5x full fine-tuning


def flag_cost(setup: BenchSetup, layer_type: str, progress=print) -> dict:
    """Step time with the flag off and on, alternating on one model in this process."""
    s = setup.sizes
    model = upscale(load_base(setup), setup, layer_type).train()
    model.config.logits_at_labels_only = True
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = asr_batch(model.config, s.train_batch, s.train_units, s.train_transcript, setup.device, seed=setup.seed)

    def step(flag):
        def fn():
            model.config.recompute_frozen_segments = flag
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return fn

    reps = max(s.steps, 4)
    timed = time_round_robin({"off": step(False), "on": step(True)}, setup.device, s.warmup, reps)
    out = {k: {"step_time_s": v[0], "step_times_s": v[1]} for k, v in timed.items()}
    out["ratio_on_to_off"] = out["on"]["step_time_s"] / out["off"]["step_time_s"]
    progress(f"    {layer_type}: flag off {out['off']['step_time_s']:.3f} s, on {out['on']['step_time_s']:.3f} s "
             f"({out['ratio_on_to_off']:.2f}x), {reps} alternating steps")
    return out


def run(setup: BenchSetup, isolate: bool = True, progress=print) -> dict:
    s = setup.sizes
    results = {}
    for method in METHODS:
        progress(f"  recompute: {train_step.LABELS[method]} ...")
        args = (method, setup, None, True, True)  # rank, labels_only, count_saved
        if isolate:
            results[method] = train_step._in_fresh_process(train_step.measure, *args)
        else:
            results[method] = train_step.measure(*args)
        r = results[method]
        progress(f"    {r['step_time_s']:.3f} s/step, peak {r['peak_memory_bytes'] / 2**20:.0f} MiB, "
                 f"saved activations {r['saved_activation_bytes'] / 2**20:.0f} MiB")
    full = results["full"]
    for r in results.values():
        r["ratio_to_full"] = {k: ratio(r[k], full[k]) for k in FIELDS}
    for layer_type in ("mdu_transformer", "mdu_e_branchformer"):
        on, off = results[f"{layer_type}_recompute"], results[layer_type]
        on["ratio_to_flag_off"] = {k: ratio(on[k], off[k]) for k in FIELDS}
    progress("  recompute: step time, flag off / on alternating on one model ...")
    same_process = {lt: flag_cost(setup, lt, progress) for lt in ("transformer", "e_branchformer")}
    value = results["mdu_transformer_recompute"]["ratio_to_full"]["peak_memory_bytes"]
    return {
        "setup": {"model": setup.base_name, "base_params": full["base_params"], "batch_size": s.train_batch,
                  "seq_len": s.train_seq, "dtype": setup.dtype, "optimizer": "AdamW", "logits": "at labels only",
                  "warmup_steps": s.warmup, "timed_steps": s.steps, "isolated_processes": isolate,
                  "memory": "CUDA max_memory_allocated" if setup.device == "cuda" else
                            "peak RSS - RSS before the model (fresh process)",
                  "saved_activations": "bytes autograd keeps for backward after one forward (saved_tensors_hooks)"},
        "methods": results,
        "flag_cost_same_process": same_process,
        "targets": [{"name": "MDU Transformer with recompute_frozen_segments: peak memory / full fine-tuning",
                     "value": value, "target": f"<= {TARGET}", "pass": value <= TARGET}],
    }


def _mib(b):
    return f"{b / 2**20:,.1f}"


def to_markdown(sec: dict, hw_line: str) -> str:
    s = sec["setup"]
    lines = ["## Lever: recomputation of frozen base segments (`recompute_frozen_segments`)", "",
             f"_hardware: {hw_line}; model: {s['model']}; batch {s['batch_size']} x {s['seq_len']} tokens; "
             f"{s['dtype']}; AdamW; logits at labels only; median of {s['timed_steps']} steps after "
             f"{s['warmup_steps']} warm-up, each method in a fresh process; peak memory = {s['memory']}; saved "
             f"activations = {s['saved_activations']}_", "",
             "| method | step time (s) | spread (s) | × full | peak memory (MiB) | × full | saved activations (MiB) "
             "| × full |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in sec["methods"].values():
        q = r["ratio_to_full"]
        spread = f"{min(r['step_times_s']):.2f}-{max(r['step_times_s']):.2f}"
        lines.append(f"| {r['method']} | {r['step_time_s']:.3f} | {spread} | {q['step_time_s']:.2f}× | "
                     f"{_mib(r['peak_memory_bytes'])} | {q['peak_memory_bytes']:.2f}× | "
                     f"{_mib(r['saved_activation_bytes'])} | {q['saved_activation_bytes']:.2f}× |")
    lines.append("")
    for key in ("mdu_transformer_recompute", "mdu_e_branchformer_recompute"):
        r = sec["methods"][key]["ratio_to_flag_off"]
        lines.append(f"- {sec['methods'][key]['method']} vs the same model without the flag: step time "
                     f"{r['step_time_s']:.2f}×, peak memory {r['peak_memory_bytes']:.2f}×, saved activations "
                     f"{r['saved_activation_bytes']:.2f}×")
    for lt, r in sec["flag_cost_same_process"].items():
        lines.append(f"- step time, MDU {lt} with the flag / without, one model in one process, alternating: "
                     f"{r['ratio_on_to_off']:.2f}× ({r['on']['step_time_s']:.2f} s vs {r['off']['step_time_s']:.2f} s; "
                     f"spread {min(r['on']['step_times_s']):.2f}-{max(r['on']['step_times_s']):.2f} vs "
                     f"{min(r['off']['step_times_s']):.2f}-{max(r['off']['step_times_s']):.2f})")
    lines += targets_md(sec["targets"])
    return "\n".join(lines + [""])
