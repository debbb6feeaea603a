"""Bases beyond Llama (modeling_mdu/base_families.py): Mistral (a sliding window on every layer), Qwen2 (q/k/v biases,
sliding upper layers), Qwen3 (q/k norms) and Gemma 3 text (scaled embeddings, norms around attention and MLP, local
and global RoPE, alternating sliding windows, final-logit soft-capping), next to Llama. For each: identity at init
(exact), the base back bitwise as its own class, text_bypass rows bitwise the base, cached = uncached generation
with speech tokens past the sliding window, a clean-interpreter load, and one training run of every method."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny_models import (
    FAMILIES,
    LAYER_TYPES,
    TEXT_VOCAB,
    WINDOW,
    perturb_added_layers,
    speech_prompt,
    text_ids,
    tiny_family_base,
    tiny_mdu,
    tiny_text_tokenizer,
)
from transformers.cache_utils import DynamicCache

from configuration_mdu import MDUSpeechConfig
from modeling_mdu import MDUSpeechForCausalLM
from modeling_mdu.e_branchformer_layer import EBranchformerLayer

LONG = 3 * WINDOW + 2  # sequences longer than the sliding window


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_identity_at_init_and_the_base_back(family, layer_type):
    base = tiny_family_base(family)
    model = tiny_mdu(base, layer_type=layer_type)
    ids = text_ids(length=LONG)
    assert model.config.base_model_type == family
    assert torch.equal(model(ids).logits[..., :TEXT_VOCAB], base(ids).logits)
    base_layer = type(base.model.layers[0])
    for pos in model.config.added_layer_positions:
        layer = model.model.layers[pos]
        if layer_type == "transformer":  # the base family's own decoder layer
            assert type(layer) is base_layer
        else:  # the base family's attention, with the window of the layer it copies
            assert isinstance(layer, EBranchformerLayer) and type(layer.self_attn) is type(base.model.layers[0].self_attn)
            sliding = model.config.attention_types[pos] == "sliding_attention"
            if hasattr(layer.self_attn, "sliding_window"):
                assert layer.self_attn.sliding_window == (WINDOW if sliding else None)
    back = model.to_text_model()
    assert type(back) is type(base)
    assert back.state_dict().keys() == base.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in base.state_dict().items())
    assert torch.equal(back(ids).logits, base(ids).logits)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_text_bypass_rows_are_the_base(family, layer_type):
    base = tiny_family_base(family)
    model = tiny_mdu(base, layer_type=layer_type, text_bypass=True)
    perturb_added_layers(model, std=0.1)
    speech = speech_prompt(batch=1, units=LONG - 2, text_tokens=0)
    text = text_ids(batch=1, length=speech.shape[1])
    out = model(torch.cat([text, speech])).logits
    assert torch.equal(out[0, :, :TEXT_VOCAB], base(text).logits[0])
    assert not torch.allclose(out[1, :, :TEXT_VOCAB], base(speech.clamp(max=TEXT_VOCAB - 1)).logits[0], atol=1e-3)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_cached_generation_equals_uncached_past_the_window(family, layer_type):
    model = tiny_mdu(tiny_family_base(family), layer_type=layer_type)
    perturb_added_layers(model, std=0.1)
    ids = speech_prompt(batch=2, units=LONG, text_tokens=0)
    extra = torch.tensor([[TEXT_VOCAB + 5, 7, TEXT_VOCAB + 3, 9, 4, 8], [11, TEXT_VOCAB + 7, TEXT_VOCAB + 2, 3, 5, 6]])
    full = model(torch.cat([ids, extra], dim=1), use_cache=False).logits
    out = model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True)
    for t in range(extra.shape[1]):  # one token at a time through the cache, speech tokens among them
        out = model(extra[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
        assert (out.logits[:, 0] - full[:, ids.shape[1] + t]).abs().max() <= 1e-5, f"step {t}"
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=10, min_new_tokens=10, do_sample=False,
              pad_token_id=0, suppress_tokens=[])
    assert torch.equal(model.generate(ids, use_cache=True, **kw), model.generate(ids, use_cache=False, **kw))


def test_checkpoints_of_every_family_load_in_a_clean_interpreter(tmp_path):
    """Saved flat checkpoints load through the Auto classes with trust_remote_code where this repo is not
    importable, and give the same logits and greedy transcripts."""
    ids = speech_prompt(batch=1, units=LONG, text_tokens=2)
    expected = {}
    for family in FAMILIES:
        model = tiny_mdu(tiny_family_base(family), layer_type="e_branchformer")
        perturb_added_layers(model, std=0.1)
        model.save_pretrained(tmp_path / family)
        with torch.no_grad():
            expected[family] = (model(ids).logits, model.generate(ids, attention_mask=torch.ones_like(ids),
                                                                  max_new_tokens=6, do_sample=False, pad_token_id=0))
    torch.save({"ids": ids}, tmp_path / "ids.pt")
    script = textwrap.dedent(f"""
        import torch
        from transformers import AutoModelForCausalLM
        ids = torch.load({str(tmp_path / "ids.pt")!r})["ids"]
        out = {{}}
        for family in {FAMILIES!r}:
            lm = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r} + "/" + family, trust_remote_code=True)
            assert type(lm).__module__.startswith("transformers_modules"), type(lm).__module__
            with torch.no_grad():
                out[family] = (lm(ids).logits, lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                                           do_sample=False, pad_token_id=0))
        torch.save(out, {str(tmp_path / "out.pt")!r})
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    for family in FAMILIES:
        assert torch.equal(out[family][0], expected[family][0]), family
        assert torch.equal(out[family][1], expected[family][1]), family


