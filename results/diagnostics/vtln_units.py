"""Do speaker-normalised units help? Units = k-means (K=128) of log-mel frames after a per-utterance vocal-tract-
length warp (the power spectrum's frequency axis scaled by the alpha in 0.76..1.24 whose mean speech spectrum best
matches the training mean), then the demo tokenizer's recipe (per-utterance mean/var normalisation, 4 frames stacked
-> 25 Hz, repeats merged). Computed here, outside the shipped tokenizer, to test the idea before building it in.

    PYTHONPATH=. python results/diagnostics/vtln_units.py cache/data/espeak-top300 outputs/diag-vtln 700 --bf16 true
"""
import sys

import datasets
import numpy as np
import torch
import torchaudio
from sklearn.cluster import MiniBatchKMeans
from tqdm.auto import tqdm

sys.path.insert(0, "results/diagnostics")
from _common import DEMO_TOKENIZER, demo_flags, score_units, use_units_by_id

import train_hf

N_FFT, HOP, WIN = 512, 160, 400
ALPHAS = [0.76 + 0.04 * i for i in range(13)]
FBANK = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 20, 7600, 80, 16000, norm="slaney", mel_scale="slaney")
BINS = torch.arange(N_FFT // 2 + 1, dtype=torch.float32)


def power(wave):
    s = torch.stft(torch.as_tensor(wave, dtype=torch.float32), N_FFT, HOP, WIN, torch.hann_window(WIN), return_complex=True)
    return (s.real.square() + s.imag.square()).T  # (T, F)


def warp(p, alpha):  # P_alpha(f) = P(alpha * f), linear interpolation between bins
    x = (BINS * alpha).clamp(max=N_FFT // 2)
    lo = x.floor().long()
    hi, frac = (lo + 1).clamp(max=N_FFT // 2), x - lo
    return p[:, lo] * (1 - frac) + p[:, hi] * frac


def logmel(p):
    return torch.log(p @ FBANK + 1e-6)


def shape(lm):  # mean log-mel of the louder half of the frames, mean-removed
    energy = lm.mean(1)
    m = lm[energy > energy.median()].mean(0)
    return m - m.mean()


def features(p, template):
    alpha = min(ALPHAS, key=lambda a: float((shape(logmel(warp(p, a))) - template).square().sum()))
    lm = logmel(warp(p, alpha))
    lm = (lm - lm.mean(0)) / (lm.std(0) + 1e-5)
    pad = -len(lm) % 4
    lm = torch.cat([lm, lm[-1:].expand(pad, -1)]) if pad else lm
    return lm.reshape(-1, 4 * lm.shape[1]).numpy()


data, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
corpus = datasets.load_from_disk(data)
splits = [s for s in ("train", "test_seen", "test") if s in corpus]
waves = {s: [np.asarray(a["array"], dtype=np.float32) for a in corpus[s]["audio"]] for s in splits}
fit = [power(w) for w in waves["train"][:600]]
template = torch.stack([shape(logmel(p)) for p in fit]).mean(0)
kmeans = MiniBatchKMeans(128, random_state=0, n_init=1, batch_size=4096).fit(np.concatenate([features(p, template) for p in fit]))
units = {}
for s in splits:
    for row, w in zip(tqdm(corpus[s], desc=f"vtln units {s}"), waves[s]):
        u = kmeans.predict(features(power(w), template))
        units[row["id"]] = [int(x) for i, x in enumerate(u) if i == 0 or u[i - 1] != x]


use_units_by_id(units)
trainer = train_hf.main(demo_flags(data, DEMO_TOKENIZER, out, steps, "--speech_init", "mean", *sys.argv[4:]))
for split in splits[1:]:
    score_units(f"vtln {split}", trainer, corpus[split].select(range(60)), units)
