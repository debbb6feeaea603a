"""Lever 2 of issue 20: padding-free packed batches (`ASRCollator(pack=True)`: position ids restarting at each
example, no attention mask).

One length-varied ASR batch (speech units and transcript lengths drawn at random, seeded), trained three ways with
the same model and AdamW, logits at labels only:
    padded       right padding to the longest example, attention mask;
    packed       one row, transformers' DataCollatorWithFlattening layout (what varlen flash attention wants);
    packed rows  rows of at most twice the longest example's length (`pack_length`, first-fit decreasing, each
                 row filled up with one pad example): SDPA / eager attention is dense per row, so one long row
                 pays (sum of lengths)^2 where rows pay rows x row length^2; rows of one longest example would
                 leave much of the padding (first-fit cannot fill them).
The model keeps packed examples apart (tests/test_levers.py: same logits and loss as padded), so what differs is
the padding (and the attention shape). Tokens/s = real (non-padding) tokens / median step time; the layouts
alternate step by step so that load on a shared machine hits them alike.
Target (issue 20): packed >= 1.3x the padded batch's tokens/s.
"""

import torch

from training.collator import pack_features

from .common import BenchSetup, load_base, targets_md, time_round_robin, upscale

TARGET = 1.3
# examples per batch, speech units per example (min, max), transcript tokens (min, max)
SHAPES = {"quick": (4, (10, 60), (3, 10)), "full": (8, (30, 200), (6, 30)), "cuda": (16, (100, 1000), (10, 60))}


def length_varied_examples(config, batch: int, units: tuple, transcript: tuple, seed=0) -> list[dict]:
    """ASR examples `[speech_start] units [speech_end] transcript [eos]`, labels on transcript + eos, random lengths."""
    g = torch.Generator().manual_seed(seed)
    eos = config.eos_token_id if config.eos_token_id is not None else 2
    examples = []
    for _ in range(batch):
        n_units = int(torch.randint(units[0], units[1] + 1, (1,), generator=g))
        n_text = int(torch.randint(transcript[0], transcript[1] + 1, (1,), generator=g))
        u = torch.randint(config.speech_token_start, config.vocab_size, (n_units,), generator=g).tolist()
        t = torch.randint(3, config.text_vocab_size, (n_text,), generator=g).tolist()
        ids = [config.speech_start_token_id] + u + [config.speech_end_token_id] + t + [eos]
        examples.append({"input_ids": ids, "labels": [-100] * (n_units + 2) + t + [eos]})
    return examples


def padded_batch(examples, pad_id: int, device) -> dict:
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def packed_batch(examples, device, pack_length=None, pad_id=0) -> dict:
    return {k: v.to(device) for k, v in pack_features(examples, pack_length, pad_id).items()}


def run(setup: BenchSetup, progress=print) -> dict:
    s = setup.sizes
    shape = SHAPES["quick" if setup.quick else "cuda" if setup.device == "cuda" else "full"]
    base = load_base(setup)
    results, models = {}, {}
    for layer_type in ("transformer", "e_branchformer"):
        model = upscale(base, setup, layer_type).train()
        model.config.logits_at_labels_only = True
        models[layer_type] = (model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5))
    config = models["transformer"][0].config
    examples = length_varied_examples(config, shape[0], shape[1], shape[2], seed=setup.seed)
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    batches = {"padded": padded_batch(examples, pad, setup.device), "packed": packed_batch(examples, setup.device),
               "packed rows": packed_batch(examples, setup.device, 2 * max(len(e["input_ids"]) for e in examples), pad)}
    real_tokens = sum(len(e["input_ids"]) for e in examples)
    computed = {k: b["input_ids"].numel() for k, b in batches.items()}

    def step(model, optimizer, batch):
        def fn():
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return fn

    fns = {f"{lt}/{layout}": step(m, opt, batches[layout]) for lt, (m, opt) in models.items() for layout in batches}
    reps = max(s.steps, 3)
    progress(f"  packing: {len(fns)} step kinds in turn, {reps} rounds ({real_tokens} real tokens, "
             f"{computed['padded']} padded) ...")
    timed = time_round_robin(fns, setup.device, s.warmup, reps)
    for lt in models:
        row = {}
        for layout in batches:
            median, times = timed[f"{lt}/{layout}"]
            row[layout] = {"step_time_s": median, "step_times_s": times, "tokens_per_s": real_tokens / median,
                           "computed_tokens": computed[layout]}
            progress(f"    MDU {lt}, {layout}: {median:.3f} s/step, {real_tokens / median:.0f} tokens/s")
        row["speedup"] = {layout: row[layout]["tokens_per_s"] / row["padded"]["tokens_per_s"]
                          for layout in ("packed", "packed rows")}
        results[lt] = row
    return {
        "setup": {"model": setup.base_name, "dtype": setup.dtype, "examples": shape[0], "speech_units": list(shape[1]),
                  "transcript_tokens": list(shape[2]), "real_tokens": real_tokens,
                  "padded_shape": list(batches["padded"]["input_ids"].shape),
                  "packed_rows_shape": list(batches["packed rows"]["input_ids"].shape),
                  "padding_fraction": 1 - real_tokens / computed["padded"], "warmup_steps": s.warmup,
                  "timed_steps": reps, "attention": "sdpa (block-diagonal causal mask from the position ids)",
                  "logits": "at labels only"},
        "models": results,
        "targets": [{"name": f"MDU {lt}: {layout} / padded tokens/s", "value": results[lt]["speedup"][layout],
                     "target": f">= {TARGET}", "pass": results[lt]["speedup"][layout] >= TARGET}
                    for lt in results for layout in ("packed", "packed rows")],
    }


def to_markdown(sec: dict, hw_line: str) -> str:
    s = sec["setup"]
    lines = ["## Lever: padding-free packed batches (`ASRCollator(pack=True)`)", "",
             f"_hardware: {hw_line}; model: {s['model']}; {s['examples']} ASR examples, {s['speech_units'][0]}-"
             f"{s['speech_units'][1]} speech units + {s['transcript_tokens'][0]}-{s['transcript_tokens'][1]} "
             f"transcript tokens each: {s['real_tokens']} real tokens, padded to {s['padded_shape'][0]} x "
             f"{s['padded_shape'][1]} ({100 * s['padding_fraction']:.0f}% padding), packed rows "
             f"{s['packed_rows_shape'][0]} x {s['packed_rows_shape'][1]}; {s['dtype']}; AdamW; logits at "
             f"labels only; {s['attention']}; median of {s['timed_steps']} steps after {s['warmup_steps']} warm-up, "
             "layouts alternating_", "",
             "| model | layout | step time (s) | spread (s) | real tokens/s | × padded |",
             "|---|---|---:|---|---:|---:|"]
    for lt, row in sec["models"].items():
        for layout in ("padded", "packed", "packed rows"):
            r = row[layout]
            x = 1.0 if layout == "padded" else row["speedup"][layout]
            lines.append(f"| MDU {lt} | {layout} | {r['step_time_s']:.3f} | {min(r['step_times_s']):.2f}-"
                         f"{max(r['step_times_s']):.2f} | {r['tokens_per_s']:.0f} | {x:.2f}× |")
    lines.append("")
    lines += targets_md(sec["targets"])
    return "\n".join(lines + [""])
