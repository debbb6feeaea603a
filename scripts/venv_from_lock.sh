#!/usr/bin/env bash
# venv_from_lock.sh DIR LOCK: a virtualenv at DIR holding exactly the hash-pinned set in LOCK (--require-hashes).
# Idempotent: skipped when DIR/.lock.sha256 matches LOCK. Used by setup.sh (.venv, requirements.lock) and by
# test_matrix.sh (.venvs/oldest, requirements-oldest.lock). Needs python3 with venv (setup.sh installs it).
#
# The installer is uv (itself pinned with its hashes in the lock, bootstrapped with pip): it hard-links every package
# from one cache (~/.cache/uv, or UV_CACHE_DIR), so .venv and .venvs/oldest share one copy of torch and its CUDA
# libraries (~6 GB) instead of two; `make test` needs ~6.5 GB of disk, not 13. Where uv cannot install (e.g. a machine
# whose only package index is a mirror named in pip.conf, which uv does not read), pip installs the same lock.
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
py="$dir/bin/python"
pip=("$py" -m pip --disable-pip-version-check)

uv_pin="$(awk '/^uv==/ {p = 1} p {print; if ($0 !~ /\\$/) exit}' "$lock")"  # "uv==X \ --hash=... " as locked
uv_ok=0
if [ -n "$uv_pin" ]; then
  uv_version="$(sed -n '1s/^uv==\([^ ]*\).*/\1/p' <<<"$uv_pin")"
  if [ "$("$py" -m uv --version 2>/dev/null | cut -d' ' -f2)" != "$uv_version" ]; then
    pin_file="$(mktemp)"; printf '%s\n' "$uv_pin" > "$pin_file"
    "${pip[@]}" install --quiet --require-hashes --no-deps -r "$pin_file" || true
    rm -f "$pin_file"
  fi
  if "$py" -m uv --version >/dev/null 2>&1; then
    echo "[venv] $dir: uv pip install --require-hashes -r $lock"
    if "$py" -m uv pip install --quiet --python "$py" --require-hashes -r "$lock"; then
      uv_ok=1
    else
      echo "[venv] $dir: uv could not install $lock (message above); installing it with pip instead"
    fi
  fi
fi
if [ "$uv_ok" = 0 ]; then
  echo "[venv] $dir: pip install --require-hashes -r $lock"
  "${pip[@]}" install --quiet --require-hashes -r "$lock"
fi

# the lock is the whole set: a package it does not name is a leftover of an older lock, which could hide a broken one
leftovers="$("$py" - "$lock" <<'PY'
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
  "${pip[@]}" uninstall --quiet -y $leftovers
fi
"${pip[@]}" check >/dev/null || { "${pip[@]}" check; exit 1; }
echo "$hash" > "$dir/.lock.sha256"
