"""`pipeline("automatic-speech-recognition", ...)` for MDU speech models: what the transformers ASR pipeline accepts.

The stock ASR pipeline only hosts CTC, transducer and encoder-decoder models (it branches on those types), so it
cannot run a decoder-only speech LM. `MDUSpeechRecognitionPipeline` takes its place:
- for a checkpoint: `config.custom_pipelines` (`remote_code.CUSTOM_PIPELINES`, written by the model's
  save_pretrained) names it, and `pipeline()` loads the model with AutoModelForCausalLM; the processor comes from the
  same checkpoint;
- for a model object: `pipeline()` never reads `custom_pipelines` then, so importing this module makes the task's
  stock class hand MDU models to this one (`register_asr_dispatch`; every other model keeps the stock pipeline).

    asr = pipeline("automatic-speech-recognition", model=ckpt, trust_remote_code=True)
    asr = pipeline("automatic-speech-recognition", model=model, processor=processor)  # or tokenizer + feature_extractor
    asr("clip.wav")                                       # {"text": "..."}
    asr(["a.wav", wav_bytes, {"raw": x, "sampling_rate": 22050}, array_16k], batch_size=4, max_new_tokens=64)
    asr(dataset["audio"]), asr(KeyDataset(dataset, "audio"))        # a datasets Audio column / an iterator over one
    asr("long.wav", chunk_length_s=20, stride_length_s=4)           # long audio in overlapping chunks

Inputs as in the stock pipeline: paths, bytes of an audio file, numpy / torch arrays (at the speech tokenizer's
`sampling_rate`, or pass `sampling_rate=`), {"raw"|"array", "sampling_rate"} dicts, `datasets` Audio items, lists of
these, datasets and generators (which give an iterator). `batch_size` prompts are generated together (left-padded);
`max_new_tokens`, `generate_kwargs={...}` and other generation keywords go to `generate`. Timestamps and languages
are not predicted (`return_timestamps` / `return_language` raise). Transcription is `MDUSpeechProcessor`'s: the same
chunking, budget and merge as `processor.transcribe`.
"""

import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline
from transformers.pipelines.base import ChunkPipeline
from transformers.pipelines.pt_utils import PipelineIterator
from transformers.utils import logging

from .audio_io import describe_item
from .processing_mdu import MDUSpeechProcessor
from .speech_tokenizer import MDUSpeechTokenizer

TASK = "automatic-speech-recognition"
MODEL_TYPE = "mdu_speech"

logger = logging.get_logger(__name__)


def is_mdu_model(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == MODEL_TYPE


def speech_processor_for(model, processor=None, tokenizer=None, feature_extractor=None) -> MDUSpeechProcessor:
    """The pipeline's MDUSpeechProcessor: the one given, else one built from the given text tokenizer and speech
    tokenizer (objects or folders), with what is missing loaded from the model's checkpoint folder."""
    if isinstance(processor, str):
        return MDUSpeechProcessor.from_pretrained(processor)
    if processor is not None:
        return processor
    source = getattr(model, "name_or_path", None) or None
    if (tokenizer is None or feature_extractor is None) and source is None:
        raise ValueError(
            "the MDU speech pipeline needs the model's processor: pass processor=MDUSpeechProcessor(...) or "
            "tokenizer= (the text tokenizer) and feature_extractor= (the MDUSpeechTokenizer); this model object has "
            "no checkpoint folder (name_or_path) to load them from"
        )
    if tokenizer is None and feature_extractor is None:
        return MDUSpeechProcessor.from_pretrained(source)
    if isinstance(tokenizer, str) or tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer or source)
    if isinstance(feature_extractor, str) or feature_extractor is None:
        feature_extractor = MDUSpeechTokenizer.from_pretrained(feature_extractor or source)
    return MDUSpeechProcessor.from_model_config(model.config, feature_extractor, tokenizer)


def _items(inputs):
    """Iterates the inputs: a map-style torch Dataset (e.g. KeyDataset) by index, anything else as it iterates."""
    if isinstance(inputs, torch.utils.data.Dataset) and hasattr(inputs, "__len__"):
        return (inputs[i] for i in range(len(inputs)))
    return inputs


def _is_column(inputs) -> bool:
    """A `datasets` column (`dataset["audio"]`; a list in datasets < 4, a lazy Column since)."""
    return type(inputs).__module__.startswith("datasets") and type(inputs).__name__ == "Column"


