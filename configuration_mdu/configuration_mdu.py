"""MDUSpeechConfig: the base LLM's own config fields, flat, plus where new layers sit and how the vocabulary grows.

One config class for every base family (`base_model_type`: llama, mistral, qwen2, qwen3, gemma3_text). It subclasses
LlamaConfig, whose fields every supported family shares, and keeps the family's other fields (q/k norms need none;
Gemma's `query_pre_attn_scalar`, `sliding_window`, ... ) as plain attributes, so `config.hidden_size` & co. read as on
any causal LM config and checkpoints made before the other families (Llama only, no `base_model_type`) load as
before. `to_text_config()` gives the base's own config class back.

The up-scaled stack has `num_hidden_layers = num_base_layers + len(added_after)` layers, so caches, masks and
everything else in transformers that reads `num_hidden_layers` see the real depth. `layer_types` are the cache
layer types: the base's attention type per layer (full_attention / sliding_attention), an added Transformer layer
the type of the layer it copies, an E-Branchformer layer "hybrid" / "hybrid_sliding" (attention + conv states);
`attention_types` are the attention types alone.

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
ATTENTION_TYPES = ("full_attention", "sliding_attention")
NUM_SPEECH_SPECIAL_TOKENS = 2  # <|speech_start|>, <|speech_end|>


def base_attention_types(config) -> list[str]:
    """A base config's attention type per layer: its `layer_types`, or, for families without them (Llama, Mistral),
    sliding_attention everywhere when the config has a window (Mistral's masks and caches do the same)."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return list(layer_types)
    sliding = getattr(config, "sliding_window", None) is not None
    return ["sliding_attention" if sliding else "full_attention"] * config.num_hidden_layers


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
        base_model_type (`str`): the base's family (llama | mistral | qwen2 | qwen3 | gemma3_text).
        base_layer_types (`list[str]`): the base's attention type per layer (full_attention | sliding_attention).
        logits_at_labels_only (`bool`): when `labels` are given, compute logits only where a label needs them.
        recompute_frozen_segments (`bool`): in training, run each run of consecutive frozen base layers under one
            non-reentrant activation checkpoint: only the segment's input is kept for backward, its activations are
            recomputed there (the frozen weights need no gradient, only the input gradient flows through them).
        fp8_frozen_linears (`bool`): the linears of the frozen base layers (q/k/v/o, gate/up/down) compute their
            forward and input-gradient matmuls in FP8 (float8_e4m3fn with row-wise scales, `torch._scaled_mm`);
            needs a GPU with FP8 matmuls (compute capability >= 8.9: Ada, Hopper) or a CPU. Off by default: a
            numerics trade-off for speed on Hopper (README).
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
    recompute_frozen_segments: bool = False
    fp8_frozen_linears: bool = False
    number_of_conv_states: int = 2
    base_model_type: str = "llama"
    base_layer_types: list[str] | None = None

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

    def convert_rope_params_to_dict(self, **kwargs):
        """RoPE per attention type (Gemma 3: {"full_attention": {...}, "sliding_attention": {...}}) keeps its
        defaults inside each entry, for every transformers release. LlamaConfig's own conversion in 5.14-5.17 puts
        `rope_theta` next to the entries (5.17's validation then reads it as one more attention type: "'float'
        object has no attribute 'get'") and standardises per entry of `layer_types`, whose E-Branchformer cache
        types ("hybrid") have no entry (KeyError). Flat RoPE parameters (every other family) go the stock way."""
        params = self.rope_parameters
        if not (isinstance(params, dict) and params and set(params) <= set(ATTENTION_TYPES)):
            return super().convert_rope_params_to_dict(**kwargs)
        rope_scaling = kwargs.pop("rope_scaling", None)
        if rope_scaling and params.get("full_attention") is not None:  # as Gemma3TextConfig: global layers scale
            params["full_attention"].update(rope_scaling)
        theta = kwargs.pop("rope_theta", None)
        for entry in params.values():
            if entry is None:  # saved as None: no RoPE for that attention type
                continue
            entry.setdefault("rope_type", entry.get("type", "default"))
            if theta is not None:
                entry.setdefault("rope_theta", theta)
            if entry["rope_type"] in ("llama3", "yarn", "longrope"):
                entry.setdefault("original_max_position_embeddings", self.max_position_embeddings)
        return kwargs

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
        if self.base_layer_types is None:  # checkpoints from before base_model_type: Llama, full attention
            self.base_layer_types = ["full_attention"] * L
        if len(self.base_layer_types) != L or set(self.base_layer_types) - set(ATTENTION_TYPES):
            raise ValueError(f"base_layer_types must be {L} of {ATTENTION_TYPES}, got {self.base_layer_types}")
        attention = []
        for i in range(L):
            attention.append(self.base_layer_types[i])
            attention += [self.base_layer_types[i]] * self.added_after.count(i)
        hybrid = {"full_attention": "hybrid", "sliding_attention": "hybrid_sliding"}
        ebf = self.layer_type == "e_branchformer"
        self.layer_types = [hybrid[t] if added and ebf else t for t, added in zip(attention, self.layer_is_added)]

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

    @classmethod
    def from_base_config(cls, base_config, **mdu_kwargs) -> "MDUSpeechConfig":
        """The config of `base_config`'s model up-scaled with `mdu_kwargs` (placement, layer_type, ...): the base's
        fields, its family and its attention type per layer."""
        fields = base_config.to_dict()
        base_model_type = fields.pop("model_type")
        fields.pop("layer_types", None)
        for key in ("architectures", "auto_map", "quantization_config", "transformers_version", "dtype"):
            fields.pop(key, None)
        if mdu_kwargs.get("added_after") is not None:
            mdu_kwargs["placement"] = "custom"
        return cls(**fields, base_model_type=base_model_type, base_layer_types=base_attention_types(base_config),
                   **mdu_kwargs)

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

    @property
    def attention_types(self) -> list[str]:
        """Attention type (full_attention / sliding_attention) of every layer of the up-scaled stack."""
        return [t.replace("hybrid_sliding", "sliding_attention").replace("hybrid", "full_attention") for t in self.layer_types]

    def to_text_config(self):
        """The base model's own config (its family's class: LlamaConfig, Qwen3Config, ...)."""
        from transformers import AutoConfig

        own = set(MDUSpeechConfig.__dataclass_fields__) - set(LlamaConfig.__dataclass_fields__)
        drop = own | {"layer_types", "model_type", "auto_map", "architectures", "custom_pipelines", "transformers_version"}
        d = {k: v for k, v in self.to_dict().items() if k not in drop}
        d.update(num_hidden_layers=self.num_base_layers, vocab_size=self.text_vocab_size)
        config_class = type(AutoConfig.for_model(self.base_model_type))
        if "layer_types" in getattr(config_class, "__dataclass_fields__", {}):
            d["layer_types"] = list(self.base_layer_types)
        return config_class(**d)


__all__ = ["MDUSpeechConfig"]
