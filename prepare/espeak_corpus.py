"""A synthetic English ASR corpus spoken by espeak-ng, saved as a `datasets.DatasetDict` (train/test).

    python -m prepare.espeak_corpus [--num_train 2000] [--num_test 100] [--output_dir cache/data/espeak]
    python -m prepare.espeak_corpus --quick          # 300/40 utterances in cache/data/espeak-quick
    from prepare.espeak_corpus import build_corpus   # build_corpus(output_dir, num_train, num_test, ...) -> DatasetDict

Sentences come from a real English text source (`text_source`):
    "wordnet" (default)  the example sentences of Princeton WordNet 3.0 (Debian `wordnet-base`, ~48k short everyday
                         sentences such as "he stayed later than you did"), optionally only those whose words are all
                         among the source's `top_words` most frequent ones (a vocabulary a small corpus can cover);
    "lee"                gensim's Lee news corpus (shipped in its test data; only ~1000 sentences of <= 20 words);
    a file path          any one-document-per-line English text.
They are split into sentences, cleaned, 4-20 words, no digits by default (espeak would say "500" as words the label
does not spell), deduplicated.
Each utterance gets a voice (an espeak accent + a voice variant, e.g. "en-gb-scotland+m3"), a speed (words per minute)
and a pitch. Held-out speakers: the test split uses voice variants that never occur in training, so train and test
voices are disjoint, and test sentences are disjoint from training sentences. An optional "test_seen" split
(`num_test_seen`) has training sentences said by the held-out voices: new speakers, known sentences.

Columns: `audio` (Audio, 16 kHz; espeak's 22.05 kHz output is resampled once with torchaudio), `text`, `voice`, `id`,
plus `speed` and `pitch`. The parameters are stored in `espeak_params.json`; a second run with the same parameters
reuses the saved corpus.
"""

import argparse
import functools
import io
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import wave
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from prepare.common import CACHE, read_stamp, write_stamp

DEFAULT_OUTPUT = CACHE / "data" / "espeak"
PARAMS_FILE = "espeak_params.json"
FORMAT_VERSION = 5
SAMPLING_RATE = 16000

ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
TRAIN_VARIANTS = ["m1", "m2", "m4", "m5", "m7", "f1", "f3", "f4"]
TEST_VARIANTS = ["m3", "m6", "f2", "f5"]
SPEED_RANGE = (140, 200)  # words per minute (espeak's default is 175)
PITCH_RANGE = (30, 70)  # 0-99 (default 50)


