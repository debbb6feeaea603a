"""MDUSpeechProcessor: audio (+ an instruction, + a transcript) -> model inputs, and generated ids -> text.

    training:   input_ids = prompt + transcript + [eos]            processor(audio=..., text_target=transcripts)
                labels    = [-100] * len(prompt) + transcript + [eos]      (train_on_speech: labels on units too)
    generation: input_ids = prompt, left-padded; greedy until eos.  processor(audio=...), model.generate(**inputs)
    prompt:     the chat template rendered with the audio (and an optional instruction), the audio token replaced by
                [speech_start] + units + [speech_end]. The default template (`DEFAULT_CHAT_TEMPLATE`) without an
                instruction gives the plain ASR prompt [speech_start] + units + [speech_end].

Prompting, Qwen2-Audio style (the template is `speech_chat_template.jinja` in the checkpoint):

    inputs = processor(audio="clip.wav", instruction="Transcribe the audio.")
    messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Transcribe the audio."}]}]
    inputs = processor(text=processor.apply_chat_template(messages, add_generation_prompt=True), audio="clip.wav")
    out = model.generate(**inputs, max_new_tokens=64)
    processor.batch_decode(out[:, inputs["input_ids"].shape[1]:])

`text=` is a prompt holding the audio token (`processor.audio_token`, "<|audio|>") once per audio item; transcripts
to train on go in `text_target=`. Unit u of the speech tokenizer is model token `speech_token_start + u`; prompt text
and transcripts use the text tokenizer without special tokens. A sequence longer than `max_length` (the model
context) raises a ValueError naming the item.

One-line transcription from a checkpoint folder or Hub id holding the model and the processor:

    asr = pipeline("automatic-speech-recognition", model=ckpt, trust_remote_code=True)   # see pipeline_mdu.py
    asr("clip.wav")["text"]
    MDUSpeechProcessor.transcribe_file(ckpt, "clip.wav")           # same, without the pipeline machinery
    processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
    processor.transcribe(model, ["a.wav", "b.flac"])
"""


import os

import torch
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.utils import cached_file, logging

from .audio_io import as_batch, describe_item
from .remote_code import export_remote_code
from .speech_tokenizer import AUTO_MAP, MDUSpeechTokenizer

