"""MDUSpeechProcessor: ASR prompt format, padding, errors, save/load, and a checkpoint that transcribes the same in a
clean interpreter (python -I, empty cwd, no PYTHONPATH) as in-process."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from audio_fixtures import SR, chirp, fitted_mel_tokenizer, write_wav
from devices import cpu_only_env
from tiny_models import TEXT_VOCAB, perturb_added_layers, tiny_mdu, tiny_text_tokenizer

from modeling_mdu import MDUSpeechProcessor

GEN = dict(max_new_tokens=8, min_new_tokens=4)  # a random tiny model: force a few tokens so the texts can differ


@pytest.fixture(scope="module")
def model():
    m = tiny_mdu()
    perturb_added_layers(m, std=0.3)
    return m


@pytest.fixture(scope="module")
def proc(model):
    return MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(), tiny_text_tokenizer())


@pytest.fixture(scope="module")
def clips():
    return [chirp(0.5, seed=1), chirp(0.3, seed=2), chirp(0.4, seed=3)]


def test_token_ids_come_from_the_model_config(proc, model):
    assert (proc.speech_start_token_id, proc.speech_end_token_id, proc.speech_token_start) == (TEXT_VOCAB, TEXT_VOCAB + 1, TEXT_VOCAB + 2)
    assert proc.max_length == model.config.max_position_embeddings
    ids = proc.encode_speech(chirp(0.5, seed=1), sampling_rate=SR)[0]
    units = proc.feature_extractor(chirp(0.5, seed=1), sampling_rate=SR)[0]
    assert ids == (units + TEXT_VOCAB + 2).tolist()


def test_labels_only_on_transcript(proc, clips):
    texts = ["hello world", "hi"]
    batch = proc(audio=clips[:2], text_target=texts, sampling_rate=SR)
    units = proc.encode_speech(clips[:2], sampling_rate=SR)
    eos = proc.tokenizer.eos_token_id
    for i, (u, text) in enumerate(zip(units, texts)):
        transcript = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
        n = len(u) + 2 + len(transcript) + 1
        assert batch["input_ids"][i, :n].tolist() == [TEXT_VOCAB, *u, TEXT_VOCAB + 1, *transcript, eos]
        assert batch["labels"][i, :n].tolist() == [-100] * (len(u) + 2) + transcript + [eos]
        assert batch["attention_mask"][i].sum() == n
    spoken = proc(audio=clips[:1], text_target=texts[:1], sampling_rate=SR, train_on_speech=True)["labels"][0].tolist()
    assert spoken[: len(units[0]) + 2] == [-100, *units[0], -100]


def test_right_padding_for_training_left_for_generation(proc, clips):
    train = proc(audio=clips[:2], text_target=["a", "abcdef"], sampling_rate=SR)
    gen = proc(audio=clips[:2], sampling_rate=SR)
    lengths = [len(u) + 2 for u in proc.encode_speech(clips[:2], sampling_rate=SR)]
    assert "labels" not in gen
    short = int(np.argmin(lengths))
    pad = gen["input_ids"].shape[1] - lengths[short]
    assert pad > 0
    assert gen["attention_mask"][short].tolist() == [0] * pad + [1] * lengths[short]  # left
    assert gen["input_ids"][short, :pad].tolist() == [proc.pad_token_id] * pad
    assert gen["input_ids"][short, pad].item() == TEXT_VOCAB
    row = train["attention_mask"][short].tolist()  # right: ones first, then zeros; labels -100 in the padding
    n = sum(row)
    assert row == [1] * n + [0] * (len(row) - n) and set(train["labels"][short, n:].tolist()) <= {-100}


def test_too_long_for_context_raises_naming_item(model, clips):
    proc = MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(), tiny_text_tokenizer(), max_length=20)
    with pytest.raises(ValueError, match=r"audio item 1: 33 tokens .* exceed the model context max_length=20"):
        proc(audio=[chirp(0.1), chirp(0.6), chirp(0.1)], sampling_rate=SR)
    with pytest.raises(ValueError, match="audio item 0"):  # the transcript counts too
        proc(audio=[chirp(0.2)], text_target=["a long transcript that does not fit"], sampling_rate=SR)
    with pytest.raises(ValueError, match="audio item 2"):
        proc.transcribe(model, [chirp(0.1), chirp(0.1), chirp(0.6)], sampling_rate=SR)


def test_bad_audio_in_processor_names_item_and_file(proc, tmp_path):
    with pytest.raises(ValueError, match=f"audio item 1 \\(file {tmp_path}/missing.wav\\): file not found"):
        proc(audio=[chirp(0.2), str(tmp_path / "missing.wav")], sampling_rate=SR)
    with pytest.raises(ValueError, match="2 audio items but 1 texts"):
        proc(audio=[chirp(0.2), chirp(0.2)], text_target=["x"], sampling_rate=SR)


def test_codebook_larger_than_model_vocab_raises(model):
    with pytest.raises(ValueError, match="32 units but the model only 16"):
        MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(codebook_size=32), tiny_text_tokenizer())


def test_batch_decode_drops_speech_tokens_and_stops_at_eos(proc):
    tok = proc.tokenizer
    hi = tok("hi", add_special_tokens=False)["input_ids"]
    seqs = [hi + [TEXT_VOCAB + 5, tok.eos_token_id] + hi, [TEXT_VOCAB] + hi + [tok.eos_token_id, 0, 0]]
    assert proc.batch_decode(seqs) == ["hi", "hi"]
    assert proc.batch_decode(torch.tensor(seqs)) == ["hi", "hi"]


def test_transcribe_matches_manual_greedy_generation(proc, model, clips):
    texts = proc.transcribe(model, clips[:1], sampling_rate=SR, **GEN)
    prompt = proc(audio=clips[:1], sampling_rate=SR)
    ids = prompt["input_ids"]
    for _ in range(GEN["max_new_tokens"]):  # greedy by hand over text tokens, no cache
        logits = model(input_ids=ids).logits[0, -1, : len(proc.tokenizer)]
        if ids.shape[1] - prompt["input_ids"].shape[1] < GEN["min_new_tokens"]:
            logits[proc.tokenizer.eos_token_id] = -float("inf")
        nxt = logits.argmax()
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        if nxt.item() == proc.tokenizer.eos_token_id:
            break
    assert texts == proc.batch_decode(ids[:, prompt["input_ids"].shape[1] :]) and len(texts[0]) > 0
    assert proc.transcribe_units(model, proc.encode_speech(clips[:1], sampling_rate=SR), **GEN) == texts  # precomputed units


def test_save_load_round_trip(proc, clips, tmp_path):
    proc.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"] == "processing_mdu.MDUSpeechProcessor"
    assert {"processing_mdu.py", "speech_tokenizer.py", "audio_io.py", "pipeline_mdu.py"} <= set(os.listdir(tmp_path))
    loaded = MDUSpeechProcessor.from_pretrained(tmp_path)
    a = proc(audio=clips, text_target=["one", "two", "three"], sampling_rate=SR)
    b = loaded(audio=clips, text_target=["one", "two", "three"], sampling_rate=SR)
    assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "attention_mask", "labels"))
    assert (loaded.speech_token_start, loaded.max_length) == (proc.speech_token_start, proc.max_length)


CLEAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModelForCausalLM, AutoProcessor, pipeline
    ckpt, wav = sys.argv[1], sys.argv[2]
    assert "modeling_mdu" not in sys.modules
    model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True).eval()
    proc = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
    asr = pipeline("automatic-speech-recognition", model=ckpt, trust_remote_code=True)
    gen = dict(max_new_tokens=8, min_new_tokens=4)
    proc.save_pretrained(sys.argv[3])  # re-saving the remote-code processor writes its code again
    again = AutoProcessor.from_pretrained(sys.argv[3], trust_remote_code=True)
    print(json.dumps({
        "processor": type(proc).__module__,
        "transcribe": proc.transcribe(model, [wav], **gen),
        "pipeline": asr(wav, **gen)["text"],
        "one_call": type(proc).transcribe_file(ckpt, wav, **gen),
        "ids": proc(audio=wav)["input_ids"].tolist(),
        "ids_resaved": again(audio=wav)["input_ids"].tolist(),
    }))
    """
)


