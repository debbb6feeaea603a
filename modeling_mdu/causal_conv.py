"""Causal depthwise 1-D convolution whose left context lives in the generation cache.

In a decoder every convolution must be causal: the output at time t sees inputs t-k+1..t only (left padding k-1).
In cached generation the last k-1 inputs are kept in the layer's cache (a `LinearAttentionAndFullAttentionLayer`
from `transformers.cache_utils`, the same mechanism LFM2 and the linear-attention hybrids use), so decoding one
token at a time gives exactly what a full forward pass gives.

Packed batches (several sequences in one row, padding-free training) pass `PackedSequences`: each sequence then
starts from an empty left context, as it would alone. The row is spread out with `kernel_size - 1` zeros before
every sequence (one scatter), convolved without padding, and read back (one gather), so nothing of a sequence reaches
the next.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class PackedSequences(NamedTuple):
    """Several sequences packed in each row of a batch: `ids` [batch, time] numbers them 0, 1, ... within a row (as
    `transformers.masking_utils.find_packed_sequence_indices` does), `count` is the most sequences in one row."""

    ids: torch.Tensor
    count: int


class CausalDepthwiseConv1d(nn.Module):
    def __init__(self, channels: int, kernel_size: int, state_idx: int, bias: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.state_idx = state_idx
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor, cache_layer=None, packed: PackedSequences | None = None) -> torch.Tensor:
        """x: [batch, time, channels] -> [batch, time, channels]; `packed` (no cache): the sequences of each row."""
        x = x.transpose(1, 2)
        context, length = self.kernel_size - 1, x.shape[-1]
        if packed is not None and context > 0:
            return self._packed(x, packed).transpose(1, 2)
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

    def _packed(self, x: torch.Tensor, packed: PackedSequences) -> torch.Tensor:
        """x: [batch, channels, time] holding packed sequences; each one sees only its own past."""
        context = self.kernel_size - 1
        batch, channels, length = x.shape
        # position t goes to t + context * (its sequence + 1): `context` zeros before every sequence
        spread = torch.arange(length, device=x.device) + context * (packed.ids + 1)
        index = spread[:, None, :].expand(batch, channels, length)
        spread_x = x.new_zeros(batch, channels, length + context * packed.count).scatter(2, index, x)
        return self.conv(spread_x).gather(2, index - context)

    def advance(self, batch: int, length: int, cache_layer, like: torch.Tensor) -> None:
        """Moves the cached left context over `length` all-zero inputs without computing anything: what a forward
        over masked-out (text) positions would store."""
        context = self.kernel_size - 1
        if cache_layer is not None and context > 0:
            zeros = like.new_zeros(batch, self.conv.in_channels, length)
            cache_layer.update_conv_state(zeros, state_idx=self.state_idx, conv_kernel_size=context)
