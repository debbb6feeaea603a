"""Spoken QA (eval/spoken_qa.py): the text suite's questions that can be spoken, said by held-out voices only; the
base's text-to-text accuracy is eval/text.py's on the same items; the direct speech-to-text prompt holds the speech
units and no transcript; the cascade answers the transcript the model produced."""

import json
import shutil

import pytest
import torch
from audio_fixtures import fitted_mel_tokenizer
from tiny_models import perturb_added_layers, tiny_base, tiny_mdu, tiny_text_tokenizer

from eval import spoken_qa as qa
from eval.loglik import encode_pair
from eval.text import TASKS_DIR, load_task, score_multiple_choice
from modeling_mdu import MDUSpeechProcessor

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread is many times faster on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = tiny_mdu()
    perturb_added_layers(model, std=0.3)
    processor = MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(), tiny_text_tokenizer())
    return model, processor


def test_items_are_the_spoken_tasks_questions():
    items = qa.load_items(3)
    assert sorted({it["task"] for it in items}) == ["mdu_arith", "mdu_cloze"]  # word order is left out
    assert "mdu_word_order" in qa.LEFT_OUT
    arith = next(it for it in items if it["task"] == "mdu_arith")
    config, docs = load_task(TASKS_DIR / "mdu_arith.yaml")
    assert arith["context"] == docs[0]["question"] and arith["spoken"] == "What is 3 plus 4?"
    assert qa.cascade_contexts([arith], [arith["spoken"]]) == [arith["context"]]  # the template puts it back
    cloze = next(it for it in items if it["task"] == "mdu_cloze")
    assert cloze["spoken"] == cloze["context"] and cloze["primary"] == "acc_norm"


def test_base_text_to_text_is_eval_text_accuracy():
    base, tok = tiny_base(), tiny_text_tokenizer()
    items = qa.load_items(6)
    got = qa.evaluate_spoken_qa(base=base, base_tokenizer=tok, items=items)["text"]["tasks"]
    for task in ("mdu_arith", "mdu_cloze"):
        config, docs = load_task(TASKS_DIR / f"{task}.yaml")
        want = score_multiple_choice(base, tok, config, docs[:6])
        assert got[task]["base_t2t"]["acc"] == pytest.approx(want["acc"])
        assert got[task]["base_t2t"]["acc_norm"] == pytest.approx(want["acc_norm"])
        assert got[task]["base_t2t"]["score"] == pytest.approx(want["score"])


def test_voices_are_held_out_never_training_voices():
    from prepare.multi_corpus import VOICE_SPLITS

    items = qa.load_items(4)
    train = qa.training_voices()
    for family, held_out, expect in (("espeak", "flite", set(VOICE_SPLITS["espeak"][1])),
                                     ("flite", "flite", {"kal", "kal16", "awb", "rms", "slt"}),
                                     ("mbrola", "flite", {"mb-us3"})):
        plan = qa.voice_plan(items, family, held_out, exclude=train)
        used = {p["voice"] for p in plan}
        assert used <= expect and not used & train
    assert len({p["voice"] for p in qa.voice_plan(items, "espeak")}) == len(items)  # one voice per item here
    with pytest.raises(ValueError, match="training voices"):
        qa.voice_plan(items, "espeak", exclude={VOICE_SPLITS["espeak"][1][0]})
    with pytest.raises(ValueError, match="training voices"):  # flite, when it is a training family, is not held out
        qa.voice_plan(items, "flite", held_out="mbrola", exclude=qa.training_voices(held_out="mbrola") | {"rms"})
    assert {"kal", "awb", "slt"} <= qa.training_voices(held_out="mbrola") and not {"kal", "rms"} & train


def test_speech_to_text_prompt_holds_the_units_and_no_transcript(tiny):
    _, processor = tiny
    tok = processor.tokenizer
    items = qa.load_items(1)
    units = [[processor.speech_token_start + u for u in (3, 1, 4, 1, 5)], [processor.speech_token_start + 9] * 4]
    requests = qa.s2t_requests(processor, items, units)
    k = 0
    for item, u in zip(items, units):
        cue = qa.SPOKEN_TASKS[item["task"]]["cue"]
        for choice in item["choices"]:
            ctx, cont = requests[k]
            k += 1
            head = [processor.speech_start_token_id, *u, processor.speech_end_token_id]
            assert ctx[: len(head)] == head  # the prompt starts with the speech, as in ASR training
            text_ids = ctx[len(head):]
            assert text_ids == tok(cue, add_special_tokens=False)["input_ids"]  # then only the answer cue
            assert all(t < processor.speech_start_token_id for t in text_ids)
            assert tok.decode(text_ids) == tok.decode(tok(cue, add_special_tokens=False)["input_ids"])
            want = encode_pair(tok, cue, " " + choice, tok.bos_token_id)[1] if cue else \
                tok(" " + choice, add_special_tokens=False)["input_ids"]
            assert cont == want
        assert item["spoken"] not in tok.decode([t for t in ctx if t < processor.speech_start_token_id])


@needs_espeak
def test_cascade_answers_the_transcript_the_model_produced(tiny, tmp_path):
    model, processor = tiny
    base, tok = tiny_base(), tiny_text_tokenizer()
    items = qa.load_items(2)
    plan = qa.voice_plan(items, "espeak", exclude=qa.training_voices())
    audio, folder = qa.spoken_audio(items, plan, tmp_path / "cache")
    before = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    again, same = qa.spoken_audio(items, plan, tmp_path / "cache")  # cached: nothing synthesized again
    assert same == folder and {p: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert all((a == b).all() for a, b in zip(audio, again))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [r["voice"] for r in manifest["rows"]] == [p["voice"] for p in plan]

    result = qa.evaluate_spoken_qa(model, processor, base, tok, items, {"espeak": (audio, plan)}, max_new_tokens=6)
    rows = result["items"]
    units = processor.encode_speech(audio, sampling_rate=qa.SAMPLING_RATE)
    transcripts = processor.transcribe_units(model, units, batch_size=3, max_new_tokens=6)
    assert [r["transcript"] for r in rows] == transcripts
    assert [r["cascade_context"] for r in rows] == qa.cascade_contexts(items, transcripts)
    assert all(r["cascade_context"].startswith("Question: ") for r in rows if r["task"] == "mdu_arith")
    # the cascade's answers are the model's answers to those transcripts as text, and the base's for base_cascade
    own = qa.choose(model, processor.tokenizer, items, qa.t2t_requests(processor.tokenizer, items,
                                                                           qa.cascade_contexts(items, transcripts)))
    assert [r["cascade_pred"] for r in rows] == [c["pred"] for c in own]
    by_base = qa.choose(base, tok, items, qa.t2t_requests(tok, items, qa.cascade_contexts(items, transcripts)))
    assert [r["base_cascade_pred"] for r in rows] == [c["pred"] for c in by_base]
    s = result["sets"]["espeak"]
    assert set(s["score"]) == {"t2t", "s2t", "cascade", "base_cascade", "base_t2t"}
    assert not set(s["voices"]) & qa.training_voices()
    table = qa.markdown({"model": "m", **result})
    assert "| espeak | mdu_arith (n=2) |" in table and "| espeak | mean |" in table
