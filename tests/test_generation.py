"""Cached generation equals uncached generation, token for token, for both layer types (E-Branchformer keeps its
convolution states in the cache), after a speech prompt, greedy / sampling / beam, batched with left padding."""

import pytest
import torch
from tiny_models import LAYER_TYPES, PLACEMENTS, TEXT_VOCAB, perturb_added_layers, speech_prompt, tiny_mdu
from transformers.cache_utils import DynamicCache

from modeling_mdu.hf_compat import output_cache


def _trained_like(layer_type, placement="interleaved", **kwargs):
    model = tiny_mdu(layer_type=layer_type, placement=placement, **kwargs)
    perturb_added_layers(model, std=0.1)  # away from the identity, as after training: the added layers matter
    return model


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("placement", PLACEMENTS)
@torch.no_grad()
def test_cache_equals_no_cache_stepwise_logits(layer_type, placement):
    """Prefill a speech prompt, then feed tokens one at a time through the cache: every step's logits equal a full
    forward pass over the whole sequence (speech tokens among the fed ones, so the conv states are exercised)."""
    model = _trained_like(layer_type, placement)
    ids = speech_prompt(batch=2, units=9, text_tokens=4)
    extra = torch.tensor([[TEXT_VOCAB + 5, 7, TEXT_VOCAB + 3, 9], [11, TEXT_VOCAB + 7, TEXT_VOCAB + 2, 3]])
    full_ids = torch.cat([ids, extra], dim=1)
    full = model(full_ids, use_cache=False).logits
    cache = DynamicCache(config=model.config)
    out = model(ids, past_key_values=cache, use_cache=True)
    assert torch.allclose(out.logits, full[:, : ids.shape[1]], atol=1e-5)
    for t in range(extra.shape[1]):
        out = model(extra[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
        assert (out.logits[:, 0] - full[:, ids.shape[1] + t]).abs().max() <= 1e-5, f"step {t}"


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize(
    "mode",
    [
        dict(do_sample=False),
        dict(do_sample=True, top_k=20, temperature=1.5),
        dict(do_sample=False, num_beams=3),
    ],
    ids=["greedy", "sampling", "beam"],
)
@torch.no_grad()
def test_generate_cached_equals_uncached(layer_type, mode):
    model = _trained_like(layer_type)
    ids = speech_prompt(batch=2, units=11, text_tokens=0)
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        outs.append(
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                           use_cache=use_cache, pad_token_id=0, **mode)
        )
    assert outs[0].shape == (2, ids.shape[1] + 12)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("text_bypass", [False, True])
@torch.no_grad()
def test_batched_left_padding_equals_one_by_one(layer_type, text_bypass):
    """Prompts of different lengths (one text-only) in one left-padded batch generate what each generates alone."""
    model = _trained_like(layer_type, text_bypass=text_bypass)
    prompts = [speech_prompt(batch=1, units=13, text_tokens=0, seed=1)[0], speech_prompt(batch=1, units=6, text_tokens=0, seed=2)[0],
               torch.tensor([5, 9, 33, 17])]
    width = max(len(p) for p in prompts)
    batch = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, p in enumerate(prompts):
        batch[i, width - len(p):], mask[i, width - len(p):] = p, 1
    kw = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=0)
    together = model.generate(batch, attention_mask=mask, **kw)[:, width:]
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], attention_mask=torch.ones(1, len(p), dtype=torch.long), **kw)[0, len(p):]
        assert torch.equal(together[i], alone), f"prompt {i}"


@torch.no_grad()
def test_text_bypass_decision_is_kept_in_the_cache():
    """With text_bypass, a speech prompt's later text tokens still run the added layers (decided on the prompt)."""
    model = _trained_like("e_branchformer", text_bypass=True)
    ids = speech_prompt(batch=1, units=8, text_tokens=0)
    nxt = torch.tensor([[7]])
    full = model(torch.cat([ids, nxt], dim=1), use_cache=False).logits[:, -1]
    out = model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True)
    step = model(nxt, past_key_values=out.past_key_values, use_cache=True).logits[:, -1]
    assert torch.allclose(step, full, atol=1e-5)


def test_ebf_layers_refuse_a_cache_without_conv_states():
    model = _trained_like("e_branchformer")
    ids = speech_prompt(batch=1)
    plain = DynamicCache()  # no config: plain KV layers, nowhere to keep the conv states
    with pytest.raises(ValueError, match="DynamicCache\\(config=model.config\\)"):
        model(ids, past_key_values=plain, use_cache=True)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("name", ["past_key_values", "cache"])
@torch.no_grad()
def test_forward_takes_the_cache_under_either_name(layer_type, name):
    """transformers >= 5.24 passes the cache as `cache=`, older releases as `past_key_values=`: both must be used
    (a forward that ignores one silently decodes without its cache), and the output carries it back."""
    model = _trained_like(layer_type)
    ids = speech_prompt(batch=2, units=9, text_tokens=2)
    nxt = torch.tensor([[7], [TEXT_VOCAB + 4]])
    full = model(torch.cat([ids, nxt], dim=1), use_cache=False).logits[:, -1]
    cache = DynamicCache(config=model.config)
    out = model(ids, use_cache=True, **{name: cache})
    assert output_cache(out) is cache and cache.get_seq_length() == ids.shape[1]
    step = model(nxt, use_cache=True, **{name: cache}).logits[:, -1]
    assert (step - full).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="two caches"):
        model(nxt, past_key_values=cache, cache=DynamicCache(config=model.config))


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("text_bypass", [False, True])
@torch.no_grad()
def test_assisted_decoding_equals_greedy(layer_type, text_bypass):
    """Prompt-lookup (assisted) decoding drafts tokens, verifies them in one forward and rolls the cache back, conv
    states included: its greedy output must be plain greedy decoding's."""
    model = _trained_like(layer_type, text_bypass=text_bypass)
    units = speech_prompt(batch=1, units=10, text_tokens=0)
    ids = torch.cat([units, units[:, 1:6], torch.tensor([[5, 9, 5, 9, 5]])], dim=1)  # repeats for lookup to match
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    greedy = model.generate(ids, **kw)
    assisted = model.generate(ids, prompt_lookup_num_tokens=3, **kw)
    assert torch.equal(assisted, greedy)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@torch.no_grad()
def test_beam_search_with_text_bypass_equals_uncached(layer_type):
    """Beam search reorders the cache; with text_bypass the gate kept on the cache must follow (speech and text rows)."""
    model = _trained_like(layer_type, text_bypass=True)
    speech = speech_prompt(batch=1, units=8, text_tokens=0, seed=3)[0]
    text = torch.tensor([3, 5, 7, 9, 11, 13, 15, 17, 19, 21])
    batch = torch.stack([speech, text])
    kw = dict(attention_mask=torch.ones_like(batch), max_new_tokens=8, min_new_tokens=8, num_beams=3,
              num_return_sequences=2, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(batch, use_cache=True, **kw), model.generate(batch, use_cache=False, **kw))
