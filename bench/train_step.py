"""Training step: MDU Transformer, MDU E-Branchformer, full fine-tuning and rank-matched LoRA on the same batch.

Every method starts from the same base and trains on the same ASR batch (speech prompt + transcript, loss on the
transcript) with AdamW. Each method runs in a fresh process (forked from a forkserver that has only imported the
libraries), so its peak memory is its own:
    CPU:  peak RSS during the steps (VmHWM, reset after the model is built) minus the RSS before the model existed
          = weights + gradients + optimizer state + activations (+ allocator slack);
    CUDA: torch.cuda.max_memory_allocated over the steps (weights included).
Recorded per method: median step time (forward + backward + optimizer step), peak memory, optimizer-state bytes
after the first step, trainable parameters; each also as a ratio to full fine-tuning.
"""

import gc
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import torch

from .common import BenchSetup, asr_batch, load_base, model_size, ratio, sync, time_median, upscale

METHODS = ("full", "mdu_transformer", "mdu_e_branchformer", "lora")
LABELS = {
    "full": "full fine-tuning",
    "mdu_transformer": "MDU Transformer (25% interleaved)",
    "mdu_e_branchformer": "MDU E-Branchformer (25% interleaved)",
    "lora": "LoRA rank-matched",
    # issue-20 levers (bench/recompute.py): the same models with `recompute_frozen_segments`
    "mdu_transformer_recompute": "MDU Transformer, frozen segments recomputed",
    "mdu_e_branchformer_recompute": "MDU E-Branchformer, frozen segments recomputed",
}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RATIO_FIELDS = ("step_time_s", "peak_memory_bytes", "optimizer_state_bytes", "trainable_params")
TARGETS = {"step_time_s": 0.7, "peak_memory_bytes": 0.5}  # MDU <= this x full fine-tuning (issue 8)


# ------------------------------------------------------------------ LoRA rank
def _formula_counts(cfg, speech_vocab_size: int) -> tuple[int, int, int]:
    """(LoRA parameters per unit of rank, new vocabulary rows, parameters of one added Transformer layer)."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    per_layer_rank = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h)
    rows = (speech_vocab_size + 2) * h * (1 if cfg.tie_word_embeddings else 2)
    layer = h * q + 2 * h * kv + q * h + 3 * h * inter + 2 * h
    return per_layer_rank * cfg.num_hidden_layers, rows, layer


def lora_rank(base_config, speech_vocab_size: int) -> dict:
    """The LoRA rank whose trainable count is closest to MDU Transformer's (25% interleaved).
    Uses `training/lora_rank.py` (counts on meta models) when importable, else the closed form above."""
    try:
        from training.lora_rank import lora_count_terms, mdu_trainable_count

        target = mdu_trainable_count(base_config, speech_vocab_size=speech_vocab_size, placement="interleaved",
                                     layer_type="transformer")
        per_rank, rows = lora_count_terms(base_config, speech_vocab_size, LORA_TARGETS)
        source = "training.lora_rank"
    except ImportError:
        from configuration_mdu.placement import num_added_from_ratio

        per_rank, rows, layer = _formula_counts(base_config, speech_vocab_size)
        target = num_added_from_ratio(base_config.num_hidden_layers, 0.25) * layer + rows
        source = "closed form"
    rank = max(1, round((target - rows) / per_rank))
    return {"rank": rank, "mdu_trainable": target, "lora_trainable": rank * per_rank + rows, "source": source}


# ------------------------------------------------------------------ one method, in its own process
def build(method: str, base, setup: BenchSetup, rank: int | None = None):
    """The model to train for `method`, with requires_grad set as training would set it."""
    if method in ("mdu_transformer", "mdu_transformer_recompute"):
        return upscale(base, setup, "transformer", recompute_frozen_segments=method.endswith("_recompute"))
    if method in ("mdu_e_branchformer", "mdu_e_branchformer_recompute"):
        return upscale(base, setup, "e_branchformer", recompute_frozen_segments=method.endswith("_recompute"))
    if method == "full":
        return upscale(base, setup, "transformer", num_added_layers=0, freeze=False)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = upscale(base, setup, "transformer", num_added_layers=0, freeze=True)
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                                                 target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
        for name, p in model.named_parameters():  # as training/methods.py: the new vocabulary rows train too
            if name.endswith("speech_weight"):
                p.requires_grad_(True)
        return model
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def _status_kib(key: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets VmHWM (peak RSS) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def optimizer_state_bytes(optimizer) -> int:
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
               if torch.is_tensor(t))


def _warm_code_paths(method: str, setup: BenchSetup) -> None:
    """Two steps of the same method on a very small random Llama, thrown away: lazy imports, library code pages
    and one-off kernel setup then do not count as the measured model's memory or time."""
    from dataclasses import replace

    from .common import SIZES

    small = dict(setup.base_config or {}, vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                 num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True, bos_token_id=1,
                 eos_token_id=2, pad_token_id=0, max_position_embeddings=256)
    tiny = replace(setup, base_path=None, base_config=small, sizes=replace(SIZES["quick"], speech_vocab_size=8))
    base = load_base(tiny)
    model = build(method, base, tiny, 2 if method == "lora" else None).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = asr_batch(model.config, 2, 16, 4, setup.device)
    for _ in range(2):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    del model, base, optimizer, batch
    gc.collect()