def test_checkpoint_transcribes_the_same_in_a_clean_interpreter(proc, model, tmp_path):
    ckpt, run_dir = tmp_path / "ckpt", tmp_path / "empty"
    run_dir.mkdir()
    model.save_pretrained(ckpt)
    proc.save_pretrained(ckpt)
    wav = write_wav(tmp_path / "clip.wav", chirp(0.6, seed=7))
    expected = proc.transcribe(model, [wav], **GEN)
    script = tmp_path / "run.py"
    script.write_text(CLEAN_SCRIPT)
    env = cpu_only_env({k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})  # as in-process
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    out = subprocess.run(
        [sys.executable, "-I", str(script), str(ckpt), wav, str(tmp_path / "resaved")], cwd=run_dir, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["processor"].startswith("transformers_modules")  # the checkpoint's code, not this repository
    assert result["transcribe"] == expected and len(expected[0]) > 0
    assert result["pipeline"] == expected[0] and result["one_call"] == expected
    assert result["ids"] == result["ids_resaved"] == proc(audio=wav)["input_ids"].tolist()


# ---------------------------------------------------------------- long audio and the new-token budget
class EchoModel(torch.nn.Module):
    """Stands in for a model that transcribes perfectly: it writes each speech unit of its prompt as one letter,
    then eos, within max_new_tokens. Transcribing a clip in chunks must then give the letters of the whole clip."""

    LETTERS = "abcdefghijklmnopqrstuvwxyz"

    def __init__(self, proc):
        from types import SimpleNamespace

        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the processor reads the model's device from it
        self.config = SimpleNamespace(vocab_size=proc.speech_token_start + proc.feature_extractor.codebook_size)
        self.first_unit, self.eos = proc.speech_token_start, proc.tokenizer.eos_token_id
        self.letters = proc.tokenizer.convert_tokens_to_ids(list(self.LETTERS))

    def echo(self, units) -> str:
        return "".join(self.LETTERS[int(u)] for u in units)

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, **kwargs):
        rows = []
        for ids in input_ids.tolist():
            text = [self.letters[t - self.first_unit] for t in ids if t >= self.first_unit] + [self.eos]
            rows.append(ids + (text + [pad_token_id] * max_new_tokens)[:max_new_tokens])
        return torch.tensor(rows)


