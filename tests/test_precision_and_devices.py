"""Attention kernels, gradient checkpointing with a frozen base, bf16 and device maps."""

import pytest
import torch
from accelerate import infer_auto_device_map
from devices import on_device_of
from tiny_models import LAYER_TYPES, perturb_added_layers, speech_prompt, tiny_base, tiny_mdu

from modeling_mdu import MDUSpeechForCausalLM
from modeling_mdu.hf_compat import enable_activation_checkpointing, is_activation_checkpointing


def _labels(ids):
    labels = ids.clone()
    labels[:, :11] = -100
    return labels


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@torch.no_grad()
def test_sdpa_equals_eager(layer_type):
    sdpa = tiny_mdu(tiny_base(attn="sdpa"), layer_type=layer_type)
    perturb_added_layers(sdpa)
    eager = tiny_mdu(tiny_base(attn="eager"), layer_type=layer_type)
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    ids = speech_prompt()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # some padding too
    assert torch.allclose(sdpa(ids, attention_mask=mask).logits[1], eager(ids, attention_mask=mask).logits[1], atol=1e-5)
    assert torch.allclose(sdpa(ids, attention_mask=mask).logits[0, 3:], eager(ids, attention_mask=mask).logits[0, 3:], atol=1e-5)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_gradient_checkpointing_gives_the_same_gradients(layer_type):
    model = tiny_mdu(layer_type=layer_type)
    perturb_added_layers(model)
    model.train()
    ids = speech_prompt(units=12, text_tokens=5)
    model.config.use_cache = False

    def grads():
        model.zero_grad(set_to_none=True)
        model(ids, labels=_labels(ids), use_cache=False).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain = grads()
    enable_activation_checkpointing(model)  # the API's name differs across the supported transformers releases
    assert is_activation_checkpointing(model)
    ckpt = grads()
    assert plain.keys() == ckpt.keys() and len(plain) > 0
    for n in plain:
        assert torch.allclose(plain[n], ckpt[n], atol=1e-6), n
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_bf16_forward_backward_and_generate(layer_type):
    model = tiny_mdu(layer_type=layer_type)
    perturb_added_layers(model)
    ids = speech_prompt()
    with torch.no_grad():
        ref = model(ids).logits
    model.to(torch.bfloat16)
    out = model(ids, labels=_labels(ids))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert (out.logits.float() - ref).abs().max() < 0.1 * ref.abs().max()
    out.loss.backward()
    assert model.model.embed_tokens.speech_weight.grad.dtype == torch.bfloat16
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert gen.shape == (2, ids.shape[1] + 4)


def test_from_text_model_keeps_the_base_dtype():
    base = tiny_base().to(torch.bfloat16)
    model = MDUSpeechForCausalLM.from_text_model(base, layer_type="e_branchformer", speech_vocab_size=8, num_added_layers=1,
                                                 cgmlp_units=32, cgmlp_conv_kernel=3, merge_conv_kernel=3)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.randint(3, 100, (1, 6))
    with torch.no_grad():
        assert torch.equal(model(ids).logits[..., :128], base(ids).logits)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_device_map_keeps_each_layer_whole(tmp_path, layer_type):
    model = tiny_mdu(tiny_base(num_layers=4), layer_type=layer_type)
    layer_bytes = sum(p.numel() * 4 for p in model.model.layers[1].parameters())
    device_map = infer_auto_device_map(
        model, max_memory={0: int(2.5 * layer_bytes), 1: int(2.5 * layer_bytes), "cpu": 10**9},
        no_split_module_classes=model._no_split_modules,
    )
    assert len(set(device_map.values())) > 1  # the budget forces a split across devices...
    for name in device_map:  # ...but only at layer boundaries or above
        parts = name.split(".")
        if parts[:2] == ["model", "layers"]:
            assert len(parts) == 3, f"layer split across devices: {name}"
    # device_map="auto" through from_pretrained (the GPU when there is one) loads the same model: compared on its device
    perturb_added_layers(model)
    model.save_pretrained(tmp_path)
    loaded = MDUSpeechForCausalLM.from_pretrained(tmp_path, device_map="auto")
    model.to(loaded.device)
    ids = on_device_of(loaded, speech_prompt())
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
