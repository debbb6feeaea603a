"""The one place that maps a base Llama state dict onto the up-scaled stack, and back.

Base layer i sits at `config.base_layer_positions[i]`; added layer j sits at `config.added_layer_positions[j]`
and starts as a copy of base layer `config.added_after[j]`.
"""

from transformers import LlamaConfig

LLAMA_MODEL_TYPES = ("llama",)
# Parameters of a Llama decoder layer that an added layer copies from the original layer before it.
COPIED_FROM_BASE_LAYER = (
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.bias",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "mlp.gate_proj.bias",
    "mlp.up_proj.bias",
    "mlp.down_proj.bias",
)


def check_llama_base(config) -> None:
    """Raise ValueError unless `config` describes a Llama-architecture causal LM."""
    model_type = getattr(config, "model_type", None)
    if model_type not in LLAMA_MODEL_TYPES or not isinstance(config, LlamaConfig):
        raise ValueError(
            f"model_type={model_type!r}: MDU up-scales Llama-architecture text LLMs (model_type 'llama', e.g. "
            f"SmolLM2, Llama 2/3, TinyLlama); got a {type(config).__name__}"
        )


def base_to_upscaled_keys(config, base_keys) -> dict[str, str]:
    """{up-scaled key: base key} for every base tensor, plus the copies that seed the added layers."""
    base_keys = set(base_keys)
    mapping = {}
    for key in base_keys:
        if key.startswith("model.layers."):
            i, rest = key[len("model.layers.") :].split(".", 1)
            mapping[f"model.layers.{config.base_layer_positions[int(i)]}.{rest}"] = key
        else:
            mapping[key] = key
    for pos, src in zip(config.added_layer_positions, config.added_after):
        for rest in COPIED_FROM_BASE_LAYER:
            if f"model.layers.{src}.{rest}" in base_keys:
                mapping[f"model.layers.{pos}.{rest}"] = f"model.layers.{src}.{rest}"
    return mapping


def upscaled_to_base_keys(config, base_keys) -> dict[str, str]:
    """{base key: up-scaled key}: the inverse map, original layers only."""
    return {
        base: mdu for mdu, base in base_to_upscaled_keys(config, base_keys).items() if not _is_added_key(config, mdu)
    }


def _is_added_key(config, key: str) -> bool:
    if not key.startswith("model.layers."):
        return False
    pos = int(key[len("model.layers.") :].split(".", 1)[0])
    return config.layer_is_added[pos]
