"""The synthesizer families (prepare/synthesizers.py): each speaks 16 kHz audio, voices differ, unknown voices and
missing programs are errors naming them, and scripts/setup.sh enables Debian's contrib / non-free for MBROLA."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from prepare import synthesizers as S

ROOT = Path(__file__).resolve().parent.parent
TEXT = "he stayed later than you did"


def _installed(family):
    try:
        return bool(S.installed_voices(family))
    except S.SynthesizerMissing:
        return False


needs = {f: pytest.mark.skipif(not _installed(f), reason=f"{f} not installed (scripts/setup.sh installs it)")
         for f in S.FAMILIES}


@pytest.fixture(autouse=True)
def _fresh_voice_lists():
    S.installed_voices.cache_clear()
    yield
    S.installed_voices.cache_clear()


@pytest.mark.parametrize("family, voice", [
    pytest.param("espeak", "en-gb-scotland+m3", marks=needs["espeak"]),
    pytest.param("mbrola", "mb-us1", marks=needs["mbrola"]),
    pytest.param("flite", "slt", marks=needs["flite"]),
    pytest.param("flite", "kal", marks=needs["flite"]),  # an 8 kHz voice, resampled
])
def test_each_family_speaks_16k_speech(family, voice):
    audio = S.speak(family, voice, TEXT, speed=160, pitch=40)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.8 < len(audio) / 16000 < 4.0  # six words
    assert 0.05 < np.abs(audio).max() <= 1.0


@needs["mbrola"]
@needs["flite"]
def test_voices_of_a_family_differ_and_speed_changes_duration():
    us1, us2 = S.speak("mbrola", "mb-us1", TEXT), S.speak("mbrola", "mb-us2", TEXT)
    assert not np.array_equal(us1[: min(len(us1), len(us2))], us2[: min(len(us1), len(us2))])
    slow, fast = S.speak("flite", "awb", TEXT, speed=120), S.speak("flite", "awb", TEXT, speed=220)
    assert len(slow) > 1.4 * len(fast)


@needs["flite"]
def test_flite_through_ffmpegs_filter(monkeypatch):
    if not S._ffmpeg_has_flite():
        pytest.skip("this ffmpeg has no flite filter")
    monkeypatch.setattr(S, "flite_program", lambda: "ffmpeg")
    assert "rms" in S.installed_voices("flite")
    assert len(S.speak("flite", "rms", TEXT)) / 16000 > 0.8


@needs["espeak"]
def test_unknown_family_and_voice_are_errors_naming_them():
    with pytest.raises(ValueError, match="'festival'"):
        S.speak("festival", "kal", TEXT)
    with pytest.raises(ValueError, match="'nosuch'"):
        S.check_voice("flite", "nosuch")
    with pytest.raises(ValueError, match="'mb-de1'"):
        S.check_voice("mbrola", "mb-de1")
    with pytest.raises(ValueError, match="'zz'"):
        S.check_voice("espeak", "en-us+zz")


def test_missing_program_is_an_error_naming_it_and_how_to_install(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(S.shutil, "which", lambda name: None if name in ("mbrola", "flite") else real_which(name))
    monkeypatch.setattr(S, "_ffmpeg_has_flite", lambda: False)
    with pytest.raises(S.SynthesizerMissing, match="mbrola program.*setup.sh"):
        S.check_voice("mbrola", "mb-us1")
    with pytest.raises(S.SynthesizerMissing, match="flite program.*apt-get install flite"):
        S.speak("flite", "slt", TEXT)


def test_setup_enables_contrib_and_non_free_on_debian_sources_only(tmp_path):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main non-free-firmware\n\n"
        "Types: deb\nURIs: https://example.org/repo\nSuites: stable\nComponents: main\n")
    (apt / "sources.list").write_text("deb http://deb.debian.org/debian bookworm main contrib\n"
                                      "deb https://example.org/other stable main\n")
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    start = setup.index("enable_contrib_non_free() {")
    function = setup[start : setup.index("\n}\n", start) + 3]
    script = f'SUDO=""\n{function}\nenable_contrib_non_free "$1"\nenable_contrib_non_free "$1"'
    subprocess.run(["bash", "-c", script, "_", str(apt)], check=True)  # twice: a second run changes nothing
    stanzas = (apt / "sources.list.d" / "debian.sources").read_text().strip().split("\n\n")
    assert "Components: main contrib non-free\n" in stanzas[0] + "\n"
    assert "Components: main non-free-firmware contrib non-free" in stanzas[1]
    assert "Components: main" in stanzas[2] and "contrib" not in stanzas[2]  # not Debian's: left alone
    assert (apt / "sources.list").read_text() == ("deb http://deb.debian.org/debian bookworm main contrib non-free\n"
                                                  "deb https://example.org/other stable main\n")
    assert "mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1" in setup and "flite" in setup
