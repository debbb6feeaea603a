#!/usr/bin/env bash
# The version matrix that `make test` runs after the whole suite on requirements.lock (the newest releases in range):
#   1. the whole suite again on requirements-oldest.lock (.venvs/oldest): the lower bound of every HF library;
#   2. the whole suite on the newest transformers release inside pyproject.toml's range when the registry has one
#      that the lock does not (.venvs/newest: the lock plus that release); a release past the range is reported;
#   3. the releases in between: the newest patch of every transformers minor between the two locks' (5.15 ... 5.24
#      today; the GPU image's 5.17 among them), each on the lock with the tests that meet transformers' moving parts
#      (VERSION_TESTS: config construction and every base family, caches and generation, the version shim; ~30 s
#      each) in .venvs/between. A middle release can break what both ends pass: 5.17 failed Gemma 3 configs.
# Any failure fails `make test`.
#
#   bash scripts/test_matrix.sh                      # as make test does
#   bash scripts/test_matrix.sh transformers 5.26.0  # the suite on the lock with another transformers release
#                                                    # (make test-transformers VERSION=5.26.0), e.g. a new one
#   bash scripts/test_matrix.sh gpu-image            # the suite on the CPU with the lent GPU machine's set
#                                                    # (make test-gpu-image: GPU_IMAGE below; torch 2.11 is below
#                                                    # our torch range; Python 3.12 where there is one, as there,
#                                                    # e.g. GPU_IMAGE_PYTHON=~/.pyenv/versions/3.12.1/bin/python3.12):
#                                                    # what to fix before spending device time
#   bash scripts/test_matrix.sh python PYTHON        # the suite with the lock's releases on another Python, e.g.
#                                                    # 3.13 (make test-python PYTHON_BIN=python3.13)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.:tests
PYTEST=(-m pytest tests -q -p no:cacheprovider)
VERSION_TESTS=(tests/test_base_families.py tests/test_generation.py tests/test_versions.py)

versions() {  # what an environment runs, for the log
  "$1/bin/python" -c "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in
    ('transformers', 'huggingface_hub', 'accelerate', 'peft', 'trl', 'datasets', 'torch')))"
}

with_transformers() {  # VERSION DIR: the lock with transformers VERSION (not hash-pinned: not in any lock)
  bash scripts/venv_from_lock.sh "$2" requirements.lock
  rm -f "$2/.lock.sha256"  # no longer the lock's set: the next use reinstalls it
  "$2/bin/python" -m uv pip install --quiet --python "$2/bin/python" "transformers==$1" 2>/dev/null ||
    "$2/bin/python" -m pip install --quiet --disable-pip-version-check "transformers==$1"
  "$2/bin/python" -m pip check
  echo "[matrix] $2: $(versions "$2")"
}

suite_with_transformers() {  # VERSION DIR: the whole suite on the lock with transformers VERSION
  with_transformers "$1" "$2"
  "$2/bin/python" "${PYTEST[@]}"
}

# the lent GPU machine's own releases (../shared/gpu/remote-packages.txt); the rest of the lock stays
GPU_IMAGE=(torch==2.11.0 torchaudio==2.11.0 "torchcodec>=0.11,<0.12" transformers==5.17.0 peft==0.21.0
           accelerate==1.15.0 huggingface-hub==1.33.0 tokenizers==0.23.2)

suite_on_python() {  # PYTHON NAME [PIN ...]: the whole suite with requirements.lock's releases on another Python,
  # in .venvs/NAME-pyX.Y. Without the lock's hashes (they are those of cp311 wheels); each PIN replaces the lock's
  # line of its package, and a torch PIN leaves torch's own needs (CUDA wheels, triton, setuptools) to the resolver.
  local py="$1" name="$2"; shift 2
  local dir=".venvs/$name-py$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
  local names="" pin
  for pin in "$@"; do names="$names|${pin%%[=<>!~]*}"; done
  local drop="^(${names#|})(\[.*\])?=="  # with no PIN: "^()...==", which no line matches
  case " $* " in *" torch=="*) drop="$drop|^(nvidia-|cuda-)|^(triton|setuptools)==" ;; esac
  local reqs; reqs="$(mktemp)"
  sed -e 's/ \\$//' -e '/^ *--hash/d' -e '/^ *#/d' -e '/^$/d' requirements.lock | grep -v -i -E "$drop" > "$reqs"
  if [ $# -gt 0 ]; then printf '%s\n' "$@" >> "$reqs"; fi
  .venv/bin/python -m uv pip install --quiet --python "$dir/bin/python" -r "$reqs"
  rm -f "$reqs"
  "$dir/bin/python" -m pip check
  echo "[matrix] $dir: python $("$dir/bin/python" -c 'import platform; print(platform.python_version())'), $(versions "$dir")"
  "$dir/bin/python" "${PYTEST[@]}" -rs
}

if [ "${1:-}" = gpu-image ]; then  # its Python is 3.12: GPU_IMAGE_PYTHON, else python3.12 where one runs, else python3
  py="${GPU_IMAGE_PYTHON:-python3.12}"
  "$py" --version >/dev/null 2>&1 || py=python3
  suite_on_python "$py" gpu-image "${GPU_IMAGE[@]}"
  exit 0
fi

if [ "${1:-}" = python ]; then
  suite_on_python "$2" lock
  exit 0
fi

if [ "${1:-}" = transformers ]; then
  suite_with_transformers "$2" ".venvs/transformers-$2"
  exit 0
fi

bash scripts/venv_from_lock.sh .venvs/oldest requirements-oldest.lock
echo "[matrix] oldest supported (.venvs/oldest): $(versions .venvs/oldest)"
.venvs/oldest/bin/python "${PYTEST[@]}"

releases="$(.venv/bin/python scripts/newest_release.py transformers)"
in_range="$(sed -n 's/^in_range=//p' <<<"$releases")"
beyond="$(sed -n 's/^beyond_range=//p' <<<"$releases")"
if [ -n "$in_range" ]; then
  echo "[matrix] transformers $in_range is inside the supported range but newer than requirements.lock: testing it"
  suite_with_transformers "$in_range" .venvs/newest
else
  echo "[matrix] newest supported: requirements.lock's transformers is the newest release in range (tested above)"
fi
between="$(sed -n 's/^between=//p' <<<"$releases")"
for version in $between; do
  echo "[matrix] transformers $version (between the locks): ${VERSION_TESTS[*]}"
  with_transformers "$version" .venvs/between
  .venvs/between/bin/python -m pytest -q -p no:cacheprovider "${VERSION_TESTS[@]}"
done
if [ -n "$beyond" ]; then
  echo "[matrix] NOTE: transformers $beyond is out, past the supported range: try it with"
  echo "[matrix]   make test-transformers VERSION=$beyond   then widen pyproject.toml, hf_compat.py and run make lock"
fi
