"""Greedy generation speed after a speech prompt: base Llama, MDU Transformer, MDU E-Branchformer; cached
(KV cache, plus conv states for E-Branchformer) and uncached (`use_cache=False`: every step re-reads the prompt).

Tokens/s = batch x new tokens / wall time of `generate` (prefill included), exactly `gen_new_tokens` new tokens
per sequence (`min_new_tokens` = `max_new_tokens`). The base model cannot read speech units, so it gets a random
text prompt of the same length: same batch, same context, same number of new tokens.
"""

import torch

from .common import BenchSetup, load_base, model_size, ratio, speech_prompt, text_batch, time_round_robin, upscale

TARGET = 0.75  # cached MDU E-Branchformer >= 0.75x the base model's cached tokens/s (issue 8)
MODELS = {"base": "base Llama", "mdu_transformer": "MDU Transformer", "mdu_e_branchformer": "MDU E-Branchformer"}


def _generate_fn(model, input_ids, setup: BenchSetup, use_cache: bool, record: dict):
    """generate() of exactly `gen_new_tokens` new tokens (the count of the last call is kept in `record`)."""
    n = setup.sizes.gen_new_tokens
    mask = torch.ones_like(input_ids)
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else model.config.eos_token_id

    @torch.inference_mode()
    def gen(new_tokens=n):
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache, pad_token_id=pad)
        record["new_tokens"] = out.shape[1] - input_ids.shape[1]

    return gen


def run(setup: BenchSetup, progress=print) -> dict:
    s = setup.sizes
    base = load_base(setup)
    models = {
        "base": base,
        "mdu_transformer": upscale(base, setup, "transformer").eval(),
        "mdu_e_branchformer": upscale(base, setup, "e_branchformer").eval(),
    }
    prompt = speech_prompt(models["mdu_transformer"].config, s.gen_batch, s.gen_prompt_units, setup.device, setup.seed)
    text_prompt = text_batch(base.config.vocab_size, s.gen_batch, prompt.shape[1], setup.device, setup.seed)
    results = {name: {"model": MODELS[name], **model_size(model)} for name, model in models.items()}
    for use_cache in (True, False):  # the three models in turn, so that load on a shared machine hits them alike
        key = "cached" if use_cache else "uncached"
        reps = max(s.gen_reps, 3) if use_cache else s.gen_reps
        records = {name: {} for name in models}
        fns = {name: _generate_fn(m, text_prompt if name == "base" else prompt, setup, use_cache, records[name])
               for name, m in models.items()}
        progress(f"  generation: {key}, {len(fns)} models in turn, {reps} rounds ...")
        for fn in fns.values():
            fn(2)  # warm-up: prefill + a decoding step
        timed = time_round_robin(fns, setup.device, 0, reps)
        for name, (median, times) in timed.items():
            if records[name]["new_tokens"] != s.gen_new_tokens:
                raise RuntimeError(f"{name}: generate produced {records[name]['new_tokens']} new tokens, expected {s.gen_new_tokens}")
            results[name][key] = {"tokens_per_s": s.gen_batch * s.gen_new_tokens / median, "generate_time_s": median,
                                  "times_s": times}
            progress(f"    {MODELS[name]}: {results[name][key]['tokens_per_s']:.1f} tokens/s")
    ref = results["base"]["cached"]["tokens_per_s"]
    for r in results.values():
        r["ratio_to_base_cached"] = {k: ratio(r[k]["tokens_per_s"], ref) for k in ("cached", "uncached")}
    value = results["mdu_e_branchformer"]["ratio_to_base_cached"]["cached"]
    return {
        "setup": {"model": setup.base_name, "base_params": model_size(base)["total_params"],
                  "batch_size": s.gen_batch, "prompt_len": prompt.shape[1], "new_tokens": s.gen_new_tokens,
                  "seq_len": prompt.shape[1] + s.gen_new_tokens, "dtype": setup.dtype, "decoding": "greedy",
                  "timed_reps": {"cached": max(s.gen_reps, 3), "uncached": s.gen_reps},
                  "tokens_per_s": "batch x new tokens / generate() wall time, prefill included"},
        "models": results,
        "targets": [{"name": "MDU E-Branchformer cached tokens/s / base cached", "value": value,
                     "target": f">= {TARGET}", "pass": value >= TARGET}],
    }
