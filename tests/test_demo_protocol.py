"""demo.py's leave-one-synthesizer-out record (issue 17): every test split of the protocol and the real clips, with
the front end's PER and the model's WER / CER, and the targets computed from those numbers."""

import demo
from prepare.multi_corpus import protocol


def test_demo_holds_a_family_out_and_its_corpus_says_which():
    cfg = demo.settings(False)
    assert cfg["corpus"]["held_out"] == demo.HELD_OUT_FAMILY == "flite"
    assert cfg["fit_examples"] >= cfg["corpus"]["num_train"]  # the tokenizer sees every training utterance
    assert demo.TOKENIZER["spec_augment"] and 0 < demo.TOKENIZER["vtlp"] < 0.5


def test_synthesizer_protocol_rows_and_targets():
    splits = protocol("flite")
    asr = lambda wer, cer: {"wer": wer, "cer": cer, "num_utterances": 60}  # noqa: E731
    results = {"asr": asr(0.5, 0.3), "asr_test_mbrola": asr(0.6, 0.4), "asr_test_flite": asr(0.8, 0.55),
               "asr_real_clips": {"wer": 0.9, "cer": 0.7, "num_utterances": 3}}
    per = {"test": 0.1, "test_mbrola": 0.3, "test_flite": 0.2, "real_clips": 0.5}
    record = demo.synthesizer_protocol(results, per, splits, "flite")
    assert [r["split"] for r in record["rows"]] == ["test", "test_mbrola", "test_flite", "real_clips"]
    flite = record["rows"][2]
    assert (flite["role"], flite["phoneme_error_rate"], flite["wer"]) == ("held-out family", 0.2, 0.8)
    targets = {t["name"]: t for t in record["targets"]}
    per_target = targets["phoneme_error_rate_held_out_family"]
    assert per_target["pass"] and per_target["value"] == 0.2
    ratio = targets["wer_held_out_family_over_espeak"]
    assert abs(ratio["value"] - 1.6) < 1e-9 and not ratio["pass"]  # 0.8 / 0.5 > 1.5
    assert targets["cer_real_clips"]["value"] == 0.7 and not targets["cer_real_clips"]["pass"]
