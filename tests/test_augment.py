"""Augmentation (prepare/augment.py) does what each step says, deterministically; the phonetic tokenizer's feature
augmentation (VTLP, SpecAugment in fit_phonetic_tokenizer.py) warps and masks as documented and the fit records its
time."""

import random
import shutil

import numpy as np
import pytest
import torch

from fit_phonetic_tokenizer import apply_spec_augment, vtlp_warp
from prepare import augment as A

SR = 16000


def tone(freq=200.0, seconds=1.0, amplitude=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x):
    spectrum = np.abs(np.fft.rfft(np.asarray(x) * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / SR)[spectrum.argmax()]


def band_energy(x, lo, hi):
    spectrum = np.abs(np.fft.rfft(np.asarray(x))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return spectrum[(freqs >= lo) & (freqs < hi)].sum()


def test_speed_perturbation_scales_duration_and_pitch():
    x = tone(200)
    fast = A.speed_perturb(x, 1.1).numpy()
    assert len(fast) == pytest.approx(len(x) / 1.1, abs=2)
    assert peak_hz(fast) == pytest.approx(220, abs=3)
    assert np.array_equal(A.speed_perturb(x, 1.0).numpy(), x)


def test_pitch_shift_keeps_duration_and_moves_frequency():
    x = tone(300)
    up, down = A.pitch_shift(x, 22).numpy(), A.pitch_shift(x, 18).numpy()
    assert len(up) == len(down) == len(x)
    assert peak_hz(up[2000:-2000]) == pytest.approx(330, abs=6)
    assert peak_hz(down[2000:-2000]) == pytest.approx(270, abs=6)


def test_room_impulse_responses_are_seeded_and_reverberate():
    rirs, rt60s = A.room_impulse_responses(3, seed=1)
    again, _ = A.room_impulse_responses(3, seed=1)
    assert len(rirs) == len(rt60s) == 3 and all(np.array_equal(a, b) for a, b in zip(rirs, again))
    assert all(A.RT60_RANGE[0] <= t <= A.RT60_RANGE[1] for t in rt60s)
    assert all(np.abs(r).max() == pytest.approx(1.0) for r in rirs)
    click = np.zeros(SR, dtype=np.float32)
    click[100] = 1.0
    wet = A.reverberate(click, rirs[0]).numpy()
    assert len(wet) == SR and wet[100] == pytest.approx(1.0, abs=1e-3)  # aligned on the direct path
    assert np.abs(wet[100 + SR // 100 :]).sum() > 0.5  # a reverberant tail after 10 ms


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_noise_is_added_at_the_requested_snr(kind):
    x = tone(440)
    noise = A.colored_noise(kind, len(x), torch.Generator().manual_seed(0))
    y = A.add_noise(x, noise, 10).numpy()
    snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(10, abs=0.1)
    low, high = band_energy(noise.numpy(), 20, 1000), band_energy(noise.numpy(), 4000, 8000)
    # power per band ~ its width (white), ln(f_hi / f_lo) (pink: 3.9 vs 0.69), 1/f_lo - 1/f_hi (brown)
    assert {"white": 0.1 < low / high < 0.5, "pink": 3 < low / high < 10, "brown": low / high > 100}[kind], low / high
    with pytest.raises(ValueError, match="unknown noise kind 'purple'"):
        A.colored_noise("purple", 10, torch.Generator())


def test_telephone_removes_the_high_band_and_codecs_roundtrip():
    x = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    phone = A.telephone(x).numpy()
    assert len(phone) == len(x)
    assert band_energy(phone, 4200, 8000) < 1e-3 * band_energy(x, 4200, 8000)
    speech_like = tone(300) + tone(1200, amplitude=0.2)
    for fmt, kbps in (("mp3", 32), ("opus", 16)):
        y = A.codec(speech_like, fmt, kbps).numpy()
        assert abs(len(y) - len(speech_like)) < 0.05 * SR, fmt  # opus is resampled from 48 kHz, not mislabelled
        assert peak_hz(y) == pytest.approx(300, abs=5), fmt
    with pytest.raises(ValueError, match="unknown codec 'aac'"):
        A.codec(speech_like, "aac", 32)


def test_sampled_chains_are_seeded_described_and_applied():
    chains = [A.sample_augmentation(random.Random(3), num_rirs=4) for _ in range(2)]
    assert chains[0] == chains[1]
    rng = random.Random(0)
    many = [A.sample_augmentation(rng, num_rirs=4) for _ in range(300)]
    assert {c["speed"] for c in many} == {0.9, 1.0, 1.1}
    assert 0.2 < np.mean(["rir" in c for c in many]) < 0.5 and 0.4 < np.mean(["noise" in c for c in many]) < 0.6
    assert {c["channel"] for c in many if "channel" in c} == {"telephone", "mp3", "opus"}
    params = {"speed": 1.1, "pitch_k": 22, "rir": 0, "noise": "pink", "snr_db": 10, "channel": "mp3", "kbps": 24,
              "gain_db": -6.0}
    assert A.describe(params, [0.42]) == "speed=1.1 pitch=+1.7st reverb=rt60:0.42 noise=pink@10dB mp3:24k gain=-6dB"
    assert A.describe(None) == "" and A.describe({"speed": 1.0}) == "clean"
    rirs, _ = A.room_impulse_responses(1, seed=0)
    x = tone(300, 1.5) + tone(900, 1.5, 0.2)
    y1, y2 = A.augment(x, params, rirs, seed=5), A.augment(x, params, rirs, seed=5)
    assert np.array_equal(y1, y2) and y1.dtype == np.float32 and np.abs(y1).max() <= 0.99
    assert len(y1) == pytest.approx(len(x) / 1.1, rel=0.03)
    assert np.array_equal(A.augment(x, None), x)


def test_augment_errors_name_what_is_missing():
    x = tone()
    with pytest.raises(ValueError, match="babble"):
        A.augment(x, {"noise": "babble", "snr_db": 10})
    with pytest.raises(ValueError, match="room impulse response 3"):
        A.augment(x, {"rir": 3}, rirs=[np.ones(4, dtype=np.float32)])
    with pytest.raises(ValueError, match="unknown channel 'radio'"):
        A.augment(x, {"channel": "radio"})


def test_vtlp_moves_formants_and_spec_augment_masks_bounded_spans():
    frames = torch.zeros(4, 80)
    frames[:, 30] = 1.0
    up, same, down = (vtlp_warp(frames, a, 20.0, 7600.0, SR) for a in (1.1, 1.0, 0.9))
    assert torch.allclose(same, frames, atol=1e-5)
    assert int(up[0].argmax()) > 30 > int(down[0].argmax())
    g = torch.Generator().manual_seed(0)
    ones = torch.ones(300, 80)
    masked = [apply_spec_augment(ones, g) for _ in range(50)]
    for m in masked:
        zero_rows, zero_cols = (m == 0).all(1).sum().item(), (m == 0).all(0).sum().item()
        assert zero_rows <= 2 * 15 and zero_cols <= 2 * 12
    assert any((m == 0).any() for m in masked) and torch.equal(ones, torch.ones(300, 80))  # input untouched


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (scripts/setup.sh installs it)")
def test_fit_with_feature_augmentation_records_where_the_time_goes():
    from fit_phonetic_tokenizer import fit_phonetic_tokenizer
    from prepare.espeak_corpus import synthesize

    texts = ["the cat sat on the mat", "a big dog ran home", "she sees the sea", "we like red apples"]
    audio = [synthesize(t, "en-us+m1") for t in texts]
    with pytest.raises(ValueError, match="vtlp"):
        fit_phonetic_tokenizer(audio, texts, vtlp=0.6, sampling_rate=SR)
    tok, history = fit_phonetic_tokenizer(audio, texts, epochs=2, batch_size=2, sampling_rate=SR, spec_augment=True,
                                          vtlp=0.1, recognizer_dim=16, recognizer_layers=1, eval_audio=audio[:2],
                                          eval_texts=texts[:2])
    assert {"g2p_s", "features_s", "train_s"} <= set(history[0]) and "g2p_s" not in history[1]
    assert history[-1]["eval_s"] >= 0 and 0 <= history[-1]["eval_per"] and tok.is_fitted
