"""Tiny training data for tests: a few synthetic utterances (one tone pattern per word), a tiny base on disk,
and a tiny fitted mel speech tokenizer. Everything offline and deterministic."""

import csv
import wave
from pathlib import Path

import numpy as np
from tiny_models import tiny_base, tiny_text_tokenizer

SR = 16000
WORDS = {"yes": (300, 900), "no": (500, 1500), "go": (700, 2100), "up": (1100, 400), "hi": (1600, 800)}
SENTENCES = ["yes no", "go up", "hi yes", "no go", "up hi", "yes go", "hi no", "up yes"]


def word_wave(word: str, rng) -> np.ndarray:
    """0.12 s per word: two tones in sequence plus a little noise."""
    f1, f2 = WORDS[word]
    t = np.arange(int(0.06 * SR)) / SR
    tone = np.concatenate([np.sin(2 * np.pi * f1 * t), np.sin(2 * np.pi * f2 * t)])
    return 0.5 * tone + 0.01 * rng.standard_normal(len(tone))


def utterance(sentence: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gap = np.zeros(int(0.03 * SR))
    parts = [gap]
    for w in sentence.split():
        parts += [word_wave(w, rng), gap]
    return np.concatenate(parts).astype(np.float32)


def write_wav(path: Path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SR)
        f.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def make_audio_folder(root: Path, n: int = 8) -> Path:
    """root/ with clip_i.wav + metadata.csv (file_name, text): the audiofolder layout."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)]
        write_wav(root / f"clip_{i}.wav", utterance(text, seed=i))
        rows.append({"file_name": f"clip_{i}.wav", "text": text})
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file_name", "text"])
        w.writeheader()
        w.writerows(rows)
    return root


def save_tiny_base(path: Path) -> Path:
    """A tiny random Llama + char tokenizer saved like a real base model."""
    tiny_base().save_pretrained(path)
    tiny_text_tokenizer().save_pretrained(path)
    return path


def fit_tiny_speech_tokenizer(audio_dir: Path, out: Path, codebook_size: int = 16) -> Path:
    from fit_speech_tokenizer import fit_speech_tokenizer

    files = sorted(str(p) for p in audio_dir.glob("*.wav"))
    tok = fit_speech_tokenizer(files, codebook_size=codebook_size, batch_size=64, n_mels=20, seed=0)
    tok.save_pretrained(out)
    return out
