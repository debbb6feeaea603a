"""The claims the MDU core makes, one test each (tiny random Llama bases, no downloads)."""

import pytest
import torch
from tiny_models import (
    LAYER_TYPES,
    PLACEMENTS,
    SPEECH_UNITS,
    TEXT_VOCAB,
    perturb_added_layers,
    speech_prompt,
    text_ids,
    tiny_base,
    tiny_mdu,
    tiny_text_tokenizer,
)
from transformers import Gemma2Config, GPT2Config, GPT2LMHeadModel

from configuration_mdu import MDUSpeechConfig, compute_added_after
from modeling_mdu import MDUSpeechForCausalLM


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("tie", [True, False])
def test_identity_at_init(placement, layer_type, tie):
    base = tiny_base(tie=tie)
    model = tiny_mdu(base, layer_type=layer_type, placement=placement, num_added_layers=None, added_ratio=0.5)
    assert model.config.num_added_layers == 2 and model.config.num_hidden_layers == 6
    ids = text_ids()
    with torch.no_grad():
        ours, ref = model(ids).logits, base(ids).logits
    assert ours.shape[-1] == TEXT_VOCAB + 2 + SPEECH_UNITS
    assert (ours[..., :TEXT_VOCAB] - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_identity_at_init_holds_on_speech_too(layer_type):
    """Every added layer is x -> x at init, also at speech positions: the stack equals the base stack."""
    model = tiny_mdu(layer_type=layer_type)
    ids = speech_prompt()
    with torch.no_grad():
        full = model(ids, output_hidden_states=True).hidden_states
        last = model.config.num_hidden_layers - 1
        for pos in model.config.added_layer_positions:  # full[i] is the input of layer i; full[-1] is after the norm
            after = full[pos + 1] if pos < last else None
            assert torch.equal(full[pos], after) if after is not None else torch.equal(model.model.norm(full[pos]), full[-1])


def test_placements_match_the_paper():
    assert compute_added_after(32, "interleaved", 8) == [3, 7, 11, 15, 19, 23, 27, 31]
    assert compute_added_after(24, "interleaved", 6) == [3, 7, 11, 15, 19, 23]
    assert compute_added_after(32, "bottom", 8) == list(range(8))
    assert compute_added_after(32, "top", 8) == list(range(24, 32))
    assert compute_added_after(32, "middle", 8) == list(range(12, 20))
    assert compute_added_after(32, "sandwich", 8) == [0, 1, 2, 3, 28, 29, 30, 31]
    assert MDUSpeechConfig(num_hidden_layers=30).num_added_layers == 8  # 25% of 30 = 7.5 -> 8


def test_explicit_added_after_and_layout():
    model = tiny_mdu(added_after=[0, 2], num_added_layers=None)
    c = model.config
    assert c.placement == "custom" and c.added_after == [0, 2]
    assert c.layer_is_added == [False, True, False, False, True, False]
    assert c.base_layer_positions == [0, 2, 3, 5]
    assert c.layer_types == ["full_attention", "hybrid", "full_attention", "full_attention", "hybrid", "full_attention"]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(placement="diagonal"), "placement"),
        (dict(layer_type="conformer"), "layer_type"),
        (dict(num_added_layers=5), "num_added_layers"),
        (dict(added_after=[4], num_added_layers=None), "added_after"),
        (dict(added_after=[-1], num_added_layers=None), "added_after"),
        (dict(added_after=[1, 1], num_added_layers=None), "added_after"),
        (dict(added_ratio=0.0, num_added_layers=None), "added_ratio"),
        (dict(speech_vocab_size=-3), "speech_vocab_size"),
        (dict(cgmlp_units=33), "cgmlp_units"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        tiny_mdu(**kwargs)


def test_unsupported_bases_are_rejected_by_name():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="model_type='gpt2'.*gemma3_text.*llama.*mistral.*qwen2.*qwen3"):
        MDUSpeechForCausalLM.from_text_model(gpt2)
    with pytest.raises(ValueError, match="model_type='gemma2'"):  # attention soft-capping: not supported
        MDUSpeechForCausalLM.from_text_model(type("M", (), {"config": Gemma2Config(num_hidden_layers=2)})())


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("tie", [True, False])
def test_only_added_layers_and_new_rows_are_trainable(layer_type, tie):
    model = tiny_mdu(tiny_base(tie=tie), layer_type=layer_type)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    added = {f"model.layers.{pos}." for pos in model.config.added_layer_positions}
    for name, p in model.named_parameters():
        expected = name.endswith("speech_weight") or any(name.startswith(a) for a in added)
        assert p.requires_grad == expected, name
    assert "model.embed_tokens.speech_weight" in trainable
    assert ("lm_head.speech_weight" in trainable) == (not tie)  # tied: one parameter, listed once
    if tie:
        assert model.lm_head.speech_weight is model.model.embed_tokens.speech_weight
        assert model.lm_head.weight is model.model.embed_tokens.weight
    report = model.parameter_report()
    assert report["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < report["trainable"] < report["total"]


def test_new_rows_start_near_the_text_embeddings():
    model = tiny_mdu()
    text, new = model.model.embed_tokens.weight, model.model.embed_tokens.speech_weight
    assert torch.isfinite(new).all()
    assert (new.mean(0) - text.mean(0)).abs().max() < 3 * text.std(0).max() / new.shape[0] ** 0.5 + 1e-3
    assert new.std(0).mean() < text.std(0).mean()  # close to the mean, yet...
    assert not torch.equal(new[0], new[1])  # ...distinguishable


@pytest.mark.parametrize("tie", [True, False])
def test_named_units_start_at_their_names_text_embedding(tie):
    """init_speech_units_from_text: unit i's rows become the mean text rows of its name's tokens; unnamed units and
    every text row stay as they were, so the text model is still bitwise the base."""
    model, tokenizer = tiny_mdu(base=tiny_base(tie=tie)), tiny_text_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = ["k", "@", "ts", *[""] * (SPEECH_UNITS - 3)]
    assert model.init_speech_units_from_text(tokenizer, names) == 3
    first = model.config.speech_token_start - model.config.text_vocab_size
    for head in [model.model.embed_tokens] + ([] if tie else [model.lm_head]):
        rows = head.speech_weight[first:]
        for i, name in enumerate(names[:3]):
            ids = tokenizer(name, add_special_tokens=False)["input_ids"]
            assert torch.allclose(rows[i], head.weight[ids].mean(0))
        assert torch.equal(rows[3:], before[_param_name(model, head.speech_weight)][first + 3 :])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if "speech_weight" not in n)
    with pytest.raises(ValueError, match="2 unit names for speech_vocab_size=16"):
        model.init_speech_units_from_text(tokenizer, ["a", "b"])


