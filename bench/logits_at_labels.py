"""Loss from logits at label positions only vs full logits, on ASR batches (long speech prompt, short transcript).

Same MDU Transformer model, same batch, same AdamW training step; only `config.logits_at_labels_only` changes.
With a 49k text vocabulary the LM head is the costliest matmul of a small model, and in an ASR batch almost every
position is speech prompt whose logits the loss never reads.
"""

import torch

from .common import BenchSetup, asr_batch, load_base, model_size, time_round_robin, upscale

TARGET_SPEEDUP = 1.3  # labels-only step >= 1.3x faster (issue 8)


def run(setup: BenchSetup, progress=print) -> dict:
    s = setup.sizes
    model = upscale(load_base(setup), setup, "transformer").train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = asr_batch(model.config, s.asr_batch, s.asr_units, s.asr_transcript, setup.device, seed=setup.seed)

    def step():
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    modes = (("full_logits", False), ("labels_only", True))
    out = {}
    for name, flag in modes:  # same loss both ways (checked by tests/test_bench.py), before any step moves the weights
        model.config.logits_at_labels_only = flag
        with torch.no_grad():
            out[name] = {"initial_loss": float(model(**batch).loss)}

    def step_with(flag):
        def fn():
            model.config.logits_at_labels_only = flag
            step()
        return fn

    progress(f"  logits_at_labels: full logits and labels only in turn, {s.steps} rounds ...")
    timed = time_round_robin({name: step_with(flag) for name, flag in modes}, setup.device, s.warmup, s.steps)
    for name, _ in modes:
        out[name].update(step_time_s=timed[name][0], step_times_s=timed[name][1])
        progress(f"    {name}: {timed[name][0]:.3f} s/step")
    model.config.logits_at_labels_only = False
    speedup = out["full_logits"]["step_time_s"] / out["labels_only"]["step_time_s"]
    return {
        "setup": {"model": f"MDU Transformer on {setup.base_name}", **model_size(model, trainable=True), "vocab_size": model.config.vocab_size,
                  "batch_size": s.asr_batch, "seq_len": s.asr_seq, "speech_units": s.asr_units,
                  "labelled_tokens_per_example": s.asr_transcript + 1, "dtype": setup.dtype,
                  "warmup_steps": s.warmup, "timed_steps": s.steps, "timing": "the two step kinds alternate"},
        **out,
        "speedup": speedup,
        "targets": [{"name": "step speedup, logits at labels only vs full logits", "value": speedup,
                     "target": f">= {TARGET_SPEEDUP}", "pass": speedup >= TARGET_SPEEDUP}],
    }
