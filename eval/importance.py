"""Layer-wise text importance (arXiv 2509.23755): first-order Taylor score |θ · ∂L_text/∂θ| summed per decoder layer.

    python -m eval.importance --base cache/base/SmolLM2-135M-Instruct [--adapted outputs/full] [--max_texts 32]

L_text is the mean next-token loss over all tokens of the texts, so the gradient (and the score) does not depend
on the batch size. The per-layer sums, normalised to sum to 1 across the layers, are the layer-wise importance
distribution. For two checkpoints (base, adapted) the tool reports the shift between their distributions
(Jensen–Shannon divergence, L1), plots both, and writes `importance.json` with the base's `importance` and
`lr_multipliers` (1 − λ·(I − Imin)/(Imax − Imin), λ = 0.4) that `train_hf.py --method layerwise_lr` reads.
For an MDU model the base layers and the added layers are reported separately, indexed by stack position.

A control for the shift's sampling noise: the base against itself on other texts,

    python -m eval.importance --base B --adapted B --adapted_text_offset 64 --max_texts 64

(the adapted side reads texts 64..127 instead of 0..63; grid.py reports it as the base row of its shift table).
"""

import argparse
import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from training.layerwise_lr import lr_multipliers  # noqa: F401  (one formula, shared with train_hf)

from .rundir import make_run_dir, write_json


def decoder_layers(model):
    """The decoder layers of a causal LM (plain, MDU or PEFT-wrapped)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder().layers


def _chunks(model, tokenizer, texts, max_length):
    """Token ids per text, split (not truncated) into pieces of at most `max_length` tokens."""
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i} is empty or not a string")
        ids = tokenizer(text)["input_ids"]
        out += [ids[s : s + max_length] for s in range(0, len(ids), max_length) if len(ids[s : s + max_length]) > 1]
    if not out:
        raise ValueError("no text with at least 2 tokens")
    return out


def layer_importance(model, tokenizer, texts, batch_size: int = 8, max_length: int = 256, normalize: bool = True) -> list[float]:
    """Σ_{θ in layer} |θ · ∂L/∂θ| for every decoder layer of `model` (stack order); normalised to sum 1 by default.
    Parameters are scored whether or not they require grad; requires_grad flags are restored afterwards."""
    layers = list(decoder_layers(model))
    params = [[p for p in layer.parameters()] for layer in layers]
    flat = [p for group in params for p in group]
    flags = {p: p.requires_grad for p in model.parameters()}
    device = next(model.parameters()).device
    pieces = _chunks(model, tokenizer, texts, max_length)
    total = sum(len(c) - 1 for c in pieces)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in flat]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in flat:
            p.requires_grad_(True)
        with torch.enable_grad():
            for b in tqdm(range(0, len(pieces), batch_size), desc="importance", unit="batch", leave=False):
                batch = pieces[b : b + batch_size]
                width = max(len(c) for c in batch)
                ids = torch.tensor([c + [pad] * (width - len(c)) for c in batch], device=device)
                mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in batch], device=device)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
                loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum") / total
                for acc, g in zip(grads, torch.autograd.grad(loss, flat, allow_unused=True)):
                    if g is not None:
                        acc += g.float()
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
    scores, k = [], 0
    for group in params:
        scores.append(sum((p.detach().float() * grads[k + j]).abs().sum().item() for j, p in enumerate(group)))
        k += len(group)
    return _normalise(scores) if normalize else scores


def _normalise(values):
    s = sum(values)
    if s <= 0:
        raise ValueError("all layer importances are zero (no gradient reached the layers)")
    return [v / s for v in values]


def split_importance(model, importance: list[float]) -> dict:
    """For an MDU model: {"base": [...], "added": [...], "base_positions", "added_positions"}; else all base."""
    added = list(getattr(model.config, "layer_is_added", None) or [False] * len(importance))
    if len(added) != len(importance):
        raise ValueError(f"{len(importance)} importances for {len(added)} layers")
    return {"base": [v for v, a in zip(importance, added) if not a], "added": [v for v, a in zip(importance, added) if a],
            "base_positions": [i for i, a in enumerate(added) if not a], "added_positions": [i for i, a in enumerate(added) if a]}


def importance_shift(a: list[float], b: list[float]) -> dict:
    """Shift between two layer distributions (each renormalised): Jensen–Shannon divergence (base 2, in [0, 1]),
    L1 distance (in [0, 2]) and the layer that moved most."""
    if len(a) != len(b):
        raise ValueError(f"distributions over {len(a)} and {len(b)} layers cannot be compared")
    p, q = _normalise(a), _normalise(b)
    m = [(x + y) / 2 for x, y in zip(p, q)]
    kl = lambda x, y: sum(xi * math.log2(xi / yi) for xi, yi in zip(x, y) if xi > 0)
    diffs = [y - x for x, y in zip(p, q)]
    return {"js_divergence": 0.5 * kl(p, m) + 0.5 * kl(q, m), "l1": sum(abs(d) for d in diffs),
            "max_shift_layer": max(range(len(diffs)), key=lambda i: abs(diffs[i])), "per_layer_shift": diffs}


def plot_importance(distributions: dict, path, added: dict | None = None, title: str = "Layer-wise text importance") -> Path:
    """Line plot of named per-base-layer distributions; `added` = {"positions": base-layer index each added layer
    follows, "values": importance} is drawn as markers between base layers. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, values in distributions.items():
        ax.plot(range(len(values)), values, marker="o", ms=3, label=name)
    if added and added.get("values"):
        ax.scatter([x + 0.5 for x in added["positions"]], added["values"], marker="^", color="C3", label="added layers", zorder=3)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("base layer (added layers sit between)")
    ax.set_ylabel("share of |θ·∂L/∂θ|")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
    return path


