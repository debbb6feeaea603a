"""Lever 4 of issue 20: what an E-Branchformer training step costs, and the cheaper choices.

1. torch.profiler over one MDU E-Branchformer training step (AdamW, logits at labels only): self time per op group.
   Only the E-Branchformer layers convolve, so the convolution group is their depthwise convolutions (CSGU and
   merge, forward and backward); matmuls hold every linear (base and added, forward, input and weight gradients).
2. Training step time of full fine-tuning, MDU Transformer and MDU E-Branchformer variants, in turn on the same
   batch: the default (cgmlp_units = 6 x hidden, kernels 31), a narrower cgMLP (`cgmlp_units` = 3 x hidden, which is
   ESPnet's 3072 at d = 1024) and shorter kernels (`cgmlp_conv_kernel` / `merge_conv_kernel` 15). These are config
   flags already; the cheaper one is a trade of capacity for time that only training runs can judge (README).
The MDU models share their frozen base tensors (one copy in memory); each keeps its own trainable layers and AdamW.
Target (issue 20): MDU E-Branchformer step <= 1.0x full fine-tuning.
"""

import torch

from .common import BenchSetup, asr_batch, load_base, model_size, share_frozen, targets_md, time_round_robin, upscale

TARGET = 1.0
CONV_OPS = ("conv", "convolution")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::_scaled_mm")
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "efficient_attention")


def _variants(hidden: int) -> dict:
    return {
        "full": ("full fine-tuning", dict(layer_type="transformer", num_added_layers=0, freeze=False)),
        "mdu_transformer": ("MDU Transformer", dict(layer_type="transformer")),
        "mdu_e_branchformer": (f"MDU E-Branchformer (cgmlp_units {6 * hidden}, kernels 31: default)",
                               dict(layer_type="e_branchformer")),
        "mdu_e_branchformer_cgmlp_3d": (f"MDU E-Branchformer, cgmlp_units {3 * hidden}",
                                        dict(layer_type="e_branchformer", cgmlp_units=3 * hidden)),
        "mdu_e_branchformer_kernel_15": ("MDU E-Branchformer, conv kernels 15",
                                         dict(layer_type="e_branchformer", cgmlp_conv_kernel=15, merge_conv_kernel=15)),
    }


def _group(op_name: str) -> str:
    if any(k in op_name for k in ATTENTION_OPS):
        return "attention"
    if op_name in MATMUL_OPS:
        return "matmul"
    if any(k in op_name for k in CONV_OPS):
        return "depthwise conv"
    if "gelu" in op_name or "layer_norm" in op_name:
        return "GELU + LayerNorm (cgMLP)"
    return "other (elementwise, norms, optimizer, copies)"


def profile_step(step, device: str) -> dict:
    """Self time (s) per op group of one call of `step`, and the top ops."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    groups, ops = {}, []
    for event in prof.key_averages():
        seconds = (event.self_device_time_total if device == "cuda" else event.self_cpu_time_total) / 1e6
        groups[_group(event.key)] = groups.get(_group(event.key), 0.0) + seconds
        ops.append((event.key, seconds, event.count))
    total = sum(groups.values())
    ops.sort(key=lambda o: -o[1])
    return {"total_s": total, "groups_s": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "top_ops": [{"op": k, "self_s": t, "calls": c} for k, t, c in ops[:12]]}


def run(setup: BenchSetup, progress=print) -> dict:
    s = setup.sizes
    base = load_base(setup)
    variants = _variants(base.config.hidden_size)
    models, shared = {}, None
    for name, (_, kwargs) in variants.items():
        model = upscale(base, setup, **kwargs).train()
        model.config.logits_at_labels_only = True
        if name != "full":  # one copy of the frozen base tensors for every MDU model
            shared = share_frozen(model, shared)
        models[name] = (model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5))
    config = models["mdu_transformer"][0].config
    batch = asr_batch(config, s.train_batch, s.train_units, s.train_transcript, setup.device, seed=setup.seed)

    def step(name):
        model, optimizer = models[name]

        def fn():
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return fn

    progress("  ebf_cost: torch.profiler over one MDU E-Branchformer step ...")
    step("mdu_e_branchformer")()  # warm-up
    profiled = profile_step(step("mdu_e_branchformer"), setup.device)
    for group, t in profiled["groups_s"].items():
        progress(f"    {group}: {t:.3f} s ({100 * t / profiled['total_s']:.0f}%)")
    reps = max(s.steps, 3)
    progress(f"  ebf_cost: {len(models)} training steps in turn, {reps} rounds ...")
    timed = time_round_robin({name: step(name) for name in models}, setup.device, s.warmup, reps)
    results = {}
    for name, (label, _) in variants.items():
        median, times = timed[name]
        results[name] = {"model": label, **model_size(models[name][0], trainable=True), "step_time_s": median,
                         "step_times_s": times, "cgmlp_units": models[name][0].config.cgmlp_units}
    for r in results.values():
        r["ratio_to_full"] = r["step_time_s"] / results["full"]["step_time_s"]
        progress(f"    {r['model']}: {r['step_time_s']:.3f} s/step ({r['ratio_to_full']:.2f}x full)")
    targets = [{"name": f"{results[k]['model']}: step time / full fine-tuning", "value": results[k]["ratio_to_full"],
                "target": f"<= {TARGET}", "pass": results[k]["ratio_to_full"] <= TARGET}
               for k in results if k.startswith("mdu_e_branchformer")]
    return {
        "setup": {"model": setup.base_name, "dtype": setup.dtype, "batch_size": s.train_batch, "seq_len": s.train_seq,
                  "optimizer": "AdamW", "logits": "at labels only", "warmup_steps": s.warmup, "timed_steps": reps,
                  "profiler": "torch.profiler, self " + ("CUDA" if setup.device == "cuda" else "CPU") + " time per op"},
        "profile_mdu_e_branchformer_step": profiled,
        "models": results,
        "targets": targets,
    }


def to_markdown(sec: dict, hw_line: str) -> str:
    s = sec["setup"]
    p = sec["profile_mdu_e_branchformer_step"]
    lines = ["## Lever: E-Branchformer cost (profile, cgMLP width, conv kernels)", "",
             f"_hardware: {hw_line}; model: {s['model']}; batch {s['batch_size']} x {s['seq_len']} tokens; "
             f"{s['dtype']}; AdamW; logits at labels only; {s['profiler']}; steps: median of {s['timed_steps']} after "
             f"{s['warmup_steps']} warm-up, the models in turn_", "",
             "Profile of one MDU E-Branchformer training step:", "",
             "| op group | self time (s) | share |", "|---|---:|---:|"]
    for group, t in p["groups_s"].items():
        lines.append(f"| {group} | {t:.3f} | {100 * t / p['total_s']:.0f}% |")
    lines += ["", "| model | trainable params | step time (s) | spread (s) | × full |", "|---|---:|---:|---|---:|"]
    for r in sec["models"].values():
        lines.append(f"| {r['model']} | {r['trainable_params'] / 1e6:,.2f}M | {r['step_time_s']:.3f} | "
                     f"{min(r['step_times_s']):.2f}-{max(r['step_times_s']):.2f} | {r['ratio_to_full']:.2f}× |")
    lines.append("")
    lines += targets_md(sec["targets"])
    return "\n".join(lines + [""])
