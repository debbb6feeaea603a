"""Argument dataclasses for `train_hf.py` and the YAML-then-CLI parser.

A YAML file gives the defaults, every field is also a command-line flag, and the command line wins:
    python train_hf.py configs/mdu_interleaved_ebf.yaml --learning_rate 5e-5 --output_dir outputs/x
"""

import sys
from dataclasses import dataclass, field

import yaml
from transformers import HfArgumentParser, TrainingArguments

from training.launch import launch_defaults, launch_problem


@dataclass
class ModelArguments:
    base_model: str = field(default=None, metadata={"help": "Llama text LLM to up-scale: a local dir or a Hub id."})
    speech_tokenizer: str | None = field(
        default=None, metadata={"help": "Fitted MDUSpeechTokenizer dir. Not given: one is fitted on the training audio."}
    )
    speech_tokenizer_backend: str = field(
        default="mel", metadata={"help": "Backend when fitting a speech tokenizer: mel | ssl (k-means) | phonetic (CTC)."}
    )
    speech_codebook_size: int = field(default=256, metadata={"help": "Codebook size when fitting a speech tokenizer."})
    speech_tokenizer_fit_examples: int = field(default=500, metadata={"help": "Utterances used to fit the speech tokenizer."})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16: dtype of the weights."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager | sdpa | flash_attention_2."})
    # performance levers (issue 20; README "Performance levers"): training-time switches, off in the saved checkpoint
    recompute_frozen_segments: bool = field(
        default=False,
        metadata={"help": "--method mdu: each run of frozen base layers keeps only its input for backward and is "
                          "recomputed there (same loss and gradients, less activation memory, ~1 more forward of "
                          "the base)."},
    )
    fp8_frozen_linears: bool = field(
        default=False,
        metadata={"help": "--method mdu / lora / lora_layerwise: the frozen base linears compute in FP8 (e4m3, "
                          "row-wise scales): a numerics trade-off for speed on Hopper; needs a GPU of compute "
                          "capability >= 8.9 or the CPU."},
    )


@dataclass
class MethodArguments:
    method: str = field(default="mdu", metadata={"help": "mdu | full | lora | layerwise_lr | lora_layerwise."})
    # MDU up-scaling (also sets the parameter budget `lora_rank: auto` matches)
    placement: str = field(default="interleaved", metadata={"help": "interleaved | bottom | middle | top | sandwich."})
    added_ratio: float = field(default=0.25, metadata={"help": "New layers as a fraction of the base depth."})
    num_added_layers: int | None = field(default=None, metadata={"help": "Number of new layers (overrides added_ratio)."})
    added_after: list[int] | None = field(default=None, metadata={"help": "Explicit base-layer indices, one per new layer."})
    layer_type: str = field(default="transformer", metadata={"help": "transformer | e_branchformer."})
    cgmlp_units: int | None = field(default=None, metadata={"help": "E-Branchformer cgMLP width (default 6*hidden)."})
    cgmlp_conv_kernel: int = field(default=31, metadata={"help": "E-Branchformer CSGU causal conv kernel."})
    merge_conv_kernel: int = field(default=31, metadata={"help": "E-Branchformer merge causal conv kernel."})
    text_bypass: bool = field(default=False, metadata={"help": "Text-only sequences skip the added layers."})
    init_seed: int = field(default=0, metadata={"help": "Seed for the new vocabulary rows."})
    speech_init: str = field(
        default="auto",
        metadata={"help": "New speech rows: mean (mean text embedding + noise) | names (the text embedding of each "
                          "unit's written name: a phonetic tokenizer's phoneme symbols) | auto (names when the speech "
                          "tokenizer has them)."},
    )
    # LoRA
    lora_rank: str = field(
        default="auto", metadata={"help": "LoRA rank, or 'auto': match the trainable count of the MDU config above."}
    )
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default 2 * rank, as arXiv 2509.23755)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Projections LoRA adapts."},
    )
    # layer-wise learning rate (arXiv 2509.23755)
    layerwise_lambda: float = field(default=0.4, metadata={"help": "lr_layer = lr * (1 - lambda * normalised importance)."})
    importance_file: str | None = field(
        default=None, metadata={"help": "JSON from eval/importance.py ('importance' or 'lr_multipliers'); else computed."}
    )
    importance_texts: int = field(default=64, metadata={"help": "Text examples used when importance is computed at start."})


