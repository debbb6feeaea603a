"""Data problems are found before any work and named by dataset row and file: empty/missing transcripts, missing
audio files, columns named by flags that do not exist, local paths that do not exist (a Hub id still passes)."""

import csv
import os

import datasets
import pytest
from tiny_models import tiny_text_tokenizer
from train_fixtures import fit_tiny_speech_tokenizer, make_audio_folder, save_tiny_base

import train_hf
from modeling_mdu import MDUSpeechProcessor, MDUSpeechTokenizer
from training.data import add_speech_units, check_asr_rows, check_local_or_hub, load_asr_dataset


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    audio = make_audio_folder(root / "audio", n=24)
    return {"root": root, "audio": audio, "base": save_tiny_base(root / "base"),
            "stok": fit_tiny_speech_tokenizer(audio, root / "speech_tokenizer")}


def copy_folder(src, dst, edit=None, drop=()):
    """A copy of an audio folder whose metadata.csv rows pass through `edit(i, row)`; files in `drop` left out."""
    dst.mkdir()
    with open(src / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["file_name"] not in drop:
            os.link(src / row["file_name"], dst / row["file_name"])
    rows = [edit(i, dict(r)) if edit else r for i, r in enumerate(rows)]
    with open(dst / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dst


def train(work, dataset, *extra, base=None):
    return train_hf.main(["configs/tiny_test.yaml", "--base_model", str(base or work["base"]), "--dataset",
                          str(dataset), "--speech_tokenizer", str(work["stok"]),
                          "--output_dir", str(work["root"] / "out"), "--max_steps", "1", *extra])


def no_model_built(monkeypatch):
    monkeypatch.setattr(train_hf, "build_method", lambda *a, **k: pytest.fail("model built before the data check"))


def test_empty_transcripts_named_by_row_and_line(work, monkeypatch):
    def edit(i, row):
        return {**row, "text": {5: "", 17: "   "}.get(i, row["text"])}

    folder = copy_folder(work["audio"], work["root"] / "empty_text", edit)
    no_model_built(monkeypatch)
    with pytest.raises(ValueError) as err:
        train(work, folder)
    msg = str(err.value)
    assert msg.startswith(f"{folder / 'metadata.csv'}: 2 problem(s) in 24 rows")
    assert "row 5 (line 7): missing transcript in column 'text'" in msg  # an empty CSV cell reads as None
    assert "row 17 (line 19): empty transcript in column 'text'" in msg and "clip_17.wav" in msg


def test_missing_audio_file_named_by_row_not_batch_position(work, monkeypatch):
    folder = copy_folder(work["audio"], work["root"] / "missing_audio", drop={"clip_20.wav"})
    no_model_built(monkeypatch)
    with pytest.raises(ValueError, match=r"row 20 \(line 22\): audio file .*clip_20.wav does not exist"):
        train(work, folder)


def test_unit_map_names_the_dataset_row(work):
    """Past the checks (a file deleted afterwards, a file that does not decode, a streamed set), the speech-unit map
    names the dataset row, not the position inside its map batch (row 20 of 24 is item 4 of the second batch)."""
    folder = copy_folder(work["audio"], work["root"] / "broken_audio")
    (folder / "clip_20.wav").unlink()  # a hard link to the fixture's file: replace it, do not write through it
    (folder / "clip_20.wav").write_bytes(b"not a wav file")
    proc = MDUSpeechProcessor(MDUSpeechTokenizer.from_pretrained(work["stok"]), tiny_text_tokenizer(),
                              speech_token_start=130, speech_start_token_id=128, speech_end_token_id=129)
    ds = load_asr_dataset(str(folder))
    check_asr_rows(ds, str(folder))  # the file exists: nothing to report before decoding
    with pytest.raises(ValueError, match=r"^row 20: .*clip_20.wav"):
        add_speech_units(ds, proc, batch_size=16)
    streamed = load_asr_dataset(str(folder), streaming=True)
    with pytest.raises(ValueError, match=r"^row 20: .*clip_20.wav"):
        list(add_speech_units(streamed, proc, batch_size=16))


def test_flags_naming_missing_columns_are_errors(work, monkeypatch):
    no_model_built(monkeypatch)
    with pytest.raises(ValueError, match=r"no transcript column 'words'; columns are \['text', 'audio'\]"):
        train(work, work["audio"], "--text_column", "words")
    with pytest.raises(ValueError, match=r"no audio column 'path'; columns are \['file_name', 'text'\]"):
        train(work, work["audio"], "--audio_column", "path")
    # the defaults still fall back: a Hub-style 'sentence' column, the audiofolder 'file_name'
    folder = work["root"] / "sentence"
    datasets.Dataset.from_dict({"path": [str(work["audio"] / "clip_0.wav")], "sentence": ["yes no"]}).to_csv(
        str(folder.with_suffix(".csv")), index=False)
    ds = load_asr_dataset(str(folder.with_suffix(".csv")), audio_column="path")
    assert ds.column_names == ["path", "text"] and ds[0]["text"] == "yes no"
    with pytest.raises(ValueError, match="no transcript column 'transcript_en'"):
        load_asr_dataset(str(folder.with_suffix(".csv")), audio_column="path", text_column="transcript_en")


def test_missing_local_paths_are_reported_as_paths(work, tmp_path, monkeypatch):
    no_model_built(monkeypatch)
    missing = tmp_path / "no_such_base"
    with pytest.raises(FileNotFoundError, match=f"--base_model {missing}: no such file or folder"):
        train(work, work["audio"], base=missing)
    with pytest.raises(FileNotFoundError, match="--speech_tokenizer ./tok_missing: no such file or folder"):
        train(work, work["audio"], "--speech_tokenizer", "./tok_missing")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    for value in ("outputs/base", "~/nowhere/base", "a/b/c", "base/"):
        with pytest.raises(FileNotFoundError, match="no such file or folder"):
            check_local_or_hub(value, "--base_model")
    for hub_id in ("HuggingFaceTB/SmolLM2-135M", "gpt2"):  # Hub ids pass untouched: no request is made here
        check_local_or_hub(hub_id, "--base_model")
    check_local_or_hub(str(work["base"]), "--base_model")
    from fit_speech_tokenizer import iter_dataset

    with pytest.raises(FileNotFoundError, match="--dataset outputs/corpus: no such file or folder"):
        iter_dataset("outputs/corpus")


def test_fit_phonetic_tokenizer_names_empty_transcripts(work):
    from fit_phonetic_tokenizer import fit_phonetic_tokenizer
    from fit_phonetic_tokenizer import main as fit_main

    clips = [str(work["audio"] / f"clip_{i}.wav") for i in range(3)]
    with pytest.raises(ValueError, match=r"2 empty or missing transcripts: items \[1, 2\]"):
        fit_phonetic_tokenizer(clips, ["yes no", None, " "])
    folder = copy_folder(work["audio"], work["root"] / "phonetic_empty",
                         lambda i, r: {**r, "text": "" if i == 9 else r["text"]})
    with pytest.raises(ValueError, match=r"metadata.csv: 1 problem\(s\) in 24 rows:\n  row 9 \(line 11\): missing"):
        fit_main(["--dataset", str(folder), "--output_dir", str(work["root"] / "phonetic_tok")])
