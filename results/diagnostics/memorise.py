"""Can the demo's model learn to listen at all? Train on the first N training utterances only, then transcribe
those same N: a model that ignores the audio can only say its text prior.

    PYTHONPATH=. python results/diagnostics/memorise.py outputs/diag-memorise 120 16 --bf16 true
"""
import sys

import datasets

sys.path.insert(0, "results/diagnostics")
from _common import DEMO_TOKENIZER, demo_flags, score, transcribe

import train_hf

out, steps, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = "cache/data/espeak-demo"
trainer = train_hf.main(demo_flags(data, DEMO_TOKENIZER, out, steps, "--max_train_examples", str(n), *sys.argv[4:]))
ds = datasets.load_from_disk(data)["train"].select(range(n))
score(f"memorised {n}", list(ds["text"]), transcribe(trainer, ds["audio"]))
