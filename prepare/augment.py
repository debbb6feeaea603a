"""Waveform augmentation that makes synthetic voices differ the way speakers, rooms and channels do (16 kHz mono).

    from prepare.augment import sample_augmentation, augment, room_impulse_responses, describe
    rirs = room_impulse_responses(32, seed=0)
    params = sample_augmentation(random.Random(0), num_rirs=len(rirs))    # a JSON-able dict, stored with the utterance
    noisy = augment(audio, params, rirs, seed=0)                          # float32 numpy in, float32 numpy out
    describe(params)   # 'speed=1.1 pitch=+1.6st reverb=rt60:0.42 noise=pink@10dB mp3:24k gain=-7dB'

The chain, in the order a recording meets it (each step drawn with its probability in POLICY):
    speed        Kaldi-style speed perturbation 0.9 / 1.0 / 1.1 (tempo, pitch and formants together; resampling)
    pitch        pitch shift by k/20 (about -2.8 to +2.8 semitones) with the duration kept: phase-vocoder time
                 stretch then resampling (pitch and formants move together, tempo stays)
    reverb       convolution with a simulated room impulse response: shoebox rooms, RT60 0.15-0.6 s, random source and
                 microphone, by pyroomacoustics' image-source method (a bank made once per corpus)
    noise        additive noise at an SNR of 5-30 dB: white, pink (1/f), brown (1/f^2) or babble (3-5 other
                 utterances summed; the corpus passes only training voices of training families)
    channel      8 kHz telephone (300-3400 Hz band-pass, G.711 mu-law, back to 16 kHz), or a lossy codec: mp3
                 16-32 kbit/s or opus 8-16 kbit/s, encoded and decoded by FFmpeg's libmp3lame / libopus (torchcodec)
    gain         -20..0 dB, then scaled down only if it would clip
Vocal-tract-length warping is done on the log-mel features while fitting the phonetic tokenizer (VTLP, Jaitly and
Hinton 2013), with SpecAugment masking: fit_phonetic_tokenizer.py.

Libraries: torchaudio (resampling, speed, phase vocoder, biquads, mu-law, add_noise, FFT convolution) and torchcodec
(mp3 / opus through FFmpeg's libraries), both already pinned; pyroomacoustics for the room simulation. Every step is
deterministic given `seed`.
"""

import math
import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SAMPLING_RATE = 16000
POLICY = {
    "speed": (0.9, 1.0, 1.1),
    "pitch_p": 0.3, "pitch_k": (17, 18, 19, 21, 22, 23),  # pitch ratio k / 20
    "reverb_p": 0.35,
    "noise_p": 0.5, "noise_kinds": ("white", "pink", "brown", "babble"), "snr_db": (5, 10, 15, 20, 30),
    "channel_p": 0.4, "channels": ("telephone", "mp3", "opus"),
    "mp3_kbps": (16, 24, 32), "opus_kbps": (8, 12, 16),
    "gain_db": (-20.0, 0.0),
}
RT60_RANGE = (0.15, 0.6)


def sample_augmentation(rng: random.Random, num_rirs: int = 0, num_babble: tuple[int, int] = (3, 5),
                        policy=POLICY) -> dict:
    """One random augmentation chain as a JSON-able dict (what `augment` applies and `describe` names). `babble` is
    the number of other utterances to sum (the caller supplies them); reverb needs a bank of `num_rirs` > 0."""
    params = {"speed": rng.choice(policy["speed"])}
    if rng.random() < policy["pitch_p"]:
        params["pitch_k"] = rng.choice(policy["pitch_k"])
    if num_rirs and rng.random() < policy["reverb_p"]:
        params["rir"] = rng.randrange(num_rirs)
    if rng.random() < policy["noise_p"]:
        params["noise"] = rng.choice(policy["noise_kinds"])
        params["snr_db"] = rng.choice(policy["snr_db"])
        if params["noise"] == "babble":
            params["babble"] = rng.randint(*num_babble)
    if rng.random() < policy["channel_p"]:
        channel = rng.choice(policy["channels"])
        params["channel"] = channel
        if channel in ("mp3", "opus"):
            params["kbps"] = rng.choice(policy[f"{channel}_kbps"])
    params["gain_db"] = round(rng.uniform(*policy["gain_db"]), 1)
    return params


