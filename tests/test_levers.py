"""The performance levers of issue 20, each behind a flag: what each must keep exact, and that each does what it is for.

- `recompute_frozen_segments`: frozen base segments recomputed in backward give the same loss and gradients, and
  keep only their inputs for backward (saved-tensor bytes counted with `saved_tensors_hooks`);
- packed batches (`ASRCollator(pack=True)`, position ids restarting per example): the same logits and loss as the
  padded batch, E-Branchformer convolutions reset at each example, `text_bypass` per example;
- decoding without host syncs: no tensor read back to Python in our code during a decoding step (dynamic and static
  caches), a decoding step compiles as one graph (`torch.compile(fullgraph=True)`), static-cache generation equals
  dynamic-cache generation, and generation that may emit speech ids still equals uncached generation;
- FP8 frozen linears: see test_fp8_* below.
Speed and memory are measured in bench/ (ratios in one run), never asserted here.
"""

import re
import sys

import pytest
import torch
import torch.nn.functional as F
from devices import needs_cpu_fp8
from tiny_models import (
    FAMILIES,
    SPEECH_UNITS,
    TEXT_VOCAB,
    perturb_added_layers,
    speech_prompt,
    tiny_base,
    tiny_family_base,
    tiny_mdu,
    tiny_text_tokenizer,
)
from transformers import StaticCache
from transformers.cache_utils import DynamicCache

from bench.train_step import saved_tensor_bytes
from modeling_mdu import MDUSpeechProcessor, MDUSpeechTokenizer
from modeling_mdu.causal_conv import CausalDepthwiseConv1d
from training.collator import ASRCollator

LAYER_TYPES = ["transformer", "e_branchformer"]


def _trained_like(layer_type, num_layers=4, **kwargs):
    model = tiny_mdu(base=tiny_base(num_layers=num_layers), layer_type=layer_type, **kwargs)
    perturb_added_layers(model, std=0.1)
    return model


# ------------------------------------------------------------------ recomputation of frozen segments
def _loss_and_grads(model, ids, labels, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(ids, labels=labels, output_hidden_states=True, **kwargs)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.detach(), grads, [h.detach() for h in out.hidden_states]


def _saved_bytes(model, ids, labels) -> int:
    """Bytes of the tensors autograd keeps for backward (parameters excluded), each storage once."""
    return saved_tensor_bytes(model, {"input_ids": ids, "labels": labels})


def _asr_labels(ids, prompt_len):
    labels = ids.clone()
    labels[:, :prompt_len] = -100
    return labels


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("text_bypass", [False, True])
def test_recomputed_segments_give_the_same_loss_gradients_and_hidden_states(layer_type, text_bypass):
    model = _trained_like(layer_type, num_layers=8, text_bypass=text_bypass).train()
    ids = torch.cat([speech_prompt(batch=2, units=20, text_tokens=6), torch.randint(3, TEXT_VOCAB, (1, 28))])
    labels = _asr_labels(ids, 22)
    labels[2] = ids[2]  # a text-only row (skips the added layers under text_bypass)
    loss, grads, hidden = _loss_and_grads(model, ids, labels)
    model.config.recompute_frozen_segments = True
    loss_r, grads_r, hidden_r = _loss_and_grads(model, ids, labels)
    assert torch.equal(loss, loss_r)
    assert grads.keys() == grads_r.keys() and len(grads) > 0
    for name in grads:
        assert torch.equal(grads[name], grads_r[name]), name
    assert len(hidden) == len(hidden_r) == model.config.num_hidden_layers + 1
    assert all(torch.equal(a, b) for a, b in zip(hidden, hidden_r))


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_recomputed_segments_keep_only_their_inputs_for_backward(layer_type):
    """8 base layers in 3 frozen segments (2 added layers): what autograd keeps drops to well under half."""
    model = _trained_like(layer_type, num_layers=8).train()
    ids = speech_prompt(batch=2, units=40, text_tokens=10)
    labels = _asr_labels(ids, 42)
    full = _saved_bytes(model, ids, labels)
    model.config.recompute_frozen_segments = True
    recomputed = _saved_bytes(model, ids, labels)
    assert recomputed < 0.5 * full, (recomputed, full)


def test_recompute_is_for_training_only():
    """Under no_grad / eval the flag changes nothing (the cache still fills), and a training forward refuses a cache."""
    model = _trained_like("e_branchformer", recompute_frozen_segments=True)
    ids = speech_prompt(batch=2, units=9, text_tokens=0)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(model.generate(ids, use_cache=True, **kw), model.generate(ids, use_cache=False, **kw))
    model.train()
    with pytest.raises(ValueError, match="recompute_frozen_segments"):
        model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True)
    assert model(ids).past_key_values is None  # use_cache from the config is switched off, not an error


