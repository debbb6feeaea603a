"""training/ctc_loss.py: the auxiliary CTC loss reads exactly the speech positions, targets exactly the transcript's
text tokens, is the same batched (any padding side) as row by row, and trains the speech rows through train_hf."""

import pytest
import torch
import torch.nn.functional as F
from test_train import run, work  # noqa: F401  (the tiny training fixture)
from tiny_models import tiny_base, tiny_mdu, tiny_text_tokenizer

from modeling_mdu import MDUSpeechProcessor, MDUSpeechTokenizer
from training.collator import ASRCollator
from training.ctc_loss import ctc_loss_on_speech, speech_positions, transcript_targets

EXAMPLES = [{"unit_ids": [140, 141, 142, 143, 144, 145], "text": "go up"},
            {"unit_ids": [141, 131, 132], "text": "hi"},
            {"unit_ids": [], "text": "a text-only rehearsal row"}]


@pytest.fixture(scope="module")
def setup(work):  # noqa: F811
    torch.manual_seed(0)
    model = tiny_mdu(tiny_base(), layer_type="transformer", num_added_layers=1)
    with torch.no_grad():  # a trained-looking model: added layers not identity, speech rows random
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    proc = MDUSpeechProcessor.from_model_config(model.config, MDUSpeechTokenizer.from_pretrained(work["stok"]),
                                                tiny_text_tokenizer())
    return model, proc


def loss_of(model, batch, eos):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return ctc_loss_on_speech(model, out.hidden_states, batch["input_ids"], batch["labels"], eos_token_id=eos)


def test_positions_and_targets(setup):
    model, proc = setup
    batch = ASRCollator(proc, train_on_speech=True)(EXAMPLES)
    index, lengths = speech_positions(batch["input_ids"], model.config.speech_token_start, model.config.speech_vocab_size)
    assert lengths.tolist() == [6, 3, 0]
    assert index[0].tolist() == [1, 2, 3, 4, 5, 6] and index[1, :3].tolist() == [1, 2, 3]
    eos = proc.tokenizer.eos_token_id
    targets, n = transcript_targets(batch["labels"], model.config.text_vocab_size, eos)
    go_up = proc.tokenizer("go up", add_special_tokens=False)["input_ids"]
    hi = proc.tokenizer("hi", add_special_tokens=False)["input_ids"]
    rehearsal = proc.tokenizer("a text-only rehearsal row")["input_ids"]  # labels on every token, eos dropped
    assert n.tolist() == [len(go_up), len(hi), len([t for t in rehearsal if t != eos])]
    assert targets.tolist()[: len(go_up) + len(hi)] == go_up + hi  # unit labels (train_on_speech) are not targets


def test_batched_equals_row_by_row_with_either_padding(setup):
    model, proc = setup
    eos = proc.tokenizer.eos_token_id
    collate = ASRCollator(proc)
    rows = [loss_of(model, collate([ex]), eos) for ex in EXAMPLES[:2]]
    expected = torch.stack(rows).mean()  # "mean": each row's loss / its target length, averaged over rows
    batched = loss_of(model, collate(EXAMPLES), eos)  # the text-only row has no speech: left out of the mean
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)
    feats = proc.build_inputs([ex["unit_ids"] for ex in EXAMPLES[:2]], texts=[ex["text"] for ex in EXAMPLES[:2]])
    left = proc.pad(feats, padding_side="left")
    torch.testing.assert_close(loss_of(model, left, eos), expected, rtol=1e-5, atol=1e-5)
    # and it is CTC: against F.ctc_loss on the gathered log-probs of the first row
    out = model(**{k: v for k, v in collate(EXAMPLES[:1]).items() if k != "labels"}, output_hidden_states=True)
    logp = F.log_softmax(model.lm_head(out.hidden_states[-1][:, 1:7]).float(), -1).transpose(0, 1)
    target = torch.tensor([proc.tokenizer("go up", add_special_tokens=False)["input_ids"]])
    ref = F.ctc_loss(logp, target, torch.tensor([6]), torch.tensor([target.shape[1]]), blank=model.config.speech_start_token_id)
    torch.testing.assert_close(rows[0], ref)


def test_gradient_reaches_speech_rows_and_no_speech_gives_zero(setup):
    model, proc = setup
    model.zero_grad()
    loss_of(model, ASRCollator(proc)(EXAMPLES[:1]), proc.tokenizer.eos_token_id).backward()
    grad = model.model.embed_tokens.speech_weight.grad
    assert grad is not None and grad[140 - model.config.text_vocab_size].abs().sum() > 0  # unit 140's row
    assert loss_of(model, ASRCollator(proc)(EXAMPLES[2:]), None).item() == 0.0


def test_intermediate_layer_is_normed_before_the_head(setup):
    model, proc = setup
    batch = ASRCollator(proc)(EXAMPLES[:1])
    out = model(input_ids=batch["input_ids"], output_hidden_states=True)
    got = ctc_loss_on_speech(model, out.hidden_states, batch["input_ids"], batch["labels"], layer=1,
                             eos_token_id=proc.tokenizer.eos_token_id)
    normed = list(out.hidden_states)
    normed[-1] = model.model.norm(out.hidden_states[1])  # what layer=1 must read: norm(hidden_states[1])
    ref = ctc_loss_on_speech(model, tuple(normed), batch["input_ids"], batch["labels"], eos_token_id=proc.tokenizer.eos_token_id)
    torch.testing.assert_close(got, ref)


def test_train_hf_logs_and_lowers_the_ctc_loss(work):  # noqa: F811
    trainer = run(work, "mdu", work["root"] / "ctc", "--ctc_weight", "1.0")
    ctc = [h["ctc_loss"] for h in trainer.state.log_history if "ctc_loss" in h]
    assert len(ctc) >= 8 and all(c == c for c in ctc)
    assert sum(ctc[-3:]) / 3 < sum(ctc[:3]) / 3 - 0.05, ctc
    with pytest.raises(ValueError, match="ctc_weight"):
        run(work, "mdu", work["root"] / "ctc-bad", "--ctc_weight", "-1")
