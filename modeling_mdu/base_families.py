"""The decoder-only text LLM families MDU up-scales, and the transformers classes each is built from.

An up-scaled model is built from its base family's own modules: the decoder layer class (used as is for the base
layers and for added Transformer layers), the final norm, the rotary embedding, and the attention, MLP and norm
classes an E-Branchformer layer reuses. What differs between families beyond those classes:

    llama, mistral, qwen2, qwen3   one rotary embedding; full or sliding-window attention per layer (`layer_types`)
    gemma3_text                    embeddings scaled by sqrt(hidden_size); one rotary embedding per attention type
                                   (local and global RoPE); norms around attention and MLP ("sandwich" norms); final
                                   logits soft-capped when `final_logit_softcapping` is set

Gemma 2 is not supported: its attention soft-capping needs the eager attention kernel, which an MDU checkpoint
cannot pin today, so SDPA would silently drop the cap.
"""

import importlib
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class BaseFamily:
    model_type: str
    module: str  # transformers.models.<module>.modeling_<module>
    prefix: str  # class-name prefix: <prefix>DecoderLayer, <prefix>RMSNorm, ...
    scaled_embeddings: bool = False  # inputs_embeds = embed(ids) * sqrt(hidden_size)
    rotary_per_attention_type: bool = False  # rotary_emb(x, position_ids, layer_type)
    sandwich_norms: bool = False  # post_attention_layernorm on the attention output, pre/post_feedforward_layernorm

    def _modeling(self):
        return importlib.import_module(f"transformers.models.{self.module}.modeling_{self.module}")

    def cls(self, name: str) -> type[nn.Module]:
        return getattr(self._modeling(), f"{self.prefix}{name}")

    @property
    def decoder_layer(self):
        return self.cls("DecoderLayer")

    @property
    def attention(self):
        return self.cls("Attention")

    @property
    def mlp(self):
        return self.cls("MLP")

    @property
    def norm(self):
        return self.cls("RMSNorm")

    @property
    def rotary(self):
        return self.cls("RotaryEmbedding")

    def text_config_class(self):
        from transformers import AutoConfig

        return type(AutoConfig.for_model(self.model_type))

    def causal_lm_class(self):
        return self.cls("ForCausalLM")


FAMILIES = {
    f.model_type: f
    for f in (
        BaseFamily("llama", "llama", "Llama"),
        BaseFamily("mistral", "mistral", "Mistral"),
        BaseFamily("qwen2", "qwen2", "Qwen2"),
        BaseFamily("qwen3", "qwen3", "Qwen3"),
        BaseFamily("gemma3_text", "gemma3", "Gemma3", scaled_embeddings=True, rotary_per_attention_type=True,
                   sandwich_norms=True),
    )
}


def base_family(model_type: str) -> BaseFamily:
    if model_type not in FAMILIES:
        raise ValueError(
            f"model_type={model_type!r}: MDU up-scales decoder-only text LLMs of the families {sorted(FAMILIES)} "
            "(e.g. SmolLM2 / Llama 3, Mistral 7B, Qwen2.5, Qwen3, Gemma 3 text); for Gemma 3 checkpoints with a "
            "vision tower, load the text model (Gemma3ForCausalLM) first"
        )
    return FAMILIES[model_type]


def check_supported_base(config) -> None:
    """Raise ValueError unless `config` is a causal text LLM of a supported family, in a form MDU can copy exactly."""
    family = base_family(getattr(config, "model_type", None))
    if getattr(config, "use_bidirectional_attention", False):
        raise ValueError(f"{family.model_type} with use_bidirectional_attention=True is an encoder, not a causal LM")
    if getattr(config, "attn_logit_softcapping", None) is not None:
        raise ValueError("attention logit soft-capping (attn_logit_softcapping) is not supported: set it to None")


__all__ = ["BaseFamily", "FAMILIES", "base_family", "check_supported_base"]