IGNORE_INDEX = -100
logger = logging.get_logger(__name__)
AUDIO_TOKEN = "<|audio|>"
CHAT_TEMPLATE_NAME = "speech_chat_template.jinja"  # not chat_template.jinja: that one is the text tokenizer's
# The prompt of a checkpoint without a template of its own: audio parts become the audio token, text parts (an
# instruction) follow each with a newline, roles are not written. Audio alone gives exactly the plain ASR prompt.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{- message['content'] + '\\n' -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'audio' -%}{{- audio_token -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] + '\\n' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
)
AUDIO_KEYS = ("audio", "path", "url", "array")  # where apply_chat_template(tokenize=True) finds an audio part's audio


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
        chat_template: str | None = None,
        audio_token: str = AUDIO_TOKEN,
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
        self.audio_token = audio_token
        self._prompt_cache = {}
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE, **kwargs)

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

    # ---------------------------------------------------------------- prompts
    def apply_chat_template(self, conversation, chat_template: str | None = None, add_generation_prompt: bool = False,
                            tokenize: bool = False, **kwargs):
        """Renders messages (one conversation, or a list of them) into prompt text with the checkpoint's chat template;
        each audio part becomes `self.audio_token`. With `tokenize=True`, the audio of the parts (under "audio",
        "path", "url" or "array"; one per conversation) is encoded too and the padded batch is returned (`kwargs`
        go to `__call__`, e.g. `sampling_rate`).

            messages = [{"role": "user", "content": [{"type": "audio", "audio": "clip.wav"},
                                                     {"type": "text", "text": "Transcribe the audio."}]}]
            inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        """
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        texts = self.tokenizer.apply_chat_template(
            conversations, chat_template=chat_template or self.chat_template,
            add_generation_prompt=add_generation_prompt, tokenize=False, audio_token=self.audio_token,
        )
        if not tokenize:
            return texts if batched else texts[0]
        audio = []
        for i, messages in enumerate(conversations):
            contents = [m["content"] for m in messages if not isinstance(m["content"], str)]
            parts = [p for content in contents for p in content if p.get("type") == "audio"]
            found = [next((p[k] for k in AUDIO_KEYS if p.get(k) is not None), None) for p in parts]
            if len(found) != 1 or found[0] is None:
                raise ValueError(f"conversation {i}: tokenize=True needs exactly one audio part with its audio under "
                                 f"one of {AUDIO_KEYS}; got {len(parts)} audio parts")
            audio.append(found[0])
        return self(audio=audio, text=texts, **kwargs)

    def default_prompt(self, instruction: str | None = None) -> str:
        """The chat template rendered with one user message: the audio, then the instruction (when given)."""
        content = [{"type": "audio"}] + ([{"type": "text", "text": instruction}] if instruction is not None else [])
        return self.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def _prompt_parts(self, prompt: str) -> tuple[list[int], list[int]]:
        """(text ids before the audio, text ids after it) of a prompt holding the audio token once."""
        if prompt not in self._prompt_cache:
            if not isinstance(prompt, str):
                raise ValueError(f"a prompt is a string, got {type(prompt).__name__}")
            if prompt.count(self.audio_token) != 1:
                raise ValueError(
                    f"text= is the prompt: it must hold the audio token {self.audio_token!r} once per audio item "
                    f"(found {prompt.count(self.audio_token)} in {prompt[:60]!r}); build one with "
                    "processor.apply_chat_template(...) or pass instruction=... . Transcripts to train on go in "
                    "text_target=... (before this version text= took them)"
                )
            if len(self._prompt_cache) > 256:
                self._prompt_cache.clear()
            before, after = prompt.split(self.audio_token)
            self._prompt_cache[prompt] = (self._text_ids(before), self._text_ids(after))
        return self._prompt_cache[prompt]

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _prompts(self, n: int, text=None, instruction=None) -> list[str] | None:
        """One prompt per item from `text` (prompts) or `instruction`; None for the default prompt."""
        if text is not None and instruction is not None:
            raise ValueError("pass either text= (a prompt holding the audio token) or instruction=, not both")
        given = text if text is not None else instruction
        if given is None:
            return None
        given = [given] * n if isinstance(given, str) else list(given)
        if len(given) != n:
            raise ValueError(f"got {n} audio items but {len(given)} {'texts' if text is not None else 'instructions'}")
        prompts = given if text is not None else [self.default_prompt(x) for x in given]
        for prompt in prompts:
            self._prompt_parts(prompt)  # checks each prompt before any audio is encoded
        return prompts

    def build_inputs(self, speech_ids, texts=None, train_on_speech: bool = False, names=None,
                     prompts=None) -> list[dict]:
        """Unpadded features per item. `texts`: transcripts to train on (adds `labels`); `prompts`: one prompt per item
        holding the audio token (default: the template's prompt without instruction). Raises ValueError naming the
        item when a sequence would exceed `max_length`."""
        if texts is not None:
            texts = [texts] if isinstance(texts, str) else list(texts)
            if len(texts) != len(speech_ids):
                raise ValueError(f"got {len(speech_ids)} audio items but {len(texts)} texts")
        if prompts is not None and len(prompts) != len(speech_ids):
            raise ValueError(f"got {len(speech_ids)} audio items but {len(prompts)} prompts")
        default = self._prompt_parts(self.default_prompt()) if prompts is None else None
        eos = self.tokenizer.eos_token_id
        feats = []
        for i, units in enumerate(speech_ids):
            before, after = default or self._prompt_parts(prompts[i])
            ids = [*before, self.speech_start_token_id, *units, self.speech_end_token_id, *after]
            feat = {}
            if texts is not None:
                if not isinstance(texts[i], str):
                    raise ValueError(f"text item {i}: expected a string, got {type(texts[i]).__name__}")
                transcript = self.tokenizer(texts[i], add_special_tokens=False)["input_ids"] + [eos]
                if train_on_speech:
                    speech_labels = [IGNORE_INDEX] * (len(before) + 1) + list(units) + [IGNORE_INDEX] * (len(after) + 1)
                else:
                    speech_labels = [IGNORE_INDEX] * len(ids)
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
        instruction=None,
        text_target=None,
        sampling_rate=None,
        padding_side: str | None = None,
        return_tensors: str | None = "pt",
        train_on_speech: bool = False,
        int_scale: float | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Audio (one item or a list) -> padded batch.

        text: the prompt(s), holding `self.audio_token` where the audio goes (`apply_chat_template`'s output); one
            string for every item or one per item. instruction: instead of `text`, an instruction the chat template
            places after the audio. Neither: the template's default prompt (the plain ASR prompt).
        text_target: transcript(s) to train on; adds `labels` (-100 except on the transcript and its eos).
        Right padding with `text_target` (training), left padding without (generation), unless `padding_side` says
        otherwise."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if audio is None:
            raise ValueError("MDUSpeechProcessor needs audio")
        items = as_batch(audio)
        prompts = self._prompts(len(items), text, instruction)  # prompt errors before the audio is encoded
        ids = self.encode_speech(items, sampling_rate=sampling_rate, int_scale=int_scale)
        names = [describe_item(i, x) for i, x in enumerate(items)]
        feats = self.build_inputs(ids, texts=text_target, train_on_speech=train_on_speech, names=names, prompts=prompts)
        return self.pad(feats, padding_side or ("right" if text_target is not None else "left"), return_tensors)

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

    # ---------------------------------------------------------------- transcription
    new_tokens_per_unit = 1  # the new-token budget of a prompt: one text token per speech unit, plus extra_new_tokens
    extra_new_tokens = 16  # (phonetic units are phonemes and most text tokens span several; 50 Hz units are far more)

    @torch.inference_mode()
    def transcribe(self, model, audio, sampling_rate=None, batch_size: int = 8, max_new_tokens: int | None = None,
                   chunk_length_s: float | None = None, stride_length_s=None, **generate_kwargs) -> list[str]:
        """Greedy ASR: audio (one item or a list) -> transcripts, in input order.

        chunk_length_s: transcribe long audio in chunks of this many seconds that overlap by `stride_length_s` on each
            side (seconds, or (left, right); default chunk_length_s / 6), cut as the transformers ASR pipeline cuts
            them; an item's chunk transcripts are joined where they overlap (`merge_overlapping`). Without it, an item
            too long for the model context raises a ValueError naming it.
        max_new_tokens: per prompt (an item, or a chunk); by default its number of speech units + 16. A transcript
            that reaches its limit before eos is named in a warning. The pipeline runs the same code
            (`generate_chunks`).
        """
        items = as_batch(audio)
        if not items:
            return []
        units, names = self.speech_chunks(items, sampling_rate, chunk_length_s, stride_length_s)
        tokens = self.generate_chunks(model, units, names, batch_size, max_new_tokens, **generate_kwargs)
        return self.batch_decode(tokens)

    def transcribe_units(self, model, speech_ids, batch_size: int = 8, max_new_tokens: int | None = None, names=None,
                         **generate_kwargs) -> list[str]:
        """Greedy ASR from speech units already in model ids (`encode_speech`'s output) -> transcripts, in order."""
        names = names or [f"audio item {i}" for i in range(len(speech_ids))]
        chunks = [[list(units)] for units in speech_ids]
        names = [[name] for name in names]
        tokens = self.generate_chunks(model, chunks, names, batch_size, max_new_tokens, **generate_kwargs)
        return self.batch_decode(tokens)

    def speech_chunks(self, audio, sampling_rate=None, chunk_length_s: float | None = None, stride_length_s=None,
                      names=None) -> tuple[list[list[list[int]]], list[list[str]]]:
        """Audio (one item or a list) -> per item, the unit ids (model vocabulary) of its chunks, and a name for each
        chunk (for messages). Without `chunk_length_s` an item is one chunk; with it, chunks as `chunk_spans` cuts
        them, each encoded on its own."""
        items = as_batch(audio)
        names = names or [describe_item(i, x) for i, x in enumerate(items)]
        if chunk_length_s is None:
            if stride_length_s is not None:
                raise ValueError("stride_length_s (the overlap of consecutive chunks) needs chunk_length_s")
            return [[ids] for ids in self.encode_speech(items, sampling_rate=sampling_rate)], [[name] for name in names]
        rate = self._speech_rate()
        sizes = self.chunk_sizes(chunk_length_s, stride_length_s)
        waves = self.feature_extractor.load(items, sampling_rate)
        spans = [chunk_spans(len(wave), *sizes) for wave in waves]
        pieces = [wave[start:end] for wave, item_spans in zip(waves, spans) for start, end in item_spans]
        units = iter(self.encode_speech(pieces, sampling_rate=rate))
        chunk_units = [[next(units) for _ in item_spans] for item_spans in spans]
        chunk_names = [
            [name] if len(item_spans) == 1 else
            [f"{name}, chunk {j + 1}/{len(item_spans)} ({a / rate:.1f}-{b / rate:.1f} s)"
             for j, (a, b) in enumerate(item_spans)]
            for name, item_spans in zip(names, spans)
        ]
        return chunk_units, chunk_names

    def chunk_sizes(self, chunk_length_s: float, stride_length_s=None) -> tuple[int, int, int]:
        """(chunk, left stride, right stride) in samples at the speech tokenizer's rate, rounded to whole unit frames
        so that the frames of overlapping chunks line up. The stride defaults to chunk_length_s / 6 on each side, as
        in the transformers ASR pipeline."""
        if stride_length_s is None:
            stride_length_s = chunk_length_s / 6
        if isinstance(stride_length_s, (int, float)):
            stride_length_s = (stride_length_s, stride_length_s)
        if len(stride_length_s) != 2 or chunk_length_s <= 0 or min(stride_length_s) < 0:
            raise ValueError(f"chunk_length_s must be > 0 and stride_length_s one or two numbers >= 0 (seconds); got "
                             f"chunk_length_s={chunk_length_s}, stride_length_s={stride_length_s}")
        rate, frame = self._speech_rate(), self._samples_per_frame()
        chunk, left, right = (int(round(s * rate / frame)) * frame for s in (chunk_length_s, *stride_length_s))
        if chunk - left - right < frame:
            raise ValueError(f"chunk_length_s={chunk_length_s} must be longer than its two strides "
                             f"{tuple(stride_length_s)} (seconds): consecutive chunks would not advance")
        return chunk, left, right

    def _speech_rate(self) -> int:
        """The sampling rate the speech tokenizer reads audio at (the codec's own for the codec backend)."""
        tok = self.feature_extractor
        return int(tok.encoder.config.sampling_rate) if tok.backend == "codec" else int(tok.sampling_rate)

    def _samples_per_frame(self) -> int:
        tok = self.feature_extractor
        return max(self._speech_rate() // tok.frame_rate, 1) if tok.backend in ("mel", "phonetic") else 1

    @torch.inference_mode()
    def generate_chunks(self, model, chunk_units, chunk_names, batch_size: int = 8, max_new_tokens: int | None = None,
                        **generate_kwargs) -> list[list[int]]:
        """Per item, its transcript (text ids) from the unit ids of its chunks (`speech_chunks`): every chunk is one
        prompt, generated in left-padded batches of `batch_size` prompts, and an item's chunk transcripts are joined
        where they overlap (`merge_overlapping`). A prompt generates at most its `new_token_budget` (the same alone
        or in any batch); transcripts that reach it before eos are named in one warning."""
        if generate_kwargs.get("num_return_sequences", 1) != 1:
            raise ValueError("transcription gives one transcript per item: num_return_sequences must be 1")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        units = [u for item in chunk_units for u in item]
        names = [name for item in chunk_names for name in item]
        overhead = self._prompt_overhead()
        self._check_room(units, names, overhead)
        feats = self.build_inputs(units, names=names)
        device = next(model.parameters()).device
        transcripts, cut = [], []
        for start in range(0, len(feats), batch_size):
            rows = range(start, min(start + batch_size, len(feats)))
            limits = [self.new_token_budget(len(units[i]), len(feats[i]["input_ids"]), max_new_tokens) for i in rows]
            batch = self.pad([feats[i] for i in rows], padding_side="left")
            kwargs = self._decoding_kwargs(model, max(budget for budget, _ in limits), **generate_kwargs)
            inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask")}
            out = model.generate(**inputs, **kwargs)
            new = getattr(out, "sequences", out)[:, batch["input_ids"].shape[1] :].tolist()
            for i, row, (budget, limit) in zip(rows, new, limits):
                ids, ended = self._until_eos(row[:budget])
                transcripts.append(ids)
                if not ended and len(row) >= budget:
                    cut.append(f"{names[i]} at {budget} new tokens ({limit})")
        self._warn_cut(cut)
        merged, first = [], 0
        for item in chunk_units:
            merged.append(merge_overlapping(transcripts[first : first + len(item)]))
            first += len(item)
        return merged

    def new_token_budget(self, num_units: int, prompt_len: int, max_new_tokens: int | None = None) -> tuple[int, str]:
        """(the most new tokens a prompt of `prompt_len` tokens holding `num_units` speech units may generate, what
        sets that limit). `max_new_tokens` when given, else one token per unit + `extra_new_tokens`; never past the
        model context."""
        if max_new_tokens is not None:
            if max_new_tokens < 1:
                raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
            budget, limit = int(max_new_tokens), f"max_new_tokens={max_new_tokens}"
        else:
            budget = num_units * self.new_tokens_per_unit + self.extra_new_tokens
            limit = f"the budget for {num_units} speech units; pass a larger max_new_tokens"
        if self.max_length is not None and prompt_len + budget > self.max_length:
            budget = self.max_length - prompt_len
            limit = f"the model context max_length={self.max_length}; use shorter chunks"
        return max(budget, 1), limit

    def generation_kwargs(self, model, prompt_len: int, max_new_tokens: int | None = None, **overrides) -> dict:
        """`generate` kwargs for a default prompt of `prompt_len` tokens: greedy until eos, text tokens only, at most
        its `new_token_budget` new tokens (which follows the number of speech units and stays in the context)."""
        num_units = max(prompt_len - self._prompt_overhead(), 0)
        budget, _ = self.new_token_budget(num_units, prompt_len, max_new_tokens)
        return self._decoding_kwargs(model, budget, **overrides)

    def _decoding_kwargs(self, model, max_new_tokens: int, **overrides) -> dict:
        kwargs = dict(
            max_new_tokens=max_new_tokens,
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

    def _prompt_overhead(self) -> int:
        """Tokens of the default prompt around the speech units."""
        return len(self.build_inputs([[]])[0]["input_ids"])

    def _check_room(self, speech_ids, names, overhead: int) -> None:
        """Every prompt must leave room in the model context for a transcript."""
        if self.max_length is None:
            return
        for units, name in zip(speech_ids, names):
            if len(units) + overhead >= self.max_length:
                raise ValueError(
                    f"{name}: {len(units) + overhead} prompt tokens ({len(units)} speech units) leave no room for a "
                    f"transcript in the model context max_length={self.max_length}; transcribe long audio in "
                    f"overlapping chunks with chunk_length_s=... (seconds; a chunk should hold well under "
                    f"{(self.max_length - overhead) // 2} speech units)"
                )

    def _until_eos(self, ids: list[int]) -> tuple[list[int], bool]:
        """(the ids before eos, whether there was an eos)."""
        eos = self.tokenizer.eos_token_id
        return (ids[: ids.index(eos)], True) if eos in ids else (ids, False)

    @staticmethod
    def _warn_cut(cut: list[str]) -> None:
        if cut:
            shown = "; ".join(cut[:10]) + (f"; and {len(cut) - 10} more" if len(cut) > 10 else "")
            logger.warning(f"{len(cut)} transcript(s) reached their new-token limit before eos and are cut: {shown}")

    @classmethod
    def transcribe_file(cls, checkpoint, audio, sampling_rate=None, **kwargs) -> list[str]:
        """One call: loads model + processor from `checkpoint` and transcribes `audio` (path(s) or arrays)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
        return cls.from_pretrained(checkpoint).transcribe(model, audio, sampling_rate=sampling_rate, **kwargs)

    # ---------------------------------------------------------------- save / load
    def to_dict(self) -> dict:
        """processor_config.json: the processor's own settings only. The speech tokenizer's live in
        preprocessor_config.json, the text tokenizer's in its files, the chat template in speech_chat_template.jinja
        (one place each: a copy here would hide an edit of the file)."""
        out = super().to_dict()
        for key in ("feature_extractor", "tokenizer", "chat_template", "audio_tokenizer"):
            out.pop(key, None)
        out["auto_map"] = {**AUTO_MAP, "AutoProcessor": "processing_mdu.MDUSpeechProcessor"}
        return out

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """processor_config.json (+ auto_map), tokenizer files, preprocessor_config.json, the codebook, the chat
        template and the flat remote-code files, so `AutoProcessor.from_pretrained(dir, trust_remote_code=True)` (and,
        next to a model, `pipeline()`) works anywhere."""
        auto_class, type(self)._auto_class = type(self)._auto_class, None  # we write the code files ourselves
        chat_template, self.chat_template = self.chat_template, None  # not the text tokenizer's chat_template.jinja
        try:
            files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            type(self)._auto_class = auto_class
            self.chat_template = chat_template
        files = list(files or [])
        files += self.feature_extractor.save_pretrained(save_directory)
        template = os.path.join(save_directory, CHAT_TEMPLATE_NAME)
        with open(template, "w", encoding="utf-8") as f:
            f.write(self.chat_template)
        files.append(template)
        export_remote_code(save_directory)
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads the speech tokenizer (with its codebook), the text tokenizer, the processor settings and the chat
        template (`DEFAULT_CHAT_TEMPLATE` when the checkpoint has none: checkpoints saved before templates keep their
        prompt). Keyword arguments other than Hub ones override settings (e.g. `chat_template=`, `max_length=`)."""
        # the text tokenizer's folder is this checkpoint, whose code (this class) already runs: its config.json
        # has an auto_map, so AutoTokenizer must be allowed to read it instead of prompting
        trust_remote_code = kwargs.pop("trust_remote_code", None) is not False
        kwargs.pop("_from_auto", None)
        hub = {k: v for k, v in kwargs.items() if k in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")}
        overrides = {k: v for k, v in kwargs.items() if k not in hub}
        processor_dict, _ = cls.get_processor_dict(pretrained_model_name_or_path, **hub)
        feature_extractor = MDUSpeechTokenizer.from_pretrained(pretrained_model_name_or_path, **hub)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, trust_remote_code=trust_remote_code, **hub)
        keys = ("speech_token_start", "speech_start_token_id", "speech_end_token_id", "max_length", "speech_vocab_size",
                "audio_token")
        settings = {k: processor_dict[k] for k in keys if k in processor_dict}
        template = cached_file(pretrained_model_name_or_path, CHAT_TEMPLATE_NAME,
                               _raise_exceptions_for_missing_entries=False, **hub)
        if template is not None:
            with open(template, encoding="utf-8") as f:
                settings["chat_template"] = f.read()
        settings.update(overrides)
        return cls(feature_extractor, tokenizer, **settings)


# ---------------------------------------------------------------- long audio: chunks and their merge
def chunk_spans(num_samples: int, chunk_len: int, stride_left: int, stride_right: int) -> list[tuple[int, int]]:
    """(start, end) sample spans of overlapping chunks, cut as the transformers ASR pipeline's `chunk_iter` cuts
    audio: chunks of `chunk_len` samples, each starting `chunk_len - stride_left - stride_right` after the previous
    one (consecutive chunks share stride_left + stride_right samples); the last chunk ends at the end of the audio
    and is kept only when it holds more than its left stride (audio no earlier chunk had)."""
    step = chunk_len - stride_left - stride_right
    spans = []
    for start in range(0, num_samples, step):
        end = min(start + chunk_len, num_samples)
        if start == 0 or end - start > stride_left:
            spans.append((start, end))
        if start + chunk_len >= num_samples:
            break
    return spans


def merge_overlapping(sequences: list[list[int]]) -> list[int]:
    """Joins the transcripts (token ids) of consecutive overlapping chunks into one.

    Adapted from transformers' Whisper long-form merge (`_find_longest_common_sequence` in tokenization_whisper.py,
    without its timestamps): for each next sequence, every alignment of its start against the end of the text so
    far is scored by matching tokens / alignment length (+ a small bonus for longer alignments); at the best one
    (more than one matching token), the left text is kept up to the middle of the overlap and the next sequence from
    there on, since a chunk's transcript is least reliable at its edges. Without such an alignment the sequences are
    concatenated."""
    if not sequences:
        return []
    merged, left = [], list(sequences[0])
    for right in sequences[1:]:
        right = list(right)
        best, cut_left, cut_right = 0.0, len(left), 0
        for i in range(1, len(left) + len(right)):
            left_start, left_stop = max(0, len(left) - i), min(len(left), len(left) + len(right) - i)
            right_start, right_stop = max(0, i - len(left)), min(len(right), i)
            matches = sum(a == b for a, b in zip(left[left_start:left_stop], right[right_start:right_stop]))
            score = matches / i + i / 10000.0
            if matches > 1 and score > best:
                best = score
                cut_left, cut_right = (left_start + left_stop) // 2, (right_start + right_stop) // 2
        merged.extend(left[:cut_left])
        left = right[cut_right:]
    return merged + left
