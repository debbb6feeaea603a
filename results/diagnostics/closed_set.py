"""Known sentences from new voices: a corpus of few sentences said many times (WordNet, only the N most frequent
words: 500 -> 605 sentences, 300 -> 242; 100 held out as new test sentences, the rest trained on), scored on
training sentences said by held-out voices (test_seen) and on new sentences (test).

    PYTHONPATH=. python -c "from prepare.espeak_corpus import build_corpus; build_corpus('cache/data/espeak-top500', \
        num_train=4000, num_test=100, top_words=500, max_words=10, num_test_seen=100)"
    PYTHONPATH=. python results/diagnostics/closed_set.py cache/data/espeak-top500 outputs/diag-top500 600 --bf16 true
"""
import sys

import datasets

sys.path.insert(0, "results/diagnostics")
from _common import DEMO_TOKENIZER, demo_flags, score, transcribe

import train_hf

data, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
trainer = train_hf.main(demo_flags(data, DEMO_TOKENIZER, out, steps, *sys.argv[4:]))
for split in ("test_seen", "test"):
    ds = datasets.load_from_disk(data)[split].select(range(60))
    score(split, list(ds["text"]), transcribe(trainer, ds["audio"]))
