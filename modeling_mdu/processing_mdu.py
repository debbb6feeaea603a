"""MDUSpeechProcessor: audio + transcript -> model inputs in the ASR prompt format, and generated ids -> text.

    training:   input_ids = [speech_start] + units + [speech_end] + transcript + [eos]
                labels    = [-100] * (len(units) + 2) + transcript + [eos]      (train_on_speech: labels on units too)
    generation: input_ids = [speech_start] + units + [speech_end], left-padded; greedy until eos.

Unit u of the speech tokenizer is model token `speech_token_start + u`; transcripts use the text tokenizer without
special tokens. A prompt longer than `max_length` (the model context) raises a ValueError naming the item.

One-line transcription from a checkpoint folder or Hub id holding the model and the processor:

    asr = pipeline("automatic-speech-recognition", model=ckpt, trust_remote_code=True)   # see pipeline_mdu.py
    asr("clip.wav")["text"]
    MDUSpeechProcessor.transcribe_file(ckpt, "clip.wav")           # same, without the pipeline machinery
    processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
    processor.transcribe(model, ["a.wav", "b.flac"])
"""


import torch
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin

from .audio_io import as_batch, describe_item
from .remote_code import export_remote_code
from .speech_tokenizer import AUTO_MAP, MDUSpeechTokenizer

IGNORE_INDEX = -100