def _param_name(model, param):
    return next(n for n, p in model.named_parameters() if p is param)


def _train_steps(model, steps=4, lr=1e-2):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.1)
    ids = torch.cat([speech_prompt(units=12, text_tokens=6), speech_prompt(units=12, text_tokens=6, seed=3)])
    labels = ids.clone()
    labels[:, :14] = -100
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model(ids, labels=labels).loss
        loss.backward()
        for n, p in model.named_parameters():
            assert (p.grad is not None) == p.requires_grad, n
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("tie", [True, False])
def test_base_untouched_after_training(layer_type, tie):
    base = tiny_base(tie=tie)
    model = tiny_mdu(base, layer_type=layer_type)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = _train_steps(model)
    assert losses[-1] < losses[0]
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p)
        assert changed == p.requires_grad, name
    ref, got = base.state_dict(), model.to_text_model().state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_to_text_model_round_trip():
    base = tiny_base(tie=False)
    model = tiny_mdu(base)
    text_model = model.to_text_model()
    assert type(text_model).__name__ == "LlamaForCausalLM"
    assert text_model.config.num_hidden_layers == 4 and text_model.config.vocab_size == TEXT_VOCAB
    ids = text_ids()
    with torch.no_grad():
        assert torch.equal(text_model(ids).logits, base(ids).logits)
    # a copy: training the MDU model later does not touch what to_text_model returned
    assert text_model.model.embed_tokens.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_text_bypass_is_bitwise_the_base(layer_type):
    base = tiny_base()
    model = tiny_mdu(base, layer_type=layer_type, text_bypass=True)
    perturb_added_layers(model)
    speech = speech_prompt()
    text = text_ids(length=speech.shape[1])
    with torch.no_grad():
        assert torch.equal(model(text).logits[..., :TEXT_VOCAB], base(text).logits)
        mixed = torch.cat([text[:1], speech[:1]])
        out = model(mixed).logits
        assert torch.equal(out[0, :, :TEXT_VOCAB], base(mixed[:1]).logits[0])
        # the base has no speech tokens: a text-only row never predicts one (so it stays text-only while generating)
        assert torch.isneginf(out[0, :, TEXT_VOCAB:]).all() and torch.isfinite(out[1]).all()
        no_bypass = tiny_mdu(base, layer_type=layer_type, text_bypass=False)
        no_bypass.load_state_dict(model.state_dict())
        assert torch.allclose(out[1], no_bypass(mixed[1:]).logits[0], atol=1e-5)  # speech rows run the added layers
        assert not torch.allclose(no_bypass(text).logits[..., :TEXT_VOCAB], base(text).logits, atol=1e-4)


def test_logits_at_labels_only_gives_the_same_loss():
    model = tiny_mdu()
    perturb_added_layers(model)
    ids = speech_prompt(units=10, text_tokens=5)
    labels = ids.clone()
    labels[:, :12] = -100
    full = model(ids, labels=labels)
    model.config.logits_at_labels_only = True
    sparse = model(ids, labels=labels)
    assert torch.allclose(full.loss, sparse.loss, atol=1e-6)
    assert sparse.logits.shape == (int((labels[:, 1:] != -100).sum()), model.config.vocab_size)
    sparse.loss.backward()


def test_bad_token_ids_get_a_clear_error():
    model = tiny_mdu()
    with pytest.raises(ValueError, match="input_ids must be in"):
        model(torch.tensor([[5, model.config.vocab_size]]))


def test_inputs_embeds_need_a_speech_mask():
    model = tiny_mdu()
    ids = speech_prompt()
    emb = model.get_input_embeddings()(ids)
    with pytest.raises(ValueError, match="speech_mask"):
        model(inputs_embeds=emb)
    with torch.no_grad():
        a = model(inputs_embeds=emb, speech_mask=ids >= TEXT_VOCAB).logits
        b = model(ids).logits
    assert torch.equal(a, b)
