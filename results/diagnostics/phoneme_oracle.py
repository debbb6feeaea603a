"""Are the speech units the bottleneck? Replace them by ideal ones: the utterance's own phoneme string from
`espeak-ng -x -v <its voice>` (one unit per symbol, 51 symbols; no acoustics, no speaker variation), train the demo's
model on those, and greedy-decode the test split from them.

    PYTHONPATH=. python results/diagnostics/phoneme_oracle.py cache/data/espeak-demo outputs/diag-oracle 400 --bf16 true
"""
import sys

import datasets

sys.path.insert(0, "results/diagnostics")
from _common import DEMO_TOKENIZER, demo_flags, score_units, use_units_by_id

import train_hf
from fit_phonetic_tokenizer import espeak_phonemes

DATA, OUT, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3])
corpus = datasets.load_from_disk(DATA)
SPLITS = [s for s in ("test_seen", "test") if s in corpus]


strings = {}
for split in ["train", *SPLITS]:
    rows = corpus[split]
    strings.update(zip(rows["id"], espeak_phonemes(rows["text"], rows["voice"])))
symbols = {c: i for i, c in enumerate(sorted(set("".join(strings.values()))))}
units = {key: [symbols[c] for c in s] for key, s in strings.items()}
print(f"{len(symbols)} phoneme symbols, e.g. {next(iter(strings.values()))!r}", flush=True)

use_units_by_id(units)
trainer = train_hf.main(demo_flags(DATA, DEMO_TOKENIZER, OUT, STEPS, "--speech_init", "mean", *sys.argv[4:]))
for split in SPLITS:
    score_units(f"oracle {split}", trainer, corpus[split].select(range(60)), units)
