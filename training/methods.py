"""Training methods: each builds the model to train and its optimizer parameter groups.

    mdu             up-scaled model; the added layers + new vocabulary rows train (arXiv 2604.00489)
    full            vocabulary extension only (no added layers); every parameter trains
    lora            vocabulary extension + PEFT LoRA on q,k,v,o,gate,up,down; LoRA + new vocabulary rows train
    layerwise_lr    `full` with per-layer learning rates from text importance (arXiv 2509.23755)
    lora_layerwise  `lora` with the same per-layer learning rates on the LoRA weights

`build_method(name, ctx)` returns `(model, param_groups)`; a group is `{"name", "params", "lr"?}` and holds only
parameters that require grad. Export: `export_model(model)` merges LoRA, so every method ends as a plain MDU model.
"""

from dataclasses import dataclass, field

import torch

from modeling_mdu import MDUSpeechForCausalLM

from .layerwise_lr import compute_lr_multipliers, layerwise_param_groups, load_lr_multipliers
from .lora_rank import matched_lora_rank


@dataclass
class MethodContext:
    """What a method needs besides its own arguments."""

    method_args: object  # MethodArguments
    base_model: str | object  # path / Hub id or a model of a supported family (modeling_mdu/base_families.py)
    speech_vocab_size: int
    learning_rate: float
    model_kwargs: dict = field(default_factory=dict)  # dtype, attn_implementation ... for from_pretrained
    text_tokenizer: object = None
    importance_texts: list[str] | None = None  # texts for importance computed at start
    speech_unit_names: list[str] | None = None  # written names of the speech units (phonetic tokenizer's phonemes)


def _upscale(ctx: MethodContext, num_added_layers=None, added_after=None, freeze=True) -> MDUSpeechForCausalLM:
    a = ctx.method_args
    if a.speech_init not in ("auto", "mean", "names"):
        raise ValueError(f"speech_init must be auto, mean or names, got {a.speech_init!r}")
    if a.speech_init == "names" and not ctx.speech_unit_names:
        raise ValueError("speech_init='names' needs a speech tokenizer whose units have names (backend 'phonetic')")
    extra = dict(cgmlp_conv_kernel=a.cgmlp_conv_kernel, merge_conv_kernel=a.merge_conv_kernel)
    if a.cgmlp_units is not None:
        extra["cgmlp_units"] = a.cgmlp_units
    model = MDUSpeechForCausalLM.from_text_model(
        ctx.base_model,
        placement=a.placement,
        layer_type=a.layer_type,
        speech_vocab_size=ctx.speech_vocab_size,
        added_ratio=a.added_ratio,
        num_added_layers=num_added_layers,
        added_after=added_after,
        text_bypass=a.text_bypass,
        freeze=freeze,
        seed=a.init_seed,
        **extra,
        **ctx.model_kwargs,
    )
    if a.speech_init != "mean" and ctx.speech_unit_names:
        model.init_speech_units_from_text(ctx.text_tokenizer, ctx.speech_unit_names)
    return model


def _mdu_fields(a) -> dict:
    """The MDU configuration a matched-count LoRA compares with."""
    fields = dict(placement=a.placement, layer_type=a.layer_type, added_ratio=a.added_ratio,
                  num_added_layers=a.num_added_layers, added_after=a.added_after,
                  cgmlp_conv_kernel=a.cgmlp_conv_kernel, merge_conv_kernel=a.merge_conv_kernel)
    if a.cgmlp_units is not None:
        fields["cgmlp_units"] = a.cgmlp_units
    return fields


def trainable_group(model) -> list[dict]:
    return [{"name": "trainable", "params": [p for p in model.parameters() if p.requires_grad]}]


def build_mdu(ctx):
    model = _upscale(ctx, ctx.method_args.num_added_layers, ctx.method_args.added_after, freeze=True)
    return model, trainable_group(model)


def build_full(ctx):
    model = _upscale(ctx, num_added_layers=0, freeze=False)
    return model, trainable_group(model)


def lora_rank_for(ctx, config) -> int:
    a = ctx.method_args
    if str(a.lora_rank).lower() != "auto":
        rank = int(a.lora_rank)
        if rank < 1:
            raise ValueError(f"lora_rank must be >= 1 or 'auto', got {a.lora_rank!r}")
        return rank
    return matched_lora_rank(config.to_text_config(), ctx.speech_vocab_size, tuple(a.lora_target_modules), **_mdu_fields(a))


def _add_lora(ctx, model):
    from peft import LoraConfig, get_peft_model

    a = ctx.method_args
    rank = lora_rank_for(ctx, model.config)
    lora_config = LoraConfig(
        r=rank,
        lora_alpha=a.lora_alpha if a.lora_alpha is not None else 2 * rank,
        lora_dropout=a.lora_dropout,
        target_modules=list(a.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_config)
    for name, p in model.named_parameters():  # PEFT froze everything but LoRA: the new vocabulary rows train too
        if name.endswith("speech_weight"):
            p.requires_grad_(True)
    return model


def build_lora(ctx):
    model = _add_lora(ctx, _upscale(ctx, num_added_layers=0, freeze=True))
    return model, trainable_group(model)


def _multipliers(ctx, model) -> list[float]:
    a = ctx.method_args
    n = model.config.num_base_layers
    if a.importance_file:
        return load_lr_multipliers(a.importance_file, n, a.layerwise_lambda)
    if not ctx.importance_texts:
        raise ValueError("layer-wise LR needs --importance_file or texts to compute importance on")
    text_model = model.to_text_model()
    multipliers = compute_lr_multipliers(text_model, ctx.text_tokenizer, ctx.importance_texts, a.layerwise_lambda)
    del text_model
    return multipliers


def build_layerwise_lr(ctx):
    model = _upscale(ctx, num_added_layers=0, freeze=False)
    multipliers = _multipliers(ctx, model)
    return model, layerwise_param_groups(model, multipliers, ctx.learning_rate)


def build_lora_layerwise(ctx):
    model = _upscale(ctx, num_added_layers=0, freeze=True)
    multipliers = _multipliers(ctx, model)
    model = _add_lora(ctx, model)
    return model, layerwise_param_groups(model, multipliers, ctx.learning_rate)


METHODS = {
    "mdu": build_mdu,
    "full": build_full,
    "lora": build_lora,
    "layerwise_lr": build_layerwise_lr,
    "lora_layerwise": build_lora_layerwise,
}


def build_method(name: str, ctx: MethodContext):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](ctx)


def export_model(model) -> MDUSpeechForCausalLM:
    """A plain MDUSpeechForCausalLM: LoRA merged into the base weights (PEFT `merge_and_unload`)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if not isinstance(model, MDUSpeechForCausalLM):
        raise TypeError(f"expected an MDUSpeechForCausalLM after export, got {type(model).__name__}")
    return model


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


@torch.no_grad()
def trainable_state(model) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters (for checkpoints of PEFT models, whose adapter files leave out the speech
    rows, and for tests)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