def echo_setup(max_length):
    """An echo model and a processor whose units do not depend on the chunk (no per-utterance normalisation)."""
    proc = MDUSpeechProcessor(fitted_mel_tokenizer(normalize="none"), tiny_text_tokenizer(), max_length=max_length)
    return EchoModel(proc), proc


def ten_seconds() -> np.ndarray:
    return np.concatenate([chirp(1.0, f0=100 + 50 * i, f1=800 + 300 * i, seed=i) for i in range(10)])


def test_long_audio_is_transcribed_whole_in_overlapping_chunks(caplog):
    model, proc = echo_setup(max_length=160)
    clip = ten_seconds()
    units = proc.feature_extractor(clip, sampling_rate=SR)[0]
    assert len(units) > 3 * proc.max_length  # several times the model context
    with pytest.raises(ValueError, match=r"audio item 0: \d+ prompt tokens .* leave no room .* chunk_length_s"):
        proc.transcribe(model, clip, sampling_rate=SR)
    with pytest.raises(ValueError, match="stride_length_s .* needs chunk_length_s"):
        proc.transcribe(model, clip, sampling_rate=SR, stride_length_s=0.5)
    for chunk_length_s, stride_length_s in ((1.0, None), (1.5, (0.3, 0.2))):
        with caplog.at_level("WARNING"):
            text = proc.transcribe(model, [clip], sampling_rate=SR, chunk_length_s=chunk_length_s,
                                   stride_length_s=stride_length_s, batch_size=4)
        assert text == [model.echo(units)]  # overlaps joined once, nothing lost at the chunk edges or the end
    assert "cut" not in caplog.text


def test_new_token_budget_follows_the_speech_units(caplog):
    model, proc = echo_setup(max_length=4096)
    clip = ten_seconds()
    units = proc.feature_extractor(clip, sampling_rate=SR)[0]
    with caplog.at_level("WARNING"):
        text = proc.transcribe(model, clip, sampling_rate=SR)[0]
    assert text == model.echo(units) and len(text) > 256  # a fixed budget of 256 new tokens cut it
    assert "cut" not in caplog.text
    assert proc.generation_kwargs(model, prompt_len=2 + 1000)["max_new_tokens"] == 1000 + 16
    assert proc.generation_kwargs(model, prompt_len=2 + 4000)["max_new_tokens"] == 4096 - 4002  # the context's room


def test_cut_transcripts_are_named_in_a_warning(caplog):
    model, proc = echo_setup(max_length=60)
    clips = [chirp(0.2, seed=1), chirp(0.9, seed=2)]  # 11 and 46 units: the second leaves room for 12 tokens only
    with caplog.at_level("WARNING"):
        texts = proc.transcribe(model, clips, sampling_rate=SR)
    assert "audio item 1 at 12 new tokens (the model context max_length=60" in caplog.text
    assert "audio item 0" not in caplog.text and len(texts[1]) == 12
    caplog.clear()
    with caplog.at_level("WARNING"):
        proc.transcribe(model, clips, sampling_rate=SR, max_new_tokens=5)
    assert "audio item 0 at 5 new tokens (max_new_tokens=5); audio item 1 at 5 new tokens" in caplog.text


def test_chunks_overlap_and_merge_at_the_overlap():
    from modeling_mdu.processing_mdu import chunk_spans, merge_overlapping

    spans = chunk_spans(95, 30, 5, 5)
    assert spans == [(0, 30), (20, 50), (40, 70), (60, 90), (80, 95)]  # steps of 30 - 5 - 5, to the end
    assert chunk_spans(20, 30, 5, 5) == [(0, 20)]
    assert merge_overlapping([list(range(10)), list(range(6, 15))]) == list(range(15))
    # the edges of a chunk's transcript are the least reliable: left text up to the middle of the overlap, then right
    assert merge_overlapping([[1, 2, 3, 4, 5, 6, 99], [77, 4, 5, 6, 7, 8]]) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert merge_overlapping([[1, 2], [3, 4]]) == [1, 2, 3, 4]  # no overlap found: both kept whole
    assert merge_overlapping([]) == [] and merge_overlapping([[], [5]]) == [5]