@pytest.fixture(scope="module")
def train_work(tmp_path_factory):
    from train_fixtures import fit_tiny_speech_tokenizer, make_audio_folder

    root = tmp_path_factory.mktemp("families")
    audio = make_audio_folder(root / "audio")
    return {"root": root, "audio": audio, "stok": fit_tiny_speech_tokenizer(audio, root / "speech_tokenizer")}


METHOD_RUNS = {"mdu": ["--layer_type", "e_branchformer", "--cgmlp_units", "32", "--cgmlp_conv_kernel", "3",
                       "--merge_conv_kernel", "3"],
               "full": [], "lora": [], "layerwise_lr": [], "lora_layerwise": []}


@pytest.mark.parametrize("method", list(METHOD_RUNS))
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "llama"])  # llama: tests/test_train.py
def test_every_training_method_runs_on_the_family(train_work, family, method):
    import train_hf

    base_dir = train_work["root"] / f"base-{family}"
    if not base_dir.exists():
        tiny_family_base(family).save_pretrained(base_dir)
        tiny_text_tokenizer().save_pretrained(base_dir)
    out = train_work["root"] / f"{family}-{method}"
    argv = ["configs/tiny_test.yaml", "--method", method, "--base_model", str(base_dir), "--dataset",
            str(train_work["audio"]), "--speech_tokenizer", str(train_work["stok"]), "--output_dir", str(out),
            "--max_steps", "3", "--importance_texts", "4", *METHOD_RUNS[method]]
    trainer = train_hf.main(argv)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    model = MDUSpeechForCausalLM.from_pretrained(out)
    assert model.config.base_model_type == family
    base = tiny_family_base(family)
    back = model.to_text_model().state_dict()
    changed = [k for k, v in base.state_dict().items() if not torch.equal(back[k], v)]
    if method == "mdu":  # the base is frozen: it comes back bitwise
        assert changed == [] and model.config.num_added_layers == 1
    else:  # every other method moves base weights (LoRA merged into them)
        assert changed


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_checkpoints_from_before_the_families_still_load(tmp_path, layer_type):
    """A config.json written before base_model_type / base_layer_types existed (Llama only) loads as a Llama MDU
    model with the same logits."""
    import json

    model = tiny_mdu(layer_type=layer_type)
    perturb_added_layers(model, std=0.1)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("base_model_type", "base_layer_types"):
        del config[key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = MDUSpeechForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.base_model_type == "llama" and loaded.config.layer_types == model.config.layer_types
    ids = speech_prompt(units=LONG)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_gemma_rope_per_attention_type_stays_per_type_and_takes_rope_scaling_on_global_layers():
    base = tiny_family_base("gemma3_text")
    config = MDUSpeechConfig.from_base_config(base.config, speech_vocab_size=8, num_added_layers=2,
                                              layer_type="e_branchformer")  # "hybrid" cache types: no RoPE entry
    assert config.rope_parameters == base.config.rope_parameters  # no key beside the two entries (5.17 added one)
    scaled = MDUSpeechConfig.from_base_config(base.config, speech_vocab_size=8, num_added_layers=2,
                                              rope_scaling={"rope_type": "linear", "factor": 8.0})
    assert scaled.rope_parameters["full_attention"] == {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}
    assert scaled.rope_parameters["sliding_attention"] == base.config.rope_parameters["sliding_attention"]
    assert MDUSpeechConfig.from_dict(scaled.to_dict()).rope_parameters == scaled.rope_parameters
