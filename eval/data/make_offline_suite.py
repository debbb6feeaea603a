"""Builds the offline text suite's data (run once; the outputs are committed):

    python -m eval.data.make_offline_suite

Source: gensim's test corpus `lee.cor` (50 short Australian news articles, Lee, Pincombe & Welsh 2005, shipped with
gensim under LGPL-2.1). The speech demo's espeak sentences come from the sibling corpus `lee_background.cor`, so this
text is held out from speech training. Outputs (JSONL, one document/item a line):
    heldout_lee.jsonl  {"text"}                           perplexity (harness `loglikelihood_rolling`)
    cloze.jsonl        {"question", "choices", "label"}   continue a held-out sentence (next 4 words vs 4-word spans of other sentences)
    word_order.jsonl   {"question", "choices", "label"}   an 8-word span vs 3 copies with one adjacent pair swapped
    arith.jsonl        {"question", "choices", "label"}   one-digit addition / subtraction, 4 numeric answers
"""

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_ITEMS = 150


def lee_documents() -> list[str]:
    import gensim

    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee.cor"
    return [line.strip() for line in path.read_text(encoding="latin-1").splitlines() if line.strip()]


def sentences(docs):
    return [s for d in docs for s in re.split(r"(?<=[.!?])\s+", d) if len(s.split()) >= 12]


def cloze(sents, rng):
    items = []
    for i, s in enumerate(sents):
        words = s.split()
        cut = rng.randint(6, len(words) - 4)
        answer = " ".join(words[cut : cut + 4])
        others = rng.sample([x.split() for j, x in enumerate(sents) if j != i], 3)  # same-position spans elsewhere
        distractors = [" ".join(w[k : k + 4]) for w in others for k in [rng.randint(0, len(w) - 4)]]
        choices = distractors + [answer]
        rng.shuffle(choices)
        items.append({"question": " ".join(words[:cut]), "choices": choices, "label": choices.index(answer)})
    return items


def word_order(sents, rng):
    """Distractors swap one pair of adjacent words (3 different pairs): subtle enough to stay below ceiling."""
    items = []
    for s in sents:
        words = s.split()
        start = rng.randint(0, len(words) - 8)
        span = words[start : start + 8]
        answer, choices = " ".join(span), [" ".join(span)]
        for k in rng.sample(range(7), 7):
            w = span[:]
            w[k], w[k + 1] = w[k + 1], w[k]
            if " ".join(w) not in choices:
                choices.append(" ".join(w))
            if len(choices) == 4:
                break
        if len(choices) < 4:
            continue
        rng.shuffle(choices)
        items.append({"question": "Sentence:", "choices": choices, "label": choices.index(answer)})
    return items


def arith(rng, n):
    items = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        op = rng.choice(["plus", "minus"]) if a >= b else "plus"
        answer = a + b if op == "plus" else a - b
        wrong = rng.sample([x for x in range(0, 19) if x != answer], 3)
        choices = [str(x) for x in wrong + [answer]]
        rng.shuffle(choices)
        items.append({"question": f"Question: What is {a} {op} {b}?\nAnswer:", "choices": choices, "label": choices.index(str(answer))})
    return items


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{path}: {len(rows)} rows")


def main():
    rng = random.Random(0)
    docs = lee_documents()
    sents = sentences(docs)
    rng.shuffle(sents)
    write_jsonl(HERE / "heldout_lee.jsonl", [{"text": d} for d in docs])
    write_jsonl(HERE / "cloze.jsonl", cloze(sents[:N_ITEMS], rng))
    write_jsonl(HERE / "word_order.jsonl", word_order(sents[:N_ITEMS], rng))
    write_jsonl(HERE / "arith.jsonl", arith(rng, N_ITEMS))


if __name__ == "__main__":
    main()
