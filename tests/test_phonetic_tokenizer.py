"""Phonetic speech units: a CTC phoneme recognizer trained on espeak-ng speech learns, its units are batch-invariant,
it round-trips through save/load and AutoFeatureExtractor (remote code), and bad input gets clear errors."""

import logging
import shutil

import numpy as np
import pytest
import torch

from fit_phonetic_tokenizer import espeak_phonemes, fit_phonetic_tokenizer, phoneme_error_rate
from modeling_mdu import MDUSpeechTokenizer
from modeling_mdu.phone_recognizer import PhoneRecognizer

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (scripts/setup.sh installs it)")

SENTENCES = ["the cat sat on the mat", "a big dog ran home", "she sees the sea", "we like red apples",
             "open the window please", "my boat is blue", "they sing a song", "he reads old books"]
TRAIN_VOICES = ["en-us+m1", "en-us+f2", "en-gb+m3"]
TINY = dict(recognizer_dim=64, recognizer_layers=2)


@pytest.fixture(scope="module")
def speech():
    from prepare.espeak_corpus import synthesize

    train = [(synthesize(s, v), s) for v in TRAIN_VOICES for s in SENTENCES]
    held_out = [(synthesize(s, "en-us+m4"), s) for s in SENTENCES[:4]]
    return train, held_out


@pytest.fixture(scope="module")
def fitted(speech):
    train, held_out = speech
    audio, texts = zip(*train)
    return fit_phonetic_tokenizer(audio, texts, epochs=40, batch_size=4, learning_rate=1e-2, dropout=0.0,
                                  sampling_rate=16000, eval_audio=[a for a, _ in held_out],
                                  eval_texts=[t for _, t in held_out], **TINY)


def test_recognizer_learns_phonemes(speech, fitted):
    tok, history = fitted
    train, held_out = speech
    assert history[-1]["loss"] < history[0]["loss"] / 4, history
    refs = espeak_phonemes([t for _, t in train])
    assert phoneme_error_rate(tok, [a for a, _ in train], refs, 16000) < 0.15
    untrained = MDUSpeechTokenizer(backend="phonetic", codebook_size=len(tok.phonemes), phonemes=tok.phonemes,
                                   frame_rate=100, **TINY)
    torch.manual_seed(1)
    untrained.set_recognizer(untrained.new_recognizer())
    held = [a for a, _ in held_out], espeak_phonemes([t for _, t in held_out])
    assert history[-1]["eval_per"] == pytest.approx(phoneme_error_rate(tok, *held, 16000))
    assert history[-1]["eval_per"] < 0.8 * phoneme_error_rate(untrained, *held, 16000)


def test_units_are_phoneme_ids_and_batch_invariant(speech, fitted):
    tok, _ = fitted
    clips = [a for a, _ in speech[0][:6]]
    batch = tok(clips, sampling_rate=16000)
    single = [tok(x, sampling_rate=16000)[0] for x in clips]
    assert all(np.array_equal(a, b) for a, b in zip(batch, single))
    assert all(u.dtype == np.int64 and len(u) and u.min() >= 0 and u.max() < tok.codebook_size for u in batch)
    assert tok.codebook_size == len(tok.phonemes) and isinstance(tok.units_to_phonemes(batch[0]), str)


def test_padded_frames_do_not_change_logits():
    torch.manual_seed(0)
    model = PhoneRecognizer(8, 5, dim=16, num_layers=2).eval()
    for norm in [model.norm, *(b.norm for b in model.blocks)]:  # trained LayerNorms map zero padding to nonzero
        torch.nn.init.normal_(norm.bias)
    x = torch.randn(1, 11, 8)
    alone, n = model(x, torch.tensor([11]))
    padded, _ = model(torch.cat([x, torch.randn(1, 6, 8)], 1), torch.tensor([11]))
    assert n.item() == 6 and torch.allclose(alone[0, :6], padded[0, :6], atol=1e-6)


def test_installing_a_recognizer_leaves_the_global_rng_alone():
    """fit_phonetic_tokenizer installs the model for each evaluation mid-training: that must not change the dropout
    masks that follow (so a fit with evaluations equals one without)."""
    tok = MDUSpeechTokenizer(backend="phonetic", codebook_size=3, phonemes=list("abc"), **TINY)
    model = tok.new_recognizer()
    state = torch.get_rng_state()
    tok.set_recognizer(model)
    assert torch.equal(state, torch.get_rng_state())


def test_units_cache_key_follows_the_recognizer_weights():
    """train_hf caches computed units (datasets.map) under a key: two fits with one config must not share it (the
    demo once trained on the previous fit's units that way)."""
    from types import SimpleNamespace

    from training.data import _tokenizer_fingerprint

    def fitted(seed):
        tok = MDUSpeechTokenizer(backend="phonetic", codebook_size=3, phonemes=list("abc"), **TINY)
        torch.manual_seed(seed)
        tok.set_recognizer(tok.new_recognizer())
        return tok

    key = lambda tok: _tokenizer_fingerprint(SimpleNamespace(feature_extractor=tok, speech_token_start=5))  # noqa: E731
    a, b = fitted(0), fitted(1)
    assert a.to_json_string() == b.to_json_string() and key(a) != key(b)
    assert key(fitted(0)) == key(a)


def test_save_load_and_remote_code(tmp_path, speech, fitted):
    from transformers import AutoFeatureExtractor

    tok, _ = fitted
    tok.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"speech_phone_recognizer.safetensors", "phone_recognizer.py", "preprocessor_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    clips = [a for a, _ in speech[1]]
    expected = tok(clips, sampling_rate=16000)
    for loaded in (MDUSpeechTokenizer.from_pretrained(tmp_path), AutoFeatureExtractor.from_pretrained(tmp_path, trust_remote_code=True)):
        assert loaded.phonemes == tok.phonemes and loaded.is_fitted
        assert all(np.array_equal(a, b) for a, b in zip(expected, loaded(clips, sampling_rate=16000)))


def test_clear_errors(speech):
    audio = [speech[0][0][0]]
    with pytest.raises(ValueError, match="no trained recognizer"):
        MDUSpeechTokenizer(backend="phonetic", codebook_size=2, phonemes=["a", "b"])(audio, sampling_rate=16000)
    with pytest.raises(ValueError, match="phonemes"):
        MDUSpeechTokenizer(backend="phonetic", codebook_size=3, phonemes=["a", "b"])
    with pytest.raises(ValueError, match="per utterance"):
        MDUSpeechTokenizer(backend="phonetic", normalize="global")
    with pytest.raises(ValueError, match="item 1: transcript"):
        espeak_phonemes(["hello", "  "])
    with pytest.raises(ValueError, match="item 0: espeak-ng -v 'xx-nowhere'"):
        espeak_phonemes(["hello"], voices=["xx-nowhere"])
    with pytest.raises(ValueError, match="1 audio items for 2 transcripts"):
        fit_phonetic_tokenizer(audio, ["a", "b"])


def test_too_short_utterance_is_reported_not_trained_on(speech, caplog):
    audio = [speech[0][0][0], np.zeros(800, np.float32) + 0.01]  # 50 ms cannot hold a sentence's phonemes
    with caplog.at_level(logging.WARNING, logger="fit_phonetic_tokenizer"):
        tok, _ = fit_phonetic_tokenizer(audio, [SENTENCES[0], SENTENCES[1]], epochs=1, sampling_rate=16000, **TINY)
    assert "1 of 2 utterances are too short" in caplog.text and "items [1]" in caplog.text
    assert tok.is_fitted
