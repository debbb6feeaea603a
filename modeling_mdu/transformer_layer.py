"""The plain inserted layer: the base family's own decoder layer (LlamaDecoderLayer, Qwen3DecoderLayer, ...), a copy
of the layer before it with the two projections that write into the residual stream zeroed (`zero_residual_writers`),
so it computes x -> x at init (the LLaMA Pro block-expansion trick). Families with norms on the sublayer outputs
(Gemma 3's post-attention / post-feedforward norms) stay the identity too: a norm of zero is zero.
"""

import torch
from torch import nn


@torch.no_grad()
def zero_residual_writers(layer: nn.Module) -> None:
    """Zero `self_attn.o_proj` and `mlp.down_proj` (weights and biases) of a decoder layer."""
    for linear in (layer.self_attn.o_proj, layer.mlp.down_proj):
        linear.weight.zero_()
        if linear.bias is not None:
            linear.bias.zero_()
