"""E-Branchformer as an inserted decoder layer (DESIGN.md §1).

    global branch:  Hg = MHSA(LN(X))                      Llama attention with RoPE, copied from the layer before
    local branch:   Hl = cgMLP(LN(X))                      Linear(d->U) -> GELU -> CSGU -> Linear(U/2->d)
                    CSGU(A | B) = A * DwConv(LN(B))
    merge:          Hc = [Hg ; Hl]                         (2d)
                    H  = (Hc + DwConv(Hc)) W_merge         (2d -> d)
                    X' = X + H
    FFN:            Y  = X' + FFN(LN(X'))                  copied from the layer before, no macaron FFN

Attention, MLP and norms are the base family's own classes (base_families.py), so the layer copies any supported
base's layer before it: Qwen3's q/k norms, Qwen2's q/k/v biases, sliding-window attention, and Gemma 3's norms
around attention and MLP ("sandwich" norms: Hg = N1(MHSA(LN(X))) and FFN(X') = N3(MLP(N2(X'))) ).

The local branch and the merge run on speech positions only; at text positions H = Hg, so text takes the
MHSA + FFN path alone. Both convolutions are causal, and their left context is kept in the generation cache; in a
packed batch (several sequences in one row) each sequence's convolutions start from an empty context.

Whether a forward holds any speech at all is decided by the caller (`has_speech`, a Python bool: MDUSpeechModel
decides once per forward, and in generation's decoding steps without reading the token back from the device);
a layer called on its own reads it from `speech_mask`.

Identity at init (Y = X): `o_proj` and `down_proj` zeroed, W_merge = [I; 0], merge-conv bias 0. Unlike the
reference recipe, the cgMLP output projection is *not* zeroed: with it and the local half of W_merge both zero,
each one's gradient is proportional to the other, so the local branch would never train. W_merge's zero half
already keeps the layer an identity.
"""

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .base_families import base_family
from .causal_conv import CausalDepthwiseConv1d, PackedSequences
from .hf_compat import cache_kwarg, take_cache
from .transformer_layer import zero_residual_writers

CSGU_CONV_STATE, MERGE_CONV_STATE = 0, 1


