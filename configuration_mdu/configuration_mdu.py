"""MDUSpeechConfig: a LlamaConfig that also says where new layers sit and how the vocabulary grows.

The up-scaled stack has `num_hidden_layers = num_base_layers + len(added_after)` layers, so caches, masks and
everything else in transformers that reads `num_hidden_layers` see the real depth.

Vocabulary layout (ids):
    [0, text_vocab_size)                              the base model's text tokens (frozen rows)
    text_vocab_size, text_vocab_size + 1              <|speech_start|>, <|speech_end|>
    [speech_token_start, speech_token_start + S)      speech units 0..S-1 (S = speech_vocab_size)
"""

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

try:  # flat trust_remote_code checkpoint
    from .placement import PLACEMENTS, compute_added_after, num_added_from_ratio, validate_added_after
except ImportError:  # source tree: configuration_mdu/ is a package
    from configuration_mdu.placement import PLACEMENTS, compute_added_after, num_added_from_ratio, validate_added_after

LAYER_TYPES = ("transformer", "e_branchformer")
NUM_SPEECH_SPECIAL_TOKENS = 2  # <|speech_start|>, <|speech_end|>


@strict
class MDUSpeechConfig(LlamaConfig):
    r"""
    Args (on top of [`LlamaConfig`]):
        num_base_layers (`int`): depth of the frozen text LLM. Defaults to `num_hidden_layers` as passed.
        text_vocab_size (`int`): vocabulary of the text LLM. Defaults to `vocab_size` as passed.
        placement (`str`): interleaved | bottom | middle | top | sandwich; used when `added_after` is not given.
        added_ratio (`float`): new layers as a fraction of `num_base_layers` (0.25 = the paper's 25%).
        num_added_layers (`int`): number of new layers; overrides `added_ratio`. 0 gives the vocabulary
            extension alone (the full fine-tuning and LoRA baselines).
        added_after (`list[int]`): original-layer indices; new layer j follows and copies layer `added_after[j]`.
        layer_type (`str`): transformer | e_branchformer.
        cgmlp_units (`int`): E-Branchformer cgMLP width U (default 6 * hidden_size, ESPnet's 3072 at d = 512).
        cgmlp_conv_kernel, merge_conv_kernel (`int`): causal depthwise conv kernels (ESPnet default 31).
        speech_vocab_size (`int`): number of discrete speech units.
        text_bypass (`bool`): sequences without speech tokens skip the added layers (bitwise the base model).
        logits_at_labels_only (`bool`): when `labels` are given, compute logits only where a label needs them.
    """

    model_type = "mdu_speech"

    num_base_layers: int | None = None
    text_vocab_size: int | None = None
    placement: str = "interleaved"
    added_ratio: float = 0.25
    num_added_layers: int | None = None
    added_after: list[int] | None = None
    layer_type: str = "transformer"
    cgmlp_units: int | None = None
    cgmlp_conv_kernel: int = 31
    merge_conv_kernel: int = 31
    speech_vocab_size: int = 1024
    speech_token_start: int | None = None
    speech_start_token_id: int | None = None
    speech_end_token_id: int | None = None
    text_bypass: bool = False
    logits_at_labels_only: bool = False
    number_of_conv_states: int = 2

    def __post_init__(self, **kwargs):
        if self.num_base_layers is None:
            self.num_base_layers = self.num_hidden_layers
        if self.text_vocab_size is None:
            self.text_vocab_size = self.vocab_size
        self._resolve_layers()
        self._resolve_vocab()
        if self.cgmlp_units is None:
            self.cgmlp_units = 6 * self.hidden_size
        super().__post_init__(**kwargs)

    def _resolve_layers(self):
        if self.layer_type not in LAYER_TYPES:
            raise ValueError(f"layer_type must be one of {LAYER_TYPES}, got {self.layer_type!r}")
        if self.placement not in PLACEMENTS + ("custom",):
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        for name in ("cgmlp_conv_kernel", "merge_conv_kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cgmlp_units is not None and (self.cgmlp_units < 2 or self.cgmlp_units % 2):
            raise ValueError(f"cgmlp_units must be an even number >= 2 (CSGU splits it in two), got {self.cgmlp_units}")
        L = self.num_base_layers
        if self.added_after is None:
            if self.placement == "custom":
                raise ValueError("placement='custom' needs an explicit added_after list")
            m = self.num_added_layers
            if m is None:
                m = num_added_from_ratio(L, self.added_ratio)
            self.added_after = compute_added_after(L, self.placement, m)
        else:
            self.added_after = validate_added_after(self.added_after, L)
            if self.num_added_layers is not None and self.num_added_layers != len(self.added_after):
                raise ValueError(
                    f"num_added_layers={self.num_added_layers} disagrees with added_after={self.added_after} "
                    f"({len(self.added_after)} layers)"
                )
        self.num_added_layers = len(self.added_after)
        expected = L + self.num_added_layers
        if self.num_hidden_layers not in (L, expected):
            raise ValueError(
                f"num_hidden_layers={self.num_hidden_layers} matches neither num_base_layers={L} nor "
                f"num_base_layers + len(added_after) = {expected}"
            )
        self.num_hidden_layers = expected
        added_type = "hybrid" if self.layer_type == "e_branchformer" else "full_attention"
        self.layer_types = ["full_attention" if not added else added_type for added in self.layer_is_added]

    def _resolve_vocab(self):
        if self.speech_vocab_size < 0:
            raise ValueError(f"speech_vocab_size must be >= 0, got {self.speech_vocab_size}")
        derived = {
            "speech_start_token_id": self.text_vocab_size,
            "speech_end_token_id": self.text_vocab_size + 1,
            "speech_token_start": self.text_vocab_size + NUM_SPEECH_SPECIAL_TOKENS,
        }
        for name, value in derived.items():
            given = getattr(self, name)
            if given is not None and given != value:
                raise ValueError(f"{name}={given} conflicts with text_vocab_size={self.text_vocab_size} (must be {value})")
            setattr(self, name, value)
        total = self.speech_token_start + self.speech_vocab_size
        if self.vocab_size not in (self.text_vocab_size, total):
            raise ValueError(f"vocab_size={self.vocab_size} must equal text_vocab_size + 2 + speech_vocab_size = {total}")
        self.vocab_size = total

    @property
    def layer_is_added(self) -> list[bool]:
        """For each layer of the up-scaled stack, whether it is a new (trainable) layer."""
        flags = []
        added = set(self.added_after)
        for i in range(self.num_base_layers):
            flags.append(False)
            if i in added:
                flags.append(True)
        return flags

    @property
    def base_layer_positions(self) -> list[int]:
        """Position in the up-scaled stack of each original layer."""
        return [pos for pos, added in enumerate(self.layer_is_added) if not added]

    @property
    def added_layer_positions(self) -> list[int]:
        return [pos for pos, added in enumerate(self.layer_is_added) if added]

    def to_text_config(self) -> LlamaConfig:
        """The LlamaConfig of the frozen base model."""
        own = set(MDUSpeechConfig.__dataclass_fields__) - set(LlamaConfig.__dataclass_fields__)
        d = {k: v for k, v in self.to_dict().items() if k not in own | {"layer_types", "model_type", "auto_map", "architectures"}}
        d.update(num_hidden_layers=self.num_base_layers, vocab_size=self.text_vocab_size)
        return LlamaConfig(**d)


__all__ = ["MDUSpeechConfig"]
