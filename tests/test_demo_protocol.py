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


def test_demo_ships_example_clips_the_app_lists(tmp_path):
    """The exported checkpoint carries the real clips and one utterance per test split, byte for byte, and app.py's
    example list is exactly those clips."""
    from datasets import Audio, Dataset, DatasetDict
    from train_fixtures import make_audio_folder

    from app import Demo
    from training.data import load_asr_dataset

    ds = load_asr_dataset(str(make_audio_folder(tmp_path / "audio", n=5)))
    ds = ds.add_column("synthesizer", ["espeak-ng", "mbrola", "flite", "x", "y"]).add_column("voice", list("abcde"))
    corpus = DatasetDict(test=ds.select([0]), test_mbrola=ds.select([1]), test_flite=ds.select([2]))
    clips = Dataset.from_dict({"audio": [ds.cast_column("audio", Audio(decode=False))[3]["audio"]["path"]],
                               "text": ["hello world"]}).cast_column("audio", Audio())
    model_dir = tmp_path / "model"
    written = demo.write_example_clips(model_dir, clips, corpus, {"test": {}, "test_mbrola": {}, "test_flite": {}})
    assert written == ["real_0.wav", "test_espeak-ng_a.wav", "test_mbrola_mbrola_b.wav", "test_flite_flite_c.wav"]
    raw = ds.cast_column("audio", Audio(decode=False))
    assert (model_dir / "examples" / written[2]).read_bytes() == open(raw[1]["audio"]["path"], "rb").read()
    listed = Demo.__new__(Demo)
    listed.model_dir = str(model_dir)
    assert sorted(p[0] for p in listed.examples()) == sorted(str(model_dir / "examples" / w) for w in written)