# ------------------------------------------------------------------ packed batches
EXAMPLES = [  # short transcripts: a convolution that leaks across examples reaches the next one's speech
    {"unit_ids": [140, 141, 142, 143, 144, 145, 131, 133], "text": "go"},
    {"unit_ids": [141, 131, 132], "text": "hi"},
    {"unit_ids": [], "text": "a text row"},
    {"unit_ids": [135, 136, 137, 138, 139, 140, 141, 142, 143, 130, 131], "text": "up"},
]


@pytest.fixture(scope="module")
def processor():
    config = tiny_mdu().config
    speech_tokenizer = MDUSpeechTokenizer(codebook_size=SPEECH_UNITS)  # not fitted: the examples hold unit ids
    return MDUSpeechProcessor.from_model_config(config, speech_tokenizer, tiny_text_tokenizer())


def _padded_and_packed(processor):
    padded = ASRCollator(processor)(EXAMPLES)
    packed = ASRCollator(processor, pack=True)(EXAMPLES)
    return padded, packed


def _unpad(padded, values):
    """The rows of a padded [batch, seq, ...] tensor without their padding, one after another."""
    return torch.cat([values[i, : int(m.sum())] for i, m in enumerate(padded["attention_mask"])])


def _by_example(batch, logits):
    """{example's input ids: its logits} from a padded or packed batch (rows split where position ids restart;
    the pad filler of packed rows, which has no labels, left out)."""
    out = {}
    for row in range(batch["input_ids"].shape[0]):
        if "attention_mask" in batch:
            bounds = [(0, int(batch["attention_mask"][row].sum()))]
        else:
            pos = batch["position_ids"][row].tolist()
            starts = [t for t in range(len(pos)) if pos[t] == 0] + [len(pos)]
            bounds = list(zip(starts[:-1], starts[1:]))
        for a, b in bounds:
            if (batch["labels"][row, a:b] != -100).any():
                out[tuple(batch["input_ids"][row, a:b].tolist())] = logits[row, a:b]
    return out


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_packed_rows_equal_padded_batch(processor, layer_type):
    """pack_length: rows of at most that many tokens (first-fit decreasing), filled up with a pad example."""
    model = _trained_like(layer_type, text_bypass=True)
    padded = ASRCollator(processor)(EXAMPLES)
    rows = ASRCollator(processor, pack=True, pack_length=20)(EXAMPLES)
    assert 1 < rows["input_ids"].shape[0] < len(EXAMPLES) and rows["input_ids"].shape[1] <= 20
    assert (rows["labels"] != -100).sum() == (padded["labels"][:, 1:] != -100).sum()
    with torch.no_grad():
        a, b = model(**padded), model(**rows)
    by_a, by_b = _by_example(padded, a.logits), _by_example(rows, b.logits)
    assert by_a.keys() == by_b.keys() and len(by_a) == len(EXAMPLES)
    for ids in by_a:
        torch.testing.assert_close(by_b[ids], by_a[ids], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=1e-6)


def test_pack_collator_concatenates_the_examples(processor):
    padded, packed = _padded_and_packed(processor)
    assert set(packed) == {"input_ids", "labels", "position_ids"} and packed["input_ids"].shape[0] == 1
    assert torch.equal(packed["input_ids"][0], _unpad(padded, padded["input_ids"]))
    lengths = padded["attention_mask"].sum(1).tolist()
    assert torch.equal(packed["position_ids"][0], torch.cat([torch.arange(n) for n in lengths]))
    # the first label of each example is never predicted (padded: it is shifted away; packed: it is a separator)
    assert (packed["labels"] != -100).sum() == (padded["labels"][:, 1:] != -100).sum()


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("text_bypass", [False, True])
@pytest.mark.parametrize("labels_only", [False, True], ids=["full_logits", "logits_at_labels"])
def test_packed_batch_equals_padded_batch(processor, layer_type, text_bypass, labels_only):
    model = _trained_like(layer_type, text_bypass=text_bypass)
    padded, packed = _padded_and_packed(processor)
    with torch.no_grad():
        a = model(**padded)
        b = model(**packed)
        model.config.logits_at_labels_only = labels_only
        loss_a, loss_b = model(**padded).loss, model(**packed).loss
    torch.testing.assert_close(b.logits[0], _unpad(padded, a.logits), atol=1e-5, rtol=1e-5)  # -inf where text-only
    torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=1e-6)
    assert b.past_key_values is None  # a packed batch never fills a cache (its masks would not be packed then)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_packs_and_recomputes_exactly(processor, family):
    """Sliding windows (Mistral, Qwen2, Gemma 3), two RoPEs and scaled embeddings (Gemma 3): packed = padded, and
    recomputed segments give the same gradients."""
    model = tiny_mdu(base=tiny_family_base(family), layer_type="e_branchformer", text_bypass=True)
    perturb_added_layers(model, std=0.1)
    padded, packed = _padded_and_packed(processor)
    with torch.no_grad():
        a, b = model(**padded), model(**packed)
    torch.testing.assert_close(b.logits[0], _unpad(padded, a.logits), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=1e-6)
    model.train()
    inputs = (padded["input_ids"], padded["labels"])
    _, grads, _ = _loss_and_grads(model, *inputs, attention_mask=padded["attention_mask"])
    model.config.recompute_frozen_segments = True
    _, grads_r, _ = _loss_and_grads(model, *inputs, attention_mask=padded["attention_mask"])
    assert all(torch.equal(grads[n], grads_r[n]) for n in grads)


