"""Prompting: the processor builds the prompt from a chat template stored in the checkpoint (default: the plain ASR
prompt, exactly as before templates), takes an optional instruction or a Qwen2-Audio style `text=` prompt, keeps
transcripts to train on apart (`text_target=`), and `generate(**inputs)` writes text only."""

import json

import pytest
import torch
from audio_fixtures import SR, chirp, fitted_mel_tokenizer
from tiny_models import TEXT_VOCAB, perturb_added_layers, tiny_base, tiny_mdu, tiny_text_tokenizer
from transformers import AutoProcessor

from modeling_mdu import MDUSpeechForCausalLM, MDUSpeechProcessor, processing_mdu

CHAT_TEMPLATE_NAME = "speech_chat_template.jinja"

SS, SE, UNIT0 = TEXT_VOCAB, TEXT_VOCAB + 1, TEXT_VOCAB + 2
INSTRUCTION = "transcribe the audio."
# a checkpoint's own template: a chat layout around the audio, instruction before it
CHAT = ("{%- for m in messages -%}{{- m['role'] + ': ' -}}{%- for p in m['content'] -%}"
        "{%- if p['type'] == 'audio' -%}{{- audio_token -}}{%- else -%}{{- p['text'] + ' ' -}}{%- endif -%}"
        "{%- endfor -%}{{- '\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- 'assistant:' -}}{%- endif -%}")


@pytest.fixture(scope="module")
def model():
    m = tiny_mdu()
    perturb_added_layers(m, std=0.3)
    return m


@pytest.fixture(scope="module")
def proc(model):
    return MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(), tiny_text_tokenizer())


def text_ids(proc, text):
    return proc.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_default_prompt_is_the_plain_asr_prompt(proc):
    clip = chirp(0.5, seed=1)
    units = proc.encode_speech(clip, sampling_rate=SR)[0]
    assert proc.chat_template == processing_mdu.DEFAULT_CHAT_TEMPLATE
    assert proc(audio=clip, sampling_rate=SR)["input_ids"][0].tolist() == [SS, *units, SE]
    assert proc.build_inputs([units])[0]["input_ids"] == [SS, *units, SE]


def test_checkpoint_without_template_keeps_todays_prompt(proc, tmp_path):
    """A checkpoint saved before templates: no speech_chat_template.jinja, the speech tokenizer's settings nested in
    processor_config.json too. It loads with the default template and gives exactly the plain ASR prompt ids."""
    proc.save_pretrained(tmp_path)
    (tmp_path / CHAT_TEMPLATE_NAME).unlink()
    config = json.loads((tmp_path / "processor_config.json").read_text())
    config["feature_extractor"] = json.loads((tmp_path / "preprocessor_config.json").read_text())
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    clip = chirp(0.4, seed=2)
    units = proc.encode_speech(clip, sampling_rate=SR)[0]
    for loaded in (MDUSpeechProcessor.from_pretrained(tmp_path),
                   AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)):
        assert loaded.chat_template == processing_mdu.DEFAULT_CHAT_TEMPLATE
        assert loaded(audio=clip, sampling_rate=SR)["input_ids"][0].tolist() == [SS, *units, SE]


def test_instruction_follows_the_audio_in_the_default_template(proc):
    clip = chirp(0.5, seed=1)
    units = proc.encode_speech(clip, sampling_rate=SR)[0]
    expected = [SS, *units, SE, *text_ids(proc, INSTRUCTION + "\n")]
    assert proc(audio=clip, instruction=INSTRUCTION, sampling_rate=SR)["input_ids"][0].tolist() == expected
    # Qwen2-Audio style: the prompt text from the chat template, then processor(text=..., audio=...)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": INSTRUCTION}]}]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "<|audio|>" + INSTRUCTION + "\n"
    assert proc(text=prompt, audio=clip, sampling_rate=SR)["input_ids"][0].tolist() == expected
    batch = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, sampling_rate=SR)
    assert batch["input_ids"][0].tolist() == expected
    # one instruction per item, left-padded for generation
    two = proc(audio=[clip, clip], instruction=[INSTRUCTION, "hi"], sampling_rate=SR)
    assert two["input_ids"][0].tolist() == expected
    assert two["input_ids"][1, two["attention_mask"][1] == 1].tolist() == [SS, *units, SE, *text_ids(proc, "hi\n")]


