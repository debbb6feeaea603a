"""Synthetic audio (chirps + tones + noise, numpy only) and a tiny fitted mel speech tokenizer for fast tests."""

import wave

import numpy as np

SR = 16000


def chirp(seconds=1.0, sr=SR, f0=200.0, f1=3000.0, seed=0) -> np.ndarray:
    """A frequency sweep with a gated overtone and a little noise: varied, speech-like spectra."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f = f0 + (f1 - f0) * t / seconds
    gate = np.sin(2 * np.pi * 3 * t) > 0
    x = 0.5 * np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.3 * gate * np.sin(2 * np.pi * np.cumsum(2.3 * f) / sr)
    return (x + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def corpus(n=12, seconds=0.8) -> list[np.ndarray]:
    return [chirp(seconds + 0.05 * i, f0=100 + 40 * i, f1=600 + 250 * i, seed=i) for i in range(n)]


def fitted_mel_tokenizer(codebook_size=16, **kwargs):
    from fit_speech_tokenizer import fit_speech_tokenizer

    return fit_speech_tokenizer(corpus(), codebook_size=codebook_size, batch_size=300, sampling_rate=SR, **kwargs)


def write_wav(path, x: np.ndarray, sr=SR) -> str:
    """16-bit PCM wav with the standard library (no soundfile needed)."""
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return str(path)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float((a[:n] == b[:n]).mean()) if max(len(a), len(b)) and len(a) == len(b) else 0.0
