"""The multi-synthesizer corpus (prepare/multi_corpus.py) keeps its leave-one-synthesizer-out promise: the held-out
family never speaks in training (not even as babble), test voices and sentences are unseen, every test split says the
same sentences, and the saved corpus records each utterance's family, voice and augmentation."""

import numpy as np
import pytest

from prepare import multi_corpus as mc
from prepare import synthesizers as S

SENTENCES = [f"the {a} saw a {b} near the {c}" for a in ("cat", "dog", "bird", "man") for b in ("tree", "car", "house")
             for c in ("river", "road")]


def _installed(family):
    try:
        return bool(S.installed_voices(family))
    except S.SynthesizerMissing:
        return False


@pytest.mark.parametrize("held_out", S.FAMILIES)
def test_the_held_out_family_never_speaks_in_training(held_out):
    plan = mc.make_plan(SENTENCES, num_train=200, num_test=5, held_out=held_out, seed=1, num_test_seen=3, augment_p=0.8)
    train = plan["train"]
    assert {u["synthesizer"] for u in train} == set(S.FAMILIES) - {held_out}
    babble = [b for u in train if u["augment"] for b in u["augment"].get("babble_utterances", [])]
    assert babble and {b[0] for b in babble} <= set(S.FAMILIES) - {held_out}
    train_voices = {u["voice"] for u in train} | {b[1] for b in babble}
    test_sentences = [u["text"] for u in plan["test"]]
    for split, spec in mc.protocol(held_out).items():
        items = plan[split]
        assert [u["text"] for u in items] == test_sentences  # paired: only the voice differs between test splits
        assert {u["synthesizer"] for u in items} == {spec["family"]} and not {u["voice"] for u in items} & train_voices
        expected = "held-out family" if spec["family"] == held_out else "held-out voices of a training family"
        assert spec["role"] == expected
    assert not set(test_sentences) & ({u["text"] for u in train} | {b[2] for b in babble})
    assert {u["text"] for u in plan["test_seen"]} <= {u["text"] for u in train}
    assert 0.7 < np.mean([u["augment"] is not None for u in train]) < 0.9
    assert all(u["augment"] is None for split in plan if split != "train" for u in plan[split])  # clean test sets
    assert plan == mc.make_plan(SENTENCES, 200, 5, held_out, seed=1, num_test_seen=3, augment_p=0.8)


def test_protocol_and_plan_errors():
    flite = mc.protocol("flite")
    assert flite["test_flite"]["voices"] == ["kal", "awb", "slt", "rms"] and flite["test"]["family"] == "espeak"
    with pytest.raises(ValueError, match="'festival'"):
        mc.protocol("festival")
    with pytest.raises(ValueError, match="num_test=30"):
        mc.make_plan(SENTENCES, 10, 30, "flite")
    with pytest.raises(ValueError, match="augment_p"):
        mc.make_plan(SENTENCES, 10, 3, "flite", augment_p=1.5)


@pytest.mark.skipif(not all(_installed(f) for f in S.FAMILIES), reason="espeak-ng, mbrola and flite (scripts/setup.sh)")
def test_build_saves_a_16k_corpus_with_family_voice_and_augmentation_and_caches(tmp_path, monkeypatch, capsys):
    path = tmp_path / "multi"
    monkeypatch.setattr(mc.ec, "load_sentences", lambda *a, **k: SENTENCES)
    monkeypatch.setattr(mc, "NUM_RIRS", 2)
    args = dict(held_out="mbrola", num_train=12, num_test=2, num_test_seen=1, augment_p=1.0, num_proc=1)
    dd = mc.build_multi_corpus(path, **args)
    assert set(dd) == {"train", "test", "test_mbrola", "test_flite", "test_seen"}
    assert set(dd["train"]["synthesizer"]) <= {"espeak", "flite"}
    assert set(dd["test_mbrola"]["synthesizer"]) == {"mbrola"}
    assert all(a for a in dd["train"]["augment"]) and not any(dd["test_flite"]["augment"])
    row = dd["test_flite"][0]
    samples = row["audio"].get_all_samples()
    assert samples.sample_rate == 16000 and samples.data.shape[-1] > 8000 and row["voice"] in S.FLITE_VOICES
    stamp = mc.read_stamp(path / mc.PARAMS_FILE)
    assert stamp["protocol"]["test_mbrola"]["role"] == "held-out family" and stamp["stats"]["augmented_train"] == 12
    capsys.readouterr()
    mc.build_multi_corpus(path, **args)
    assert "cached" in capsys.readouterr().out
