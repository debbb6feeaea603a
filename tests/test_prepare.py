"""Offline asset preparation (prepare/): sentence cleaning, held-out voice split, espeak-ng rendering into a saved
`datasets` corpus, real-clip loading, and the GGUF -> safetensors base-model conversion (on a tiny GGUF written here).
No downloads, no big files."""

import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from prepare import espeak_corpus as ec
from prepare.base_model import convert_gguf, drop_quantization_config
from prepare.real_clips import clips_dataset

ROOT = Path(__file__).resolve().parent.parent
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (scripts/setup.sh installs it)")


def test_split_and_clean_sentences():
    text = ('Fire crews said "the blaze is out." About 500 homes were saved. It rained. '
            "The Bureau of Meteorology's Claire Richards says (again) the rain has done little! Dr. Brown met George W. Bush.")
    sents = ec.split_sentences(text)
    assert sents == ['Fire crews said "the blaze is out."', "About 500 homes were saved.", "It rained.",
                     "The Bureau of Meteorology's Claire Richards says (again) the rain has done little!",
                     "Dr. Brown met George W. Bush."]
    cleaned = [ec.clean_sentence(s) for s in sents]
    assert cleaned == ["Fire crews said the blaze is out.", None, None,
                       "The Bureau of Meteorology's Claire Richards says again the rain has done little!",
                       "Dr. Brown met George W. Bush."]
    assert ec.clean_sentence("About 500 homes were saved.", allow_digits=True) == "About 500 homes were saved."
    assert ec.clean_sentence("one two three four five", max_words=4) is None
    assert ec.clean_sentence("Prices rose 5% & more today.") is None  # symbols espeak would say but labels do not


