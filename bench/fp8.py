"""Lever 5 of issue 20: frozen base linears in FP8 (`config.fp8_frozen_linears`; modeling_mdu.FP8FrozenLinear).

MDU Transformer with and without the flag, and full fine-tuning, trained side by side on the same sequence of ASR
batches (AdamW, logits at labels only), one step each in turn: the loss curves next to each other, the step times,
and the ratios measured in this run. The FP8 matmuls are torch._scaled_mm; on a CPU they run (that is what the tests
use) but are not faster than the CPU's fp32 / bf16 matmuls, so only a Hopper-class GPU can show the speed the issue
asks for. The MDU models share their frozen base tensors.
Target (issue 20, Hopper, bf16): MDU Transformer with FP8 frozen linears <= 0.6x full fine-tuning's step time.
"""

import statistics
import time

import torch

from modeling_mdu.modeling_mdu import check_fp8_device

from .common import BenchSetup, asr_batch, load_base, share_frozen, sync, targets_md, upscale

TARGET = 0.6
STEPS = {"quick": 4, "full": 6, "cuda": 50}


def run(setup: BenchSetup, progress=print) -> dict:
    try:  # a device without row-wise FP8 matmuls (a GPU below 8.9, torch 2.11's CPU): said, not failed
        check_fp8_device(torch.device(setup.device))
    except RuntimeError as e:
        progress(f"  fp8: skipped: {e}")
        return {"skipped": str(e)}
    s = setup.sizes
    steps = STEPS["quick" if setup.quick else "cuda" if setup.device == "cuda" else "full"]
    base = load_base(setup)
    runs = {"full": ("full fine-tuning", dict(num_added_layers=0, freeze=False)),
            "mdu_transformer": ("MDU Transformer", {}),
            "mdu_transformer_fp8": ("MDU Transformer, FP8 frozen linears", dict(fp8_frozen_linears=True))}
    models, shared = {}, None
    for name, (_, kwargs) in runs.items():
        model = upscale(base, setup, "transformer", **kwargs).train()
        model.config.logits_at_labels_only = True
        if name != "full":  # one copy of the frozen base tensors for every MDU model
            shared = share_frozen(model, shared)
        models[name] = (model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4))
    config = models["mdu_transformer"][0].config
    batches = [asr_batch(config, s.train_batch, s.train_units, s.train_transcript, setup.device, seed=setup.seed + i)
               for i in range(steps)]
    losses = {name: [] for name in runs}
    times = {name: [] for name in runs}
    progress(f"  fp8: {len(runs)} models, {steps} steps each in turn (different batches, the same for every model) ...")
    for batch in batches:
        for name, (model, optimizer) in models.items():
            sync(setup.device)
            t0 = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(setup.device)
            times[name].append(time.perf_counter() - t0)
            losses[name].append(float(loss.detach()))
    results = {}
    for name, (label, _) in runs.items():
        timed = times[name][1:] or times[name]  # the first step warms up
        results[name] = {"model": label, "step_time_s": statistics.median(timed), "step_times_s": times[name],
                         "losses": losses[name]}
    for r in results.values():
        r["ratio_to_full"] = r["step_time_s"] / results["full"]["step_time_s"]
    ref, fp8 = results["mdu_transformer"]["losses"], results["mdu_transformer_fp8"]["losses"]
    gap = max(abs(a - b) / abs(a) for a, b in zip(ref, fp8))
    for r in results.values():
        progress(f"    {r['model']}: {r['step_time_s']:.3f} s/step ({r['ratio_to_full']:.2f}x full), losses "
                 + " ".join(f"{x:.3f}" for x in r["losses"]))
    value = results["mdu_transformer_fp8"]["ratio_to_full"]
    return {
        "setup": {"model": setup.base_name, "dtype": setup.dtype, "device": setup.device, "batch_size": s.train_batch,
                  "seq_len": s.train_seq, "steps": steps, "optimizer": "AdamW lr 1e-4", "logits": "at labels only",
                  "fp8": "e4m3 weights / inputs / output gradients, row-wise scales, torch._scaled_mm"},
        "models": results,
        "max_relative_loss_gap_fp8_vs_reference": gap,
        "targets": [{"name": "MDU Transformer with FP8 frozen linears: step time / full fine-tuning"
                             + ("" if setup.device == "cuda" else " (CPU: FP8 is not a CPU speed lever)"),
                     "value": value, "target": f"<= {TARGET}", "pass": value <= TARGET}],
    }


def to_markdown(sec: dict, hw_line: str) -> str:
    s = sec["setup"]
    lines = ["## Lever: FP8 frozen base linears (`fp8_frozen_linears`)", "",
             f"_hardware: {hw_line}; model: {s['model']}; batch {s['batch_size']} x {s['seq_len']} tokens; "
             f"{s['dtype']}; {s['optimizer']}; logits at labels only; {s['steps']} steps, the models in turn on the "
             "same batches; "
             f"step time = median after the first; {s['fp8']}_", "",
             "| model | step time (s) | × full | loss per step |", "|---|---:|---:|---|"]
    for r in sec["models"].values():
        lines.append(f"| {r['model']} | {r['step_time_s']:.3f} | {r['ratio_to_full']:.2f}× | "
                     + " ".join(f"{x:.3f}" for x in r["losses"]) + " |")
    lines += ["", f"- largest relative loss gap, FP8 vs the same model without it: "
                  f"{100 * sec['max_relative_loss_gap_fp8_vs_reference']:.2f}%"]
    lines += targets_md(sec["targets"])
    return "\n".join(lines + [""])