def saved_tensor_bytes(model, batch) -> int:
    """Bytes of the tensors autograd keeps for backward after one forward (activations; parameters excluded, each
    storage counted once), read with `torch.autograd.graph.saved_tensors_hooks`; then backward frees them."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(kept.values())


def measure(method: str, setup: BenchSetup, rank: int | None = None, labels_only: bool = False,
            count_saved: bool = False) -> dict:
    """Build `method`'s model from the base and time training steps; meant to run in a fresh process.
    `labels_only`: logits at label positions only (as train_hf trains); `count_saved`: also record the bytes autograd
    keeps for backward (one extra forward/backward before the memory and time measurement)."""
    setup.apply_threads()
    torch.manual_seed(setup.seed)
    cuda = setup.device == "cuda"
    _warm_code_paths(method, setup)
    rss_before = _status_kib("VmRSS")
    base = load_base(setup)
    base_params = sum(p.numel() for p in base.parameters())
    model = build(method, base, setup, rank)
    del base
    gc.collect()
    model.train()
    model.config.logits_at_labels_only = labels_only
    size = model_size(model, trainable=True)
    config = model.config
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    s = setup.sizes
    batch = asr_batch(config, s.train_batch, s.train_units, s.train_transcript, setup.device, seed=setup.seed)
    saved = saved_tensor_bytes(model, batch) if count_saved else None
    gc.collect()

    if cuda:
        sync("cuda")
        torch.cuda.reset_peak_memory_stats()
    rss_built = _status_kib("VmRSS")
    peak_reset = _reset_peak_rss() if not cuda else None
    state = {}

    def step():
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if "opt_bytes" not in state:
            state["opt_bytes"] = optimizer_state_bytes(optimizer)
            state["loss"] = float(loss.detach())

    median, times = time_median(step, setup.device, s.warmup, s.steps)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        weights = None
    else:
        peak = (_status_kib("VmHWM") - rss_before) * 1024
        weights = (rss_built - rss_before) * 1024
    return {
        "method": LABELS[method],
        "step_time_s": median,
        "step_times_s": times,
        "peak_memory_bytes": peak,
        "memory_after_build_bytes": weights,
        "peak_rss_reset": peak_reset,
        "optimizer_state_bytes": state["opt_bytes"],
        "trainable_params": size["trainable_params"],
        "total_params": size["total_params"],
        "base_params": base_params,
        "layers": size["layers"],
        "first_loss": state["loss"],
        "lora_rank": rank,
        "saved_activation_bytes": saved,
    }


def _in_fresh_process(fn, *args):
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["bench.train_step"])
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def base_config(setup: BenchSetup):
    from transformers import AutoConfig, LlamaConfig

    return AutoConfig.from_pretrained(setup.base_path) if setup.base_path else LlamaConfig(**setup.base_config)


def run(setup: BenchSetup, isolate: bool = True, progress=print) -> dict:
    """All four methods; `isolate=False` runs them in this process (peak memory then not meaningful on CPU)."""
    s = setup.sizes
    rank_info = lora_rank(base_config(setup), s.speech_vocab_size)
    results = {}
    for method in METHODS:
        progress(f"  train_step: {LABELS[method]} ...")
        args = (method, setup, rank_info["rank"] if method == "lora" else None)
        results[method] = _in_fresh_process(measure, *args) if isolate else measure(*args)
        progress(f"    {results[method]['step_time_s']:.3f} s/step, peak {results[method]['peak_memory_bytes'] / 2**20:.0f} MiB")
    full = results["full"]
    for r in results.values():
        r["ratio_to_full"] = {k: ratio(r[k], full[k]) for k in RATIO_FIELDS}
    targets = []
    for method in ("mdu_transformer", "mdu_e_branchformer"):
        for key, limit in TARGETS.items():
            value = results[method]["ratio_to_full"][key]
            targets.append({"name": f"{LABELS[method]}: {key} / full fine-tuning", "value": value,
                            "target": f"<= {limit}", "pass": value <= limit})
    return {
        "setup": {"model": setup.base_name, "base_params": results["full"]["base_params"],
                  "batch_size": s.train_batch, "seq_len": s.train_seq, "speech_units": s.train_units,
                  "transcript_tokens": s.train_transcript + 1, "dtype": setup.dtype, "optimizer": "AdamW",
                  "warmup_steps": s.warmup, "timed_steps": s.steps, "isolated_processes": isolate,
                  "lora": rank_info,
                  "memory": "CUDA max_memory_allocated" if setup.device == "cuda" else "peak RSS - RSS before the model (fresh process)"},
        "methods": results,
        "targets": targets,
    }