class ConvolutionalSpatialGatingUnit(nn.Module):
    def __init__(self, units: int, kernel_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(units // 2)
        self.conv = CausalDepthwiseConv1d(units // 2, kernel_size, state_idx=CSGU_CONV_STATE)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache_layer=None, packed: PackedSequences | None = None):
        x_r, x_g = x.chunk(2, dim=-1)
        x_g = self.conv(self.norm(x_g) * mask, cache_layer, packed)
        return x_r * x_g


class ConvolutionalGatingMLP(nn.Module):
    def __init__(self, hidden_size: int, units: int, kernel_size: int):
        super().__init__()
        self.channel_proj1 = nn.Linear(hidden_size, units)
        self.act = nn.GELU()
        self.csgu = ConvolutionalSpatialGatingUnit(units, kernel_size)
        self.channel_proj2 = nn.Linear(units // 2, hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache_layer=None, packed: PackedSequences | None = None):
        h = self.act(self.channel_proj1(x)) * mask
        h = self.csgu(h, mask, cache_layer, packed)
        return self.channel_proj2(h) * mask


def use_attention_type(attention: nn.Module, attention_type: str, config) -> None:
    """The family attention classes read their window from `config.layer_types[layer_idx]`, which for an
    E-Branchformer layer is the cache type ("hybrid" / "hybrid_sliding"): set what the attention type implies."""
    sliding = attention_type == "sliding_attention"
    if hasattr(attention, "layer_type"):
        attention.layer_type = attention_type
    if hasattr(attention, "is_sliding"):
        attention.is_sliding = sliding
    if hasattr(attention, "sliding_window") and config.base_model_type != "mistral":  # Mistral: every layer
        attention.sliding_window = getattr(config, "sliding_window", None) if sliding else None


class EBranchformerLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        family = base_family(config.base_model_type)
        d = config.hidden_size
        self.layer_idx = layer_idx
        self.hidden_size = d
        self.sandwich_norms = family.sandwich_norms
        self.input_layernorm = family.norm(d, eps=config.rms_norm_eps)
        self.self_attn = family.attention(config=config, layer_idx=layer_idx)
        use_attention_type(self.self_attn, config.attention_types[layer_idx], config)
        self.cgmlp_layernorm = nn.LayerNorm(d)
        self.cgmlp = ConvolutionalGatingMLP(d, config.cgmlp_units, config.cgmlp_conv_kernel)
        self.merge_conv = CausalDepthwiseConv1d(2 * d, config.merge_conv_kernel, state_idx=MERGE_CONV_STATE)
        self.merge_proj = nn.Linear(2 * d, d)
        self.post_attention_layernorm = family.norm(d, eps=config.rms_norm_eps)
        if self.sandwich_norms:
            self.pre_feedforward_layernorm = family.norm(d, eps=config.rms_norm_eps)
            self.post_feedforward_layernorm = family.norm(d, eps=config.rms_norm_eps)
        self.mlp = family.mlp(config)

    def _cache_layer(self, cache):
        if cache is None:
            return None
        layers = getattr(cache, "layers", [])
        layer = layers[self.layer_idx] if self.layer_idx < len(layers) else None
        if not hasattr(layer, "update_conv_state"):
            raise ValueError(
                f"E-Branchformer layer {self.layer_idx} keeps convolution states in the cache, but the cache given has "
                f"{type(layer).__name__ if layer is not None else 'no layer'} there. Build it with "
                f"DynamicCache(config=model.config) (generate() does)."
            )
        return layer

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        speech_mask: torch.Tensor | None = None,
        cache=None,
        has_speech: bool | None = None,
        packed: PackedSequences | None = None,
        **kwargs,
    ) -> torch.Tensor:
        r"""speech_mask (bool [batch, seq]): which positions are speech. has_speech: whether any is (None: read from
        speech_mask, one device sync). packed: the sequences of each row of a packed batch (no cache)."""
        if speech_mask is None:
            raise ValueError("EBranchformerLayer needs speech_mask (bool [batch, seq]): which positions are speech")
        if has_speech is None:
            has_speech = bool(speech_mask.any())
        cache = take_cache(past_key_values, cache)
        cache_layer = self._cache_layer(cache)
        residual = hidden_states
        h_global, _ = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **cache_kwarg(cache),
            **kwargs,
        )
        if self.sandwich_norms:
            h_global = self.post_attention_layernorm(h_global)
        if has_speech:
            is_speech = speech_mask.unsqueeze(-1)
            mask = is_speech.to(hidden_states.dtype)
            h_local = self.cgmlp(self.cgmlp_layernorm(hidden_states) * mask, mask, cache_layer, packed)
            h_concat = torch.cat([h_global * mask, h_local], dim=-1)
            merged = self.merge_proj(h_concat + self.merge_conv(h_concat, cache_layer, packed))
            hidden_states = residual + torch.where(is_speech, merged, h_global)
        else:  # no speech here (e.g. decoding the transcript): both conv inputs would be all zeros, the merge unused
            batch, length = hidden_states.shape[:2]
            self.cgmlp.csgu.conv.advance(batch, length, cache_layer, hidden_states)
            self.merge_conv.advance(batch, length, cache_layer, hidden_states)
            hidden_states = residual + h_global

        residual = hidden_states
        if self.sandwich_norms:
            hidden_states = self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(hidden_states)))
        else:
            hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states

    @torch.no_grad()
    def reset_branch_parameters(self, std: float = 0.02) -> None:
        """Init of the E-Branchformer-only parts (ESPnet's CSGU init; W_merge = [I; 0]). Attention, FFN and their
        norms are left alone: `from_text_model` copies them from the preceding original layer."""
        for ln in (self.cgmlp_layernorm, self.cgmlp.csgu.norm):
            ln.weight.fill_(1.0)
            ln.bias.zero_()
        for linear in (self.cgmlp.channel_proj1, self.cgmlp.channel_proj2):
            linear.weight.normal_(0.0, std)
            linear.bias.zero_()
        self.cgmlp.csgu.conv.conv.weight.normal_(0.0, 1e-6)
        self.cgmlp.csgu.conv.conv.bias.fill_(1.0)
        self.merge_conv.conv.weight.normal_(0.0, std)
        self.merge_conv.conv.bias.zero_()
        d = self.hidden_size
        self.merge_proj.weight.zero_()
        self.merge_proj.weight[:, :d].copy_(torch.eye(d))
        self.merge_proj.bias.zero_()

    @torch.no_grad()
    def make_identity(self) -> None:
        self.reset_branch_parameters()
        zero_residual_writers(self)
