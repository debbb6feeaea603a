"""Precomputed speech units: `python -m training.precompute_units` writes unit ids + transcripts (+ its speech tokenizer
and units_info.json) from an audio dataset, resumably, naming bad rows; `train_hf.py --dataset` trains on them (a
save_to_disk folder, JSONL or parquet) without decoding or encoding any audio, the same examples as from the audio;
rows are checked against the tokenizer's codebook first, named by row (and line)."""

import json
import re

import datasets
import pytest
from tiny_models import tiny_text_tokenizer
from train_fixtures import fit_tiny_speech_tokenizer, make_audio_folder, save_tiny_base

import train_hf
from modeling_mdu import MDUSpeechProcessor, MDUSpeechTokenizer
from training import precompute_units
from training.data import add_speech_units, add_unit_ids, load_asr_dataset, speech_tokenizer_identity


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    audio = make_audio_folder(root / "audio")
    stok = fit_tiny_speech_tokenizer(audio, root / "speech_tokenizer")
    units = precompute_units.main(["--dataset", str(audio), "--speech_tokenizer", str(stok), "--output_dir",
                                   str(root / "units"), "--num_proc", "2", "--shard_size", "3", "--batch_size", "2"])
    return {"root": root, "audio": audio, "base": save_tiny_base(root / "base"), "stok": stok, "units": units}


def train(work, dataset, out, *extra):
    return train_hf.main(["configs/tiny_test.yaml", "--base_model", str(work["base"]), "--dataset", str(dataset),
                          "--output_dir", str(work["root"] / out), "--max_steps", "2", *extra])


def no_audio_work(monkeypatch):
    """Any decoding or encoding of audio fails the test."""
    def fail(*args, **kwargs):
        pytest.fail("audio decoded or encoded")

    monkeypatch.setattr(MDUSpeechTokenizer, "__call__", fail)
    monkeypatch.setattr(MDUSpeechTokenizer, "load", fail)


def no_model_built(monkeypatch):
    monkeypatch.setattr(train_hf, "build_method", lambda *a, **k: pytest.fail("model built before the data check"))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_precomputed_folder_holds_the_tokenizers_units_and_a_copy_of_it(work):
    tok = MDUSpeechTokenizer.from_pretrained(work["stok"])
    ds = datasets.load_from_disk(str(work["units"]))["train"]
    source = load_asr_dataset(str(work["audio"]))
    assert list(ds["source_row"]) == list(range(8)) and list(ds["text"]) == list(source["text"])
    assert ds["units"] == [u.tolist() for u in tok(list(source["audio"]))]  # codebook ids, not model-vocabulary ids
    assert ds.features["units"].feature.dtype == "int32"
    info = json.loads((work["units"] / "units_info.json").read_text())
    assert info["splits"] == {"train": {"source_split": "train", "rows": 8, "left_out_no_units": []}}
    copy = MDUSpeechTokenizer.from_pretrained(work["units"] / "speech_tokenizer")
    assert speech_tokenizer_identity(copy) == speech_tokenizer_identity(tok) == info["speech_tokenizer"]["identity"]
    assert not (work["units"] / "shards").exists()  # shards removed once the split is written


def test_train_hf_on_units_decodes_no_audio_and_sees_the_same_examples(work, monkeypatch):
    tok = MDUSpeechTokenizer.from_pretrained(work["stok"])
    from_audio = add_speech_units(load_asr_dataset(str(work["audio"])),
                                  MDUSpeechProcessor(tok, tiny_text_tokenizer(), speech_token_start=130,
                                                     speech_start_token_id=128, speech_end_token_id=129))
    with monkeypatch.context() as m:
        no_audio_work(m)
        trainer = train(work, work["units"], "out_units")  # no --speech_tokenizer: the copy beside the units
    assert trainer.state.global_step == 2
    assert list(trainer.train_dataset["unit_ids"]) == list(from_audio["unit_ids"])  # speech_token_start 130 in both
    assert list(trainer.train_dataset["text"]) == list(from_audio["text"])
    # the checkpoint's processor holds the tokenizer that made the units: it encodes audio like it
    clip = str(work["audio"] / "clip_3.wav")
    exported = MDUSpeechProcessor.from_pretrained(work["root"] / "out_units")
    assert exported.feature_extractor(clip)[0].tolist() == tok(clip)[0].tolist()


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "streaming jsonl"])
def test_unit_tables_train_with_the_given_tokenizer(work, monkeypatch, kind):
    rows = [{"units": [3, 1, 4, 1, 5], "text": "yes no"}, {"units": [9, 2, 6], "text": "go up"}] * 4
    table = write_jsonl(work["root"] / "units.jsonl", rows)
    if kind == "parquet":
        table = work["root"] / "units.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(table))
    extra = ["--streaming", "true"] if kind.startswith("streaming") else []
    with monkeypatch.context() as m:
        no_audio_work(m)
        trainer = train(work, table, f"out_{kind.replace(' ', '_')}", "--speech_tokenizer", str(work["stok"]), *extra)
    assert trainer.state.global_step == 2
    first = next(iter(trainer.train_dataset))
    assert first["unit_ids"] == [u + trainer.processing_class.speech_token_start for u in rows[0]["units"]]