def test_packed_text_bypass_decides_per_example(processor):
    model = _trained_like("e_branchformer", text_bypass=True)
    _, packed = _padded_and_packed(processor)
    with torch.no_grad():
        text_only = model.model(**{k: v for k, v in packed.items() if k != "labels"}).text_only_rows
    lengths = [len(processor.build_inputs([e["unit_ids"]], texts=[e["text"]])[0]["input_ids"]) if e["unit_ids"]
               else len(ASRCollator(processor).text_only(e["text"])["input_ids"]) for e in EXAMPLES]
    expected = torch.cat([torch.full((n,), not e["unit_ids"]) for n, e in zip(lengths, EXAMPLES)])
    assert text_only.shape == packed["input_ids"].shape and torch.equal(text_only[0], expected)


def test_packed_convolutions_must_not_leak(processor, monkeypatch):
    """The control: with the reset switched off, the E-Branchformer convolutions read the previous example's speech
    and the packed logits leave the padded ones; with it on (test above) they are equal."""
    model = _trained_like("e_branchformer")
    padded, packed = _padded_and_packed(processor)

    def leaky(self, x, packed):
        return self.conv(F.pad(x, (self.kernel_size - 1, 0)))

    monkeypatch.setattr(CausalDepthwiseConv1d, "_packed", leaky)
    with torch.no_grad():
        a, b = model(**padded).logits, model(**packed).logits
    assert (b[0] - _unpad(padded, a)).abs().max() > 1e-3


def test_ctc_loss_refuses_packed_batches(processor):
    from types import SimpleNamespace

    from training.trainer import MDUTrainer

    trainer = SimpleNamespace(ctc_weight=1.0)
    model = _trained_like("transformer").train()
    with pytest.raises(ValueError, match="packed batch"):
        MDUTrainer.compute_loss(trainer, model, dict(_padded_and_packed(processor)[1]))


# ------------------------------------------------------------------ decoding without host syncs
SYNCS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero", "cpu", "numpy")


@pytest.fixture
def count_syncs(monkeypatch):
    """Counts tensor reads back to Python (bool(t), int(t), t.item(), t.tolist(), t.cpu(), ...) made from our model
    files; on a GPU each is a host sync."""
    calls = []

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "modeling_mdu" in caller:
                calls.append(f"{name} at {caller}:{sys._getframe(1).f_lineno}")
            return original(self, *args, **kwargs)

        return counted

    def start():
        for name in SYNCS:
            monkeypatch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))

    return start, calls


def _decode_steps(model, cache, steps=4):
    """Prefill a speech prompt, then feed `steps` one-token decoding steps (text tokens, as generation emits them);
    returns the function that runs the steps, so the prefill's own reads are left out of the count."""
    ids = speech_prompt(batch=2, units=9, text_tokens=0)
    mask = torch.ones(2, ids.shape[1] + steps, dtype=torch.long)
    model(ids, past_key_values=cache, attention_mask=mask[:, : ids.shape[1]], use_cache=True, decode_text_only=True)

    def run():
        nxt = torch.tensor([[5], [9]])
        for t in range(steps):
            n = ids.shape[1] + t + 1
            model(nxt, past_key_values=cache, attention_mask=mask[:, :n], position_ids=torch.full((2, 1), n - 1),
                  use_cache=True, decode_text_only=True)

    return run


CASES = [("transformer", False, "dynamic"), ("transformer", True, "dynamic"), ("e_branchformer", False, "dynamic"),
         ("e_branchformer", True, "dynamic"), ("transformer", False, "static"), ("e_branchformer", False, "static"),
         ("e_branchformer", True, "static")]  # MDU-T + text_bypass + static cache: reads the cache length (README)


