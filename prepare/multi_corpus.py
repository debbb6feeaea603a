"""A multi-synthesizer English ASR corpus with a leave-one-synthesizer-out protocol, saved as a `datasets.DatasetDict`.

    python -m prepare.multi_corpus --held_out flite [--num_train 6000] [--num_test 100] [--output_dir DIR]
    from prepare.multi_corpus import build_multi_corpus, protocol

The sentences are the espeak corpus's (prepare/espeak_corpus.py: WordNet examples by default); the voices come from
three synthesizer families (prepare/synthesizers.py: espeak-ng, MBROLA through espeak-ng, flite). One family is held
out (`held_out`): no training utterance is spoken by it, and no babble noise either. Splits:
    train          every other family ("training families"), their training voices; a share `augment_p` of the
                   utterances goes through a random augmentation chain (prepare/augment.py: speed, pitch, reverb,
                   noise, telephone / mp3 / opus), the rest is clean
    test           new sentences, held-out espeak-ng voices (clean; as in the espeak corpus)
    test_seen      training sentences, held-out espeak-ng voices (with `num_test_seen` > 0)
    test_<family>  for mbrola and flite: the same new sentences as `test`, by the family's held-out voices when it is
                   a training family, by all its voices when it is the held-out family (clean)
`protocol(held_out)` says which test split is which ("held-out family" / "held-out voices of a training family").
Columns: `audio` (16 kHz), `text`, `id`, `synthesizer` (family), `voice`, `speed`, `pitch`, `augment` (the chain in
words, "" when clean). The parameters are stamped in `multi_params.json`; a second call with the same ones reuses the
saved corpus (`make assets` builds it ahead).
"""

import argparse
import random
import shutil
import time
import zlib
from multiprocessing import get_context
from pathlib import Path

from prepare import augment as aug
from prepare import espeak_corpus as ec
from prepare import synthesizers as synth
from prepare.common import CACHE, read_stamp, write_stamp

PARAMS_FILE = "multi_params.json"
FORMAT_VERSION = 1
SAMPLING_RATE = 16000
# (training voices, held-out voices) per family; a held-out family is tested on both lists
VOICE_SPLITS = {
    "espeak": tuple(tuple(v) for v in ec.split_voices()),  # 64 accent+variant voices / 32 with other variants
    "mbrola": (("mb-us1", "mb-us2", "mb-en1"), ("mb-us3",)),
    "flite": (("kal", "awb", "slt"), ("rms",)),
}
FAMILY_WEIGHT = {"espeak": 2, "mbrola": 1, "flite": 1}  # share of training utterances among the training families
NUM_RIRS = 48


def protocol(held_out: str) -> dict:
    """{test split: {"family", "role", "voices"}} of the corpus that holds `held_out` out."""
    synth.check_family(held_out)
    out = {}
    for family in synth.FAMILIES:
        split = "test" if family == "espeak" else f"test_{family}"
        train_voices, test_voices = VOICE_SPLITS[family]
        if family == held_out:
            voices = test_voices if family == "espeak" else train_voices + test_voices
            out[split] = {"family": family, "role": "held-out family", "voices": list(voices)}
        else:
            out[split] = {"family": family, "role": "held-out voices of a training family", "voices": list(test_voices)}
    return out


def _speed_pitch(rng, family):
    pitch = rng.randint(*ec.PITCH_RANGE) if family != "flite" else 50  # flite keeps its voices' pitch
    return rng.randint(*ec.SPEED_RANGE), pitch


