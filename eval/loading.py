"""Load any checkpoint the evaluators accept: a plain Llama, an MDU checkpoint (this repo's classes when importable,
else `trust_remote_code`), or a PEFT adapter folder (base + adapter; `merge=True` merges it)."""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load_model(path: str, trust_remote_code: bool = True, dtype: str = "float32", device: str = "cpu", merge: bool = False):
    """(model, tokenizer) in eval mode."""
    dtype = getattr(torch, dtype)
    folder = Path(path)
    if (folder / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
        model = model.merge_and_unload() if merge else model
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        tok_src = path if (folder / "tokenizer_config.json").exists() else base
    else:
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
        model = None
        if config.get("model_type") == "mdu_speech":
            try:
                from modeling_mdu import MDUSpeechForCausalLM

                model = MDUSpeechForCausalLM.from_pretrained(path, dtype=dtype)
            except ImportError:
                model = None
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
        tok_src = path
    tokenizer = AutoTokenizer.from_pretrained(tok_src, trust_remote_code=trust_remote_code)
    return model.to(device).eval(), tokenizer


def load_processor(path: str, trust_remote_code: bool = True):
    """The MDU processor saved with a checkpoint (this repo's class when importable)."""
    try:
        from modeling_mdu import MDUSpeechProcessor

        return MDUSpeechProcessor.from_pretrained(path)
    except ImportError:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
