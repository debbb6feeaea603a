"""pipeline("automatic-speech-recognition") on MDU models accepts what the stock transformers ASR pipeline accepts:
model objects with processor= or tokenizer= + feature_extractor=, paths, bytes, arrays, {"raw"|"array",
"sampling_rate"} dicts, lists, datasets columns, batch_size (left-padded batches), generate_kwargs, max_new_tokens,
long audio in chunks; [] gives []; timestamps are refused clearly; other models keep the stock pipeline."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from audio_fixtures import SR, chirp, fitted_mel_tokenizer, write_wav
from devices import run_device
from tiny_models import perturb_added_layers, tiny_mdu, tiny_text_tokenizer
from transformers import pipeline
from transformers.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline

from modeling_mdu import MDUSpeechProcessor
from modeling_mdu.audio_io import load_audio
from modeling_mdu.pipeline_mdu import MDUSpeechRecognitionPipeline

TASK = "automatic-speech-recognition"
GEN = dict(max_new_tokens=4, min_new_tokens=3)  # a random tiny model: a few forced tokens make the texts differ


@pytest.fixture(scope="module")
def model():
    m = tiny_mdu()
    perturb_added_layers(m, std=0.3)
    return m.to(run_device())  # where pipeline() puts it: transcribe and the pipeline compared on one device


@pytest.fixture(scope="module")
def proc(model):
    return MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(), tiny_text_tokenizer())


@pytest.fixture(scope="module")
def asr(model, proc):
    return pipeline(TASK, model=model, processor=proc)


@pytest.fixture(scope="module")
def clips():
    return [chirp(0.5, seed=1), chirp(0.3, seed=2), chirp(0.4, seed=3)]


def test_model_object_with_processor_or_tokenizer_and_feature_extractor(model, proc, clips):
    expected = proc.transcribe(model, clips[0], sampling_rate=SR, **GEN)[0]
    for kwargs in (dict(processor=proc), dict(tokenizer=proc.tokenizer, feature_extractor=proc.feature_extractor)):
        asr = pipeline(TASK, model=model, **kwargs)
        assert isinstance(asr, MDUSpeechRecognitionPipeline)
        assert asr(clips[0], **GEN) == {"text": expected}
    parts = dict(tokenizer=proc.tokenizer, feature_extractor=proc.feature_extractor)
    assert pipeline(TASK, model=model, processor=proc, **parts).processor is proc
    with pytest.raises(ValueError, match="pass processor=.* or tokenizer= .* and feature_extractor="):
        pipeline(TASK, model=model)  # built in memory: no checkpoint folder to load a processor from


def test_accepts_paths_bytes_arrays_and_dicts(asr, tmp_path):
    path = write_wav(tmp_path / "clip.wav", chirp(0.5, seed=4))
    wave = load_audio(path).numpy()  # the samples the file holds (16-bit), at the speech tokenizer's rate
    flac = _flac_bytes(wave)
    forms = {
        "path": path,
        "wav bytes": open(path, "rb").read(),
        "flac bytes": flac,
        "numpy": wave,
        "torch": torch.from_numpy(wave),
        "raw dict": {"raw": wave, "sampling_rate": SR},
        "array dict": {"array": wave, "sampling_rate": SR, "path": path},
    }
    texts = dict(zip(forms, (out["text"] for out in asr(list(forms.values()), batch_size=len(forms), **GEN))))
    assert set(texts.values()) == {asr(path, **GEN)["text"]}, texts


def _flac_bytes(wave: np.ndarray) -> bytes:
    from torchcodec.encoders import AudioEncoder

    return AudioEncoder(torch.from_numpy(wave)[None], sample_rate=SR).to_tensor("flac").numpy().tobytes()


def test_batch_size_generates_left_padded_batches(asr, model, proc, clips, monkeypatch):
    one_by_one = proc.transcribe(model, clips, sampling_rate=SR, batch_size=1, **GEN)
    calls = []
    generate = model.generate

    def spy(**kwargs):
        calls.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))
        return generate(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    batched = [out["text"] for out in asr(clips, batch_size=2, **GEN)]
    assert batched == one_by_one
    assert [ids.shape[0] for ids, _ in calls] == [2, 1]
    ids, mask = calls[0]
    short = int(mask.sum(1).argmin())
    assert mask[short, 0] == 0 and mask[:, -1].tolist() == [1, 1]  # left padding
    assert ids[short, mask[short].tolist().index(1)] == proc.speech_start_token_id


def test_datasets_audio_column_and_key_dataset(asr, tmp_path):
    from datasets import Audio, Dataset
    from transformers.pipelines.pt_utils import KeyDataset

    paths = [write_wav(tmp_path / f"{i}.wav", chirp(0.3 + 0.1 * i, seed=i)) for i in range(3)]
    ds = Dataset.from_dict({"audio": paths}).cast_column("audio", Audio(sampling_rate=SR))
    expected = asr.processor.transcribe(asr.model, paths, **GEN)
    assert [out["text"] for out in asr(ds["audio"], batch_size=3, **GEN)] == expected
    streamed = asr(KeyDataset(ds, "audio"), batch_size=2, **GEN)  # an iterator, as in the stock pipeline
    assert not isinstance(streamed, list)
    assert [out["text"] for out in streamed] == expected


def test_generate_kwargs_and_max_new_tokens(asr, model, proc, clips):
    short = proc.transcribe(model, clips[0], sampling_rate=SR, max_new_tokens=2, min_new_tokens=2)[0]
    longer = proc.transcribe(model, clips[0], sampling_rate=SR, max_new_tokens=5, min_new_tokens=5)[0]
    assert len(short) < len(longer)
    assert asr(clips[0], generate_kwargs={"max_new_tokens": 2, "min_new_tokens": 2})["text"] == short
    assert asr(clips[0], max_new_tokens=5, generate_kwargs={"min_new_tokens": 5})["text"] == longer
    with pytest.raises(ValueError, match="max_new_tokens is given both"):
        asr(clips[0], max_new_tokens=2, generate_kwargs={"max_new_tokens": 3})


def test_empty_list_gives_empty_list(asr):
    assert asr([]) == []


def test_timestamps_are_refused_clearly(asr, clips):
    for value in (True, "word", "char"):
        with pytest.raises(ValueError, match="not supported: MDU speech models generate text only, without timestamps"):
            asr(clips[0], return_timestamps=value)
    assert asr(clips[0], return_timestamps=False, **GEN)["text"] == asr(clips[0], **GEN)["text"]


def test_long_audio_in_chunks_as_transcribe(asr, model, proc):
    long = chirp(3.0, seed=5)
    chunked = proc.transcribe(model, long, sampling_rate=SR, chunk_length_s=1.0, stride_length_s=0.2, **GEN)[0]
    assert asr(long, chunk_length_s=1.0, stride_length_s=0.2, batch_size=8, **GEN)["text"] == chunked
    assert chunked != proc.transcribe(model, long, sampling_rate=SR, **GEN)[0]  # several prompts, merged
    configured = pipeline(TASK, model=model, processor=proc, chunk_length_s=1.0, stride_length_s=0.2, batch_size=8)
    assert configured(long, **GEN)["text"] == chunked  # chunking set when the pipeline is built
    with pytest.raises(ValueError, match="must be longer than its two strides"):
        asr(long, chunk_length_s=1.0, stride_length_s=0.5)


def test_other_models_keep_the_stock_pipeline(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4, "c": 5}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"))
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=SR)
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                            num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    ctc = Wav2Vec2ForCTC(config).eval()
    asr = pipeline(TASK, model=ctc, tokenizer=tokenizer, feature_extractor=extractor)
    assert isinstance(asr, AutomaticSpeechRecognitionPipeline) and not isinstance(asr, MDUSpeechRecognitionPipeline)
    stock = AutomaticSpeechRecognitionPipeline(model=ctc, tokenizer=tokenizer, feature_extractor=extractor)
    x = chirp(0.5, seed=6)
    assert asr(x) == stock(x)
    with pytest.raises(ValueError, match="needs a tokenizer and a feature extractor"):
        pipeline(TASK, model=ctc, feature_extractor=extractor)


CLEAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModelForCausalLM, AutoProcessor, pipeline
    ckpt, wav = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True).eval()
    proc = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
    gen = dict(max_new_tokens=4, min_new_tokens=3, chunk_length_s=1.0, stride_length_s=0.2, batch_size=4)
    with_processor = pipeline("automatic-speech-recognition", model=model, processor=proc)
    with_parts = pipeline("automatic-speech-recognition", model=model, tokenizer=proc.tokenizer,
                          feature_extractor=proc.feature_extractor)
    from_folder = pipeline("automatic-speech-recognition", model=ckpt, trust_remote_code=True)
    print(json.dumps({
        "classes": [type(p).__module__ for p in (with_processor, with_parts, from_folder)],
        "texts": [p([wav, wav], **gen)[1]["text"] for p in (with_processor, with_parts, from_folder)],
    }))
    """
)


def test_checkpoint_pipeline_from_model_object_in_a_clean_interpreter(model, proc, tmp_path):
    """What a user of a Hub checkpoint does: Auto classes, then pipeline() on the model object (no repository code)."""
    ckpt, run_dir = tmp_path / "ckpt", tmp_path / "empty"
    run_dir.mkdir()
    model.save_pretrained(ckpt)
    proc.save_pretrained(ckpt)
    wav = write_wav(tmp_path / "clip.wav", chirp(2.0, seed=8))
    expected = proc.transcribe(model, wav, chunk_length_s=1.0, stride_length_s=0.2, **GEN)[0]
    script = tmp_path / "run.py"
    script.write_text(CLEAN_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    out = subprocess.run([sys.executable, "-I", str(script), str(ckpt), wav], cwd=run_dir, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(name.startswith("transformers_modules") for name in result["classes"])  # the checkpoint's code
    assert result["texts"] == [expected] * 3
