"""Speak English text with the offline synthesizer families: espeak-ng, MBROLA (driven by espeak-ng) and flite.

    from prepare.synthesizers import speak, installed_voices
    audio = speak("flite", "slt", "he stayed later than you did", speed=160)   # float32 in [-1, 1] at 16 kHz

Families (one signal generator each, so a model trained on some can be tested on one it never heard):
    espeak   espeak-ng's formant synthesizer: an accent + a voice variant, e.g. "en-gb-scotland+m3" (Debian espeak-ng)
    mbrola   MBROLA diphone voices (concatenated recordings of a human speaker) with espeak-ng's front end and prosody:
             "mb-us1" (female), "mb-us2", "mb-us3", "mb-en1" (male; en1 British). Debian `mbrola` + `mbrola-us1` ...
             in contrib / non-free: scripts/setup.sh enables those components and installs them
    flite    CMU flite, its own front end (CMU lexicon) and voices: "kal" (diphone, 8 kHz), "kal16" (diphone),
             "awb", "rms", "slt" (clustergen statistical parametric voices of three CMU ARCTIC speakers). Debian `flite`
             (its CLI varies the speed too), else ffmpeg's `flite` source filter (voice only)
`speed` is in words per minute (espeak's scale, default 175; flite gets it as `duration_stretch` = 175 / speed) and
`pitch` is espeak's 0-99 (default 50; flite keeps its voice's own pitch: vary it by augmentation).

Unknown voices and missing programs are errors that name them (espeak-ng and flite would otherwise fall back to their
default voice silently, mislabelling the corpus's speakers).
"""

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from prepare import espeak_corpus

FAMILIES = ("espeak", "mbrola", "flite")
MBROLA_VOICES = ("mb-us1", "mb-us2", "mb-us3", "mb-en1")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
MBROLA_DIRS = (Path("/usr/share/mbrola"), Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data/mbrola"))
INSTALL_HINT = {
    "espeak": "apt-get install espeak-ng",
    "mbrola": "bash scripts/setup.sh (enables Debian contrib / non-free, then apt-get install mbrola mbrola-us1 "
              "mbrola-us2 mbrola-us3 mbrola-en1)",
    "flite": "apt-get install flite (or an ffmpeg built with its flite filter)",
}
SAMPLING_RATE = 16000


class SynthesizerMissing(RuntimeError):
    """A synthesizer program or voice data that is not installed (the message names it and how to install it)."""


def check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown synthesizer family {family!r}; known: {FAMILIES}")


@functools.lru_cache(maxsize=1)
def _ffmpeg_has_flite() -> bool:
    if shutil.which("ffmpeg") is None:
        return False
    out = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == ["flite"] for line in out.splitlines() if line.strip())


def flite_program() -> str:
    """"flite" (Debian's CLI) or "ffmpeg" (its flite source filter), whichever is installed, CLI first."""
    if shutil.which("flite"):
        return "flite"
    if _ffmpeg_has_flite():
        return "ffmpeg"
    raise SynthesizerMissing(f"synthesizer family 'flite' needs the flite program: {INSTALL_HINT['flite']}")


def _mbrola_data(voice: str) -> Path | None:
    name = voice.removeprefix("mb-")
    for root in MBROLA_DIRS:
        for path in (root / name / name, root / name):
            if path.is_file():
                return path
    return None


@functools.lru_cache(maxsize=None)
def installed_voices(family: str) -> tuple[str, ...]:
    """The voices of `family` that this machine can speak with (espeak: the voice variants' names are combined with
    accents as "accent+variant"; this lists the accents). Raises SynthesizerMissing when the program is missing."""
    check_family(family)
    if shutil.which("espeak-ng") is None and family in ("espeak", "mbrola"):
        raise SynthesizerMissing(f"synthesizer family {family!r} needs espeak-ng: {INSTALL_HINT['espeak']}")
    if family == "espeak":
        return tuple(sorted(espeak_corpus.espeak_voices()[0]))
    if family == "mbrola":
        if shutil.which("mbrola") is None:
            raise SynthesizerMissing(f"synthesizer family 'mbrola' needs the mbrola program: {INSTALL_HINT['mbrola']}")
        return tuple(v for v in MBROLA_VOICES if _mbrola_data(v) is not None)
    if flite_program() == "flite":
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        listed = out.split(":", 1)[-1].split()
    else:
        cmd = ["ffmpeg", "-hide_banner", "-f", "lavfi", "-i", "flite=list_voices=1"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        listed = [w.strip("',") for w in (proc.stdout + proc.stderr).split()]
    return tuple(v for v in FLITE_VOICES if v in listed)


def check_voice(family: str, voice: str) -> None:
    """Raise ValueError naming the voice unless `family` knows it, SynthesizerMissing when it is not installed."""
    check_family(family)
    if family == "espeak":
        installed_voices("espeak")  # the program check
        espeak_corpus.check_voice(voice)
        return
    known = MBROLA_VOICES if family == "mbrola" else FLITE_VOICES
    if voice not in known:
        raise ValueError(f"synthesizer family {family!r} has no voice {voice!r}; known: {known}")
    if voice not in installed_voices(family):
        raise SynthesizerMissing(f"{family} voice {voice!r} is not installed: {INSTALL_HINT[family]}")


def _run(cmd: list[str], text: str, family: str, voice: str, path: str, stdin: bool = True) -> np.ndarray:
    proc = subprocess.run(cmd, input=text.encode() if stdin else None, capture_output=True)
    if proc.returncode != 0 or not os.path.exists(path):
        error = proc.stderr.decode(errors="replace").strip()[-400:]
        raise ValueError(f"{family} failed for voice {voice!r} on {text!r}: {error}")
    audio, sr = espeak_corpus.read_wav(Path(path).read_bytes())
    return audio, sr


def speak(family: str, voice: str, text: str, speed: int = 175, pitch: int = 50,
          sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """`text` spoken by `voice` of synthesizer `family` -> float32 mono audio at `sampling_rate`. Errors name the
    family, the voice and the text."""
    import torch
    import torchaudio.functional as AF

    check_voice(family, voice)
    if family == "espeak":
        return espeak_corpus.synthesize(text, voice, speed, pitch, sampling_rate)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "utt.wav")
        if family == "mbrola":
            cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path]
            audio, sr = _run(cmd, text, family, voice, path)
        elif flite_program() == "flite":
            with open(os.path.join(tmp, "utt.txt"), "w") as f:
                f.write(text)
            cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={175 / speed:.3f}", "-f", f.name, "-o", path]
            audio, sr = _run(cmd, text, family, voice, path, stdin=False)
        else:
            with open(os.path.join(tmp, "utt.txt"), "w") as f:
                f.write(text)
            cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                   f"flite=textfile={f.name}:voice={voice}", "-ac", "1", "-c:a", "pcm_s16le", "-y", path]
            audio, sr = _run(cmd, text, family, voice, path, stdin=False)
    if audio.size == 0 or not np.any(audio):
        raise ValueError(f"{family} produced no audio for voice {voice!r} on {text!r}")
    if sr != sampling_rate:
        audio = AF.resample(torch.from_numpy(audio), sr, sampling_rate).numpy()
    return audio