class MDUSpeechProcessor(ProcessorMixin):
    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        speech_token_start: int | None = None,
        speech_start_token_id: int | None = None,
        speech_end_token_id: int | None = None,
        max_length: int | None = None,
        speech_vocab_size: int | None = None,
        **kwargs,
    ):
        if feature_extractor is None or tokenizer is None:
            raise ValueError("MDUSpeechProcessor needs a feature_extractor (MDUSpeechTokenizer) and a text tokenizer")
        if tokenizer.eos_token_id is None:
            raise ValueError("the text tokenizer has no eos_token_id (needed to end transcripts)")
        text_vocab = len(tokenizer)
        self.speech_start_token_id = text_vocab if speech_start_token_id is None else int(speech_start_token_id)
        self.speech_end_token_id = self.speech_start_token_id + 1 if speech_end_token_id is None else int(speech_end_token_id)
        self.speech_token_start = self.speech_end_token_id + 1 if speech_token_start is None else int(speech_token_start)
        self.max_length = None if max_length is None else int(max_length)
        self.speech_vocab_size = speech_vocab_size
        if speech_vocab_size is not None and feature_extractor.codebook_size > speech_vocab_size:
            raise ValueError(
                f"speech tokenizer has {feature_extractor.codebook_size} units but the model only "
                f"{speech_vocab_size} speech tokens"
            )
        super().__init__(feature_extractor, tokenizer, **kwargs)

    @classmethod
    def from_model_config(cls, config, feature_extractor, tokenizer, **kwargs):
        """Takes the speech token ids, speech vocabulary size and context length from an MDUSpeechConfig."""
        kwargs.setdefault("max_length", getattr(config, "max_position_embeddings", None))
        return cls(
            feature_extractor,
            tokenizer,
            speech_token_start=config.speech_token_start,
            speech_start_token_id=config.speech_start_token_id,
            speech_end_token_id=config.speech_end_token_id,
            speech_vocab_size=config.speech_vocab_size,
            **kwargs,
        )

    # ---------------------------------------------------------------- inputs
    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def encode_speech(self, audio, sampling_rate=None, int_scale=None) -> list[list[int]]:
        """Audio (one item or a list) -> model-vocabulary unit ids per item (no special tokens)."""
        units = self.feature_extractor(audio, sampling_rate=sampling_rate, int_scale=int_scale)
        return [(u + self.speech_token_start).tolist() for u in units]

    def build_inputs(self, speech_ids, texts=None, train_on_speech: bool = False, names=None) -> list[dict]:
        """Unpadded features per item; `labels` only when `texts` is given. Raises ValueError naming the item when
        a sequence would exceed `max_length`."""
        if texts is not None:
            texts = [texts] if isinstance(texts, str) else list(texts)
            if len(texts) != len(speech_ids):
                raise ValueError(f"got {len(speech_ids)} audio items but {len(texts)} texts")
        eos = self.tokenizer.eos_token_id
        feats = []
        for i, units in enumerate(speech_ids):
            ids = [self.speech_start_token_id, *units, self.speech_end_token_id]
            feat = {}
            if texts is not None:
                if not isinstance(texts[i], str):
                    raise ValueError(f"text item {i}: expected a string, got {type(texts[i]).__name__}")
                transcript = self.tokenizer(texts[i], add_special_tokens=False)["input_ids"] + [eos]
                speech_labels = [IGNORE_INDEX, *units, IGNORE_INDEX] if train_on_speech else [IGNORE_INDEX] * len(ids)
                feat["labels"] = speech_labels + transcript
                ids = ids + transcript
            if self.max_length is not None and len(ids) > self.max_length:
                name = names[i] if names else f"audio item {i}"
                raise ValueError(
                    f"{name}: {len(ids)} tokens ({len(units)} speech units) exceed the model context max_length="
                    f"{self.max_length}; split the audio or use a lower frame rate"
                )
            feat["input_ids"] = ids
            feat["attention_mask"] = [1] * len(ids)
            feats.append(feat)
        return feats

    def pad(self, features: list[dict], padding_side: str = "right", return_tensors: str | None = "pt", pad_to_multiple_of=None):
        """Pads input_ids (pad id), attention_mask (0) and labels (-100) to the longest item."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        longest = max(len(f["input_ids"]) for f in features)
        if pad_to_multiple_of:
            longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
        values = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        batch = {}
        for key, value in values.items():
            if not any(key in f for f in features):
                continue
            if not all(key in f for f in features):
                raise ValueError(f"'{key}' present in some items only")
            rows = []
            for f in features:
                fill = [value] * (longest - len(f[key]))
                rows.append(fill + list(f[key]) if padding_side == "left" else list(f[key]) + fill)
            batch[key] = rows
        return BatchFeature(batch, tensor_type=return_tensors)

    def __call__(
        self,
        audio=None,
        text=None,
        sampling_rate=None,
        padding_side: str | None = None,
        return_tensors: str | None = "pt",
        train_on_speech: bool = False,
        int_scale: float | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Audio (+ transcripts) -> padded batch. Right padding with text (training), left padding without
        (generation prompts), unless `padding_side` says otherwise."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if audio is None:
            raise ValueError("MDUSpeechProcessor needs audio")
        items = as_batch(audio)
        ids = self.encode_speech(items, sampling_rate=sampling_rate, int_scale=int_scale)
        names = [describe_item(i, x) for i, x in enumerate(items)]
        feats = self.build_inputs(ids, texts=text, train_on_speech=train_on_speech, names=names)
        return self.pad(feats, padding_side or ("right" if text is not None else "left"), return_tensors)

    # ---------------------------------------------------------------- outputs
    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """Decodes generated text ids; speech tokens (not text) are dropped, decoding stops at eos."""
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        eos, first_new = self.tokenizer.eos_token_id, min(self.speech_start_token_id, self.speech_token_start)
        cleaned = []
        for seq in sequences:
            seq = [int(t) for t in seq]
            if eos in seq:
                seq = seq[: seq.index(eos)]
            cleaned.append([t for t in seq if 0 <= t < first_new])
        return self.tokenizer.batch_decode(cleaned, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, ids, **kwargs) -> str:
        return self.batch_decode([ids], **kwargs)[0]

    @torch.inference_mode()
    def transcribe(self, model, audio, sampling_rate=None, batch_size: int = 8, max_new_tokens: int | None = None, **generate_kwargs) -> list[str]:
        """Greedy ASR: audio (one item or a list) -> transcripts, in input order."""
        items = as_batch(audio)
        ids = self.encode_speech(items, sampling_rate=sampling_rate)  # validates everything first; errors name the item
        return self.transcribe_units(model, ids, batch_size, max_new_tokens,
                                     names=[describe_item(i, x) for i, x in enumerate(items)], **generate_kwargs)

    def transcribe_units(self, model, speech_ids, batch_size: int = 8, max_new_tokens: int | None = None, names=None,
                         **generate_kwargs) -> list[str]:
        """Greedy ASR from speech units already in model ids (`encode_speech`'s output) -> transcripts, in order."""
        device = next(model.parameters()).device
        feats = self.build_inputs(speech_ids, names=names)
        texts = []
        for start in range(0, len(feats), batch_size):
            batch = self.pad(feats[start : start + batch_size], padding_side="left")
            prompt_len = batch["input_ids"].shape[1]
            kwargs = self.generation_kwargs(model, prompt_len, max_new_tokens=max_new_tokens, **generate_kwargs)
            out = model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), **kwargs)
            texts.extend(self.batch_decode(out[:, prompt_len:]))
        return texts

    def generation_kwargs(self, model, prompt_len: int, max_new_tokens: int | None = None, **overrides) -> dict:
        """Greedy decoding until eos, text tokens only, within the model context."""
        budget = max_new_tokens or 256
        if self.max_length is not None:
            budget = min(budget, self.max_length - prompt_len)
        kwargs = dict(
            max_new_tokens=max(budget, 1),
            do_sample=False,
            num_beams=1,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.pad_token_id,
            suppress_tokens=self._non_text_ids(model),
        )
        kwargs.update(overrides)
        return kwargs

    def _non_text_ids(self, model) -> list[int]:
        """A transcript may hold neither speech tokens nor ids the text tokenizer cannot decode."""
        first = min(self.speech_start_token_id, self.speech_token_start, len(self.tokenizer))
        return list(range(first, model.config.vocab_size))

    @classmethod
    def transcribe_file(cls, checkpoint, audio, sampling_rate=None, **kwargs) -> list[str]:
        """One call: loads model + processor from `checkpoint` and transcribes `audio` (path(s) or arrays)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
        return cls.from_pretrained(checkpoint).transcribe(model, audio, sampling_rate=sampling_rate, **kwargs)

    # ---------------------------------------------------------------- save / load
    def to_dict(self) -> dict:
        out = super().to_dict()
        out["auto_map"] = {**AUTO_MAP, "AutoProcessor": "processing_mdu.MDUSpeechProcessor"}
        return out

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """processor_config.json (+ auto_map), tokenizer files, preprocessor_config.json, the codebook and the flat
        remote-code files, so `AutoProcessor.from_pretrained(dir, trust_remote_code=True)` works anywhere."""
        auto_class, type(self)._auto_class = type(self)._auto_class, None  # we write the code files ourselves
        try:
            files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            type(self)._auto_class = auto_class
        files += self.feature_extractor.save_pretrained(save_directory)
        export_remote_code(save_directory, require_model=False)  # custom_pipelines: the model's save_pretrained
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads the speech tokenizer (with its codebook), the text tokenizer and the processor settings."""
        # the text tokenizer's folder is this checkpoint, whose code (this class) already runs: its config.json
        # has an auto_map, so AutoTokenizer must be allowed to read it instead of prompting
        trust_remote_code = kwargs.pop("trust_remote_code", None) is not False
        kwargs.pop("_from_auto", None)
        hub = {k: v for k, v in kwargs.items() if k in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")}
        overrides = {k: v for k, v in kwargs.items() if k not in hub}
        processor_dict, _ = cls.get_processor_dict(pretrained_model_name_or_path, **hub)
        feature_extractor = MDUSpeechTokenizer.from_pretrained(pretrained_model_name_or_path, **hub)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, trust_remote_code=trust_remote_code, **hub)
        settings = {k: processor_dict[k] for k in ("speech_token_start", "speech_start_token_id", "speech_end_token_id", "max_length", "speech_vocab_size") if k in processor_dict}
        settings.update(overrides)
        return cls(feature_extractor, tokenizer, **settings)
