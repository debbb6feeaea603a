"""Are the speech units the bottleneck? Replace them by ideal ones: the utterance's own phoneme string from
`espeak-ng -x -v <its voice>` (one unit per symbol, 51 symbols; no acoustics, no speaker variation), train the demo's
model on those, and greedy-decode the test split from them.

    PYTHONPATH=. python results/diagnostics/phoneme_oracle.py cache/data/espeak-demo outputs/diag-oracle 400 --bf16 true
"""
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import datasets
import torch

sys.path.insert(0, "results/diagnostics")
import train_hf
from _common import demo_flags, score

DATA, OUT, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3])
corpus = datasets.load_from_disk(DATA)
SPLITS = [s for s in ("test_seen", "test") if s in corpus]


def phonemes(text, voice):
    out = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice], input=text.encode(), capture_output=True, check=True)
    return re.sub(r"\s+", "", out.stdout.decode())


strings = {}
for split in ["train", *SPLITS]:
    with ThreadPoolExecutor(8) as pool:
        rows = corpus[split]
        strings.update(zip(zip(rows["text"], rows["voice"]), pool.map(phonemes, rows["text"], rows["voice"])))
symbols = {c: i for i, c in enumerate(sorted(set("".join(strings.values()))))}
assert len(symbols) <= 128, len(symbols)  # fits the demo tokenizer's 128 speech rows
units = {key: [symbols[c] for c in s] for key, s in strings.items()}
print(f"{len(symbols)} phoneme symbols, e.g. {next(iter(strings.values()))!r}", flush=True)


def add_oracle_units(ds, processor, audio_column="audio", text_column="text", num_proc=None, batch_size=16):
    start = processor.speech_token_start

    def encode(batch):
        return {"unit_ids": [[start + u for u in units[k]] for k in zip(batch["text"], batch["voice"])], "text": batch["text"]}

    return ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c != "text"])


train_hf.add_speech_units = add_oracle_units
trainer = train_hf.main(demo_flags(DATA, "outputs/demo/speech_tokenizer", OUT, STEPS, *sys.argv[4:]))
model, proc = trainer.model.eval(), trainer.processing_class
for split in SPLITS:
    test = corpus[split].select(range(60))
    feats = proc.build_inputs([[proc.speech_token_start + u for u in units[k]] for k in zip(test["text"], test["voice"])])
    hyps = []
    with torch.no_grad():
        for i in range(0, len(feats), 8):
            batch = proc.pad(feats[i : i + 8], padding_side="left")
            n = batch["input_ids"].shape[1]
            ids = model.generate(**batch, **proc.generation_kwargs(model, n, max_new_tokens=20))
            hyps += proc.batch_decode(ids[:, n:])
    score(f"oracle {split}", list(test["text"]), hyps)