def plot_importance_shift(runs: dict, path, title: str = "Text-importance shift against the base (arXiv 2509.23755)") -> Path:
    """One line per run: the change of each base layer's share of text importance (adapted − base, points; the
    adapted model's base layers renormalised), and below it each run's added layers' share of its whole importance
    at the base layer they follow. `runs`: {name: {"per_layer_shift": [...], "added_follow": [...],
    "added_importance": [...], "text_offset": int}}; a run with a text_offset (the control) is drawn grey and
    dashed. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    has_added = any(r.get("added_importance") for r in runs.values())
    fig, axes = plt.subplots(2 if has_added else 1, 1, figsize=(9, 6.5 if has_added else 4), sharex=True, squeeze=False)
    ax = axes[0][0]
    for k, (name, r) in enumerate(runs.items()):
        shift = [100 * d for d in r["per_layer_shift"]]
        control = bool(r.get("text_offset"))  # the base against itself on other texts (eval.importance control)
        style = dict(color="0.5", ls="--") if control else dict(color=f"C{k % 10}")
        ax.plot(range(len(shift)), shift, marker="o", ms=3, label=name, **style)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("Δ share of base layer (points)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    if has_added:
        low = axes[1][0]
        for k, (name, r) in enumerate(runs.items()):
            if r.get("added_importance"):
                low.scatter([x + 0.5 for x in r["added_follow"]], [100 * v for v in r["added_importance"]],
                            marker="^", color=f"C{k % 10}", label=name)
        low.set_ylabel("added layer's share (%)")
        low.legend(fontsize=7, ncol=2)
    axes[-1][0].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[-1][0].set_xlabel("base layer (an added layer is drawn after the base layer it follows)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
    return path


def default_texts(n: int, offset: int = 0) -> list[str]:
    """gensim's lee_background.cor news articles (general English text; not lee.cor, the held-out eval text), the
    `n` from line `offset` on."""
    import gensim

    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    return [t.strip() for t in path.read_text(encoding="latin-1").splitlines() if t.strip()][offset: offset + n]


def read_texts(path: str | None, n: int, offset: int = 0) -> list[str]:
    """`n` non-empty texts from line `offset` of `path` (one a line), or of the default texts; fewer is an error."""
    if path:
        texts = [t for t in Path(path).read_text().splitlines() if t.strip()][offset: offset + n]
    else:
        texts = default_texts(n, offset)
    if not texts or (offset and len(texts) < n):
        raise ValueError(f"{path or 'lee_background.cor'}: {len(texts)} texts from line {offset} on, {n} wanted")
    return texts


def analyse(model, tokenizer, texts, batch_size=8, max_length=256) -> dict:
    importance = layer_importance(model, tokenizer, texts, batch_size, max_length)
    return {"all_layers": importance, **split_importance(model, importance)}


def added_follow(base_positions: list[int], added_positions: list[int]) -> list[int]:
    """For each added layer (stack position), the index of the base layer it follows (-1: before the first)."""
    return [sum(1 for b in base_positions if b < pos) - 1 for pos in added_positions]


def reuse_base_importance(path, base: str, num_texts: int, max_length: int) -> dict:
    """The base's distribution from an earlier importance.json, after checking it was measured on the same texts."""
    saved = json.loads(Path(path).read_text())
    for key, want in (("num_texts", num_texts), ("max_length", max_length)):
        if saved.get(key) != want:
            raise ValueError(f"{path}: base importance measured with {key}={saved.get(key)}, this run uses {want}")
    if Path(saved.get("base_model", "")).resolve() != Path(base).resolve():
        raise ValueError(f"{path}: base importance of {saved.get('base_model')}, not of {base}")
    return {"base": list(saved["importance"])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="base (text) model folder")
    p.add_argument("--adapted", default=None, help="adapted checkpoint (MDU, full, LoRA) to compare with")
    p.add_argument("--base_importance", default=None,
                   help="importance.json of an earlier run on the same base and texts: reused, not recomputed")
    p.add_argument("--texts", default=None, help="a .txt file (one text a line); default gensim lee_background.cor")
    p.add_argument("--max_texts", type=int, default=32)
    p.add_argument("--adapted_text_offset", type=int, default=None,
                   help="measure --adapted on the texts from this line on instead of the base's (a noise control: "
                        "--adapted = --base); default the same texts")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--lam", type=float, default=0.4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output_dir", default=None, help="default: a new runs/eval/importance-<time> folder")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    from .loading import load_model

    texts = read_texts(a.texts, a.max_texts)
    adapted_texts = texts if a.adapted_text_offset is None else read_texts(a.texts, len(texts), a.adapted_text_offset)
    out = make_run_dir(a.output_dir, "importance", a.overwrite)
    if a.base_importance:
        base = reuse_base_importance(a.base_importance, a.base, len(texts), a.max_length)
    else:
        model, tok = load_model(a.base, device=a.device)
        base = analyse(model, tok, texts, a.batch_size, a.max_length)
        del model
    result = {"importance": base["base"], "lr_multipliers": lr_multipliers(base["base"], a.lam), "lambda": a.lam,
              "base_model": a.base, "num_texts": len(texts), "max_length": a.max_length}
    curves, added = {"base": _normalise(base["base"])}, None
    if a.adapted:
        model, tok = load_model(a.adapted, device=a.device, merge=True)
        adapted = analyse(model, tok, adapted_texts, a.batch_size, a.max_length)
        follows = added_follow(adapted["base_positions"], adapted["added_positions"])
        result.update(adapted_model=a.adapted, adapted_importance=adapted["base"], adapted_added_importance=adapted["added"],
                      adapted_added_positions=adapted["added_positions"], adapted_added_follow=follows,
                      adapted_added_share=sum(adapted["added"]), shift=importance_shift(base["base"], adapted["base"]),
                      adapted_text_offset=a.adapted_text_offset or 0)
        curves["adapted (share of all its layers)"] = adapted["base"]  # analyse() normalises over all layers
        added = {"positions": follows, "values": adapted["added"]}
    write_json(out / "importance.json", result, a.overwrite)
    plot_importance(curves, out / "importance.png", added)
    print(json.dumps({k: result[k] for k in ("lr_multipliers", "shift") if k in result}, indent=1)[:2000])
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()
