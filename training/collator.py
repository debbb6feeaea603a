"""Batches for ASR training in the shared prompt format (see modeling_mdu/processing_mdu.py):

    input_ids = [speech_start] + units + [speech_end] + transcript + [eos]
    labels    = [-100] * (len(units) + 2) + transcript + [eos]        (train_on_speech: labels on the units too)

Rehearsal text examples (empty `unit_ids`) are plain language modelling: labels on every token.
"""

from dataclasses import dataclass


@dataclass
class ASRCollator:
    processor: object  # MDUSpeechProcessor
    train_on_speech: bool = False
    pad_to_multiple_of: int | None = None

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
        return dict(self.processor.pad(feats, padding_side="right", return_tensors="pt",
                                       pad_to_multiple_of=self.pad_to_multiple_of))
