"""save_pretrained writes a flat trust_remote_code checkpoint (safetensors + flat .py files + auto_map) that loads,
with identical logits, in-process and in a clean interpreter where this repository is not importable."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny_models import LAYER_TYPES, perturb_added_layers, speech_prompt, tiny_base, tiny_mdu
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from modeling_mdu import MDUSpeechForCausalLM

EXPECTED_PY = {"configuration_mdu.py", "placement.py", "modeling_mdu.py", "e_branchformer_layer.py", "transformer_layer.py",
               "causal_conv.py", "speech_vocab.py", "upscaling.py", "remote_code.py", "hf_compat.py"}


def _saved(tmp_path, layer_type, tie=True):
    model = tiny_mdu(tiny_base(tie=tie), layer_type=layer_type)
    perturb_added_layers(model)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    return model, ckpt


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_checkpoint_is_flat_safetensors_with_auto_map(tmp_path, layer_type):
    _, ckpt = _saved(tmp_path, layer_type)
    files = {p.name for p in ckpt.iterdir()}
    assert all(not (ckpt / f).is_dir() for f in files)
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert EXPECTED_PY <= {f for f in files if f.endswith(".py")}
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model_type"] == "mdu_speech"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mdu.MDUSpeechConfig",
        "AutoModel": "modeling_mdu.MDUSpeechModel",
        "AutoModelForCausalLM": "modeling_mdu.MDUSpeechForCausalLM",
    }
    with pytest.raises(ValueError, match="safetensors"):
        tiny_mdu().save_pretrained(tmp_path / "bin", safe_serialization=False)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("tie", [True, False])
def test_from_pretrained_in_process_is_exact(tmp_path, layer_type, tie):
    model, ckpt = _saved(tmp_path, layer_type, tie)
    loaded, info = MDUSpeechForCausalLM.from_pretrained(ckpt, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys: nothing re-initialised
    for (n, a), (m, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == m and torch.equal(a, b), n
    if tie:
        assert loaded.lm_head.speech_weight is loaded.model.embed_tokens.speech_weight
    ids = speech_prompt()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    # trainable set is restored by from_text_model only; a loaded checkpoint can re-freeze with one call
    loaded.freeze_base()
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == set(model.mdu_trainable_parameter_names())


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_loads_without_package(tmp_path, layer_type):
    """A fresh `python -I` in an empty directory (this repo not importable) loads the checkpoint through the Auto
    classes with trust_remote_code and computes identical logits."""
    model, ckpt = _saved(tmp_path, layer_type)
    ids = speech_prompt()
    with torch.no_grad():
        expected = model(ids).logits
        hidden = model.model(ids).last_hidden_state
    torch.save({"ids": ids}, tmp_path / "ids.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        assert not any(p.endswith("main") for p in sys.path if p), sys.path
        try:
            import modeling_mdu
            raise SystemExit("modeling_mdu importable: the test is not clean")
        except ImportError:
            pass
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
        ckpt = {str(ckpt)!r}
        config = AutoConfig.from_pretrained(ckpt, trust_remote_code=True)
        assert type(config).__name__ == "MDUSpeechConfig", type(config)
        lm = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)
        base = AutoModel.from_pretrained(ckpt, trust_remote_code=True)
        ids = torch.load({str(tmp_path / "ids.pt")!r})["ids"]
        with torch.no_grad():
            torch.save({{"logits": lm(ids).logits, "hidden": base(ids).last_hidden_state,
                         "gen": lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, pad_token_id=0),
                         "gen_nocache": lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                                                    pad_token_id=0, use_cache=False),
                         "cls": type(lm).__module__}}, {str(tmp_path / "out.pt")!r})
    """)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HF_HOME"] = str(tmp_path / "hf_home")  # dynamic modules go to a fresh cache
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["cls"].startswith("transformers_modules"), out["cls"]
    assert torch.equal(out["logits"], expected)
    assert torch.equal(out["hidden"], hidden)
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(out["gen"], gen)
    assert torch.equal(out["gen_nocache"], gen)  # the remote code's cache is used right by this transformers' generate


def test_resave_from_remote_code_checkpoint(tmp_path):
    """A model loaded through remote code saves again as a complete flat checkpoint (the files travel along)."""
    model, ckpt = _saved(tmp_path, "e_branchformer")
    loaded = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)
    again = tmp_path / "again"
    loaded.save_pretrained(again)
    assert EXPECTED_PY <= {p.name for p in again.iterdir()}
    reloaded = AutoModelForCausalLM.from_pretrained(again, trust_remote_code=True)
    ids = speech_prompt()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert AutoConfig.from_pretrained(again, trust_remote_code=True).added_after == model.config.added_after
    assert type(AutoModel.from_pretrained(again, trust_remote_code=True)).__name__ == "MDUSpeechModel"
