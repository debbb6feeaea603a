"""Optional auxiliary CTC loss on the speech positions (`--ctc_weight`, off by default; the papers train on the
transcript loss alone).

The hidden states of the speech units at one layer (`--ctc_layer`, an index into `output_hidden_states`: -1 = the
final normed output) go through the model's own LM head (text rows + speech rows) and a CTC loss aligns them to the
transcript's text tokens, with the `speech_start` token as the CTC blank (it is never a transcript token). It gives
every speech position a direct target, meant to let the speech embeddings and the inserted layers carry the words
before the decoder's attention has learned where to read them (on a small budget the transcript loss alone first
learns the text prior: one sentence for every input). Hybrid CTC/attention training (Watanabe et al., 2017) uses
CTC the same way. Measured so far: in 150-step CPU runs of the demo it did not speed learning up (README).
"""

import torch
import torch.nn.functional as F


def speech_positions(input_ids: torch.Tensor, speech_token_start: int, speech_vocab_size: int):
    """(index (B, T) of each row's speech-unit positions, left-aligned and padded with 0; lengths (B,))."""
    is_speech = (input_ids >= speech_token_start) & (input_ids < speech_token_start + speech_vocab_size)
    lengths = is_speech.sum(1)
    order = torch.argsort((~is_speech).to(torch.int8), dim=1, stable=True)  # speech positions first, in order
    return order[:, : int(lengths.max()) if lengths.numel() else 0], lengths


def transcript_targets(labels: torch.Tensor, text_vocab_size: int, eos_token_id: int | None):
    """(concatenated text-token targets, lengths (B,)): the labelled text tokens of each row, without eos."""
    keep = (labels >= 0) & (labels < text_vocab_size)
    if eos_token_id is not None:
        keep &= labels != eos_token_id
    return labels[keep], keep.sum(1)


def ctc_loss_on_speech(model, hidden_states: tuple, input_ids: torch.Tensor, labels: torch.Tensor,
                       layer: int = -1, eos_token_id: int | None = None) -> torch.Tensor:
    """Mean CTC loss (per target token, as F.ctc_loss's "mean") over the rows that have speech and a transcript.
    `model` is the MDUSpeechForCausalLM (unwrapped); `hidden_states` its `output_hidden_states`."""
    config = model.config
    index, in_lengths = speech_positions(input_ids, config.speech_token_start, config.speech_vocab_size)
    targets, out_lengths = transcript_targets(labels, config.text_vocab_size, eos_token_id)
    rows = (in_lengths > 0) & (out_lengths > 0)
    if not rows.any():
        return hidden_states[-1].sum() * 0.0
    hidden = hidden_states[layer]
    if layer not in (-1, len(hidden_states) - 1):  # the last entry is already normed
        hidden = model.model.norm(hidden)
    hidden = torch.gather(hidden, 1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))[rows]
    log_probs = F.log_softmax(model.lm_head(hidden).float(), dim=-1).transpose(0, 1)  # (T, B, V)
    row_of_target = torch.repeat_interleave(torch.arange(len(labels), device=labels.device), out_lengths)
    targets = targets[rows[row_of_target]]
    return F.ctc_loss(log_probs, targets, in_lengths[rows], out_lengths[rows], blank=config.speech_start_token_id,
                      reduction="mean", zero_infinity=True)
