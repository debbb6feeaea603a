"""Shared bits of the issue-7 diagnostics: the demo's training recipe as train_hf.py flags, and greedy scoring.
Run every script from the repository root with PYTHONPATH=. (see README.md here)."""
import json

import torch

from eval.asr import error_rates, listening_check

BASE = "cache/base/SmolLM2-135M-Instruct"
DEMO_TOKENIZER = "outputs/demo/speech_tokenizer"  # another one: add `--speech_tokenizer DIR` (the last flag wins)


def demo_flags(dataset, speech_tokenizer, output_dir, steps, *extra):
    """train_hf.py arguments of demo.py's training stage (EBF interleaved 25%, lr 2e-3, WSD), no checkpoints."""
    return ["--base_model", BASE, "--dataset", dataset, "--train_split", "train", "--speech_tokenizer", speech_tokenizer,
            "--method", "mdu", "--placement", "interleaved", "--layer_type", "e_branchformer", "--added_ratio", "0.25",
            "--output_dir", output_dir, "--max_steps", str(steps), "--per_device_train_batch_size", "8",
            "--learning_rate", "2e-3", "--lr_scheduler_type", "warmup_stable_decay",
            "--lr_scheduler_kwargs", json.dumps({"decay_type": "linear", "min_lr_ratio": 0.1}), "--warmup_steps", "0.1",
            "--weight_decay", "0.0", "--logging_steps", "20", "--save_strategy", "no", "--report_to", "none",
            "--seed", "0", "--dataloader_num_workers", "0", "--use_cpu", "true", *extra]


def score(name, references, hypotheses, show=6):
    for r, h in list(zip(references, hypotheses))[:show]:
        print(f"  REF: {r}\n  HYP: {h}")
    result = {**error_rates(references, hypotheses), **listening_check(references, hypotheses)}
    print(name, json.dumps({k: result[k] for k in ("wer", "cer", "distinct_hypotheses", "wer_if_always_most_common")}),
          flush=True)
    return result


@torch.no_grad()
def transcribe(trainer, audio):
    model, processor = trainer.model.eval(), trainer.processing_class
    return processor.transcribe(model, list(audio), batch_size=8, max_new_tokens=20)


def use_units_by_id(units: dict):
    """Make train_hf.py train on precomputed speech units ({row id: [unit, ...]}) instead of the tokenizer's (which
    then only sets the number of unit rows; run with `--speech_init mean`: its unit names are not these units)."""
    import train_hf

    def add_units(ds, processor, audio_column="audio", text_column="text", num_proc=None, batch_size=16):
        start, rows = processor.speech_token_start, processor.feature_extractor.codebook_size
        top = max(max(u, default=0) for u in units.values())
        if top >= rows:
            raise ValueError(f"precomputed units reach {top}, but the speech tokenizer gives the model only {rows} unit "
                             "rows: pass --speech_tokenizer with a larger one")
        return ds.map(lambda b: {"unit_ids": [[start + u for u in units[i]] for i in b["id"]], "text": b["text"]},
                      batched=True, remove_columns=[c for c in ds.column_names if c != "text"])

    train_hf.add_speech_units = add_units


@torch.no_grad()
def score_units(name, trainer, rows, units: dict):
    """Greedy transcripts of `rows` (a Dataset with id/text) from their precomputed units, scored."""
    model, processor = trainer.model.eval(), trainer.processing_class
    ids = [[processor.speech_token_start + u for u in units[i]] for i in rows["id"]]
    return score(name, list(rows["text"]), processor.transcribe_units(model, ids, batch_size=8, max_new_tokens=20))