@dataclass
class DataArguments:
    dataset: str = field(
        default=None,
        metadata={"help": "Audio folder, CSV/JSONL/parquet file, dataset saved with save_to_disk, or a Hub dataset "
                          "id; rows with precomputed speech units (--units_column) need no audio "
                          "(python -m training.precompute_units writes them)."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Split to evaluate on (None: no evaluation)."})
    audio_column: str = field(
        default="audio", metadata={"help": "Column with audio (path or Audio feature). Only the default falls back (to "
                                           "file_name in a CSV/JSONL table)."}
    )
    text_column: str = field(
        default="text", metadata={"help": "Column with the transcript. Only the default falls back (to "
                                          "transcription, transcript, sentence or normalized_text) when it is absent."}
    )
    units_column: str = field(
        default="units", metadata={"help": "Column of precomputed speech units (speech-tokenizer codebook ids): "
                                           "when the dataset has it, no audio is decoded; the speech tokenizer that "
                                           "made them comes from --speech_tokenizer or the copy beside the units."}
    )
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (needs max_steps)."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    max_eval_examples: int | None = field(default=None, metadata={"help": "Use only the first N eval examples."})
    max_length: int | None = field(
        default=None, metadata={"help": "Drop (and count, never truncate) examples longer than this (default: model context)."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc of the unit datasets.map."})
    train_on_speech: bool = field(default=False, metadata={"help": "Also put the loss on the speech units."})
    ctc_weight: float = field(
        default=0.0, metadata={"help": "Weight of an auxiliary CTC loss on the speech positions (training/ctc_loss.py); 0 = off."}
    )
    ctc_layer: int = field(default=-1, metadata={"help": "Hidden-state index the CTC loss reads (-1: final output)."})
    pack_batches: bool = field(
        default=False,
        metadata={"help": "Padding-free batches (training/collator.py ASRCollator(pack=True)), train and eval: the "
                          "examples concatenated, position ids restarting per example, no padding; same loss. Not "
                          "with --ctc_weight > 0."},
    )
    pack_length: int | None = field(
        default=None,
        metadata={"help": "With --pack_batches: rows of at most this many tokens (0: the longest example's length) "
                          "instead of one row per batch; SDPA / eager attention is dense per row. None: one row "
                          "(varlen flash_attention_2)."},
    )
    text_dataset: str | None = field(
        default=None, metadata={"help": "Text-only rehearsal data: .txt (one example a line), CSV/JSONL, or dataset."}
    )
    text_mix_ratio: float = field(default=0.0, metadata={"help": "Fraction of rehearsal text examples in the mix."})


ARGUMENT_CLASSES = (ModelArguments, DataArguments, MethodArguments, TrainingArguments)


def parse_args(argv: list[str] | None = None):
    """(model_args, data_args, method_args, training_args) from `[config.yaml] [--flag value ...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    problem = launch_problem()
    if problem:  # before TrainingArguments set up devices and before any work
        raise RuntimeError(problem)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.set_defaults(**launch_defaults())  # the YAML and the command line still win
    if argv and argv[0].endswith((".yaml", ".yml")):
        with open(argv[0]) as f:
            defaults = yaml.safe_load(f) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ValueError(f"{argv[0]}: unknown keys {unknown} (not a field of {[c.__name__ for c in ARGUMENT_CLASSES]})")
        parser.set_defaults(**defaults)
        for action in parser._actions:  # a required flag set by the YAML is no longer required on the command line
            if action.dest in defaults:
                action.required = False
        argv = argv[1:]
    model_args, data_args, method_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    for name, value in (("base_model", model_args.base_model), ("dataset", data_args.dataset)):
        if value is None:
            raise ValueError(f"--{name} is required (in the YAML file or on the command line)")
    return model_args, data_args, method_args, training_args


FROZEN_BASE_METHODS = {  # the methods whose base weights are frozen, and what trains inside the base layers
    "recompute_frozen_segments": ("mdu",),
    "fp8_frozen_linears": ("mdu", "lora", "lora_layerwise"),
}


def check_levers(model_args, data_args, method_args, training_args) -> None:
    """The performance levers' combinations that cannot work, refused before any work with the flags named."""
    method = method_args.method
    if model_args.recompute_frozen_segments and method not in FROZEN_BASE_METHODS["recompute_frozen_segments"]:
        raise ValueError(
            f"--recompute_frozen_segments true needs --method mdu (runs of frozen base layers between the added "
            f"layers); with --method {method}, "
            + ("every base layer trains" if method in ("full", "layerwise_lr") else "LoRA trains in every base layer")
            + ", so the stack would be one segment recomputed whole (no memory saved): use --gradient_checkpointing "
              "true instead")
    if model_args.fp8_frozen_linears:
        if method not in FROZEN_BASE_METHODS["fp8_frozen_linears"]:
            raise ValueError(
                f"--fp8_frozen_linears true computes frozen base weights in FP8, and with --method {method} every "
                f"base weight trains (it would change nothing): use --method mdu, lora or lora_layerwise")
        from modeling_mdu.modeling_mdu import check_fp8_device

        try:
            check_fp8_device(training_args.device)
        except RuntimeError as err:
            raise RuntimeError(f"--fp8_frozen_linears true: {err} (on the command line: --fp8_frozen_linears false)") \
                from None
    if data_args.pack_length is not None:
        if not data_args.pack_batches:
            raise ValueError(f"--pack_length {data_args.pack_length} packs rows, but --pack_batches is false: set "
                             "--pack_batches true or leave --pack_length out")
        if data_args.pack_length < 0:
            raise ValueError(f"--pack_length must be >= 0 (0: the longest example), got {data_args.pack_length}")
    if data_args.pack_batches and data_args.ctc_weight > 0:
        raise ValueError(
            f"--pack_batches true and --ctc_weight {data_args.ctc_weight} cannot be combined: the CTC loss reads the "
            "speech and transcript of each row, and a packed row holds several examples. Use padded batches "
            "(--pack_batches false) or --ctc_weight 0")