class MDUSpeechRecognitionPipeline(ChunkPipeline):
    _load_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, model, tokenizer=None, feature_extractor=None, processor=None, **kwargs):
        processor = speech_processor_for(model, processor, tokenizer, feature_extractor)
        super().__init__(model=model, tokenizer=processor.tokenizer, feature_extractor=processor.feature_extractor,
                         processor=processor, **kwargs)

    def __call__(self, inputs, **kwargs):
        """Transcribes one audio input ({"text": ...}) or a list of them (a list of those); see the module docstring."""
        if isinstance(inputs, tuple) or _is_column(inputs):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            return []
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, chunk_length_s=None, stride_length_s=None, sampling_rate=None, max_new_tokens=None,
                             generate_kwargs=None, return_timestamps=None, return_language=None, ignore_warning=None,
                             **more_generate_kwargs):
        if return_timestamps:
            raise ValueError(
                f"return_timestamps={return_timestamps!r} is not supported: MDU speech models generate text only, "
                "without timestamps (word or character times are not predicted); drop return_timestamps"
            )
        if return_language:
            raise ValueError("return_language is not supported: MDU speech models do not predict a language")
        preprocess = dict(chunk_length_s=chunk_length_s, stride_length_s=stride_length_s, sampling_rate=sampling_rate)
        if chunk_length_s is not None:
            self.processor.chunk_sizes(chunk_length_s, stride_length_s)  # bad chunking fails now, not per item
        forward = dict(generate_kwargs or {})  # ignore_warning: the stock pipeline's, nothing to ignore here
        if max_new_tokens is not None:
            more_generate_kwargs["max_new_tokens"] = max_new_tokens
        for key, value in more_generate_kwargs.items():
            if key in forward:
                raise ValueError(f"{key} is given both as an argument and in generate_kwargs; give it once")
            forward[key] = value
        return {k: v for k, v in preprocess.items() if v is not None}, forward, {}

    def preprocess(self, inputs, index: int = 0, chunk_length_s=None, stride_length_s=None, sampling_rate=None):
        """One audio input -> the units of its chunks and their names. A bare array is at the speech tokenizer's
        `sampling_rate` unless `sampling_rate=` says otherwise (as in the stock pipeline)."""
        rate = sampling_rate or self.processor.feature_extractor.sampling_rate
        units, names = self.processor.speech_chunks(
            [inputs], rate, chunk_length_s, stride_length_s, names=[describe_item(index, inputs)]
        )
        return {"chunks": units[0], "names": names[0]}

    def _preprocess_numbered(self, numbered, **params):
        index, inputs = numbered
        return self.preprocess(inputs, index=index, **params)

    def _forward(self, items, batch_size: int = 1, **generate_kwargs):
        """A list of preprocessed inputs -> their transcripts' ids: `batch_size` prompts (chunks) per `generate`."""
        chunks, names = [item["chunks"] for item in items], [item["names"] for item in items]
        tokens = self.processor.generate_chunks(self.model, chunks, names, batch_size, **generate_kwargs)
        return [{"tokens": ids} for ids in tokens]

    def postprocess(self, model_outputs):
        return {"text": self.processor.decode(model_outputs["tokens"])}

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """Preprocesses the inputs in order (in a worker when num_workers=1), generates batch_size of them at a time,
        yields one result per input."""
        if num_workers > 1:
            logger.warning("the MDU speech pipeline preprocesses with at most one worker: num_workers set to 1")
            num_workers = 1
        items = PipelineIterator(enumerate(_items(inputs)), self._preprocess_numbered, preprocess_params)
        loader = DataLoader(items, num_workers=num_workers, batch_size=batch_size, collate_fn=list)
        for batch in loader:
            for output in self.forward(batch, batch_size=batch_size, **forward_params):
                yield self.postprocess(output, **postprocess_params)


class ASRPipelineDispatch(AutomaticSpeechRecognitionPipeline):
    """The task's stock pipeline for every model but MDU speech models, which get MDUSpeechRecognitionPipeline.

    `pipeline(task, model=<model object>)` builds the task's registered class without reading the model's
    `custom_pipelines`. The tokenizer and feature extractor are optional at the factory (an MDU model may come with
    `processor=` alone); every other model still needs both, as the stock pipeline does."""

    _load_tokenizer = None
    _load_feature_extractor = None

    def __new__(cls, model=None, *args, **kwargs):
        if is_mdu_model(model):
            return MDUSpeechRecognitionPipeline(model, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, model, feature_extractor=None, tokenizer=None, *args, **kwargs):  # the stock signature
        if tokenizer is None or feature_extractor is None:
            raise ValueError(
                f"{AutomaticSpeechRecognitionPipeline.__name__} needs a tokenizer and a feature extractor: they could "
                "not be loaded for this model; pass tokenizer= and feature_extractor="
            )
        super().__init__(model, feature_extractor, tokenizer, *args, **kwargs)


def register_asr_dispatch() -> bool:
    """Registers ASRPipelineDispatch for the task when it still holds the stock pipeline (named by class or by its
    import path); leaves any other registration alone. Returns whether an MDU dispatch is registered."""
    entry = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if entry is None:
        return False
    stock = AutomaticSpeechRecognitionPipeline
    if entry["impl"] in (stock, f"{stock.__module__}.{stock.__name__}"):
        entry["impl"] = ASRPipelineDispatch
    return getattr(entry["impl"], "__name__", None) == ASRPipelineDispatch.__name__


register_asr_dispatch()