def test_text_is_a_prompt_and_transcripts_go_in_text_target(proc):
    """The old call `processor(audio, text=transcripts)` is ambiguous now that `text` is the prompt: it raises, and
    says where transcripts go."""
    clip = chirp(0.5, seed=1)
    with pytest.raises(ValueError, match=r"text= is the prompt.*text_target="):
        proc(audio=clip, text="hello world", sampling_rate=SR)
    with pytest.raises(ValueError, match="either text= .* or instruction="):
        proc(audio=clip, text="<|audio|>", instruction="x", sampling_rate=SR)
    with pytest.raises(ValueError, match="found 2"):
        proc(audio=clip, text="<|audio|> and <|audio|>", sampling_rate=SR)
    units = proc.encode_speech(clip, sampling_rate=SR)[0]
    eos = proc.tokenizer.eos_token_id
    batch = proc(audio=clip, instruction=INSTRUCTION, text_target="hi there", sampling_rate=SR)
    prompt = [SS, *units, SE, *text_ids(proc, INSTRUCTION + "\n")]
    transcript = text_ids(proc, "hi there") + [eos]
    assert batch["input_ids"][0].tolist() == prompt + transcript
    assert batch["labels"][0].tolist() == [-100] * len(prompt) + transcript
    spoken = proc(audio=clip, instruction=INSTRUCTION, text_target="hi", train_on_speech=True, sampling_rate=SR)
    assert spoken["labels"][0, : len(prompt)].tolist() == [-100, *units] + [-100] * (len(prompt) - len(units) - 1)


def test_chat_template_is_stored_in_the_checkpoint(proc, model, tmp_path):
    """A checkpoint's own template is saved in speech_chat_template.jinja and used after loading (AutoProcessor too);
    the text tokenizer's own chat template (chat_template.jinja) is left as it is."""
    tok = tiny_text_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # a text LLM's own template
    custom = MDUSpeechProcessor.from_model_config(model.config, proc.feature_extractor, tok, chat_template=CHAT)
    custom.save_pretrained(tmp_path)
    assert (tmp_path / CHAT_TEMPLATE_NAME).read_text() == CHAT
    assert "chat_template" not in json.loads((tmp_path / "processor_config.json").read_text())
    clip = chirp(0.5, seed=1)
    units = proc.encode_speech(clip, sampling_rate=SR)[0]
    expected = [*text_ids(proc, "user: " + INSTRUCTION + " "), SS, *units, SE, *text_ids(proc, "\nassistant:")]
    for loaded in (MDUSpeechProcessor.from_pretrained(tmp_path),
                   AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)):
        assert loaded.chat_template == CHAT
        assert loaded.tokenizer.chat_template == tok.chat_template
        messages = [{"role": "user", "content": [{"type": "text", "text": INSTRUCTION}, {"type": "audio"}]}]
        prompt = loaded.apply_chat_template(messages, add_generation_prompt=True)
        assert loaded(text=prompt, audio=clip, sampling_rate=SR)["input_ids"][0].tolist() == expected
        no_instruction = loaded(audio=clip, sampling_rate=SR)["input_ids"][0].tolist()
        assert no_instruction == [*text_ids(proc, "user: "), SS, *units, SE, *text_ids(proc, "\nassistant:")]


@torch.no_grad()
def test_generate_from_processor_inputs_writes_text_only(proc, tmp_path):
    """`model.generate(**processor(...))` with the model's own generation config: no speech ids, even from a model
    that prefers them (every speech row of the untied LM head points along the prompt's last hidden state)."""
    model = tiny_mdu(tiny_base(tie=False))
    inputs = proc(audio=chirp(0.5, seed=1), sampling_rate=SR)
    hidden = model.model(**inputs).last_hidden_state[0, -1]
    model.lm_head.speech_weight.copy_(hidden.expand_as(model.lm_head.speech_weight) * 10)
    speech = set(range(TEXT_VOCAB, model.config.vocab_size))
    assert model.generation_config.suppress_tokens == sorted(speech)
    prompt_len = inputs["input_ids"].shape[1]
    free = model.generate(**inputs, max_new_tokens=4, do_sample=False, suppress_tokens=[])[0, prompt_len:].tolist()
    assert set(free) & speech  # the check can fail: without suppression this model writes speech ids
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)[0, prompt_len:].tolist()
    assert len(out) == 4 and not set(out) & speech
    model.save_pretrained(tmp_path)  # the saved generation config suppresses them too
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["suppress_tokens"] == sorted(speech)
    reloaded = MDUSpeechForCausalLM.from_pretrained(tmp_path)
    again = reloaded.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert again[0, prompt_len:].tolist() == out
    assert model.to_text_model().generation_config.suppress_tokens is None  # the base has no speech ids


def test_model_says_it_reads_audio_and_text(model):
    assert set(model.input_modalities) == {"audio", "text"}
    assert set(type(model).input_modalities) == {"audio", "text"}
