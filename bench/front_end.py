"""Front-end benchmark (issue 17): the phonetic tokenizer's phoneme error rate, leave one synthesizer family out.

    PYTHONPATH=. python -m bench.front_end [--quick] [--folds flite mbrola espeak] [--num_train 3000] [--out DIR]

For every fold (a held-out family) the multi-synthesizer corpus is built with that family held out
(prepare/multi_corpus.py, cached under cache/bench-front-end/), the phonetic tokenizer is fitted on its train split with
the demo's recipe (demo.TOKENIZER: SpecAugment, VTLP; waveform augmentation is in the corpus), and its phoneme error
rate (PER; reference: en-us espeak-ng phonemes of the transcript, as in training) is measured on every test split:
the held-out family, held-out voices of the training families, and the three real pytest-audioeval clips when they are
cached (prepare/real_clips.py; never downloaded here). The previous recipe (espeak-ng voices only, clean, 12 epochs, no
SpecAugment / VTLP: the demo before issue 17) is fitted once on the espeak corpus and measured on the first fold's
test splits (its training sentences are disjoint from them: both corpora draw their test sentences with the same seed).
Target (issue 17): PER <= 25% on the held-out family. Nothing is asserted; the fit's time is recorded.
`--quick` runs a tiny corpus and a tiny recognizer in a temporary folder (a check that every stage works).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from prepare.common import CACHE

FOLDS = ("flite", "mbrola", "espeak")
TARGET_PER = 0.25
FULL = dict(num_train=3000, num_test=100, epochs=8, old_num_train=3000, old_epochs=12, recognizer_dim=256,
            recognizer_layers=6)
QUICK = dict(num_train=24, num_test=4, epochs=1, old_num_train=16, old_epochs=1, recognizer_dim=32, recognizer_layers=1)


def _per_on(tok, dataset) -> float:
    from fit_phonetic_tokenizer import espeak_phonemes, phoneme_error_rate

    return phoneme_error_rate(tok, list(dataset["audio"]), espeak_phonemes(dataset["text"], g2p_voice="en-us"))


def _real_clips():
    """The cached real clips (prepare/real_clips.py), or None: a benchmark does not download."""
    path = CACHE / "data" / "real_clips"
    if not (path / "dataset_info.json").is_file():
        return None
    from datasets import load_from_disk

    return load_from_disk(str(path))


def _fit(train, sizes, epochs, augmented: bool):
    import demo
    from fit_phonetic_tokenizer import fit_phonetic_tokenizer

    recipe = dict(demo.TOKENIZER, epochs=epochs, recognizer_dim=sizes["recognizer_dim"],
                  recognizer_layers=sizes["recognizer_layers"])
    if not augmented:
        recipe.update(spec_augment=False, vtlp=0.0)
    t0 = time.perf_counter()
    tok, history = fit_phonetic_tokenizer(list(train["audio"]), train["text"], seed=0, **recipe)
    seconds = {k: round(sum(h.get(k, 0) for h in history), 1) for k in ("g2p_s", "features_s", "train_s")}
    return tok, {"recipe": recipe, "utterances": len(train), "fit_s": round(time.perf_counter() - t0, 1), **seconds}


def run(quick: bool = False, folds=None, num_train: int | None = None, work_dir=None, progress=print,
        on_fold=None) -> dict:
    """The benchmark's record (see the module docstring); folds default to all three (`quick`: flite only).
    {"skipped": why} when a synthesizer family is not installed. `on_fold(results)` is called after every fold (and
    after the previous recipe), so a long run leaves what it measured."""
    from prepare.espeak_corpus import build_corpus
    from prepare.multi_corpus import build_multi_corpus, protocol
    from prepare.synthesizers import FAMILIES, SynthesizerMissing, installed_voices

    try:
        for family in FAMILIES:
            installed_voices(family)
    except SynthesizerMissing as missing:
        return {"skipped": str(missing)}
    folds = list(folds or (FOLDS[:1] if quick else FOLDS))
    sizes = dict(QUICK if quick else FULL)
    if num_train:
        sizes["num_train"] = num_train
    tmp = tempfile.TemporaryDirectory() if quick else None
    root = Path(tmp.name if tmp else work_dir or CACHE / "bench-front-end")
    corpus_args = dict(text_source="wordnet", top_words=2000, max_words=10, num_test=sizes["num_test"],
                       num_proc=1 if quick else 2)
    clips = None if quick else _real_clips()
    results = {"setup": {**sizes, "folds": list(folds), "reference": "en-us espeak-ng phonemes of the transcript",
                         "real_clips": clips is not None, "target_per_held_out_family": TARGET_PER}, "folds": {}}
    try:
        for fold in folds:
            progress(f"  front_end: fold held-out={fold}: corpus ...")
            corpus = build_multi_corpus(root / f"multi-{fold}-{sizes['num_train']}", held_out=fold,
                                        num_train=sizes["num_train"], **corpus_args)
            progress(f"  front_end: fold held-out={fold}: fitting on {len(corpus['train'])} utterances ...")
            tok, fit = _fit(corpus["train"], sizes, sizes["epochs"], augmented=True)
            splits = protocol(fold)
            rows = [{"split": s, **spec, "per": _per_on(tok, corpus[s])} for s, spec in splits.items()]
            if clips is not None:
                rows.append({"split": "real_clips", "family": "real recordings", "role": "evaluation only",
                             "per": _per_on(tok, clips)})
            held = next(r["per"] for r in rows if r["role"] == "held-out family")
            results["folds"][fold] = {"fit": fit, "rows": rows, "held_out_family_per": held,
                                      "target": {"name": "PER on the held-out family", "value": held,
                                                 "target": f"<= {TARGET_PER}", "pass": held <= TARGET_PER}}
            if "previous_recipe" not in results and fold != "espeak":  # the old recipe never hears the other families
                progress("  front_end: previous recipe (espeak-ng only, clean) ...")
                old = build_corpus(root / f"espeak-{sizes['old_num_train']}", num_train=sizes["old_num_train"],
                                   num_test=sizes["num_test"], seed=0, num_proc=corpus_args["num_proc"], max_words=10,
                                   text_source="wordnet", top_words=2000)
                assert not set(old["train"]["text"]) & set(corpus["test"]["text"]), "old training sentences in the test"
                old_tok, old_fit = _fit(old["train"], sizes, sizes["old_epochs"], augmented=False)
                old_rows = [{"split": s, **spec, "role": "never in training" if spec["family"] != "espeak" else
                             "held-out voices of a training family", "per": _per_on(old_tok, corpus[s])}
                            for s, spec in splits.items()]
                if clips is not None:
                    old_rows.append({"split": "real_clips", "family": "real recordings", "role": "evaluation only",
                                     "per": _per_on(old_tok, clips)})
                results["previous_recipe"] = {"fit": old_fit, "measured_on_fold": fold, "rows": old_rows}
            if on_fold:
                on_fold(results)
    finally:
        if tmp:
            tmp.cleanup()
    results["targets"] = [dict(r["target"], name=f"{r['target']['name']} ({fold})")
                          for fold, r in results["folds"].items()]
    return results


def to_markdown(results: dict, hardware_line: str = "") -> str:
    s = results["setup"]
    lines = ["## Front end: phoneme error rate, leave one synthesizer family out (issue 17)", "",
             f"_{hardware_line + '; ' if hardware_line else ''}corpus per fold: {s['num_train']} training utterances "
             f"(prepare/multi_corpus.py), {s['num_test']} test utterances per split; recognizer dim "
             f"{s['recognizer_dim']} x {s['recognizer_layers']} blocks, {s['epochs']} epochs; "
             f"reference: {s['reference']}_", "",
             "| recipe | held-out family | test split | family | role | PER % |", "|---|---|---|---|---|---:|"]
    for fold, r in results["folds"].items():
        for row in r["rows"]:
            lines.append(f"| new (multi-synthesizer, augmented) | {fold} | {row['split']} | {row['family']} | "
                         f"{row['role']} | {100 * row['per']:.1f} |")
    old = results.get("previous_recipe")
    if old:
        for row in old["rows"]:
            lines.append(f"| previous (espeak-ng only, clean) | – | {row['split']} | {row['family']} | "
                         f"{row['role']} | {100 * row['per']:.1f} |")
    lines.append("")
    for fold, r in results["folds"].items():
        t = r["target"]
        lines.append(f"- fold {fold}: target {t['name']} {t['target']}: measured {t['value']:.3f} → "
                     f"**{'pass' if t['pass'] else 'miss'}** (fit {r['fit']['fit_s']:.0f} s: features "
                     f"{r['fit']['features_s']:.0f} s, training {r['fit']['train_s']:.0f} s)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.front_end", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny corpus and recognizer in a temporary folder")
    p.add_argument("--folds", nargs="+", choices=FOLDS, default=None,
                   help="held-out families, one fold each (default all)")
    p.add_argument("--num_train", type=int, default=None,
                   help=f"training utterances per fold (default {FULL['num_train']})")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "front_end"),
                   help="folder for front_end.json and front_end.md (default results/front_end)")
    args = p.parse_args(argv)
    from bench.common import hardware, hardware_line

    t0 = time.time()
    hw = hardware("cpu")
    out = Path(args.out)

    def write(results, partial=True):
        results["meta"] = {"hardware": hw, "elapsed_s": round(time.time() - t0, 1), "quick": args.quick,
                           "partial": partial, "load_average_1m_end": hardware("cpu")["load_average_1m"]}
        out.mkdir(parents=True, exist_ok=True)
        (out / "front_end.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "front_end.md").write_text(to_markdown(results, hardware_line(hw)))

    results = run(args.quick, args.folds, args.num_train, on_fold=write)
    if "skipped" not in results:
        write(results, partial=False)
        print(to_markdown(results, hardware_line(hw)))
    return results


if __name__ == "__main__":
    main()
