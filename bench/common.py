"""What every benchmark shares: the run settings, the base model, synthetic ASR/text batches, timing, hardware.

Sizes are chosen so that the whole `python -m bench.run` fits in ~10 minutes on a 2-core CPU (`full`), in well
under a minute on a tiny random Llama (`quick`), and uses a GPU sensibly (`cuda`). Every section records the
sizes it ran with, so no number in results.json stands without its model, sequence length and batch size.
"""

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASE = REPO / "cache" / "base" / "SmolLM2-135M-Instruct"

# SmolLM2-135M-Instruct's architecture (DESIGN.md §5): used with random weights when the converted checkpoint is
# missing; step times and memory do not depend on the weights' values.
SMOLLM2_135M = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
    tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
)
# `--quick`: a tiny random Llama, still big enough that a step is more than Python overhead.
TINY = dict(
    vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
    pad_token_id=0,
)


@dataclass
class Sizes:
    """Batch shapes and repetition counts of one run."""

    speech_vocab_size: int
    train_batch: int
    train_units: int  # speech units per training example; + 3 specials/eos + transcript = sequence length
    train_transcript: int
    asr_batch: int  # logits-at-labels bench: long speech prompt, short transcript
    asr_units: int
    asr_transcript: int
    gen_batch: int
    gen_prompt_units: int
    gen_new_tokens: int
    text_batch: int
    text_len: int
    warmup: int
    steps: int  # timed repetitions (median reported)
    gen_reps: int

    @property
    def train_seq(self) -> int:
        return self.train_units + self.train_transcript + 3

    @property
    def asr_seq(self) -> int:
        return self.asr_units + self.asr_transcript + 3


SIZES = {
    "quick": Sizes(speech_vocab_size=64, train_batch=2, train_units=48, train_transcript=13, asr_batch=2,
                   asr_units=240, asr_transcript=13, gen_batch=2, gen_prompt_units=30, gen_new_tokens=8,
                   text_batch=2, text_len=64, warmup=1, steps=3, gen_reps=1),
    # 2-core CPU, SmolLM2-135M fp32: a full fine-tuning step at 4 x 128 tokens takes ~4-5 s
    "full": Sizes(speech_vocab_size=256, train_batch=4, train_units=100, train_transcript=25, asr_batch=4,
                  asr_units=250, asr_transcript=24, gen_batch=4, gen_prompt_units=126, gen_new_tokens=16,
                  text_batch=4, text_len=128, warmup=1, steps=3, gen_reps=1),
    "cuda": Sizes(speech_vocab_size=256, train_batch=8, train_units=480, train_transcript=29, asr_batch=8,
                  asr_units=1000, asr_transcript=45, gen_batch=8, gen_prompt_units=510, gen_new_tokens=64,
                  text_batch=8, text_len=512, warmup=3, steps=10, gen_reps=3),
}