def lee_corpus_paths() -> list[Path]:
    """Paths of the Lee news corpus (`lee_background.cor`, `lee.cor`) inside the installed gensim package's test data."""
    from gensim.test.utils import datapath

    paths = [Path(datapath(name)) for name in ("lee_background.cor", "lee.cor")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"gensim test corpus not found: {missing}")
    return paths


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences at . ! ? followed by white space and an upper-case letter or a quote; no split
    after a title or an initial ("Dr. Smith", "George W. Bush")."""
    parts = re.split(r"(?:(?<=[.!?])|(?<=[.!?][\"']))\s+(?=[\"'(]?[A-Z])", text.strip())
    out = []
    for part in (p.strip() for p in parts if p.strip()):
        if out and re.search(r"\b(?:Mr|Mrs|Ms|Dr|St|Mt|Jr|Sr|Prof|Gen|Sen|Gov|[A-Z])\.$", out[-1]):
            out[-1] += " " + part
        else:
            out.append(part)
    return out


def clean_sentence(sentence: str, min_words: int = 4, max_words: int = 20, allow_digits: bool = False) -> str | None:
    """A speakable, label-safe form of one sentence, or None when it should be dropped.

    Straightens quotes, removes quote marks and brackets, keeps letters, apostrophes inside words, hyphens and
    , . ? ! ; collapses spaces; drops sentences with digits (unless allow_digits), other symbols or a word count
    outside [min_words, max_words]."""
    s = sentence.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    s = re.sub(r"[\"()\[\]]", " ", s)
    s = re.sub(r"(?<![A-Za-z])'|'(?![A-Za-z])", " ", s)  # quote marks, not apostrophes inside words
    s = re.sub(r"\s+([,.?!;:])", r"\1", re.sub(r"\s+", " ", s)).strip()
    allowed = r"[A-Za-z0-9'\-,.?!;: ]+" if allow_digits else r"[A-Za-z'\-,.?!;: ]+"
    if not s or not re.fullmatch(allowed, s) or not re.search(r"[A-Za-z]", s):
        return None
    if not min_words <= len(s.split()) <= max_words:
        return None
    return s


WORDNET_DIR = Path("/usr/share/wordnet")  # Debian package wordnet-base
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


def wordnet_examples(wordnet_dir=None) -> list[str]:
    """The quoted example sentences of the WordNet 3.0 database files (`data.*`: `... | gloss; "example"; ...`) in
    `wordnet_dir` (default WORDNET_DIR)."""
    paths = [Path(wordnet_dir or WORDNET_DIR) / name for name in WORDNET_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"WordNet database files not found: {missing}; install them with "
                                "`apt-get install wordnet-base` (or use text_source='lee' or a text file)")
    examples = []
    for path in paths:
        for line in path.read_text(encoding="latin-1").splitlines():
            if not line.startswith("  "):  # the licence header lines start with two spaces
                examples.extend(re.findall(r'"([^"]+)"', line.partition(" | ")[2]))
    return examples


def _word(token: str) -> str:
    return token.lower().strip(",.?!;:")


def load_sentences(text_source="wordnet", min_words=4, max_words=20, allow_digits=False, top_words=None) -> list[str]:
    """Cleaned, deduplicated (case-insensitively) sentences in source order, from `text_source`: "wordnet", "lee" or
    the path of a one-document-per-line text file. With `top_words` = N, only sentences whose words are all among
    the N most frequent words of the cleaned sentences are kept."""
    if str(text_source) == "wordnet":
        documents = wordnet_examples()
    else:
        paths = lee_corpus_paths() if str(text_source) == "lee" else [Path(text_source)]
        if not paths[0].is_file():
            raise FileNotFoundError(f"text source {text_source!r}: no such file (or use 'wordnet' or 'lee')")
        documents = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in paths).splitlines()
    seen, out = set(), []
    for document in documents:
        for sent in split_sentences(document):
            s = clean_sentence(sent, min_words, max_words, allow_digits)
            if s is not None and s.lower() not in seen:
                seen.add(s.lower())
                out.append(s)
    if top_words:
        from collections import Counter

        counts = Counter(_word(w) for s in out for w in s.split())
        keep = {w for w, _ in counts.most_common(top_words)}
        out = [s for s in out if all(_word(w) in keep for w in s.split())]
    return out


def split_voices(accents=ACCENTS, train_variants=TRAIN_VARIANTS, test_variants=TEST_VARIANTS):
    """(train_voices, test_voices) as espeak voice names "accent+variant"; the variant sets must be disjoint."""
    shared = set(train_variants) & set(test_variants)
    if shared:
        raise ValueError(f"voice variants {sorted(shared)} are in both the train and the test set")
    train = [f"{a}+{v}" for a in accents for v in train_variants]
    test = [f"{a}+{v}" for a in accents for v in test_variants]
    return train, test


def make_plan(sentences, num_train, num_test, seed=0, speed_range=SPEED_RANGE, pitch_range=PITCH_RANGE, num_test_seen=0):
    """Which sentence each utterance says and how: {"train": [...], "test": [...]} of dicts id/text/voice/speed/pitch.

    `num_test` sentences are held out for test (one utterance each); training cycles over the rest (reshuffled each
    pass) so it can have more utterances than sentences. Voices come from `split_voices()`. With `num_test_seen` = n
    > 0 there is also a "test_seen" split: n distinct training sentences said by the held-out test voices (how well
    the model knows what it was taught, from new speakers; "test" measures new sentences from new speakers)."""
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}")
    if num_test_seen < 0:
        raise ValueError(f"num_test_seen must be >= 0, got {num_test_seen}")
    if len(sentences) < num_test + 1:
        raise ValueError(f"need more than num_test={num_test} sentences, got {len(sentences)}")
    rng = random.Random(seed)
    order = list(sentences)
    rng.shuffle(order)
    test_sents, train_sents = order[:num_test], order[num_test:]
    train_voices, test_voices = split_voices()

    def utterance(split, i, text, voice):
        return {"id": f"espeak-{split}-{i:06d}", "text": text, "voice": voice,
                "speed": rng.randint(*speed_range), "pitch": rng.randint(*pitch_range)}

    test = [utterance("test", i, s, test_voices[i % len(test_voices)]) for i, s in enumerate(test_sents)]
    train, pool = [], []
    for i in range(num_train):
        if not pool:
            pool = list(train_sents)
            rng.shuffle(pool)
        train.append(utterance("train", i, pool.pop(), rng.choice(train_voices)))
    plan = {"train": train, "test": test}
    if num_test_seen:
        taught = list(dict.fromkeys(u["text"] for u in train))  # distinct training sentences, in first-use order
        if len(taught) < num_test_seen:
            raise ValueError(f"num_test_seen={num_test_seen} but training has only {len(taught)} distinct sentences")
        plan["test_seen"] = [utterance("test_seen", i, s, test_voices[(i + 1) % len(test_voices)])
                             for i, s in enumerate(taught[:num_test_seen])]
    return plan


@functools.lru_cache(maxsize=1)
def espeak_voices() -> tuple[frozenset, frozenset]:
    """(languages, variants) that the installed espeak-ng knows, from `espeak-ng --voices` and `--voices=variant`."""
    def column(args, index):
        out = subprocess.run(["espeak-ng", *args], capture_output=True, text=True, check=True).stdout.splitlines()
        return [line.split()[index] for line in out[1:] if len(line.split()) > index]

    languages = frozenset(column(["--voices"], 1))
    variants = frozenset(f.split("/")[-1] for f in column(["--voices=variant"], 4))
    return languages, variants


def check_voice(voice: str) -> None:
    """Raise ValueError naming `voice` unless espeak-ng has its language and variant ("en-us+m3"). espeak-ng itself
    silently falls back to its default voice for unknown names, which would mislabel the corpus's speakers."""
    languages, variants = espeak_voices()
    language, _, variant = voice.partition("+")
    if language not in languages:
        raise ValueError(f"espeak-ng has no voice {language!r} (in {voice!r}); see `espeak-ng --voices`")
    if variant and variant not in variants:
        raise ValueError(f"espeak-ng has no voice variant {variant!r} (in {voice!r}); see `espeak-ng --voices=variant`")


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono 16-bit PCM WAV bytes -> (float32 array in [-1, 1], sampling rate)."""
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"expected mono 16-bit WAV, got {w.getnchannels()} channels of {w.getsampwidth()} bytes")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return pcm.astype(np.float32) / 32768.0, w.getframerate()


def write_wav(audio: np.ndarray, sampling_rate: int) -> bytes:
    """float array in [-1, 1] -> mono 16-bit PCM WAV bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sampling_rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes())
    return buf.getvalue()