def make_plan(sentences, num_train, num_test, held_out, seed=0, num_test_seen=0, augment_p=0.6, num_rirs=None) -> dict:
    """Which sentence each utterance says, by which family and voice, and how it is augmented: {split: [items]}.
    Test sentences (the first `num_test` of a seeded shuffle) are never training sentences; training cycles over the
    rest. Families, voices, speeds, pitches and augmentation chains are drawn from one seeded RNG."""
    synth.check_family(held_out)
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}")
    if len(sentences) < num_test + 1:
        raise ValueError(f"need more than num_test={num_test} sentences, got {len(sentences)}")
    if not 0 <= augment_p <= 1:
        raise ValueError(f"augment_p must be in [0, 1], got {augment_p}")
    num_rirs = NUM_RIRS if num_rirs is None else num_rirs
    rng = random.Random(seed)
    order = list(sentences)
    rng.shuffle(order)
    test_sents, train_sents = order[:num_test], order[num_test:]
    families = [f for f in synth.FAMILIES if f != held_out]
    weights = [FAMILY_WEIGHT[f] for f in families]

    def item(split, i, text, family, voice, augment=None):
        speed, pitch = _speed_pitch(rng, family)
        return {"id": f"{family}-{split}-{i:06d}", "text": text, "synthesizer": family, "voice": voice,
                "speed": speed, "pitch": pitch, "augment": augment}

    def babble(count):
        out = []
        for _ in range(count):
            family = rng.choices(families, weights)[0]
            speed, pitch = _speed_pitch(rng, family)
            out.append([family, rng.choice(VOICE_SPLITS[family][0]), rng.choice(train_sents), speed, pitch])
        return out

    train, pool = [], []
    for i in range(num_train):
        if not pool:
            pool = list(train_sents)
            rng.shuffle(pool)
        family = rng.choices(families, weights)[0]
        params = aug.sample_augmentation(rng, num_rirs) if rng.random() < augment_p else None
        if params and params.get("noise") == "babble":
            params["babble_utterances"] = babble(params.pop("babble"))
        train.append(item("train", i, pool.pop(), family, rng.choice(VOICE_SPLITS[family][0]), params))
    plan = {"train": train}
    for split, spec in protocol(held_out).items():
        voices = spec["voices"]
        plan[split] = [item(split, i, s, spec["family"], voices[i % len(voices)]) for i, s in enumerate(test_sents)]
    if num_test_seen:
        taught = list(dict.fromkeys(u["text"] for u in train))
        if len(taught) < num_test_seen:
            raise ValueError(f"num_test_seen={num_test_seen} but training has only {len(taught)} distinct sentences")
        voices = VOICE_SPLITS["espeak"][1]
        plan["test_seen"] = [item("test_seen", i, s, "espeak", voices[(i + 1) % len(voices)])
                             for i, s in enumerate(taught[:num_test_seen])]
    return plan


_ROOMS: tuple[list, list] = ([], [])  # (RIRs, RT60s) of the corpus being built, set before the worker pool forks


def render(item: dict, rooms: tuple[list, list] | None = None) -> tuple[dict, float]:
    """One planned utterance -> (row with `audio` WAV bytes and `augment` in words, seconds of audio). `rooms`:
    the (RIRs, RT60s) bank that the chain's "rir" indexes (default: the corpus's)."""
    rirs, rt60s = _ROOMS if rooms is None else rooms
    audio = synth.speak(item["synthesizer"], item["voice"], item["text"], item["speed"], item["pitch"])
    params = item.get("augment")
    if params:
        babble = [synth.speak(f, v, t, s, p) for f, v, t, s, p in params.get("babble_utterances", [])]
        audio = aug.augment(audio, params, rirs, babble, seed=zlib.crc32(item["id"].encode()))
    wav = {"bytes": ec.write_wav(audio, SAMPLING_RATE), "path": item["id"] + ".wav"}
    row = dict(item, augment=aug.describe(params, rt60s), audio=wav)
    return row, len(audio) / SAMPLING_RATE


def render_split(items: list[dict], num_proc: int = 2, desc: str = "render"):
    """Render one split in parallel (forked workers, tqdm bar) -> (datasets.Dataset, seconds of audio)."""
    import torchaudio.functional  # noqa: F401  (imported once here, inherited by the forked workers)
    from datasets import Audio, Dataset, Features, Value
    from tqdm.auto import tqdm

    rows, seconds = [], 0.0
    pool = get_context("fork").Pool(num_proc, initializer=ec._init_worker) if num_proc > 1 else None
    try:
        results = pool.imap(render, items, chunksize=8) if pool else map(render, items)
        for row, dur in tqdm(results, total=len(items), desc=desc):
            rows.append(row)
            seconds += dur
    finally:
        if pool:
            pool.close()
            pool.join()
    features = Features({"audio": Audio(sampling_rate=SAMPLING_RATE), "text": Value("string"), "id": Value("string"),
                         "synthesizer": Value("string"), "voice": Value("string"), "speed": Value("int32"),
                         "pitch": Value("int32"), "augment": Value("string")})
    return Dataset.from_dict({name: [r[name] for r in rows] for name in features}, features=features), seconds