def describe(params: dict | None, rt60s: list[float] | None = None) -> str:
    """A short readable name of an augmentation chain ("" for none)."""
    if not params:
        return ""
    parts = []
    if params.get("speed", 1.0) != 1.0:
        parts.append(f"speed={params['speed']}")
    if "pitch_k" in params:
        parts.append(f"pitch={12 * math.log2(params['pitch_k'] / 20):+.1f}st")
    if "rir" in params:
        parts.append(f"reverb=rt60:{rt60s[params['rir']]:.2f}" if rt60s else f"reverb=rir{params['rir']}")
    if "noise" in params:
        parts.append(f"noise={params['noise']}@{params['snr_db']}dB")
    if "channel" in params:
        parts.append(params["channel"] + (f":{params['kbps']}k" if "kbps" in params else ""))
    if "gain_db" in params:
        parts.append(f"gain={params['gain_db']:g}dB")
    return " ".join(parts) or "clean"


# ---------------------------------------------------------------------------------------------------- the steps
def _t(audio):
    import torch

    return torch.as_tensor(np.asarray(audio, dtype=np.float32))


def speed_perturb(audio, factor: float, sampling_rate: int = SAMPLING_RATE):
    """Kaldi-style speed perturbation: played `factor` times faster (shorter, higher)."""
    import torchaudio.functional as AF

    if factor == 1.0:
        return _t(audio)
    return AF.speed(_t(audio)[None], sampling_rate, factor)[0][0]


def pitch_shift(audio, num: int, den: int = 20, n_fft: int = 512, hop: int = 128):
    """Every frequency times num / den, duration kept: stretch time by num / den with a phase vocoder, then resample
    num -> den (small integers, so the resampling kernel stays short)."""
    import torch
    import torchaudio.functional as AF

    x = _t(audio)
    if num == den:
        return x
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)
    advance = torch.linspace(0, math.pi * hop, spec.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spec, den / num, advance)
    y = torch.istft(stretched, n_fft, hop, window=window, length=round(len(x) * num / den))
    return AF.resample(y, num, den)[: len(x)]


def room_impulse_responses(count: int, seed: int = 0, sampling_rate: int = SAMPLING_RATE,
                           rt60_range=RT60_RANGE) -> tuple[list[np.ndarray], list[float]]:
    """`count` simulated room impulse responses (pyroomacoustics ShoeBox, image-source method) -> (RIRs normalised to
    a unit direct path, their target RT60s). Rooms 3-10 m wide, 2.5-4 m high; source and microphone >= 0.5 m from the
    walls, 0.5-4 m apart."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs, rt60s = [], []
    while len(rirs) < count:
        dim = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.5, 4)])
        rt60 = float(rng.uniform(*rt60_range))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dim)
        except ValueError:  # a reverberation time the room cannot have (Sabine)
            continue
        src, mic = (rng.uniform(0.5, dim - 0.5) for _ in range(2))
        if not 0.5 <= np.linalg.norm(src - mic) <= 4:
            continue
        room = pra.ShoeBox(dim, fs=sampling_rate, materials=pra.Material(absorption), max_order=min(max_order, 60))
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float32)
        rirs.append(rir / np.abs(rir).max())
        rt60s.append(round(rt60, 3))
    return rirs, rt60s


def reverberate(audio, rir):
    """Convolution with a room impulse response, aligned on its direct path (the strongest tap), same length."""
    import torchaudio.functional as AF

    x, h = _t(audio), _t(rir)
    start = int(h.abs().argmax())
    return AF.fftconvolve(x, h[start:])[: len(x)]


def colored_noise(kind: str, length: int, generator) -> "torch.Tensor":
    """white, pink (power ~ 1/f) or brown (~ 1/f^2) Gaussian noise of unit RMS."""
    import torch

    white = torch.randn(length, generator=generator)
    if kind == "white":
        return white
    exponent = {"pink": 0.5, "brown": 1.0}.get(kind)
    if exponent is None:
        raise ValueError(f"unknown noise kind {kind!r}; known: white, pink, brown, babble")
    spectrum = torch.fft.rfft(white)
    freqs = torch.arange(spectrum.shape[0], dtype=torch.float32).clamp(min=1)
    noise = torch.fft.irfft(spectrum / freqs**exponent, n=length)
    return noise / noise.square().mean().sqrt().clamp(min=1e-8)


def add_noise(audio, noise, snr_db: float):
    """`noise` (tiled or cut to length) added at `snr_db` dB below the audio's power (torchaudio add_noise)."""
    import torch
    import torchaudio.functional as AF

    x, n = _t(audio), _t(noise)
    if n.numel() == 0 or not torch.any(n):
        raise ValueError("noise is empty or silent")
    n = n.repeat(math.ceil(len(x) / len(n)))[: len(x)]
    return AF.add_noise(x[None], n[None], torch.tensor([float(snr_db)]))[0]