def test_load_sentences_dedupes_and_filters(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("The first sentence is here. The first sentence is here. Too short.\n"
                    "the FIRST sentence is here. A second document speaks now.\n")
    assert ec.load_sentences(path) == ["The first sentence is here.", "A second document speaks now."]


def test_wordnet_examples_are_parsed_and_filtered_by_word_frequency(tmp_path, monkeypatch):
    header = "  1 This software and database is being provided to you, the LICENSEE, \"as is\" ...\n"
    rows = ['00001740 03 n 01 entity 0 000 | that which is perceived; "the dog ran to the park"; "a dog ran home"\n',
            '00002137 03 n 01 thing 0 000 | an entity; "the cat ran to the old park"\n',
            '00002452 03 n 01 other 0 000 | no example here\n']
    for i, name in enumerate(ec.WORDNET_FILES):
        (tmp_path / name).write_text(header + (rows[i] if i < len(rows) else ""), encoding="latin-1")
    monkeypatch.setattr(ec, "WORDNET_DIR", tmp_path)
    assert ec.wordnet_examples() == ["the dog ran to the park", "a dog ran home", "the cat ran to the old park"]
    assert ec.load_sentences("wordnet") == ["the dog ran to the park", "a dog ran home", "the cat ran to the old park"]
    # counts: the 4, ran 3, to/park/dog 2, a/home/cat/old 1 -> only the first sentence has its words all in the top 5
    assert ec.load_sentences("wordnet", top_words=5) == ["the dog ran to the park"]
    (tmp_path / "data.adv").unlink()
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        ec.load_sentences("wordnet")
    with pytest.raises(FileNotFoundError, match="no-such.txt"):
        ec.load_sentences(tmp_path / "no-such.txt")


@pytest.mark.skipif(not ec.WORDNET_DIR.is_dir(), reason="wordnet-base not installed (scripts/setup.sh installs it)")
def test_wordnet_gives_thousands_of_short_everyday_sentences():
    sents = ec.load_sentences("wordnet", max_words=10, top_words=2000)
    assert len(sents) > 3000 and len(set(s.lower() for s in sents)) == len(sents)
    assert all(4 <= len(s.split()) <= 10 and not any(c.isdigit() for c in s) for s in sents)


def test_gensim_corpus_gives_enough_clean_sentences():
    sents = ec.load_sentences("lee")
    assert len(sents) > 900 and len(set(s.lower() for s in sents)) == len(sents)
    assert all(4 <= len(s.split()) <= 20 and not any(c.isdigit() for c in s) for s in sents)


def test_voice_and_sentence_splits_are_disjoint():
    train_voices, test_voices = ec.split_voices()
    assert train_voices and test_voices and not set(train_voices) & set(test_voices)
    assert {v.split("+")[1] for v in train_voices}.isdisjoint(v.split("+")[1] for v in test_voices)
    sentences = [f"Sentence number {w} is here." for w in "abcdefghijklmnopqrstuvwxyz"]
    plan = ec.make_plan(sentences, num_train=60, num_test=5, seed=3)
    train, test = plan["train"], plan["test"]
    assert len(train) == 60 and len(test) == 5
    assert not {u["voice"] for u in train} & {u["voice"] for u in test}
    assert not {u["text"] for u in train} & {u["text"] for u in test}
    assert {u["text"] for u in train} == set(sentences) - {u["text"] for u in test}  # every other sentence is used
    assert len({u["id"] for u in train + test}) == 65
    assert all(ec.SPEED_RANGE[0] <= u["speed"] <= ec.SPEED_RANGE[1] for u in train + test)
    assert ec.make_plan(sentences, 60, 5, seed=3) == plan and ec.make_plan(sentences, 60, 5, seed=4) != plan
    with pytest.raises(ValueError, match="num_test=30"):
        ec.make_plan(sentences, 10, 30)
    with pytest.raises(ValueError, match=r"\['m1'\]"):
        ec.split_voices(train_variants=["m1", "m2"], test_variants=["m1"])


def test_test_seen_split_has_training_sentences_said_by_test_voices():
    sentences = [f"Sentence number {w} is here." for w in "abcdefghijklmnopqrstuvwxyz"]
    plan = ec.make_plan(sentences, num_train=60, num_test=5, seed=3, num_test_seen=8)
    seen, train, test = plan["test_seen"], plan["train"], plan["test"]
    assert len(seen) == 8 and len({u["text"] for u in seen}) == 8  # distinct sentences
    assert {u["text"] for u in seen} <= {u["text"] for u in train}
    assert {u["voice"] for u in seen} <= set(ec.split_voices()[1])  # only held-out voices
    assert len({u["id"] for u in train + test + seen}) == 73
    assert {k: v for k, v in plan.items() if k != "test_seen"} == ec.make_plan(sentences, 60, 5, seed=3)  # same train/test
    assert "test_seen" not in ec.make_plan(sentences, 60, 5, seed=3)
    with pytest.raises(ValueError, match="num_test_seen=30 but training has only 21"):
        ec.make_plan(sentences, 60, 5, seed=3, num_test_seen=30)


def test_wav_roundtrip():
    audio = np.sin(np.linspace(0, 100, 1600)).astype(np.float32) * 0.5
    back, sr = ec.read_wav(ec.write_wav(audio, 16000))
    assert sr == 16000 and back.shape == audio.shape and np.abs(back - audio).max() < 1e-4


@needs_espeak
def test_synthesize_resamples_to_16k():
    native = ec.synthesize("Hello there.", "en-us+m1", sampling_rate=22050)
    audio = ec.synthesize("Hello there.", "en-us+m1")
    assert audio.dtype == np.float32 and 0.3 < len(audio) / 16000 < 3 and np.abs(audio).max() > 0.05
    assert abs(len(audio) - len(native) * 16000 / 22050) <= 2
    slow = ec.synthesize("Hello there.", "en-us+m1", speed=100)
    assert len(slow) > 1.3 * len(audio)


@needs_espeak
def test_build_corpus_saves_16k_dataset_and_caches(tmp_path, capsys):
    from datasets import load_from_disk

    text = tmp_path / "text.txt"
    text.write_text("The cat sat on the mat. A dog ran in the park. Birds sing in the morning.\n")
    out = tmp_path / "espeak"
    dd = ec.build_corpus(out, num_train=2, num_test=1, num_proc=1, text_source=text)
    assert set(dd) == {"train", "test"} and dd["train"].num_rows == 2 and dd["test"].num_rows == 1
    assert {"audio", "text", "voice", "id"} <= set(dd["train"].column_names)
    assert dd["train"].features["audio"].sampling_rate == 16000
    for split in ("train", "test"):
        for row in load_from_disk(str(out))[split]:
            samples = row["audio"].get_all_samples()
            assert samples.sample_rate == 16000 and samples.data.shape[-1] > 8000 and samples.data.abs().max() > 0.05
    raw = dd["test"].cast_column("audio", type(dd["test"].features["audio"])(decode=False))[0]["audio"]["bytes"]
    assert ec.read_wav(raw)[1] == 16000  # stored as 16 kHz WAV: no resampling at decode time
    assert not set(dd["train"]["voice"]) & set(dd["test"]["voice"])
    assert not set(dd["train"]["text"]) & set(dd["test"]["text"])
    stamp = (out / ec.PARAMS_FILE).read_text()
    capsys.readouterr()
    ec.build_corpus(out, num_train=2, num_test=1, num_proc=1, text_source=text)
    assert "cached" in capsys.readouterr().out and (out / ec.PARAMS_FILE).read_text() == stamp
    dd3 = ec.build_corpus(out, num_train=3, num_test=1, num_proc=1, text_source=text)  # new parameters: rebuilt
    assert dd3["train"].num_rows == 3


@needs_espeak
def test_unknown_voice_is_an_error_naming_it():
    # espeak-ng itself silently falls back to its default voice; we must not mislabel speakers
    with pytest.raises(ValueError, match="no-such-voice"):
        ec.synthesize("Hello.", "no-such-voice")
    with pytest.raises(ValueError, match=r"variant 'zz' \(in 'en-us\+zz'\)"):
        ec.synthesize("Hello.", "en-us+zz")
    for voice in sum(ec.split_voices(), []):
        ec.check_voice(voice)


def test_clips_dataset(tmp_path):
    for stem, text in [("b_clip", "Second clip."), ("a_clip", "First clip.")]:
        (tmp_path / f"{stem}.wav").write_bytes(ec.write_wav(np.full(1600, 0.1, np.float32), 16000))
        (tmp_path / f"{stem}.txt").write_text(text + "\n")
    ds = clips_dataset(tmp_path)
    assert ds["id"] == ["a_clip", "b_clip"] and ds["text"] == ["First clip.", "Second clip."]
    assert ds[0]["audio"].get_all_samples().data.shape[-1] == 1600
    (tmp_path / "c_clip.wav").write_bytes(ec.write_wav(np.zeros(10, np.float32), 16000))
    with pytest.raises(ValueError, match="c_clip.wav"):
        clips_dataset(tmp_path)


def _permute(w, n_head):
    """llama.cpp's q/k row order (convert_hf_to_gguf.py); transformers undoes it when loading a GGUF."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(model, path):
    """Write a (tied) Llama model as an F32 GGUF with a tiny byte-level BPE tokenizer, as llama.cpp would."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_vocab_size(c.vocab_size)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(i) for i in range(33, 127)] + ["Ġ", "Ġt", "he"]
    tokens += [f"<extra_{i}>" for i in range(c.vocab_size - len(tokens))]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3] * 3 + [1] * (len(tokens) - 3))
    w.add_token_merges(["Ġ t", "h e"])  # two: transformers 5.17 reads a one-element GGUF array as a bare string
    w.add_bos_token_id(1), w.add_eos_token_id(2), w.add_unk_token_id(0), w.add_pad_token_id(2)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        t = t.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            t = _permute(t, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            t = _permute(t, c.num_key_value_heads)
        base, suffix = name.rsplit(".", 1)
        w.add_tensor(f"{names.get_name(base)}.{suffix}", np.ascontiguousarray(t))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()


def test_convert_gguf_roundtrip_is_exact(tmp_path):
    import json

    from tiny_models import tiny_base
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_base()
    write_tiny_gguf(base, tmp_path / "tiny.gguf")
    convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert (tmp_path / "out" / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(3, base.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base(ids).logits)
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert (tok.eos_token, tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == ("<|im_end|>", 2, 1, 2)
    assert tok.decode(tok("hello there", add_special_tokens=False).input_ids) == "hello there"
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        convert_gguf(tmp_path / "missing.gguf", tmp_path / "out2")


def test_drop_quantization_config():
    from tiny_models import tiny_base

    model = tiny_base()
    model.config.quantization_config = {"quant_method": "gguf"}  # what from_pretrained(gguf_file=...) leaves there
    model.hf_quantizer, model.is_quantized = object(), True
    drop_quantization_config(model)
    assert not hasattr(model.config, "quantization_config") and model.hf_quantizer is None and not model.is_quantized
    assert "quantization_config" not in model.config.to_dict()


def test_setup_installs_the_hash_pinned_lock():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "mdu-speech" and pyproject["project"]["requires-python"] == ">=3.11,<3.14"
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "venv_from_lock.sh .venv requirements.lock" in setup
    assert "--require-hashes" in (ROOT / "scripts" / "venv_from_lock.sh").read_text()
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^torch==2\.14\.1 \\$", lock, re.M)  # the release on this machine's disk (DESIGN.md §5)
    assert re.search(r"^torchaudio==2\.11\.\d+ \\$", lock, re.M) and re.search(r"^torchcodec==0\.13\.\d+ \\$", lock, re.M)


def test_ci_runs_make_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci and ci.strip().splitlines()[-1] == "make test"
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111
