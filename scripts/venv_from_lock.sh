#!/usr/bin/env bash
# venv_from_lock.sh DIR LOCK: a virtualenv at DIR holding exactly the hash-pinned set in LOCK (pip --require-hashes).
# Idempotent: skipped when DIR/.lock.sha256 matches LOCK. Used by setup.sh (.venv, requirements.lock) and by
# test_matrix.sh (.venvs/oldest, requirements-oldest.lock). Needs python3 with venv (setup.sh installs it).
set -euo pipefail
dir="$1"; lock="$2"
PYTHON="${PYTHON:-python3}"
hash="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ "$(cat "$dir/.lock.sha256" 2>/dev/null)" = "$hash" ]; then
  exit 0
fi
if [ ! -x "$dir/bin/python" ]; then
  echo "[venv] creating $dir with $($PYTHON --version)"
  "$PYTHON" -m venv "$dir"
fi
echo "[venv] $dir: pip install --require-hashes -r $lock"
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
# the lock is the whole set: a package it does not name is a leftover of an older lock, which could hide a broken one
leftovers="$("$dir/bin/python" - "$lock" <<'PY'
import re, sys
from importlib.metadata import distributions
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = {norm(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==", open(sys.argv[1]).read(), re.M)}
keep = locked | {"pip", "setuptools", "wheel"}
print(" ".join(sorted({norm(d.metadata["Name"]) for d in distributions()} - keep)))
PY
)"
if [ -n "$leftovers" ]; then
  echo "[venv] $dir: removing packages the lock does not name: $leftovers"
  "$dir/bin/python" -m pip uninstall --quiet -y $leftovers
fi
"$dir/bin/python" -m pip check >/dev/null || { "$dir/bin/python" -m pip check; exit 1; }
echo "$hash" > "$dir/.lock.sha256"