def test_bad_unit_rows_are_named_by_row_and_line_before_any_work(work, monkeypatch):
    rows = [{"units": [1, 2], "text": "yes"}, {"units": [1, 16], "text": "no"}, {"units": [], "text": "go"},
            {"units": [-1, 3], "text": "up"}, {"units": [4], "text": " "}, {"units": None, "text": "hi"}]
    table = write_jsonl(work["root"] / "bad.jsonl", rows)
    no_model_built(monkeypatch)
    with pytest.raises(ValueError) as err:
        train(work, table, "out_bad", "--speech_tokenizer", str(work["stok"]))
    msg = str(err.value)
    assert msg.startswith(f"{table}: 5 problem(s) in 6 rows of precomputed speech units")
    assert "row 1 (line 2): unit id 16 in column 'units' is outside the speech tokenizer's codebook [0, 16)" in msg
    assert "row 2 (line 3): no speech units in column 'units' (empty list)" in msg
    assert "row 3 (line 4): unit id -1 in column 'units' is outside" in msg
    assert "row 4 (line 5): empty transcript in column 'text'" in msg
    assert "row 5 (line 6): missing speech units in column 'units'" in msg and "row 0 " not in msg
    floats = write_jsonl(work["root"] / "floats.jsonl", [{"units": [1.5, 2.0], "text": "yes"}])
    with pytest.raises(ValueError, match="column 'units' must hold lists of integer unit ids"):
        train(work, floats, "out_floats", "--speech_tokenizer", str(work["stok"]))
    # a streamed table is checked as it is read, naming the row
    tok = MDUSpeechTokenizer.from_pretrained(work["stok"])
    proc = MDUSpeechProcessor(tok, tiny_text_tokenizer(), speech_token_start=130, speech_start_token_id=128,
                              speech_end_token_id=129)
    streamed = datasets.Dataset.from_list(rows[:2]).to_iterable_dataset()
    with pytest.raises(ValueError, match=r"^row 1: unit id 16 .* outside the speech tokenizer's codebook \[0, 16\)"):
        list(add_unit_ids(streamed, proc))


def test_units_need_the_tokenizer_that_made_them(work, monkeypatch):
    no_model_built(monkeypatch)
    table = write_jsonl(work["root"] / "plain.jsonl", [{"units": [1, 2], "text": "yes"}])
    with pytest.raises(ValueError, match="holds precomputed speech units .* pass --speech_tokenizer"):
        train(work, table, "out_no_tok")
    other = fit_tiny_speech_tokenizer(work["audio"], work["root"] / "other_tok", codebook_size=8)
    with pytest.raises(ValueError, match=r"its units were computed by the speech tokenizer .* --speech_tokenizer "
                                         + re.escape(f"{other} is another one (mel, 8 units")):
        train(work, work["units"], "out_other_tok", "--speech_tokenizer", str(other))


def test_precompute_resumes_from_finished_shards_and_names_bad_audio(work, monkeypatch):
    out = work["root"] / "resumed"
    args = ["--dataset", str(work["audio"]), "--speech_tokenizer", str(work["stok"]), "--output_dir", str(out),
            "--batch_size", "3"]
    calls, original = [], MDUSpeechTokenizer.__call__

    def counted(self, audio, *a, **k):
        calls.append(len(audio))
        if len(calls) == kill_at:
            raise KeyboardInterrupt("killed")
        return original(self, audio, *a, **k)

    monkeypatch.setattr(MDUSpeechTokenizer, "__call__", counted)
    kill_at = 3
    with pytest.raises(KeyboardInterrupt):
        precompute_units.main([*args, "--shard_size", "3"])
    assert sorted(p.name for p in (out / "shards" / "train").iterdir()) == ["00000", "00001"]
    with pytest.raises(ValueError, match=r"holds shards of a run with other settings \(changed: \['shard_size'\]\)"):
        precompute_units.main([*args, "--shard_size", "4"])
    calls.clear()
    kill_at = None
    precompute_units.main([*args, "--shard_size", "3"])
    assert calls == [2]  # only the last shard (rows 6-7) was encoded
    straight = datasets.load_from_disk(str(work["units"]))["train"]
    assert datasets.load_from_disk(str(out))["train"].to_dict() == straight.to_dict()
    precompute_units.main([*args, "--shard_size", "3"])  # finished: nothing encoded again
    assert calls == [2]
    with pytest.raises(ValueError, match="already holds a dataset written with other settings"):
        precompute_units.main([*args, "--shard_size", "4"])

    broken = work["root"] / "broken"
    make_audio_folder(broken)
    (broken / "clip_5.wav").write_bytes(b"not a wav file")
    monkeypatch.setattr(MDUSpeechTokenizer, "__call__", original)
    with pytest.raises(ValueError, match=r"metadata.csv: row 5 \(line 7\) \(.*clip_5.wav\): "):
        precompute_units.main(["--dataset", str(broken), "--speech_tokenizer", str(work["stok"]), "--output_dir",
                               str(work["root"] / "broken_units"), "--shard_size", "4"])


def test_rows_without_any_unit_are_left_out_and_named(work, monkeypatch):
    original = MDUSpeechTokenizer.__call__

    def silent_clip_2(self, audio, *a, **k):  # as a clip of silence or shorter than a frame would give
        units = original(self, audio, *a, **k)
        return [u[:0] if str(item).endswith("clip_2.wav") else u for item, u in zip(audio, units)]

    monkeypatch.setattr(MDUSpeechTokenizer, "__call__", silent_clip_2)
    out = precompute_units.main(["--dataset", str(work["audio"]), "--speech_tokenizer", str(work["stok"]),
                                 "--output_dir", str(work["root"] / "left_out"), "--shard_size", "5",
                                 "--splits", "kept=train"])  # NAME=SOURCE_SPLIT
    assert list(datasets.load_from_disk(str(out))["kept"]["source_row"]) == [0, 1, 3, 4, 5, 6, 7]
    info = json.loads((out / "units_info.json").read_text())
    assert info["splits"] == {"kept": {"source_split": "train", "rows": 7, "left_out_no_units": [2]}}