def _cache(model, kind):
    if kind == "dynamic":
        return DynamicCache(config=model.config)
    return StaticCache(config=model.config, max_cache_len=24)


@pytest.mark.parametrize("layer_type,text_bypass,cache_kind", CASES)
@torch.no_grad()
def test_decoding_steps_read_nothing_back_from_the_device(layer_type, text_bypass, cache_kind, count_syncs):
    model = _trained_like(layer_type, text_bypass=text_bypass)
    start, calls = count_syncs
    run = _decode_steps(model, _cache(model, cache_kind))
    start()
    run()
    assert calls == []


@torch.no_grad()
def test_sync_counter_sees_our_reads(count_syncs):
    """The control: a forward that decides from the device (a prompt, no decode_text_only) is counted."""
    model = _trained_like("e_branchformer", text_bypass=True)
    start, calls = count_syncs
    start()
    ids = speech_prompt(batch=2, units=9, text_tokens=0)
    model(ids, past_key_values=DynamicCache(config=model.config), use_cache=True)
    assert any("modeling_mdu.py" in c for c in calls)


@pytest.mark.parametrize("layer_type,text_bypass", [("transformer", False), ("e_branchformer", False),
                                                     ("e_branchformer", True)])
@torch.no_grad()
def test_decoding_step_compiles_as_one_graph(layer_type, text_bypass):
    """torch.compile(fullgraph=True) fails on any data-dependent Python branch (a host sync) in a decoding step."""
    model = _trained_like(layer_type, text_bypass=text_bypass)
    cache = _cache(model, "static")
    run = _decode_steps(model, cache, steps=2)
    eager_forward = model.forward
    compiled = torch.compile(eager_forward, fullgraph=True, backend="eager", dynamic=False)
    try:
        model.forward = compiled
        run()
    finally:
        model.forward = eager_forward
        torch._dynamo.reset()


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("text_bypass", [False, True])
@torch.no_grad()
def test_static_cache_generation_equals_dynamic(layer_type, text_bypass):
    """Left-padded batch, a text-only prompt among speech ones; the static cache is reused by the second call."""
    model = _trained_like(layer_type, text_bypass=text_bypass)
    prompts = [speech_prompt(batch=1, units=13, text_tokens=0, seed=1)[0], torch.tensor([5, 9, 33, 17]),
               speech_prompt(batch=1, units=6, text_tokens=0, seed=2)[0]]
    width = max(len(p) for p in prompts)
    batch = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, p in enumerate(prompts):
        batch[i, width - len(p):], mask[i, width - len(p):] = p, 1
    kw = dict(attention_mask=mask, max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=0)
    dynamic = model.generate(batch, **kw)
    for _ in range(2):
        assert torch.equal(model.generate(batch, cache_implementation="static", **kw), dynamic)
    assert torch.equal(model.generate(batch, use_cache=False, **kw), dynamic)


def _speaking_model(layer_type):
    """A model whose argmax is often a speech id (large speech rows in the tied embedding / LM head)."""
    model = _trained_like(layer_type)
    with torch.no_grad():
        model.lm_head.speech_weight.mul_(8.0)
    return model


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@torch.no_grad()
def test_generation_that_may_emit_speech_equals_uncached(layer_type):
    """With speech ids allowed (suppress_tokens=[]) the decoding steps may feed speech: generate must then not
    promise text steps (decode_text_only), or the E-Branchformer layers would skip their local branch on them."""
    model = _speaking_model(layer_type)
    ids = speech_prompt(batch=2, units=11, text_tokens=0)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12, do_sample=False,
              pad_token_id=0, suppress_tokens=[])
    cached = model.generate(ids, use_cache=True, **kw)
    assert (cached[:, ids.shape[1]:] >= TEXT_VOCAB).any(), "the test needs generated speech ids"
    assert torch.equal(cached, model.generate(ids, use_cache=False, **kw))


@torch.no_grad()
def test_a_broken_text_step_promise_shows():
    """The control for the test above: a decoding step that feeds a speech id while promising a text step gives
    other logits than the same step without the promise (which equals the uncached forward)."""
    model = _trained_like("e_branchformer")
    ids = speech_prompt(batch=2, units=9, text_tokens=0)
    speech_step = torch.full((2, 1), TEXT_VOCAB + 4)
    full = model(torch.cat([ids, speech_step], dim=1), use_cache=False).logits[:, -1]
    steps = {}
    for promise in (False, True):
        cache = DynamicCache(config=model.config)
        model(ids, past_key_values=cache, use_cache=True)
        step = model(speech_step, past_key_values=cache, use_cache=True, decode_text_only=promise)
        steps[promise] = step.logits[:, -1]
    assert (steps[False] - full).abs().max() <= 1e-5
    assert (steps[True] - full).abs().max() > 1e-3


