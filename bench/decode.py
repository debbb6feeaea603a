"""Lever 3 of issue 20: decoding without host syncs, with a dynamic and a static cache (and, with `compile`,
torch.compile of the decoding step through transformers' CompileConfig).

Greedy generation after a speech prompt (the base gets a random text prompt of the same length), exactly N new
tokens. Decoding tokens/s = batch x (N - 1) / (time of generate(N) - time of generate(1)): prefill left out, since
this lever is about the decoding steps; generate(N) tokens/s with prefill is recorded too. Every variant is timed
in turn (round robin), each ratio is to the base model with the same cache kind, measured in the same run.

Host reads per decoding step: tensor values read back to Python by our model code (bool(t), int(t), t.item(), ...;
each a host sync on a GPU) during one-token decoding steps after a prefill, counted by wrapping those torch.Tensor
methods. `generate` passes `decode_text_only=True` when it suppresses every speech id (the saved generation config
does); with speech ids allowed the E-Branchformer forward reads one flag per step. On a CPU a sync costs nothing, so
the CPU timings cannot show this lever's gain; the counts can.
Target (issue 20): cached decoding >= 0.78x the base's tokens/s, both layer types.
"""

import sys

import torch

from .common import BenchSetup, load_base, model_size, speech_prompt, targets_md, text_batch, time_round_robin, upscale

TARGET = 0.78
MODELS = {"base": "base Llama", "mdu_transformer": "MDU Transformer", "mdu_e_branchformer": "MDU E-Branchformer"}
NEW_TOKENS = {"quick": 8, "full": 32, "cuda": 128}
READS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero", "cpu", "numpy")


def host_reads_per_step(model, prompt, decode_text_only: bool, steps: int = 4) -> float:
    """Tensor reads back to Python from modeling_mdu files per one-token decoding step (dynamic cache)."""
    from transformers.cache_utils import DynamicCache

    calls = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            if "modeling_mdu" in sys._getframe(1).f_code.co_filename:
                calls.append(name)
            return original(self, *args, **kwargs)
        return counted

    batch = prompt.shape[0]
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        mask = torch.ones(batch, prompt.shape[1] + steps, dtype=torch.long, device=prompt.device)
        model(prompt, past_key_values=cache, attention_mask=mask[:, : prompt.shape[1]], use_cache=True)
        token = torch.full((batch, 1), 5, device=prompt.device)
        try:
            for name in READS:
                setattr(torch.Tensor, name, wrap(name, originals[name]))
            for t in range(steps):
                n = prompt.shape[1] + t + 1
                position_ids = torch.full((batch, 1), n - 1, device=prompt.device)
                model(token, past_key_values=cache, attention_mask=mask[:, :n], position_ids=position_ids,
                      use_cache=True, decode_text_only=decode_text_only)
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)
    return len(calls) / steps


def _generate_fn(model, input_ids, new_tokens: int, cache_kind: str, compile_config=None):
    mask = torch.ones_like(input_ids)
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else model.config.eos_token_id
    extra = {"cache_implementation": "static"} if cache_kind != "dynamic" else {}
    if cache_kind == "static+compile":
        extra["compile_config"] = compile_config

    @torch.inference_mode()
    def gen():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad, **extra)
        assert out.shape[1] - input_ids.shape[1] == new_tokens
    return gen


