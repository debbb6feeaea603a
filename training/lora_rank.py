"""Choose the LoRA rank whose trainable count matches an MDU configuration (as arXiv 2604.00489 compares).

LoRA baseline = the vocabulary-extended model (no added layers) + LoRA on q,k,v,o,gate,up,down of every layer;
its trainable count is `rank * sum(in + out over adapted projections) + new vocabulary rows`.
The MDU count is the added layers + new vocabulary rows. Both are counted on a `meta` model (no memory, no weights).
"""

import torch
from torch import nn

from configuration_mdu import MDUSpeechConfig
from modeling_mdu import MDUSpeechForCausalLM

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def mdu_config_from_base(base_config, **mdu_fields) -> MDUSpeechConfig:
    """The MDUSpeechConfig `from_text_model(base, **mdu_fields)` would build, without touching weights."""
    return MDUSpeechConfig.from_base_config(base_config, **mdu_fields)


def _meta_model(config) -> MDUSpeechForCausalLM:
    with torch.device("meta"):
        model = MDUSpeechForCausalLM(config)
    model.tie_weights()
    return model


def _unique_numel(params) -> int:
    seen, total = set(), 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def mdu_trainable_count(base_config, **mdu_fields) -> int:
    """Trainable parameters of the MDU model (added layers + new vocabulary rows, tied rows counted once)."""
    model = _meta_model(mdu_config_from_base(base_config, **mdu_fields))
    return _unique_numel(model.get_parameter(n) for n in model.mdu_trainable_parameter_names())


def lora_count_terms(base_config, speech_vocab_size: int, target_modules=DEFAULT_TARGETS) -> tuple[int, int]:
    """(parameters per unit of rank, new vocabulary rows) of LoRA on the vocabulary-extended model."""
    model = _meta_model(mdu_config_from_base(base_config, num_added_layers=0, speech_vocab_size=speech_vocab_size))
    per_rank = 0
    for name, module in model.model.layers.named_modules():
        if isinstance(module, nn.Linear) and name.split(".")[-1] in target_modules:
            per_rank += module.in_features + module.out_features
    if per_rank == 0:
        raise ValueError(f"no nn.Linear named {list(target_modules)} in the model's layers: nothing for LoRA to adapt")
    rows = _unique_numel([model.model.embed_tokens.speech_weight, model.lm_head.speech_weight])
    return per_rank, rows


def lora_trainable_count(base_config, rank: int, speech_vocab_size: int, target_modules=DEFAULT_TARGETS) -> int:
    per_rank, rows = lora_count_terms(base_config, speech_vocab_size, target_modules)
    return rank * per_rank + rows


def matched_lora_rank(base_config, speech_vocab_size: int, target_modules=DEFAULT_TARGETS, tolerance=0.02, **mdu_fields) -> int:
    """The LoRA rank whose trainable count is closest to the MDU configuration's; ValueError if off by > tolerance."""
    target = mdu_trainable_count(base_config, speech_vocab_size=speech_vocab_size, **mdu_fields)
    per_rank, rows = lora_count_terms(base_config, speech_vocab_size, target_modules)
    rank = max(1, round((target - rows) / per_rank))
    got = rank * per_rank + rows
    if abs(got - target) > tolerance * target:
        raise ValueError(
            f"no LoRA rank matches the MDU trainable count {target:,} within {tolerance:.0%}: rank {rank} gives {got:,} "
            f"({per_rank:,} per rank + {rows:,} vocabulary rows); set lora_rank explicitly"
        )
    return rank
