"""The plain inserted layer: a Llama decoder layer (copy of the one before it, `o_proj` and `down_proj` zeroed)."""

import torch
from transformers.models.llama.modeling_llama import LlamaDecoderLayer


class MDUTransformerLayer(LlamaDecoderLayer):
    """Same forward as `LlamaDecoderLayer`; takes (and ignores) the `speech_mask` every inserted layer receives."""

    def forward(self, hidden_states: torch.Tensor, speech_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return super().forward(hidden_states, **kwargs)

    @torch.no_grad()
    def make_identity(self) -> None:
        """Zero the two projections that write into the residual stream: the layer computes x -> x."""
        for linear in (self.self_attn.o_proj, self.mlp.down_proj):
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