@dataclass
class BenchSetup:
    """One benchmark run: device, dtype, sizes and where the base model comes from (picklable for subprocesses)."""

    device: str = "cpu"
    dtype: str = "float32"
    quick: bool = False
    base_path: str | None = None  # a LlamaForCausalLM checkpoint directory; None = random weights
    base_config: dict = field(default_factory=dict)  # used when base_path is None
    base_name: str = ""
    sizes: Sizes = None
    seed: int = 0
    threads: int | None = None  # torch intra-op threads (None = torch's default); set in every bench process

    def apply_threads(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    @classmethod
    def create(cls, device="cpu", dtype="float32", quick=False, base_path=None, threads=None) -> "BenchSetup":
        setup = cls._create(device, dtype, quick, base_path)
        setup.threads = threads
        setup.apply_threads()
        return setup

    @classmethod
    def _create(cls, device, dtype, quick, base_path) -> "BenchSetup":
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch.cuda.is_available() is False on this machine")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        if quick:
            return cls(device, dtype, True, None, dict(TINY), "tiny random Llama (4 layers, hidden 128)", SIZES["quick"])
        sizes = SIZES["cuda" if device == "cuda" else "full"]
        path = Path(base_path) if base_path else DEFAULT_BASE
        if (path / "config.json").exists():
            return cls(device, dtype, False, str(path), {}, f"SmolLM2-135M-Instruct ({path.name})", sizes)
        if base_path:
            raise ValueError(f"--base {base_path}: no config.json there")
        return cls(device, dtype, False, None, dict(SMOLLM2_135M),
                   "SmolLM2-135M architecture, random weights (cache/base checkpoint missing)", sizes)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sizes"] = asdict(self.sizes)
        return d


def load_base(setup: BenchSetup):
    """The text LLM every method starts from (eval mode, on the bench device and dtype)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if setup.base_path:
        model = LlamaForCausalLM.from_pretrained(setup.base_path, dtype=setup.torch_dtype, attn_implementation="sdpa")
    else:
        torch.manual_seed(setup.seed)
        config = LlamaConfig(**setup.base_config, attn_implementation="sdpa")
        model = LlamaForCausalLM(config).to(setup.torch_dtype)
    return model.to(setup.device).eval()


def upscale(base, setup: BenchSetup, layer_type="transformer", **kwargs):
    """MDU model from `base` (25% interleaved added layers unless kwargs say otherwise), on the bench device."""
    from modeling_mdu import MDUSpeechForCausalLM

    kwargs.setdefault("placement", "interleaved")
    kwargs.setdefault("speech_vocab_size", setup.sizes.speech_vocab_size)
    model = MDUSpeechForCausalLM.from_text_model(base, layer_type=layer_type, seed=setup.seed, **kwargs)
    return model.to(setup.device)


def share_frozen(model, shared: dict | None) -> dict:
    """Points the frozen parameters of `model` at the tensors in `shared` (one copy of the frozen base for every MDU
    model of a comparison); the first model's frozen tensors become `shared`. Returns `shared`."""
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    if shared is None:
        return frozen
    for n, p in frozen.items():
        p.data = shared[n].data
    return shared


def model_size(model, trainable=False) -> dict:
    """Parameter counts (tied parameters once) and depth, for the records."""
    params = {id(p): p for p in model.parameters()}
    out = {"total_params": sum(p.numel() for p in params.values()), "layers": model.config.num_hidden_layers}
    if trainable:
        out["trainable_params"] = sum(p.numel() for p in params.values() if p.requires_grad)
    return out


def asr_batch(config, batch: int, units: int, transcript: int, device, seed=0) -> dict:
    """An ASR training batch in the shared prompt format, random ids, no padding:
    `[speech_start] units [speech_end] transcript [eos]`, labels only on transcript + eos."""
    g = torch.Generator().manual_seed(seed)
    V = config.text_vocab_size
    start = torch.full((batch, 1), config.speech_start_token_id)
    end = torch.full((batch, 1), config.speech_end_token_id)
    u = torch.randint(config.speech_token_start, config.vocab_size, (batch, units), generator=g)
    t = torch.randint(3, V, (batch, transcript), generator=g)
    eos = torch.full((batch, 1), config.eos_token_id if config.eos_token_id is not None else 2)
    input_ids = torch.cat([start, u, end, t, eos], dim=1)
    labels = input_ids.clone()
    labels[:, : units + 2] = -100
    return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device),
            "labels": labels.to(device)}


def speech_prompt(config, batch: int, units: int, device, seed=0) -> torch.LongTensor:
    """A generation prompt `[speech_start] units [speech_end]` of `units + 2` tokens."""
    b = asr_batch(config, batch, units, 0, device, seed)
    return b["input_ids"][:, :-1]


def text_batch(vocab_size: int, batch: int, length: int, device, seed=0) -> torch.LongTensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (batch, length), generator=g).to(device)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_median(fn, device: str, warmup: int, reps: int) -> tuple[float, list[float]]:
    """Median wall time of `fn()` over `reps` calls after `warmup` calls (device synchronised around each)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def time_round_robin(fns: dict, device: str, warmup: int, reps: int) -> dict:
    """Like `time_median` for several callables, timed in turn (a, b, c, a, b, c, ...) so that a slow spell of a
    shared machine hits them alike; returns {name: (median, times)}."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), t) for name, t in times.items()}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str) -> dict:
    """Where the numbers come from: CPU model, cores, torch threads, load (other processes), GPU name."""
    info = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "device": device,
        "torch": torch.__version__,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def hardware_line(hw: dict) -> str:
    where = hw.get("gpu") or f"{hw['cpu']} ({hw['cpu_cores']} cores, {hw['torch_threads']} torch threads)"
    return f"{where}, torch {hw['torch']}"


def targets_md(targets: list[dict]) -> list[str]:
    """One markdown line per target: its name, bound, measured value and pass / miss."""
    return [f"- target {t['name']} {t['target']}: measured {t['value']:.2f} → **{'pass' if t['pass'] else 'miss'}**"
            for t in targets]


def ratio(value, reference):
    return value / reference if reference else None
