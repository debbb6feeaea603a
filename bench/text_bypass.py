"""Text-only forward time: MDU with `text_bypass` on and off against the base Llama.

With `text_bypass`, a sequence without speech tokens skips the added layers, so a text-only request should cost
what the base costs (plus the split embedding / LM head). Same model object both ways: only the config flag flips.
"""

import torch

from .common import BenchSetup, load_base, model_size, ratio, text_batch, time_round_robin, upscale

TARGET = 1.05  # MDU with bypass <= 1.05x the base's forward time (issue 8)


def run(setup: BenchSetup, progress=print) -> dict:
    s = setup.sizes
    base = load_base(setup)
    ids = text_batch(base.config.vocab_size, s.text_batch, s.text_len, setup.device, setup.seed)
    mask = torch.ones_like(ids)
    reps = max(s.steps, 5)
    mdus = {lt: upscale(base, setup, lt).eval() for lt in ("transformer", "e_branchformer")}
    runs = {"base": ("base Llama", base, None)}
    for lt, mdu in mdus.items():
        for bypass in (True, False):
            runs[f"mdu_{lt}_bypass_{'on' if bypass else 'off'}"] = (f"MDU {lt}, text_bypass={bypass}", mdu, bypass)

    def forward(model, bypass):
        def fn():
            if bypass is not None:
                model.config.text_bypass = bypass
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        return fn

    progress(f"  text_bypass: {len(runs)} forwards in turn, {reps} rounds ...")
    timed = time_round_robin({name: forward(m, b) for name, (_, m, b) in runs.items()}, setup.device, s.warmup, reps)
    results = {}
    for name, (label, model, _) in runs.items():
        results[name] = {"model": label, **model_size(model), "forward_time_s": timed[name][0], "times_s": timed[name][1]}
        progress(f"    {label}: {timed[name][0]:.4f} s")
    ref = results["base"]["forward_time_s"]
    for r in results.values():
        r["ratio_to_base"] = ratio(r["forward_time_s"], ref)
    targets = [{"name": f"MDU {lt} with text_bypass: text forward time / base", "target": f"<= {TARGET}",
                "value": results[f"mdu_{lt}_bypass_on"]["ratio_to_base"],
                "pass": results[f"mdu_{lt}_bypass_on"]["ratio_to_base"] <= TARGET}
               for lt in ("transformer", "e_branchformer")]
    return {
        "setup": {"model": setup.base_name, "base_params": results["base"]["total_params"], "batch_size": s.text_batch,
                  "seq_len": s.text_len, "dtype": setup.dtype, "warmup": s.warmup, "timed_reps": reps,
                  "forward": "full logits, no cache, inference_mode; the five timed in turn"},
        "models": results,
        "targets": targets,
    }
