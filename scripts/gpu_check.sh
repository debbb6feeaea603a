#!/usr/bin/env bash
# The checks that wait for a lent GPU machine (issue 20), in one prepared script that fits the device budget
# (../shared/gpu/README.md: one H100/H200, python3 3.12 with torch 2.11 and transformers 5.17; no internet, apt,
# ffmpeg or espeak-ng; at most 64 MiB carried, 8 files back from $OUT).
#
# 1. Here, from the project root (needs the package registry, the demo's corpus and its fitted phonetic tokenizer):
#      bash scripts/gpu_check.sh prepare
#    .whl/            the wheels the machine lacks + remote-env.sh (../shared/gpu/fetch-wheels.sh)
#    .gpu/units/      the demo corpus's train + test splits as precomputed speech units, with its speech tokenizer
#                     (python -m training.precompute_units): training there decodes no audio and needs no ffmpeg
#    .gpu/base-135m/  SmolLM2-135M's config and text tokenizer (its weights do not fit the 64 MiB: random weights of
#                     that shape are made there)
#    .gpu-bundle.tar.gz  .gpu packed (15 MB -> 11 MB): what travels; the run unpacks it into .gpu
#    DeepSpeed for the dist step: its wheel built here (DEEPSPEED_VERSION, pure Python, ops left to JIT) and the needs
#    the machine lacks (pydantic, hjson) in .whl.
#    and prints what travels. UNITS_SOURCE / UNITS_TOKENIZER choose another corpus / tokenizer; SKIP_WHEELS=1 keeps
#    .whl as it is.
# 2. Here, the Python steps on the CPU at tiny sizes (a check of this script, not a measurement):
#      bash scripts/gpu_check.sh cpu
# 3. There, the device tool's run: command "STEPS='...' bash scripts/gpu_check.sh", carry [".whl",
#    ".gpu-bundle.tar.gz"], timeout_s 590.
#    Steps, each under its own `timeout` (seconds overridable), logs in $OUT:
#      suite   T_SUITE=180  pytest tests -n 8 --timeout 120 --device cuda                          pytest.log
#      units   T_UNITS=90   train_hf.py on the carried units, the demo's GPU recipe (bf16, batch 32,
#                           lr 1e-3, E-Branchformer interleaved 25%) on a random SmolLM2-135M-shape base,
#                           UNITS_STEPS=300 steps + an eval loss on the test units                   units.log
#      dist    T_DIST=110   accelerate launch with configs/accelerate/fsdp.yaml (FSDP2) and deepspeed_zero2.yaml,
#                           DIST_PROCS=1 process (NCCL refuses two ranks on one GPU, "Duplicate GPU detected"; set
#                           the GPU count on a bigger machine), DIST_STEPS=20 steps of MDU E-Branchformer on the
#                           units; then each export must load as remote code with the base bitwise unchanged  dist.log
#      bench   T_BENCH_360M=90, T_BENCH_1_7B=110  bench.run --device cuda --dtype bfloat16 at random
#              SmolLM2-360M shape (train_step logits_at_labels generation text_bypass) and SmolLM2-1.7B shape
#              (train_step generation text_bypass)                  bench.log, bench-360m/ + bench-1.7b/results.json
#      levers  T_LEVERS=180  the performance levers of issue 20 at random SmolLM2-360M shape, bf16: bench.run --only
#              recompute packing decode ebf_cost fp8 (LEVERS_COMPILE=1 adds --decode-compile: static cache +
#              torch.compile, minutes more)                          bench.log, levers-360m/results.json
#    760 s of steps at most + ~20 s of wheel installs per call, in two calls on the warm machine (a call runs 600 s
#    at most): STEPS="suite units dist" (380 s), then STEPS="bench levers" (380 s); with the machine's start
#    (1-2 min) that is about 14 of the 15 minutes a task gets. The limits are estimates: none of this has run there.
#    Timed-out steps leave their logs; the next steps still run. summary.txt: each step's exit status and seconds.
#    $OUT brings back 8 files at most: summary.txt, pytest.log, units.log, dist.log, bench.log (every bench step
#    appends to it) and the three results.json (results.md is left out: results.json holds it all; `python -c
#    "import json, bench.run as r; print(r.to_markdown(json.load(open('results.json'))))"` writes it here).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-run}"
UNITS_SOURCE="${UNITS_SOURCE:-cache/data/multi-demo}"
UNITS_TOKENIZER="${UNITS_TOKENIZER:-outputs/demo/speech_tokenizer}"
BASE_SOURCE="${BASE_SOURCE:-cache/base/SmolLM2-135M-Instruct}"
STEPS="${STEPS:-suite units dist bench levers}"
DEEPSPEED_VERSION="${DEEPSPEED_VERSION:-0.19.8}"

