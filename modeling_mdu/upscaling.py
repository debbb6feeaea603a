"""The one place that maps a base model's state dict onto the up-scaled stack, and back.

Base layer i sits at `config.base_layer_positions[i]`; added layer j sits at `config.added_layer_positions[j]`
and starts as a copy of base layer `config.added_after[j]`: every tensor of that layer that the added layer also
has (all of them for an added Transformer layer, the base family's decoder layer class; attention, MLP and norms
for an E-Branchformer layer). Keys follow the `model.layers.<i>.` layout all supported families share.
"""

PREFIX = "model.layers."


def _split(key: str) -> tuple[int, str] | None:
    if not key.startswith(PREFIX):
        return None
    i, rest = key[len(PREFIX) :].split(".", 1)
    return int(i), rest


def base_to_upscaled_keys(config, base_keys, upscaled_keys=None) -> dict[str, str]:
    """{up-scaled key: base key} for every base tensor, plus the copies that seed the added layers (those the
    up-scaled model has, when `upscaled_keys` is given)."""
    base_keys = set(base_keys)
    upscaled_keys = None if upscaled_keys is None else set(upscaled_keys)
    mapping, by_layer = {}, {}
    for key in base_keys:
        split = _split(key)
        if split is None:
            mapping[key] = key
            continue
        i, rest = split
        mapping[f"{PREFIX}{config.base_layer_positions[i]}.{rest}"] = key
        by_layer.setdefault(i, []).append(rest)
    for pos, src in zip(config.added_layer_positions, config.added_after):
        for rest in by_layer.get(src, []):
            own = f"{PREFIX}{pos}.{rest}"
            if upscaled_keys is None or own in upscaled_keys:
                mapping[own] = f"{PREFIX}{src}.{rest}"
    return mapping


def upscaled_to_base_keys(config, base_keys) -> dict[str, str]:
    """{base key: up-scaled key}: the inverse map, original layers only."""
    return {
        base: mdu for mdu, base in base_to_upscaled_keys(config, base_keys).items() if not _is_added_key(config, mdu)
    }


def _is_added_key(config, key: str) -> bool:
    split = _split(key)
    return split is not None and config.layer_is_added[split[0]]
