"""Reference point for issue 17: how well does an off-the-shelf acoustic model trained on REAL speech hear our test
sets? CMU PocketSphinx's en-us model (PyPI `pocketsphinx`, trained by CMU on real read speech; we train nothing) in
phone-loop mode (its `en-us-phone.lm.bin`), scored against the CMU-dictionary phones of the transcript (stress
removed; utterances with a word outside the dictionary are skipped and counted).

    pip install pocketsphinx   # not a dependency of mdu-speech: a diagnostic only
    python results/front_end/pocketsphinx_per.py [--dataset cache/data/multi-demo] [--n 100]

Writes pocketsphinx.json / pocketsphinx.md next to this file. Not comparable digit for digit with the phonetic
tokenizer's PER (espeak-ng phoneme strings, another inventory), but on the same audio and with the same meaning.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
FILLERS = {"SIL", "<s>", "</s>", "<sil>"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cache/data/multi-demo")
    p.add_argument("--splits", default="test,test_mbrola,test_flite")
    p.add_argument("--n", type=int, default=100)
    a = p.parse_args(argv)
    import datasets
    import jiwer
    import torch
    import torchaudio
    from pocketsphinx import Decoder, get_model_path
    from tqdm.auto import tqdm

    from prepare.real_clips import prepare_real_clips

    model = Path(get_model_path())
    cmu = {}
    for line in (model / "en-us" / "cmudict-en-us.dict").read_text().splitlines():
        word, *phones = line.split()
        cmu.setdefault(re.sub(r"\(\d+\)$", "", word), [re.sub(r"\d", "", ph) for ph in phones])
    decoder = Decoder(hmm=str(model / "en-us" / "en-us"), allphone=str(model / "en-us" / "en-us-phone.lm.bin"),
                      lw=2.0, beam=1e-20, pbeam=1e-20, logfn=os.devnull)

    def recognise(array, rate):
        x = torch.as_tensor(array, dtype=torch.float32)
        if rate != 16000:
            x = torchaudio.functional.resample(x, rate, 16000)
        decoder.start_utt()
        decoder.process_raw((x.clamp(-1, 1) * 32767).to(torch.int16).numpy().tobytes(), full_utt=True)
        decoder.end_utt()
        return [s.word for s in decoder.seg() if s.word not in FILLERS and not s.word.startswith("+")]

    def score(name, rows):
        errors = ref_len = skipped = 0
        examples = []
        for row in tqdm(rows, desc=name):
            words = re.findall(r"[a-z']+", row["text"].lower())
            if any(w not in cmu for w in words):
                skipped += 1
                continue
            ref = [ph for w in words for ph in cmu[w]]
            hyp = recognise(row["audio"]["array"], row["audio"]["sampling_rate"])
            o = jiwer.process_words(" ".join(ref), " ".join(hyp) or "<none>")
            errors += o.substitutions + o.deletions + o.insertions
            ref_len += len(ref)
            if len(examples) < 2:
                examples.append({"text": row["text"], "reference": " ".join(ref), "hypothesis": " ".join(hyp)})
        return {"split": name, "per": errors / max(ref_len, 1), "utterances": len(rows) - skipped,
                "skipped_out_of_dictionary": skipped, "examples": examples}

    corpus = datasets.load_from_disk(a.dataset)
    results = [score(s, corpus[s].select(range(min(a.n, len(corpus[s]))))) for s in a.splits.split(",")]
    results.append(score("real_clips", prepare_real_clips(verify=True)))
    (HERE / "pocketsphinx.json").write_text(json.dumps({"dataset": a.dataset, "results": results}, indent=2) + "\n")
    md = ["## Off-the-shelf real-speech acoustic model (CMU PocketSphinx en-us, phone loop) on our test sets", "",
          f"_dataset {a.dataset}; reference: CMU-dictionary phones of the transcript (no stress); "
          "`python results/front_end/pocketsphinx_per.py`_", "",
          "| test split | utterances | skipped (word not in the dictionary) | PER % |", "|---|---:|---:|---:|"]
    md += [f"| {r['split']} | {r['utterances']} | {r['skipped_out_of_dictionary']} | {100 * r['per']:.1f} |"
           for r in results]
    (HERE / "pocketsphinx.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