# Random-weight bases of a shape (or of a carried config.json folder, whose tokenizer files are copied along).
make_base() {  # SHAPE_OR_FOLDER OUT_DIR DEVICE DTYPE
  python3 - "$@" <<'PY'
import shutil, sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

shape, out, device, dtype = sys.argv[1:5]
common = dict(vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
              bos_token_id=1, eos_token_id=2, pad_token_id=2)
SHAPES = {  # SmolLM2's published configurations
    "SmolLM2-360M": dict(common, hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                         num_key_value_heads=5, rope_theta=100000.0),
    "SmolLM2-1.7B": dict(common, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                         num_attention_heads=32, num_key_value_heads=32, rope_theta=130000.0),
    "tiny-49k": dict(common, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2),  # the CPU check: SmolLM2's vocabulary, tiny layers
}
folder = Path(shape)
config = LlamaConfig.from_pretrained(folder) if folder.is_dir() else LlamaConfig(**SHAPES[shape])
torch.manual_seed(0)
with torch.device(device):
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
model.save_pretrained(out)
if folder.is_dir():
    for f in folder.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, Path(out) / f.name)
print(f"{out}: random weights, {shape}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, {dtype}")
PY
}

train_on_units() {  # BASE OUT_DIR STEPS [train_hf flags...]
  local base=$1 out=$2 steps=$3; shift 3
  python3 train_hf.py --base_model "$base" --dataset .gpu/units --train_split train --eval_split test \
    --method mdu --placement interleaved --layer_type e_branchformer --added_ratio 0.25 \
    --output_dir "$out" --max_steps "$steps" --per_device_train_batch_size 32 \
    --per_device_eval_batch_size 32 --learning_rate 1e-3 --lr_scheduler_type warmup_stable_decay \
    --lr_scheduler_kwargs '{"decay_type": "linear", "min_lr_ratio": 0.1}' --warmup_steps 0.1 --weight_decay 0.0 \
    --logging_steps 25 --eval_strategy steps --eval_steps "$steps" --save_strategy no --report_to none --seed 0 \
    --dataloader_num_workers 2 "$@" && cat "$out/all_results.json"
}

check_dist() {  # BASE RUN_DIR STEPS: the run made its steps with finite losses; its export loads as remote code
  # (AutoModelForCausalLM, trust_remote_code) and gives the base back bitwise (at the export's dtype: DeepSpeed's bf16
  # mode is expected to save the whole model in bf16; not yet seen)
  python3 - "$@" <<'PY'
import json, math, sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

base, run, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
state = json.loads((run / "trainer_state.json").read_text())
losses = [h["loss"] for h in state["log_history"] if "loss" in h]
assert state["global_step"] == steps, f"{run}: {state['global_step']} steps, not {steps}"
assert losses and all(math.isfinite(x) for x in losses), f"{run}: losses {losses}"
model = AutoModelForCausalLM.from_pretrained(run, trust_remote_code=True, dtype="auto")
assert type(model).__name__ == "MDUSpeechForCausalLM", type(model)
got = model.to_text_model().state_dict()
ref = load_file(base / "model.safetensors")
changed = [k for k, v in ref.items() if not torch.equal(got[k], v.to(got[k].dtype))]
assert not changed, f"{run}: base weights changed: {changed[:5]}"
dtype = next(iter(got.values())).dtype
print(f"{run.name}: {steps} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}; the export loads as remote code; "
      f"the base ({len(ref)} tensors, {dtype}) is bitwise unchanged", flush=True)
PY
}

