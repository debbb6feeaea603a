"""Refresh the hash-pinned locks from pyproject.toml's ranges (`make lock`; needs the registry, not a GPU).

    requirements.txt           pyproject.toml's ranges, unpinned (for `pip install -r` and the GPU kit)
    requirements.lock          the newest releases inside every range: what `make setup` / `make test` install
    requirements-oldest.lock   the same, but each library marked `# matrix` in pyproject.toml held at its lower
                               bound (transformers, huggingface_hub, peft, trl, datasets, ...): the old end of the
                               supported range, which `make test` runs the whole suite on as well

Both are resolved by uv for CPython 3.11 on x86_64 Linux (the README's machine) with sha256 hashes of every file,
so `pip install --require-hashes` gives the same set on any day. After it, run `make test`: the new set must pass.
"""

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAIN_LOCK = ROOT / "requirements.lock"
OLDEST_LOCK = ROOT / "requirements-oldest.lock"
OLDEST_PINS = ROOT / "requirements-oldest.in"  # the lower bounds, as constraints for the oldest lock
TARGET = ["--python-version", "3.11", "--python-platform", "x86_64-unknown-linux-gnu"]


def matrix_lower_bounds(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """{name: lower bound} of the dependencies whose line in pyproject.toml ends with `# matrix`."""
    from packaging.requirements import Requirement

    declared = {Requirement(r).name: Requirement(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]}
    bounds = {}
    for line in pyproject.read_text().splitlines():
        m = re.match(r'\s*"([^"]+)",\s*#\s*matrix\b', line)
        if m:
            req = Requirement(m.group(1))
            lower = [s.version for s in declared[req.name].specifier if s.operator == ">="]
            if len(lower) != 1:
                raise ValueError(f"{req.name}: a matrix dependency needs one '>=' lower bound, got {req.specifier}")
            bounds[req.name] = lower[0]
    return bounds


def compile_lock(output: Path, constraints: Path | None = None, upgrade: bool = True) -> None:
    cmd = [sys.executable, "-m", "uv", "pip", "compile", "pyproject.toml", "--all-extras", "--generate-hashes",
           "--quiet", "--custom-compile-command", "make lock", *TARGET, "-o", output.name]
    if upgrade:
        cmd.append("--upgrade")
    if constraints is not None:
        cmd += ["--constraint", constraints.name]
    print("[lock]", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def locked_versions(lock: Path) -> dict[str, str]:
    """{normalised name: version} of a lock file's `name==version` lines."""
    out = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def write_requirements_txt(pyproject: Path = ROOT / "pyproject.toml", out: Path = ROOT / "requirements.txt") -> None:
    """requirements.txt = pyproject.toml's ranges, for `pip install -r` and tools that read that file (the GPU kit)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out.write_text("# The supported ranges, written by `make lock` from pyproject.toml (edit that file, not this one).\n"
                   "# The tested, hash-pinned sets: requirements.lock (newest) and requirements-oldest.lock (oldest).\n"
                   + "".join(f"{d}\n" for d in deps))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep locked versions that still fit (no --upgrade)")
    args = parser.parse_args(argv)
    bounds = matrix_lower_bounds()
    write_requirements_txt()
    OLDEST_PINS.write_text(f"# written by `make lock` from pyproject.toml's lower bounds ({Path(__file__).name})\n"
                           + "".join(f"{name}=={version}\n" for name, version in bounds.items()))
    compile_lock(MAIN_LOCK, upgrade=not args.keep)
    compile_lock(OLDEST_LOCK, constraints=OLDEST_PINS, upgrade=not args.keep)
    new, old = locked_versions(MAIN_LOCK), locked_versions(OLDEST_LOCK)
    for name in bounds:
        key = re.sub(r"[-_.]+", "-", name).lower()
        print(f"[lock] {name:16s} oldest {old.get(key, '?'):10s} newest {new.get(key, '?')}")


if __name__ == "__main__":
    main()
