"""Where the added layers go: one pure function from (base depth, placement, count) to `added_after`.

`added_after[j] = i` means: added layer j follows original layer i and starts as a copy of it.
"""

import math

PLACEMENTS = ("interleaved", "bottom", "middle", "top", "sandwich")


def num_added_from_ratio(num_base_layers: int, added_ratio: float) -> int:
    """25% of 32 layers is 8; rounds half up (25% of 30 is 7.5 -> 8)."""
    if not 0 < added_ratio <= 1:
        raise ValueError(f"added_ratio must be in (0, 1], got {added_ratio}")
    return max(1, math.floor(num_base_layers * added_ratio + 0.5))


def compute_added_after(num_base_layers: int, placement: str, num_added_layers: int) -> list[int]:
    """Original-layer indices (0-based, sorted, unique) that each get one new layer right after them.

    interleaved: spread evenly, one new layer after every (L/m)-th original layer (after 3, 7, ..., 31 for 8 into 32).
    bottom / middle / top: one new layer after each of m consecutive original layers in that region.
    sandwich: half at the bottom, the other half (the larger half when m is odd) at the top.
    """
    L, m = num_base_layers, num_added_layers
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if m < 0:
        raise ValueError(f"num_added_layers must be >= 0, got {m}")
    if m > L:
        raise ValueError(
            f"num_added_layers={m} is more than the {L} positions available (at most one new layer after each "
            f"of the {L} original layers)"
        )
    if m == 0:
        return []
    if placement == "interleaved":
        return [(j + 1) * L // m - 1 for j in range(m)]
    if placement == "bottom":
        return list(range(m))
    if placement == "top":
        return list(range(L - m, L))
    if placement == "middle":
        start = (L - m) // 2
        return list(range(start, start + m))
    bottom = m // 2
    return list(range(bottom)) + list(range(L - (m - bottom), L))


def validate_added_after(added_after, num_base_layers: int) -> list[int]:
    added_after = [int(i) for i in added_after]
    for i in added_after:
        if not 0 <= i < num_base_layers:
            raise ValueError(f"added_after contains {i}, out of range for a base with {num_base_layers} layers (0..{num_base_layers - 1})")
    if len(set(added_after)) != len(added_after):
        raise ValueError(f"added_after has repeated indices {added_after}; each original layer takes at most one new layer")
    return sorted(added_after)