def build_multi_corpus(output_dir=None, held_out="flite", num_train=6000, num_test=100, num_test_seen=0, seed=0,
                       augment_p=0.6, num_proc=2, text_source="wordnet", top_words=None, min_words=4, max_words=20,
                       force=False):
    """Make (or reuse) the corpus at `output_dir` (default cache/data/multi-<held_out>); returns the DatasetDict."""
    from datasets import DatasetDict, load_from_disk

    synth.check_family(held_out)
    output_dir = Path(output_dir or CACHE / "data" / f"multi-{held_out}")
    params = {"format": FORMAT_VERSION, "held_out": held_out, "num_train": num_train, "num_test": num_test,
              "num_test_seen": num_test_seen, "seed": seed, "augment_p": augment_p, "text": str(text_source),
              "top_words": top_words, "min_words": min_words, "max_words": max_words,
              "voice_splits": {k: [list(v) for v in s] for k, s in VOICE_SPLITS.items()},
              "family_weight": FAMILY_WEIGHT,
              "policy": {k: list(v) if isinstance(v, tuple) else v for k, v in aug.POLICY.items()},
              "num_rirs": NUM_RIRS, "rt60_range": list(aug.RT60_RANGE), "espeak_speed_range": list(ec.SPEED_RANGE),
              "espeak_pitch_range": list(ec.PITCH_RANGE), "sampling_rate": SAMPLING_RATE}
    stamp = read_stamp(output_dir / PARAMS_FILE)
    if not force and stamp and stamp.get("params") == params and (output_dir / "dataset_dict.json").exists():
        print(f"[multi_corpus] cached: {output_dir}")
        return load_from_disk(str(output_dir))

    sentences = ec.load_sentences(text_source, min_words, max_words, False, top_words)
    plan = make_plan(sentences, num_train, num_test, held_out, seed, num_test_seen, augment_p, NUM_RIRS)
    for family, voice in sorted({(u["synthesizer"], u["voice"]) for items in plan.values() for u in items}):
        synth.check_voice(family, voice)  # every voice before any rendering: a missing one fails fast, by name
    assert all(u["synthesizer"] != held_out for u in plan["train"]), "the held-out family must not be in training"
    t0 = time.time()
    global _ROOMS
    _ROOMS = aug.room_impulse_responses(NUM_RIRS, seed)
    print(f"[multi_corpus] {len(sentences)} sentences; held-out family {held_out!r}; "
          + ", ".join(f"{k}: {len(v)}" for k, v in plan.items()))
    splits, audio_s = {}, 0.0
    for split, items in plan.items():
        splits[split], seconds = render_split(items, num_proc, desc=f"multi {split}")
        audio_s += seconds
    dd = DatasetDict(splits)
    tmp = output_dir.with_name(output_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dd.save_to_disk(str(tmp))
    n = sum(len(v) for v in plan.values())
    counts = {s: {f: sum(u["synthesizer"] == f for u in items) for f in synth.FAMILIES} for s, items in plan.items()}
    stats = {"wall_s": round(time.time() - t0, 1), "wall_ms_per_utt": round(1000 * (time.time() - t0) / n, 1),
             "audio_hours": round(audio_s / 3600, 3), "num_proc": num_proc, "sentences": len(sentences),
             "augmented_train": sum(bool(u["augment"]) for u in plan["train"]), "family_counts": counts}
    write_stamp(tmp / PARAMS_FILE, {"params": params, "protocol": protocol(held_out), "stats": stats})
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(output_dir)
    print(f"[multi_corpus] saved {output_dir}: {stats}")
    return load_from_disk(str(output_dir))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held_out", default="flite", choices=synth.FAMILIES, help="the family training never hears")
    parser.add_argument("--output_dir", default=None, help="default cache/data/multi-<held_out>")
    parser.add_argument("--num_train", type=int, default=6000)
    parser.add_argument("--num_test", type=int, default=100)
    parser.add_argument("--num_test_seen", type=int, default=0)
    parser.add_argument("--augment_p", type=float, default=0.6, help="share of training utterances augmented")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_proc", type=int, default=2)
    parser.add_argument("--text_source", default="wordnet")
    parser.add_argument("--top_words", type=int, default=None)
    parser.add_argument("--max_words", type=int, default=20)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    dd = build_multi_corpus(args.output_dir, args.held_out, args.num_train, args.num_test, args.num_test_seen,
                            args.seed, args.augment_p, args.num_proc, args.text_source, args.top_words,
                            max_words=args.max_words, force=args.force)
    print(dd)


if __name__ == "__main__":
    main()