def test_generate_promises_text_steps_only_when_speech_is_suppressed():
    model = _trained_like("e_branchformer")
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("decode_text_only")),
                                    with_kwargs=True)
    ids = speech_prompt(batch=1, units=5, text_tokens=0)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, **kw)  # the saved generation config suppresses every speech id
        model.generate(ids, suppress_tokens=[], **kw)
        model.generate(ids, suppress_tokens=list(range(TEXT_VOCAB, TEXT_VOCAB + 5)), **kw)  # only some
    assert seen == [True] * 3 + [False] * 6


# ------------------------------------------------------------------ FP8 frozen linears
def test_fp8_frozen_linear_is_close_to_full_precision_and_trains_nothing():
    needs_cpu_fp8()
    from torch import nn

    from modeling_mdu.modeling_mdu import FP8FrozenLinear

    torch.manual_seed(0)
    linear = nn.Linear(64, 96).requires_grad_(False)
    before = linear.weight.detach().clone()
    fp8 = FP8FrozenLinear.wrap(linear)
    assert fp8.weight is linear.weight and set(fp8.state_dict()) == {"weight", "bias"}
    x = torch.randn(3, 7, 64, requires_grad=True)
    g = torch.randn(3, 7, 96)
    y, y_ref = fp8(x), linear(x)
    (gx,), (gx_ref,) = torch.autograd.grad(y, x, g), torch.autograd.grad(y_ref, x, g)
    assert (y - y_ref).norm() / y_ref.norm() < 0.06  # e4m3: 3 mantissa bits, row-wise scales
    assert (gx - gx_ref).norm() / gx_ref.norm() < 0.06
    assert linear.weight.grad is None and torch.equal(linear.weight, before)
    with torch.no_grad():  # new weights (e.g. loaded after construction): the FP8 copies follow
        linear.weight.mul_(-1.0)
    assert (fp8(x) + y_ref - 2 * linear.bias).norm() / y_ref.norm() < 0.06


def test_fp8_model_trains_like_full_precision_and_keeps_the_base():
    needs_cpu_fp8()
    base = tiny_base(num_layers=4)
    ids = speech_prompt(batch=2, units=20, text_tokens=8)
    labels = _asr_labels(ids, 22)
    models = [tiny_mdu(base=base, layer_type="transformer", fp8_frozen_linears=flag).train() for flag in (False, True)]
    for m in models:
        perturb_added_layers(m, std=0.1)
    swapped = [type(m).__name__ for m in models[1].modules() if type(m).__name__ == "FP8FrozenLinear"]
    assert len(swapped) == 7 * base.config.num_hidden_layers  # q k v o gate up down of every base layer, no added one
    losses, grads = [], []
    for m in models:
        loss = m(ids, labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.requires_grad]))
    assert abs(losses[1] - losses[0]) / losses[0] < 0.02
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.98
    torch.optim.AdamW([p for p in models[1].parameters() if p.requires_grad], lr=1e-2).step()
    text = models[1].to_text_model()
    for name, tensor in base.state_dict().items():
        assert torch.equal(text.state_dict()[name], tensor), name


def test_fp8_refuses_a_gpu_without_fp8_matmuls():
    from modeling_mdu.modeling_mdu import check_fp8_device

    with pytest.raises(RuntimeError, match="compute capability >= 8.9"):
        check_fp8_device(torch.device("cuda"), capability=(8, 0))  # A100
    check_fp8_device(torch.device("cuda"), capability=(9, 0))  # H100


def test_fp8_on_a_cpu_without_rowwise_fp8_matmuls_is_refused_by_name(monkeypatch):
    from modeling_mdu import modeling_mdu

    if modeling_mdu.cpu_has_rowwise_fp8_matmul():  # torch 2.14 (our range): the CPU computes in FP8
        modeling_mdu.check_fp8_device(torch.device("cpu"))
        monkeypatch.setattr(modeling_mdu, "cpu_has_rowwise_fp8_matmul", lambda: False)  # as torch 2.11's CPU
    linear = modeling_mdu.FP8FrozenLinear.wrap(torch.nn.Linear(16, 16).requires_grad_(False))
    with pytest.raises(RuntimeError, match=rf"fp8_frozen_linears on the CPU .*torch {re.escape(torch.__version__)}"):
        linear(torch.randn(2, 16))
