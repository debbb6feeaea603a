"""Is there a release of PACKAGE newer than the lock? Asks the package registry pip is configured with.

    python scripts/newest_release.py transformers
    -> prints `in_range=<version>` (newest release inside pyproject.toml's range, when newer than requirements.lock),
       `beyond_range=<version>` (newest release outside the range) and `between=<v> <v> ...` (the newest patch of
       every minor release inside the range strictly between requirements-oldest.lock's and requirements.lock's
       minors), each only when there is one.

`make test` tests an in-range release the lock does not have yet (the range claims it), and reports one past the
range without failing: our claim stops at the range, and the remote code warns there. Prereleases are ignored.
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent


def declared_range(package: str):
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(line)
        if req.name.lower() == package.lower():
            return req.specifier
    raise SystemExit(f"{package} is not a dependency in pyproject.toml")


def locked_version(package: str, lock: Path = ROOT / "requirements.lock") -> Version:
    m = re.search(rf"^{re.escape(package)}==(\S+)", lock.read_text(), re.M | re.I)
    if not m:
        raise SystemExit(f"{package} is not pinned in {lock.name}")
    return Version(m.group(1))


def registry_versions(package: str) -> list[Version]:
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package, "--disable-pip-version-check"],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r"Available versions: (.+)", out.stdout)
    if out.returncode or not m:
        raise RuntimeError(f"pip index versions {package} failed: {(out.stderr or out.stdout).strip()[-300:]}")
    versions = []
    for v in m.group(1).split(","):
        try:
            versions.append(Version(v.strip()))
        except InvalidVersion:
            pass
    return [v for v in versions if not v.is_prerelease]


def between_locks(versions: list[Version], spec, oldest: Version, newest: Version) -> list[Version]:
    """The newest patch of each minor release in `spec` whose minor lies strictly between the two locks' minors."""
    newest_patch = {}
    for v in versions:
        if v in spec and oldest.release[:2] < v.release[:2] < newest.release[:2]:
            newest_patch[v.release[:2]] = max(v, newest_patch.get(v.release[:2], v))
    return [newest_patch[k] for k in sorted(newest_patch)]


def main(package: str) -> None:
    spec, locked = declared_range(package), locked_version(package)
    oldest = locked_version(package, ROOT / "requirements-oldest.lock")
    try:
        versions = registry_versions(package)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"[matrix] could not ask the registry for {package} releases ({e}); only the locked sets are tested",
              file=sys.stderr)
        return
    inside = [v for v in versions if v in spec]
    if inside and max(inside) > locked:
        print(f"in_range={max(inside)}")
    if versions and max(versions) not in spec and max(versions) > locked:
        print(f"beyond_range={max(versions)}")
    between = between_locks(versions, spec, oldest, locked)
    if between:
        print("between=" + " ".join(map(str, between)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "transformers")
