"""Batches for ASR training in the shared prompt format (see modeling_mdu/processing_mdu.py):

    input_ids = [speech_start] + units + [speech_end] + transcript + [eos]
    labels    = [-100] * (len(units) + 2) + transcript + [eos]        (train_on_speech: labels on the units too)

Rehearsal text examples (empty `unit_ids`) are plain language modelling: labels on every token.

`pack=True` gives padding-free batches: the examples concatenated into one row (`input_ids`, `labels`, `position_ids`
restarting at 0 for each example, no attention mask), as transformers' `DataCollatorWithFlattening` makes them. The
model keeps the packed examples apart (attention masks from the position ids, E-Branchformer convolutions reset at
each example, `text_bypass` per example), so a packed batch computes what the padded batch computes, without the
padding. The Trainer counts the loss tokens of a packed batch as of a padded one.

One row suits varlen attention kernels (flash_attention_2 reads the sequence boundaries from the position ids). With
SDPA or eager attention a row is one dense attention matrix, masked block-diagonally: one long row costs
(sum of lengths)^2 where the padded batch costs batch x longest^2. `pack_length` packs into rows of at most that many
tokens instead (first-fit decreasing; `pack_length=0`: the longest example's length), each row filled up to the
longest row with one pad "example" (its own position ids, no labels), so rows stack into one tensor.
"""

from dataclasses import dataclass

import torch
from transformers import DataCollatorWithFlattening


def pack_features(features: list[dict], pack_length: int | None = None, pad_token_id: int = 0) -> dict:
    """Padding-free rows from unpadded features (`input_ids`, `labels`): one row (`pack_length` None, exactly
    transformers' DataCollatorWithFlattening), or rows of at most `pack_length` tokens (0: the longest feature)."""
    flatten = DataCollatorWithFlattening(return_position_ids=True)
    if pack_length is None:
        return dict(flatten(features, return_tensors="pt"))
    lengths = [len(f["input_ids"]) for f in features]
    capacity = max(pack_length, max(lengths))
    rows, used = [], []
    for i in sorted(range(len(features)), key=lambda i: -lengths[i]):  # first-fit decreasing
        row = next((r for r in range(len(rows)) if used[r] + lengths[i] <= capacity), None)
        if row is None:
            rows.append([])
            used.append(0)
            row = len(rows) - 1
        rows[row].append(features[i])
        used[row] += lengths[i]
    width = max(used)
    batches = []
    for row, n in zip(rows, used):
        filler = [{"input_ids": [pad_token_id] * (width - n), "labels": [-100] * (width - n)}] if width > n else []
        batches.append(flatten(row + filler, return_tensors="pt"))
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


@dataclass
class ASRCollator:
    processor: object  # MDUSpeechProcessor
    train_on_speech: bool = False
    pad_to_multiple_of: int | None = None
    pack: bool = False
    pack_length: int | None = None  # with pack: rows of at most this many tokens (0: the longest example); None: one row

    def text_only(self, text: str) -> dict:
        tok = self.processor.tokenizer
        ids = tok(text)["input_ids"] + [tok.eos_token_id]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}

    def __call__(self, examples: list[dict]) -> dict:
        for i, ex in enumerate(examples):
            if "unit_ids" not in ex or "text" not in ex:
                raise ValueError(f"example {i} has keys {sorted(ex)}; expected 'unit_ids' and 'text' (see training/data.py)")
        speech = [i for i, ex in enumerate(examples) if len(ex["unit_ids"])]
        feats = [None] * len(examples)
        built = self.processor.build_inputs(
            [examples[i]["unit_ids"] for i in speech],
            texts=[examples[i]["text"] for i in speech],
            train_on_speech=self.train_on_speech,
            names=[f"training example {i}" for i in speech],
        )
        for i, f in zip(speech, built):
            feats[i] = f
        for i, ex in enumerate(examples):
            if feats[i] is None:
                feats[i] = self.text_only(ex["text"])
        if self.pack:
            return pack_features(feats, self.pack_length, self.processor.pad_token_id)
        return dict(self.processor.pad(feats, padding_side="right", return_tensors="pt",
                                       pad_to_multiple_of=self.pad_to_multiple_of))
