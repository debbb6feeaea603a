from .configuration_mdu import LAYER_TYPES, MDUSpeechConfig
from .placement import PLACEMENTS, compute_added_after

__all__ = ["MDUSpeechConfig", "compute_added_after", "PLACEMENTS", "LAYER_TYPES"]
