"""Layer-wise learning rates from text importance (arXiv 2509.23755, mitigation 1).

    lr_layer = lr * (1 - lambda * (I_layer - I_min) / (I_max - I_min)),  lambda = 0.4

Layers that matter most for text move least. Importance per base layer comes from a JSON file written by
`eval/importance.py` (`{"importance": [...]}` or directly `{"lr_multipliers": [...]}`) or is computed at start
with `eval.importance.layer_importance(model, tokenizer, texts)`.
"""

import json


def lr_multipliers(importance: list[float], lam: float = 0.4) -> list[float]:
    """1 - lam * min-max-normalised importance; all ones when every layer is equally important."""
    if not importance:
        raise ValueError("importance is empty: need one value per base layer")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"layerwise_lambda must be in [0, 1] (learning rates stay >= 0), got {lam}")
    lo, hi = min(importance), max(importance)
    if hi == lo:
        return [1.0] * len(importance)
    return [1.0 - lam * (i - lo) / (hi - lo) for i in importance]


def load_lr_multipliers(path: str, num_layers: int, lam: float = 0.4) -> list[float]:
    """Read `importance` (turned into multipliers with `lam`) or `lr_multipliers` from a JSON file."""
    with open(path) as f:
        data = json.load(f)
    if "lr_multipliers" in data:
        values = [float(v) for v in data["lr_multipliers"]]
    elif "importance" in data:
        values = lr_multipliers([float(v) for v in data["importance"]], lam)
    else:
        raise ValueError(f"{path}: expected a key 'importance' or 'lr_multipliers', found {sorted(data)}")
    if len(values) != num_layers:
        raise ValueError(f"{path}: {len(values)} values for a model with {num_layers} base layers")
    return values


def compute_lr_multipliers(model, tokenizer, texts: list[str], lam: float = 0.4) -> list[float]:
    """Importance computed now on `texts` by `eval/importance.py` (first-order Taylor |θ·∂L/∂θ| per layer)."""
    try:
        from eval.importance import layer_importance
    except ImportError as e:
        raise ImportError(
            "computing layer importance needs eval/importance.py (layer_importance); pass --importance_file instead"
        ) from e
    return lr_multipliers(list(layer_importance(model, tokenizer, texts)), lam)


def layerwise_param_groups(model, multipliers: list[float], lr: float, trainable_only: bool = True) -> list[dict]:
    """One optimizer group per base layer (named `layer.{i}`, lr = lr * multiplier[i]) plus `other` (lr) for the
    parameters outside the decoder layers (embeddings, final norm, LM head, added layers). Works on a plain MDU model
    and on a PEFT-wrapped one (names are matched on `layers.{position}.`)."""
    config = model.config
    position_to_base = {pos: i for i, pos in enumerate(config.base_layer_positions)}
    if len(multipliers) != len(position_to_base):
        raise ValueError(f"{len(multipliers)} lr multipliers for {len(position_to_base)} base layers")
    groups = {f"layer.{i}": [] for i in range(len(multipliers))}
    groups["other"] = []
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        key = "other"
        if ".layers." in name:
            pos = int(name.split(".layers.", 1)[1].split(".", 1)[0])
            if pos in position_to_base:
                key = f"layer.{position_to_base[pos]}"
        groups[key].append(p)
    out = [{"name": f"layer.{i}", "params": groups[f"layer.{i}"], "lr": lr * m} for i, m in enumerate(multipliers)]
    out.append({"name": "other", "params": groups["other"], "lr": lr})
    return [g for g in out if g["params"]]