def synthesize(text: str, voice: str, speed: int = 175, pitch: int = 50, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Speak `text` with espeak-ng (`-v voice -s speed -p pitch -w file.wav`, text on stdin) and return float32 audio at
    `sampling_rate`. Raises ValueError naming the utterance when espeak fails or says nothing."""
    import torch
    import torchaudio.functional as AF

    check_voice(voice)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "utt.wav")
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path]
        proc = subprocess.run(cmd, input=text.encode(), capture_output=True)
        if proc.returncode != 0 or not os.path.exists(path):
            raise ValueError(f"espeak-ng failed for voice {voice!r} on {text!r}: {proc.stderr.decode().strip()}")
        audio, sr = read_wav(Path(path).read_bytes())
    if audio.size == 0 or not np.any(audio):
        raise ValueError(f"espeak-ng produced no audio for voice {voice!r} on {text!r}")
    if sr != sampling_rate:
        audio = AF.resample(torch.from_numpy(audio), sr, sampling_rate).numpy()
    return audio


def _init_worker():
    import torch

    torch.set_num_threads(1)


def _render(item: dict) -> tuple[dict, float, float]:
    t0 = time.perf_counter()
    audio = synthesize(item["text"], item["voice"], item["speed"], item["pitch"])
    row = dict(item, audio={"bytes": write_wav(audio, SAMPLING_RATE), "path": item["id"] + ".wav"})
    return row, time.perf_counter() - t0, len(audio) / SAMPLING_RATE


def render_split(items: list[dict], num_proc: int = 2, desc: str = "espeak"):
    """Render the utterances of one split in parallel (tqdm bar); returns (datasets.Dataset, summed worker seconds,
    summed audio seconds)."""
    import torchaudio.functional  # noqa: F401  (imported once here, inherited by the forked workers)
    from datasets import Audio, Dataset, Features, Value
    from tqdm.auto import tqdm

    rows, seconds, audio_seconds = [], 0.0, 0.0
    pool = get_context("fork").Pool(num_proc, initializer=_init_worker) if num_proc > 1 else None
    try:
        results = pool.imap(_render, items, chunksize=8) if pool else map(_render, items)
        for row, dt, dur in tqdm(results, total=len(items), desc=desc):
            rows.append(row)
            seconds += dt
            audio_seconds += dur
    finally:
        if pool:
            pool.close()
            pool.join()
    features = Features({"audio": Audio(sampling_rate=SAMPLING_RATE), "text": Value("string"), "voice": Value("string"),
                         "id": Value("string"), "speed": Value("int32"), "pitch": Value("int32")})
    columns = {name: [r[name] for r in rows] for name in features}
    return Dataset.from_dict(columns, features=features), seconds, audio_seconds


def build_corpus(output_dir=DEFAULT_OUTPUT, num_train=2000, num_test=100, seed=0, num_proc=2, min_words=4,
                 max_words=20, allow_digits=False, text_source="wordnet", top_words=None, force=False, num_test_seen=0):
    """Make (or reuse) the espeak corpus at `output_dir`; returns the `DatasetDict` (loaded from disk). Raises
    ValueError when `text_source` has too few sentences for `num_test` (training reuses sentences when it has fewer
    than `num_train`)."""
    from datasets import DatasetDict, load_from_disk

    output_dir = Path(output_dir)
    params = {"format": FORMAT_VERSION, "num_train": num_train, "num_test": num_test, "seed": seed,
              "min_words": min_words, "max_words": max_words, "allow_digits": allow_digits,
              "text": str(text_source), "top_words": top_words, "num_test_seen": num_test_seen, "accents": ACCENTS,
              "train_variants": TRAIN_VARIANTS, "test_variants": TEST_VARIANTS, "speed_range": list(SPEED_RANGE),
              "pitch_range": list(PITCH_RANGE), "sampling_rate": SAMPLING_RATE}
    stamp = read_stamp(output_dir / PARAMS_FILE)
    if not force and stamp and stamp.get("params") == params and (output_dir / "dataset_dict.json").exists():
        print(f"[espeak_corpus] cached: {output_dir}")
        return load_from_disk(str(output_dir))

    for voice in sum(split_voices(), []):
        check_voice(voice)
    sentences = load_sentences(text_source, min_words, max_words, allow_digits, top_words)
    plan = make_plan(sentences, num_train, num_test, seed, num_test_seen=num_test_seen)
    distinct = len({u["text"] for u in plan["train"]})
    print(f"[espeak_corpus] {len(sentences)} sentences from {text_source}; {num_train} train utterances "
          f"({distinct} distinct sentences) / {num_test} test utterances (new sentences)"
          + (f" / {num_test_seen} test_seen utterances (training sentences)" if num_test_seen else ""))
    t0 = time.time()
    splits, worker_s, audio_s = {}, 0.0, 0.0
    for split, items in plan.items():
        splits[split], w, a = render_split(items, num_proc, desc=f"espeak {split}")
        worker_s, audio_s = worker_s + w, audio_s + a
    dd = DatasetDict(splits)
    tmp = output_dir.with_name(output_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dd.save_to_disk(str(tmp))
    wall = time.time() - t0
    n = num_train + num_test + num_test_seen
    stats = {"wall_s": round(wall, 1), "wall_ms_per_utt": round(1000 * wall / n, 1),
             "worker_ms_per_utt": round(1000 * worker_s / n, 1), "audio_hours": round(audio_s / 3600, 3), "num_proc": num_proc, "sentences": len(sentences)}
    write_stamp(tmp / PARAMS_FILE, {"params": params, "stats": stats})
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(output_dir)
    size = sum(f.stat().st_size for f in output_dir.rglob("*") if f.is_file()) / 2**20
    print(f"[espeak_corpus] saved {output_dir} ({size:.0f} MiB): {stats}")
    return load_from_disk(str(output_dir))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=None, help=f"default {DEFAULT_OUTPUT} ({DEFAULT_OUTPUT}-quick with --quick)")
    parser.add_argument("--num_train", type=int, default=None, help="training utterances (default 2000; 300 with --quick)")
    parser.add_argument("--num_test", type=int, default=None, help="test utterances (default 100; 40 with --quick)")
    parser.add_argument("--num_test_seen", type=int, default=0,
                        help="also a test_seen split: this many training sentences said by the held-out voices")
    parser.add_argument("--quick", action="store_true", help="a small corpus for a fast demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_proc", type=int, default=2)
    parser.add_argument("--min_words", type=int, default=4)
    parser.add_argument("--max_words", type=int, default=20)
    parser.add_argument("--text_source", default="wordnet", help="wordnet | lee | a one-document-per-line text file")
    parser.add_argument("--top_words", type=int, default=None, help="keep sentences made of the N most frequent words")
    parser.add_argument("--allow_digits", action="store_true", help="keep sentences with digits")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    num_train = args.num_train or (300 if args.quick else 2000)
    num_test = args.num_test or (40 if args.quick else 100)
    output_dir = args.output_dir or (str(DEFAULT_OUTPUT) + "-quick" if args.quick else DEFAULT_OUTPUT)
    dd = build_corpus(output_dir, num_train, num_test, args.seed, args.num_proc, args.min_words, args.max_words,
                      args.allow_digits, args.text_source, args.top_words, args.force, args.num_test_seen)
    print(dd)


if __name__ == "__main__":
    main()