dist_run() {  # ACCELERATE_CONFIG BASE OUT_DIR DEVICE_FLAGS...: DIST_PROCS processes, DIST_STEPS steps of MDU-EBF on units
  local config=$1 base=$2 out=$3; shift 3
  rm -rf "$out"
  python3 -m accelerate.commands.launch --config_file "configs/accelerate/$config.yaml" \
    --num_processes "${DIST_PROCS:-1}" train_hf.py --base_model "$base" --dataset .gpu/units --train_split train \
    --method mdu --placement interleaved --layer_type e_branchformer --added_ratio 0.25 --output_dir "$out" \
    --max_steps "${DIST_STEPS:-20}" --per_device_train_batch_size 16 --learning_rate 1e-3 --logging_steps 1 \
    --save_strategy no --report_to none --seed 0 --dataloader_num_workers 2 "$@" \
    && check_dist "$base" "$out" "${DIST_STEPS:-20}"
}

if [ "$MODE" = prepare ]; then
  set -e
  if [ -z "${SKIP_WHEELS:-}" ]; then
    ../shared/gpu/fetch-wheels.sh .whl "pydantic>=2" hjson  # + what DeepSpeed needs and the machine lacks
    # DeepSpeed ships no wheel: build one (pure Python; DS_BUILD_OPS=0 leaves its CUDA ops to JIT, which ZeRO-2 with
    # the Trainer's torch AdamW should not need: not yet run on a GPU)
    DS_BUILD_OPS=0 .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl \
      "deepspeed==$DEEPSPEED_VERSION"
  fi
  if [ ! -f "$UNITS_TOKENIZER/preprocessor_config.json" ]; then
    echo "no fitted speech tokenizer at $UNITS_TOKENIZER (make demo fits one; or set UNITS_TOKENIZER)" >&2; exit 1
  fi
  rm -rf .gpu/units .gpu/base-135m
  mkdir -p .gpu/base-135m
  PYTHONPATH=. .venv/bin/python -m training.precompute_units --dataset "$UNITS_SOURCE" --splits train,test \
    --speech_tokenizer "$UNITS_TOKENIZER" --output_dir .gpu/units --num_proc "$(nproc)"
  for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
    [ -f "$BASE_SOURCE/$f" ] && cp "$BASE_SOURCE/$f" .gpu/base-135m/
  done
  rm -f .gpu/units/*/cache-*.arrow  # datasets' map caches: not needed there
  tar czf .gpu-bundle.tar.gz -C .gpu units base-135m
  ex="$(git rev-parse --git-path info/exclude)"; mkdir -p "$(dirname "$ex")"; touch "$ex"
  for p in /.gpu/ /.gpu-bundle.tar.gz; do grep -qxF "$p" "$ex" || echo "$p" >>"$ex"; done
  tree_b=$( (git ls-files -z -co --exclude-standard | du -cb --files0-from=-) 2>/dev/null | tail -1 | cut -f1)
  total=$((tree_b + $(du -sb .whl | cut -f1) + $(du -sb .gpu-bundle.tar.gz | cut -f1)))
  du -sh .whl .gpu/units .gpu/units/speech_tokenizer .gpu/base-135m .gpu-bundle.tar.gz
  echo "travels: $(awk -v b="$total" 'BEGIN { printf "%.1f", b / 1048576 }') MiB (64 MiB at most) with the checkout"
  [ "$total" -le $((64 * 1048576)) ] || echo "WARNING: over 64 MiB: the call will be refused" >&2
  echo "next: the device tool's run: command \"STEPS='suite units dist' bash scripts/gpu_check.sh\", carry" \
    "[\".whl\", \".gpu-bundle.tar.gz\"], timeout_s 590; then STEPS='bench levers'"
  exit 0
fi

if [ "$MODE" = cpu ]; then  # this script's Python steps here, tiny and on the CPU
  set -e
  export PATH="$PWD/.venv/bin:$PATH" PYTHONPATH=.
  work="$(mktemp -d)"
  make_base .gpu/base-135m "$work/base-135m-check" cpu float32 >/dev/null  # the config path works (weights unused)
  make_base tiny-49k "$work/base" cpu float32
  cp .gpu/base-135m/tokenizer* "$work/base/"
  train_on_units "$work/base" "$work/units-run" 2 --use_cpu true --max_train_examples 64 --max_eval_examples 16
  python3 -m bench.run --quick --device cpu --only train_step text_bypass --out "$work/bench"
  python3 -m bench.run --quick --device cpu --only recompute packing decode ebf_cost fp8 --out "$work/levers"
  # the dist step's command and check (on the CPU accelerate runs the FSDP config as one plain process: no sharding)
  DIST_STEPS=2 dist_run fsdp "$work/base" "$work/dist-fsdp" --use_cpu true --max_train_examples 64
  bash -n "$0" && echo "cpu check passed ($work)"
  exit 0
fi

# ---------------------------------------------------------------- there: the GPU machine
source .whl/remote-env.sh || exit 1
OUT="${OUT:?the device tool sets OUT}"
if [ -f .gpu-bundle.tar.gz ]; then mkdir -p .gpu && tar xzf .gpu-bundle.tar.gz -C .gpu; fi
SUMMARY="$OUT/summary.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } \
  | tee "$SUMMARY"
run_step() {  # STEP NAME LIMIT LOG COMMAND...: runs when STEP is in $STEPS
  local step=$1 name=$2 limit=$3 log=$4 t0=$SECONDS rc; shift 4
  case " $STEPS " in *" $step "*) ;; *) echo "$name: skipped (STEPS=$STEPS)" | tee -a "$SUMMARY"; return 0 ;; esac
  echo "=== $name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" |& tee -a "$log"  # -a: the bench steps share bench.log
  rc=${PIPESTATUS[0]}
  echo "$name: exit $rc in $((SECONDS - t0)) s$([ "$rc" = 124 ] && echo ' (timed out)')" | tee -a "$SUMMARY"
}
units_step() {
  make_base .gpu/base-135m /tmp/base-135m cuda float32 && train_on_units /tmp/base-135m /tmp/units-run \
    "${UNITS_STEPS:-300}" --bf16 true
}
bench_step() {  # SHAPE OUT_NAME SECTIONS... [--bench.run flags...]
  local shape=$1 name=$2; shift 2
  # the bench step's base is reused by the levers step (same shape, same seed)
  [ -f "/tmp/$shape-shape-random/model.safetensors" ] || make_base "$shape" "/tmp/$shape-shape-random" cuda bfloat16 \
    || return 1
  python3 -m bench.run --device cuda --dtype bfloat16 --base "/tmp/$shape-shape-random" --out "$OUT/$name" --only "$@"
  local rc=$?
  rm -f "$OUT/$name/results.md"  # results.json holds it all: $OUT brings back 8 files at most
  return $rc
}
dist_step() {  # FSDP2, then DeepSpeed ZeRO-2, each checked; both run even when the first fails
  # the units step's base when it ran (same folder, seed and dtype; training only reads it)
  [ -f /tmp/base-135m/model.safetensors ] || make_base .gpu/base-135m /tmp/base-135m cuda float32 || return 1
  local rc=0
  dist_run fsdp /tmp/base-135m /tmp/dist-fsdp --bf16 true || rc=1
  dist_run deepspeed_zero2 /tmp/base-135m /tmp/dist-deepspeed --bf16 true || rc=1
  return $rc
}
export -f make_base train_on_units units_step bench_step check_dist dist_run dist_step

run_step suite suite "${T_SUITE:-180}" "$OUT/pytest.log" \
  python3 -m pytest tests -q -rfE -n 8 -p no:cacheprovider --timeout 120 --device cuda
run_step units units "${T_UNITS:-90}" "$OUT/units.log" bash -c units_step
run_step dist dist "${T_DIST:-110}" "$OUT/dist.log" bash -c dist_step
run_step bench bench-360m "${T_BENCH_360M:-90}" "$OUT/bench.log" \
  bash -c "bench_step SmolLM2-360M bench-360m train_step logits_at_labels generation text_bypass"
run_step bench bench-1.7b "${T_BENCH_1_7B:-110}" "$OUT/bench.log" \
  bash -c "bench_step SmolLM2-1.7B bench-1.7b train_step generation text_bypass"
run_step levers levers-360m "${T_LEVERS:-180}" "$OUT/bench.log" \
  bash -c "bench_step SmolLM2-360M levers-360m recompute packing decode ebf_cost fp8 ${LEVERS_COMPILE:+--decode-compile}"
cat "$SUMMARY"
