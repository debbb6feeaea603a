"""`pipeline("automatic-speech-recognition", model=ckpt, trust_remote_code=True)` for MDU checkpoints.

The stock ASR pipeline only hosts CTC, TDT and encoder-decoder models (it loads AutoModelForCTC / ...SpeechSeq2Seq
and branches on those types), so it cannot run a decoder-only speech LM. This small `Pipeline` subclass is
registered for the task through `config.custom_pipelines` (`remote_code.CUSTOM_PIPELINES`, written by the model's save_pretrained); `pipeline()` then loads the model
with AutoModelForCausalLM, and this class loads the MDUSpeechProcessor from the same checkpoint:

    asr = pipeline("automatic-speech-recognition", model=ckpt, trust_remote_code=True)
    asr("clip.wav")                      # {"text": "..."}
    asr(["a.wav", {"array": x, "sampling_rate": 22050}], max_new_tokens=64)   # items run one at a time

For batched decoding use `MDUSpeechProcessor.transcribe(model, audio_list, batch_size=...)` (left-padded batches).
"""

import torch
from transformers import Pipeline

from .processing_mdu import MDUSpeechProcessor


class MDUSpeechRecognitionPipeline(Pipeline):
    _load_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, model, processor=None, **kwargs):
        if processor is None:
            processor = MDUSpeechProcessor.from_pretrained(model.name_or_path)
        self.speech_processor = processor
        super().__init__(model=model, **kwargs)

    def _sanitize_parameters(self, sampling_rate=None, max_new_tokens=None, **generate_kwargs):
        pre = {"sampling_rate": sampling_rate} if sampling_rate is not None else {}
        fwd = dict(generate_kwargs)
        if max_new_tokens is not None:
            fwd["max_new_tokens"] = max_new_tokens
        return pre, fwd, {}

    def preprocess(self, inputs, sampling_rate=None):
        ids = self.speech_processor.encode_speech([inputs], sampling_rate=sampling_rate)
        return self.speech_processor.pad(self.speech_processor.build_inputs(ids), padding_side="left")

    def _forward(self, model_inputs, **generate_kwargs):
        prompt_len = model_inputs["input_ids"].shape[1]
        kwargs = self.speech_processor.generation_kwargs(self.model, prompt_len, **generate_kwargs)
        with torch.inference_mode():
            out = self.model.generate(**model_inputs, **kwargs)
        return {"tokens": out[:, prompt_len:]}

    def postprocess(self, model_outputs):
        return {"text": self.speech_processor.batch_decode(model_outputs["tokens"])[0]}
