"""Causal depthwise 1-D convolution whose left context lives in the generation cache.

In a decoder every convolution must be causal: the output at time t sees inputs t-k+1..t only (left padding k-1).
In cached generation the last k-1 inputs are kept in the layer's cache (a `LinearAttentionAndFullAttentionLayer`
from `transformers.cache_utils`, the same mechanism LFM2 and the linear-attention hybrids use), so decoding one
token at a time gives exactly what a full forward pass gives.
"""

import torch
import torch.nn.functional as F
from torch import nn


class CausalDepthwiseConv1d(nn.Module):
    def __init__(self, channels: int, kernel_size: int, state_idx: int, bias: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.state_idx = state_idx
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor, cache_layer=None) -> torch.Tensor:
        """x: [batch, time, channels] -> [batch, time, channels]."""
        x = x.transpose(1, 2)
        context, length = self.kernel_size - 1, x.shape[-1]
        if context > 0:
            if cache_layer is not None and cache_layer.has_previous_state[self.state_idx]:
                # cached left context + x; while generate() records past states (assisted decoding, so that it can
                # roll them back) the cache holds more history than the kernel needs, or less after a short prompt
                x = cache_layer.update_conv_state(x, state_idx=self.state_idx, conv_kernel_size=context)
                x = x[..., -(length + context) :]
            elif cache_layer is not None:  # prefill: store the context for the next step
                cache_layer.update_conv_state(x, state_idx=self.state_idx, conv_kernel_size=context)
            x = F.pad(x, (length + context - x.shape[-1], 0))
        return self.conv(x).transpose(1, 2)

    def advance(self, batch: int, length: int, cache_layer, like: torch.Tensor) -> None:
        """Moves the cached left context over `length` all-zero inputs without computing anything: what a forward
        over masked-out (text) positions would store."""
        context = self.kernel_size - 1
        if cache_layer is not None and context > 0:
            zeros = like.new_zeros(batch, self.conv.in_channels, length)
            cache_layer.update_conv_state(zeros, state_idx=self.state_idx, conv_kernel_size=context)
