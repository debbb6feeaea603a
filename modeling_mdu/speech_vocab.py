"""Extended vocabulary with frozen text rows and trainable speech rows.

The base model's rows stay in `weight` (same name as in the base checkpoint, frozen); the new rows (speech special
tokens and speech units) live in `speech_weight` (trainable). Two parameters, so an optimizer sees only the new rows
and the base rows stay bitwise unchanged, also when input and output embeddings are tied.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MDUEmbedding(nn.Module):
    def __init__(self, text_vocab_size: int, new_vocab_size: int, hidden_size: int):
        super().__init__()
        self.num_text = text_vocab_size
        self.weight = nn.Parameter(torch.empty(text_vocab_size, hidden_size))
        self.speech_weight = nn.Parameter(torch.empty(new_vocab_size, hidden_size))

    @property
    def num_embeddings(self) -> int:
        return self.num_text + self.speech_weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, input_ids: torch.LongTensor) -> torch.Tensor:
        is_text = input_ids < self.num_text
        text = F.embedding(torch.where(is_text, input_ids, 0), self.weight)
        if self.speech_weight.shape[0] == 0:
            return text
        new = F.embedding(torch.where(is_text, 0, input_ids - self.num_text), self.speech_weight)
        return torch.where(is_text.unsqueeze(-1), text, new)

    def extra_repr(self) -> str:
        return f"text={self.num_text}, speech={self.speech_weight.shape[0]}, dim={self.embedding_dim}"


class MDULMHead(nn.Module):
    """Logits over [text vocabulary | new tokens]; text columns are computed exactly as the base's lm_head."""

    def __init__(self, hidden_size: int, text_vocab_size: int, new_vocab_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(text_vocab_size, hidden_size))
        self.speech_weight = nn.Parameter(torch.empty(new_vocab_size, hidden_size))

    @property
    def out_features(self) -> int:
        return self.weight.shape[0] + self.speech_weight.shape[0]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        text = F.linear(hidden_states, self.weight)
        if self.speech_weight.shape[0] == 0:
            return text
        return torch.cat([text, F.linear(hidden_states, self.speech_weight)], dim=-1)

    def extra_repr(self) -> str:
        return f"text={self.weight.shape[0]}, speech={self.speech_weight.shape[0]}, dim={self.weight.shape[1]}"


@torch.no_grad()
def init_new_rows(new_rows: torch.Tensor, text_rows: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """New rows start at the mean text embedding plus small noise (10% of the per-dimension std), so the new
    tokens begin inside the distribution the frozen layers were trained on, yet are distinguishable."""
    if new_rows.numel() == 0:
        return
    text = text_rows.float()
    mean, std = text.mean(0), text.std(0)
    noise = torch.randn(new_rows.shape, generator=generator, dtype=torch.float32, device="cpu").to(text.device)
    new_rows.copy_((mean + 0.1 * std * noise).to(new_rows.dtype))


@torch.no_grad()
def init_rows_from_text(new_rows: torch.Tensor, text_rows: torch.Tensor, token_ids: list[list[int]]) -> int:
    """Row i of `new_rows` becomes the mean of the text rows `token_ids[i]` (rows with no ids keep their values).
    Used to start speech units that have a written name (phoneme symbols) where the LLM reads that name.
    Returns how many rows were set."""
    if len(token_ids) != new_rows.shape[0]:
        raise ValueError(f"{len(token_ids)} token-id lists for {new_rows.shape[0]} rows")
    count = 0
    for row, ids in zip(new_rows, token_ids):
        if ids:
            row.copy_(text_rows[torch.as_tensor(ids, device=text_rows.device)].float().mean(0).to(row.dtype))
            count += 1
    return count