def telephone(audio, sampling_rate: int = SAMPLING_RATE):
    """A narrow-band phone line: 300-3400 Hz band-pass, 8 kHz, G.711 mu-law (8 bit), back to `sampling_rate`."""
    import torchaudio.functional as AF

    x = AF.lowpass_biquad(AF.highpass_biquad(_t(audio), sampling_rate, 300.0), sampling_rate, 3400.0)
    x = AF.resample(x, sampling_rate, 8000).clamp(-1, 1)
    x = AF.mu_law_decoding(AF.mu_law_encoding(x, 256), 256)
    return AF.resample(x, 8000, sampling_rate)[: len(audio)]


def codec(audio, fmt: str, kbps: int, sampling_rate: int = SAMPLING_RATE):
    """Encode to `fmt` ("mp3" or "opus") at `kbps` kbit/s and decode again (FFmpeg's encoders, through torchcodec)."""
    import torchaudio.functional as AF
    from torchcodec.decoders import AudioDecoder
    from torchcodec.encoders import AudioEncoder

    if fmt not in ("mp3", "opus"):
        raise ValueError(f"unknown codec {fmt!r}; known: mp3, opus")
    x = _t(audio).clamp(-1, 1)
    rate = 48000 if fmt == "opus" else sampling_rate  # opus runs at 48 kHz (from 16 kHz torchcodec mislabels the rate)
    if rate != sampling_rate:
        x = AF.resample(x, sampling_rate, rate)
    data = AudioEncoder(x[None], sample_rate=rate).to_tensor(fmt, bit_rate=1000 * kbps)
    decoded = AudioDecoder(data).get_all_samples()
    y = decoded.data.mean(0)
    if decoded.sample_rate != sampling_rate:
        y = AF.resample(y, decoded.sample_rate, sampling_rate)
    return y


def augment(audio, params: dict | None, rirs: list[np.ndarray] | None = None, babble: list | None = None, seed: int = 0,
            sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Apply the chain `params` (from sample_augmentation) to float audio -> float32 numpy at `sampling_rate`.
    `rirs`: the bank that params["rir"] indexes; `babble`: the other utterances (arrays) for noise "babble"."""
    import torch

    x = _t(audio)
    if not params:
        return x.numpy()
    generator = torch.Generator().manual_seed(seed)
    x = speed_perturb(x, params.get("speed", 1.0), sampling_rate)
    if "pitch_k" in params:
        x = pitch_shift(x, params["pitch_k"])
    if "rir" in params:
        if not rirs or not 0 <= params["rir"] < len(rirs):
            have = len(rirs or [])
            raise ValueError(f"augmentation asks for room impulse response {params['rir']}, the bank has {have}")
        x = reverberate(x, rirs[params["rir"]])
    if "noise" in params:
        if params["noise"] == "babble":
            if not babble:
                raise ValueError("noise 'babble' needs the other utterances (babble=[...])")
            parts = [_t(b) for b in babble]
            noise = torch.zeros(max(len(x), *(len(p) for p in parts)))
            for p in parts:
                noise[: len(p)] += p / p.square().mean().sqrt().clamp(min=1e-8)
        else:
            noise = colored_noise(params["noise"], len(x), generator)
        x = add_noise(x, noise, params["snr_db"])
    if params.get("channel") == "telephone":
        x = telephone(x, sampling_rate)
    elif params.get("channel") in ("mp3", "opus"):
        x = codec(x, params["channel"], params["kbps"], sampling_rate)
    elif params.get("channel") is not None:
        raise ValueError(f"unknown channel {params['channel']!r}; known: telephone, mp3, opus")
    x = x * 10 ** (params.get("gain_db", 0.0) / 20)
    peak = float(x.abs().max()) if x.numel() else 0.0
    if peak > 0.99:
        x = x * (0.99 / peak)
    return x.numpy().astype(np.float32)