def run(setup: BenchSetup, progress=print, compile: bool = False) -> dict:
    s = setup.sizes
    n = NEW_TOKENS["quick" if setup.quick else "cuda" if setup.device == "cuda" else "full"]
    base = load_base(setup)
    models = {"base": base, "mdu_transformer": upscale(base, setup, "transformer").eval(),
              "mdu_e_branchformer": upscale(base, setup, "e_branchformer").eval()}
    prompt = speech_prompt(models["mdu_transformer"].config, s.gen_batch, s.gen_prompt_units, setup.device, setup.seed)
    text_prompt = text_batch(base.config.vocab_size, s.gen_batch, prompt.shape[1], setup.device, setup.seed)
    cache_kinds = ["dynamic", "static"]
    compile_config = None
    if compile:
        from transformers import CompileConfig

        compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead" if setup.device == "cuda" else "default")
        compile_config._compile_all_devices = True  # transformers compiles on accelerators only unless told
        cache_kinds.append("static+compile")
    fns = {}
    for name, model in models.items():
        ids = text_prompt if name == "base" else prompt
        for kind in cache_kinds:
            for length in (1, n):
                fns[f"{name}/{kind}/{length}"] = _generate_fn(model, ids, length, kind, compile_config)
    reps = max(s.gen_reps, 3)
    progress(f"  decode: {len(fns)} generate calls in turn ({len(models)} models x {cache_kinds} x 1 and {n} new "
             f"tokens), {reps} rounds ...")
    for fn in fns.values():
        fn()  # warm-up (and compilation)
    timed = time_round_robin(fns, setup.device, 0, reps)
    results = {}
    for name, model in models.items():
        row = {"model": MODELS[name], **model_size(model)}
        for kind in cache_kinds:
            t1, tn = timed[f"{name}/{kind}/1"], timed[f"{name}/{kind}/{n}"]
            decode_s = tn[0] - t1[0]
            row[kind] = {"decode_tokens_per_s": s.gen_batch * (n - 1) / decode_s, "decode_time_s": decode_s,
                         "generate_tokens_per_s": s.gen_batch * n / tn[0], "times_1_s": t1[1], f"times_{n}_s": tn[1]}
        if name != "base":
            row["host_reads_per_step"] = {"text steps (generate's default)": host_reads_per_step(model, prompt, True),
                                          "speech ids allowed": host_reads_per_step(model, prompt, False)}
        results[name] = row
    for row in results.values():
        row["ratio_to_base"] = {kind: row[kind]["decode_tokens_per_s"] / results["base"][kind]["decode_tokens_per_s"]
                                for kind in cache_kinds}
        progress(f"    {row['model']}: " + ", ".join(f"{k} {row[k]['decode_tokens_per_s']:.1f} tokens/s "
                                                       f"({row['ratio_to_base'][k]:.2f}x)" for k in cache_kinds))
    targets = [{"name": f"{MODELS[m]} cached decoding tokens/s / base ({kind} cache)",
                "value": results[m]["ratio_to_base"][kind], "target": f">= {TARGET}",
                "pass": results[m]["ratio_to_base"][kind] >= TARGET}
               for m in ("mdu_transformer", "mdu_e_branchformer") for kind in cache_kinds]
    return {
        "setup": {"model": setup.base_name, "dtype": setup.dtype, "batch_size": s.gen_batch,
                  "prompt_len": prompt.shape[1], "new_tokens": n, "cache_kinds": cache_kinds, "timed_reps": reps,
                  "decoding": "greedy",
                  "tokens_per_s": "batch x (N - 1) / (generate(N) - generate(1)) wall time: decoding steps only"},
        "models": results,
        "targets": targets,
    }


def to_markdown(sec: dict, hw_line: str) -> str:
    s = sec["setup"]
    kinds = s["cache_kinds"]
    lines = ["## Lever: decoding without host syncs; dynamic vs static cache", "",
             f"_hardware: {hw_line}; model: {s['model']}; batch {s['batch_size']}; prompt {s['prompt_len']} tokens, "
             f"{s['new_tokens']} new tokens, greedy; {s['dtype']}; tokens/s = {s['tokens_per_s']}; median of "
             f"{s['timed_reps']} rounds, every variant in turn_", "",
             "| model | " + " | ".join(f"{k}: decoding tokens/s | × base" for k in kinds) +
             " | host reads per decoding step (text steps / speech allowed) |",
             "|---|" + "---:|---:|" * len(kinds) + "---|"]
    for row in sec["models"].values():
        cells = " | ".join(f"{row[k]['decode_tokens_per_s']:.1f} | {row['ratio_to_base'][k]:.2f}×" for k in kinds)
        reads = row.get("host_reads_per_step")
        reads = " / ".join(f"{v:g}" for v in reads.values()) if reads else "–"
        lines.append(f"| {row['model']} | {cells} | {reads} |")
    lines.append("")
    lines += targets_md(sec["targets"])
    return "\n".join(lines + [""])
