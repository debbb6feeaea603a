"""PhoneRecognizer: a small convolutional CTC phoneme classifier over log-mel frames (the `phonetic` speech units).

    frames (B, T, num_features) -> conv 3 -> conv 3 stride 2 -> num_layers x [LayerNorm -> conv k -> GELU -> linear] + residual
    -> LayerNorm -> linear -> logits (B, ceil(T / 2), 1 + num_phonemes)          (index 0 is the CTC blank)

Padded frames are zeroed before every convolution, so an utterance gives the same logits alone or in a padded batch.
Greedy CTC decoding (argmax, merge repeats, drop blanks) turns the logits into phoneme ids: the speech units.
Fitted by fit_phonetic_tokenizer.py; no dependency beyond torch (it ships as remote code in checkpoints).
"""

import torch
from torch import nn
from torch.nn import functional as F


def _mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zeroes the frames of (B, T, D) at or past each item's length."""
    keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return x * keep[..., None].to(x.dtype)


class ConvBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.conv(_mask(self.norm(x), lengths).transpose(1, 2)).transpose(1, 2)  # padding reads zeros, as alone
        return _mask(x + self.dropout(self.proj(F.gelu(h))), lengths)


class PhoneRecognizer(nn.Module):
    def __init__(self, num_features: int, num_phonemes: int, dim: int = 256, num_layers: int = 6, kernel_size: int = 5,
                 dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length convolutions), got {kernel_size}")
        self.conv_in = nn.Conv1d(num_features, dim, 3, padding=1)
        self.conv_down = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(ConvBlock(dim, kernel_size, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1 + num_phonemes)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + 1) // 2

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, num_features) frames, (B,) lengths -> (B, ceil(T / 2), 1 + num_phonemes) logits, (B,) output lengths."""
        x = _mask(feats, lengths)
        x = _mask(F.gelu(self.conv_in(x.transpose(1, 2))).transpose(1, 2), lengths)
        out_lengths = self.output_lengths(lengths)
        x = _mask(F.gelu(self.conv_down(x.transpose(1, 2))).transpose(1, 2), out_lengths)
        for block in self.blocks:
            x = block(x, out_lengths)
        return self.head(self.norm(x)), out_lengths

    @staticmethod
    def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Best path per item: argmax, merge repeats, drop blanks -> phoneme ids 0..num_phonemes-1."""
        best = logits.argmax(-1).cpu()
        out = []
        for path, n in zip(best, lengths.tolist()):
            path = torch.unique_consecutive(path[:n])
            out.append(path[path != 0] - 1)
        return out
