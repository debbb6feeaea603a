"""MDUSpeechTokenizer: audio -> discrete speech units (indices 0..K-1): k-means units, phonemes, or codec codes.

Backends (all but `phonetic` and `codec` quantise frame features with a k-means codebook):
- `mel` (default, offline): log-mel frames from a batched STFT. With `stack_frames` = s > 1 the STFT runs at
  s * `frame_rate` Hz and s consecutive frames are concatenated into one `frame_rate` Hz feature (no audio between
  windows is skipped at low unit rates); with `n_mfcc` = c > 0 each frame keeps only its first c cepstral
  coefficients (orthonormal DCT of the log-mel: the spectral envelope, less of the voice's pitch harmonics).
- `phonetic`: a small CTC phoneme recognizer (phone_recognizer.py) over utterance-normalised log-mel frames at
  `frame_rate` Hz; its greedy CTC output (phoneme ids, repeats merged, blanks dropped) are the units, so
  `codebook_size` is the number of phonemes (`phonemes`, the symbol inventory). Trained on transcripts turned into
  phonemes by espeak-ng with fit_phonetic_tokenizer.py: units that depend far less on the voice than k-means units.
  Its weights live in `speech_phone_recognizer.safetensors`.
- `ssl`: hidden states of layer `encoder_layer` of any transformers audio encoder that takes raw `input_values`
  (HuBERT, WavLM, wav2vec2, Data2VecAudio), loaded with `AutoModel` from `encoder_name_or_path`; the frame rate is
  the encoder's (50 Hz for the usual 320x down-sampling). `save_pretrained` stores the encoder in `speech_encoder/`.
- `codec`: acoustic tokens of a transformers neural codec (EnCodec, Mimi via `AutoModel`) from
  `encoder_name_or_path`; no k-means: unit = code of the first codebook, or with `codec_num_quantizers` = q > 1 the
  first q residual codes of each frame interleaved (code j of quantizer i -> i * K + j), so
  `codebook_size` must be q * K. Audio is resampled to the codec's rate; the frame rate is the codec's (75 Hz for
  EnCodec 24 kHz, 12.5 Hz for Mimi).
Features are normalised per utterance (`normalize="utterance"`, mean/var per dimension), with global statistics
stored with the codebook (`"global"`), or not at all (`"none"`). `collapse_repeats=True` merges runs of one unit.

The codebook (and global statistics) live in `speech_codebook.safetensors` next to `preprocessor_config.json`.
Fit one with `fit_speech_tokenizer.py` (top level, sklearn MiniBatchKMeans). Everything is deterministic.

    tok = MDUSpeechTokenizer.from_pretrained(ckpt)
    units = tok(["a.wav", np_array], sampling_rate=16000)   # list of int64 arrays
"""

import contextvars
import copy
import hashlib
import json
import os
import shutil

import numpy as np
import torch
import torchaudio
from safetensors.torch import load_file, save_file
from transformers import SequenceFeatureExtractor
from transformers.utils import FEATURE_EXTRACTOR_NAME, cached_file

from .audio_io import load_audio_batch
from .hf_compat import pretrained_source_from_caller
from .phone_recognizer import PhoneRecognizer

CODEBOOK_NAME = "speech_codebook.safetensors"
ENCODER_SUBFOLDER = "speech_encoder"
AUTO_MAP = {"AutoFeatureExtractor": "speech_tokenizer.MDUSpeechTokenizer"}
RECOGNIZER_NAME = "speech_phone_recognizer.safetensors"
CODE_FILES = ("speech_tokenizer.py", "audio_io.py", "phone_recognizer.py", "hf_compat.py")  # what AutoFeatureExtractor(trust_remote_code=True) needs
BACKENDS = ("mel", "phonetic", "ssl", "codec")
NORMALIZE = ("utterance", "global", "none")
_IN_FROM_PRETRAINED = contextvars.ContextVar("mdu_speech_tokenizer_from_pretrained", default=False)
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def _read_settings(pretrained_model_name_or_path, hub: dict) -> dict | None:
    """The dict in preprocessor_config.json of a folder or Hub repo; None when there is no such file."""
    hub = {k: v for k, v in hub.items() if k in _HUB_KWARGS and v is not None}
    path = cached_file(pretrained_model_name_or_path, FEATURE_EXTRACTOR_NAME, _raise_exceptions_for_missing_entries=False,
                       **hub)
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class MDUSpeechTokenizer(SequenceFeatureExtractor):
    model_input_names = ["speech_units"]

    def __init__(
        self,
        backend: str = "mel",
        codebook_size: int = 256,
        sampling_rate: int = 16000,
        frame_rate: int = 50,
        n_mels: int = 80,
        n_fft: int = 512,
        win_length: int = 400,
        f_min: float = 20.0,
        f_max: float = 7600.0,
        n_mfcc: int = 0,
        stack_frames: int = 1,
        normalize: str = "utterance",
        collapse_repeats: bool = False,
        encoder_name_or_path: str | None = None,
        encoder_subfolder: str | None = None,
        encoder_layer: int = 6,
        codec_num_quantizers: int = 1,
        phonemes: list[str] | None = None,
        recognizer_dim: int = 256,
        recognizer_layers: int = 6,
        recognizer_kernel_size: int = 5,
        batch_size: int = 32,
        padding_value: float = 0.0,
        **kwargs,
    ):
        kwargs.pop("auto_map", None)
        kwargs.pop("feature_extractor_type", None)
        kwargs.setdefault("feature_size", 1)
        super().__init__(sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
        if stack_frames < 1:
            raise ValueError(f"stack_frames must be >= 1, got {stack_frames}")
        if not 0 <= n_mfcc <= n_mels:
            raise ValueError(f"n_mfcc must be in [0, n_mels={n_mels}], got {n_mfcc}")
        if backend in ("mel", "phonetic") and sampling_rate % (frame_rate * stack_frames):
            raise ValueError(f"frame_rate * stack_frames = {frame_rate * stack_frames} must divide sampling_rate "
                             f"{sampling_rate} (integer hop)")
        if backend == "phonetic" and normalize == "global":
            raise ValueError("backend 'phonetic' normalises per utterance or not at all (normalize='utterance'/'none')")
        if phonemes is not None and (backend != "phonetic" or len(phonemes) != codebook_size or len(set(phonemes)) != len(phonemes)):
            raise ValueError(f"phonemes ({len(phonemes)} symbols) go with backend='phonetic', are distinct, and number "
                             f"codebook_size={codebook_size}; got backend {backend!r}")
        if backend in ("ssl", "codec") and not (encoder_name_or_path or encoder_subfolder):
            raise ValueError(f"backend {backend!r} needs encoder_name_or_path (a transformers audio encoder / codec)")
        self.backend, self.codebook_size, self.frame_rate = backend, int(codebook_size), int(frame_rate)
        self.n_mels, self.n_fft, self.win_length, self.f_min, self.f_max = n_mels, n_fft, win_length, f_min, f_max
        self.n_mfcc, self.stack_frames = int(n_mfcc), int(stack_frames)
        self.normalize, self.collapse_repeats, self.batch_size = normalize, bool(collapse_repeats), int(batch_size)
        self.encoder_name_or_path, self.encoder_subfolder, self.encoder_layer = encoder_name_or_path, encoder_subfolder, encoder_layer
        self.codec_num_quantizers = int(codec_num_quantizers)
        self.phonemes = list(phonemes) if phonemes is not None else None
        self.recognizer_dim, self.recognizer_layers = int(recognizer_dim), int(recognizer_layers)
        self.recognizer_kernel_size = int(recognizer_kernel_size)
        self._recognizer = None  # PhoneRecognizer (backend "phonetic")
        self._codebook = None  # (K, D) float32
        self._mean = self._std = None  # (D,) for normalize="global"
        self._encoder = None
        self._source = None  # (path, hub kwargs) this tokenizer was loaded from, to find its encoder subfolder

    # ---------------------------------------------------------------- state
    @property
    def is_fitted(self) -> bool:
        if self.backend == "phonetic":
            return self._recognizer is not None
        return self.backend == "codec" or self._codebook is not None

    def new_recognizer(self, dropout: float = 0.0) -> PhoneRecognizer:
        """A PhoneRecognizer of this tokenizer's shape (untrained); needs `phonemes`."""
        if self.phonemes is None:
            raise ValueError("backend 'phonetic' needs its phoneme inventory (phonemes=[...]) to build the recognizer")
        num_feats = (self.n_mfcc or self.n_mels) * self.stack_frames
        return PhoneRecognizer(num_feats, len(self.phonemes), self.recognizer_dim, self.recognizer_layers,
                               self.recognizer_kernel_size, dropout)

    def set_recognizer(self, model: PhoneRecognizer) -> None:
        """Installs a trained PhoneRecognizer (backend "phonetic"), in eval mode, on the CPU."""
        with torch.device("meta"):  # shapes only: no memory, and no draw from the global RNG (a fit's dropout)
            expected = self.new_recognizer()
        missing = set(expected.state_dict()) ^ set(model.state_dict())
        if missing or expected.head.out_features != model.head.out_features:
            raise ValueError(f"recognizer does not match this tokenizer's shape (differs in {sorted(missing)[:4]} or "
                             f"its {model.head.out_features} outputs vs 1 + {len(self.phonemes)} phonemes)")
        self._recognizer = model.float().cpu().eval()

    def state_digest(self) -> str:
        """SHA-256 of the fitted state (codebook, global statistics, recognizer weights): with the config, what
        decides the units. Caches of computed units key on it (two fits with one config give other units)."""
        h = hashlib.sha256()
        tensors = {"codebook": self._codebook, "mean": self._mean, "std": self._std}
        if self._recognizer is not None:
            tensors.update({f"recognizer.{k}": v for k, v in self._recognizer.state_dict().items()})
        for name, t in sorted(tensors.items()):
            if t is not None:
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def units_to_phonemes(self, units) -> str:
        """Phonetic units -> their phoneme symbols, joined (for reading)."""
        if self.phonemes is None:
            raise ValueError(f"backend {self.backend!r} units are not phonemes")
        return "".join(self.phonemes[int(u)] for u in units)

    def set_codebook(self, centroids, mean=None, std=None) -> None:
        """Installs k-means centroids (K, D) and, for normalize="global", the feature mean/std (D,)."""
        c = torch.as_tensor(np.asarray(centroids), dtype=torch.float32).contiguous()
        if c.dim() != 2 or c.shape[0] != self.codebook_size:
            raise ValueError(f"codebook must have shape ({self.codebook_size}, D), got {tuple(c.shape)}")
        if self.normalize == "global":
            if mean is None or std is None:
                raise ValueError("normalize='global' needs mean and std with the codebook")
            self._mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
            self._std = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        self._codebook = c

    def to_dict(self) -> dict:
        out = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if not k.startswith("_")}
        out["feature_extractor_type"] = type(self).__name__
        out["auto_map"] = dict(AUTO_MAP)
        return out

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        os.makedirs(save_directory, exist_ok=True)
        if self.backend in ("ssl", "codec"):  # ship the encoder / codec inside the checkpoint
            self.encoder.save_pretrained(os.path.join(save_directory, ENCODER_SUBFOLDER))
            self.encoder_name_or_path, self.encoder_subfolder = None, ENCODER_SUBFOLDER
            self._source = (os.fspath(save_directory), {})
        files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        here = os.path.dirname(os.path.abspath(__file__))
        for name in CODE_FILES:  # flat remote code, so the folder loads with AutoFeatureExtractor anywhere
            src, dst = os.path.join(here, name), os.path.join(save_directory, name)
            if os.path.abspath(src) != os.path.abspath(dst):
                shutil.copyfile(src, dst)
        if self._recognizer is not None:
            path = os.path.join(save_directory, RECOGNIZER_NAME)
            save_file({k: v.contiguous() for k, v in self._recognizer.state_dict().items()}, path,
                      metadata={"backend": self.backend, "num_phonemes": str(len(self.phonemes))})
            files.append(path)
        if self._codebook is not None:
            tensors = {"codebook": self._codebook}
            if self._mean is not None:
                tensors.update(mean=self._mean, std=self._std)
            path = os.path.join(save_directory, CODEBOOK_NAME)
            save_file(tensors, path, metadata={"backend": self.backend, "codebook_size": str(self.codebook_size)})
            files.append(path)
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        hub = {k: kwargs[k] for k in _HUB_KWARGS if kwargs.get(k) is not None}
        token = _IN_FROM_PRETRAINED.set(True)
        try:
            tok = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        finally:
            _IN_FROM_PRETRAINED.reset(token)
        tok._load_weights(pretrained_model_name_or_path, hub)
        return tok

    @classmethod
    def get_feature_extractor_dict(cls, pretrained_model_name_or_path, **kwargs):
        """The settings from preprocessor_config.json, their one source: transformers prefers a copy nested in
        processor_config.json (which older checkpoints of ours hold), so an edited preprocessor_config.json would be
        ignored. The nested copy is read only when there is no preprocessor_config.json."""
        hub = {k: kwargs[k] for k in _HUB_KWARGS if kwargs.get(k) is not None}
        feature_extractor_dict, kwargs = super().get_feature_extractor_dict(pretrained_model_name_or_path, **kwargs)
        if not os.path.isfile(os.fspath(pretrained_model_name_or_path)):
            own = _read_settings(pretrained_model_name_or_path, hub)
            feature_extractor_dict = own if own is not None else feature_extractor_dict
        return feature_extractor_dict, kwargs

    @classmethod
    def from_dict(cls, feature_extractor_dict, **kwargs):
        source = None if _IN_FROM_PRETRAINED.get() else pretrained_source_from_caller()
        if source is not None:  # AutoFeatureExtractor of transformers >= 5.25 (see hf_compat.py)
            own = _read_settings(*source)  # it read the dict preferring a nested copy: see get_feature_extractor_dict
            feature_extractor_dict = own if own is not None else feature_extractor_dict
        out = super().from_dict(feature_extractor_dict, **kwargs)
        if source is not None:
            (out[0] if isinstance(out, tuple) else out)._load_weights(*source)
        return out

    def _load_weights(self, pretrained_model_name_or_path, hub: dict) -> None:
        """Codebook / recognizer weights from the files next to preprocessor_config.json (when there are any)."""
        hub = {k: v for k, v in hub.items() if k in _HUB_KWARGS and v is not None}
        self._source = (os.fspath(pretrained_model_name_or_path), hub)
        path = cached_file(pretrained_model_name_or_path, CODEBOOK_NAME, _raise_exceptions_for_missing_entries=False, **hub)
        if path is not None:
            t = load_file(path)
            self.set_codebook(t["codebook"], t.get("mean"), t.get("std"))
        if self.backend == "phonetic":
            path = cached_file(pretrained_model_name_or_path, RECOGNIZER_NAME, _raise_exceptions_for_missing_entries=False, **hub)
            if path is not None:
                with torch.device("meta"):  # no random init to overwrite (and no draw from the global RNG)
                    model = self.new_recognizer()
                model.load_state_dict(load_file(path), assign=True)
                self.set_recognizer(model)

    @property
    def encoder(self):
        """The ssl encoder (transformers AutoModel), loaded on first use, in eval mode."""
        if self._encoder is None:
            from transformers import AutoModel

            if self.encoder_subfolder:
                if self._source is None:
                    raise ValueError("ssl encoder lives in a checkpoint subfolder: load this tokenizer with from_pretrained")
                root, hub = self._source
                hub = {**hub, "subfolder": os.path.join(hub.get("subfolder") or "", self.encoder_subfolder)}
                self._encoder = AutoModel.from_pretrained(root, **hub)
            else:
                self._encoder = AutoModel.from_pretrained(self.encoder_name_or_path)
            self._encoder.eval()
        return self._encoder

    @encoder.setter
    def encoder(self, model):
        self._encoder = model.eval()

    # ---------------------------------------------------------------- features
    def _mel_setup(self):
        if getattr(self, "_fbank", None) is None:
            self._window = torch.hann_window(self.win_length)
            self._fbank = torchaudio.functional.melscale_fbanks(
                self.n_fft // 2 + 1, self.f_min, self.f_max, self.n_mels, self.sampling_rate, norm="slaney", mel_scale="slaney"
            )
            if self.n_mfcc:
                self._dct = torchaudio.functional.create_dct(self.n_mfcc, self.n_mels, norm="ortho")

    @torch.inference_mode()
    def _mel_features(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        """Batched log-mel (or MFCC). Each wave is zero-padded by n_fft/2 on both sides on its own (as `center=True`),
        so an utterance gives the same frames alone or in a batch; it has n = 1 + len // hop STFT frames, and
        ceil(n / stack_frames) features (the last group padded by repeating its last frame)."""
        self._mel_setup()
        stack = self.stack_frames
        hop, half = self.sampling_rate // (self.frame_rate * stack), self.n_fft // 2
        lengths = [1 + w.numel() // hop for w in waves]
        longest = max(w.numel() for w in waves) + 2 * half
        batch = torch.zeros(len(waves), max(longest, self.n_fft))
        for i, w in enumerate(waves):
            batch[i, half : half + w.numel()] = w
        spec = torch.stft(batch, self.n_fft, hop, self.win_length, self._window, center=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (B, F, T)
        feats = torch.log(torch.matmul(power.transpose(1, 2), self._fbank) + 1e-6)  # (B, T, n_mels)
        if self.n_mfcc:
            feats = feats @ self._dct  # (B, T, n_mfcc)
        return [self._stack(feats[i, :n], stack) for i, n in enumerate(lengths)]

    @staticmethod
    def _stack(frames: torch.Tensor, stack: int) -> torch.Tensor:
        """(n, D) -> (ceil(n / stack), stack * D): consecutive frames side by side."""
        if stack == 1:
            return frames
        short = -len(frames) % stack
        frames = torch.cat([frames, frames[-1:].expand(short, -1)]) if short else frames
        return frames.reshape(-1, stack * frames.shape[1])

    @torch.inference_mode()
    def _ssl_features(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encoder hidden states, one utterance at a time (no padding, so batch == one-by-one exactly)."""
        model = self.encoder
        device = next(model.parameters()).device
        out = []
        for w in waves:
            x = (w - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-7)  # as Wav2Vec2FeatureExtractor(do_normalize)
            hidden = model(x[None].to(device), output_hidden_states=True).hidden_states
            if not 0 <= self.encoder_layer < len(hidden):
                raise ValueError(f"encoder_layer {self.encoder_layer} out of range: the encoder has {len(hidden) - 1} layers")
            out.append(hidden[self.encoder_layer][0].float().cpu())
        return out

    @torch.inference_mode()
    def _codec_units(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        """Codec codes, one utterance at a time -> (T * q,) unit ids, quantizer i offset by i * K."""
        model, q = self.encoder, self.codec_num_quantizers
        k = model.config.codebook_size
        if self.codebook_size != q * k:
            raise ValueError(f"codec backend: codebook_size must be codec_num_quantizers * {k} = {q * k}, got {self.codebook_size}")
        device = next(model.parameters()).device
        out = []
        for w in waves:
            codes = model.encode(w[None, None].to(device)).audio_codes
            codes = codes[0] if codes.dim() == 4 else codes  # EnCodec: (chunks, B, q, T); Mimi: (B, q, T)
            if codes.shape[1] < q:
                raise ValueError(f"codec gives {codes.shape[1]} quantizers, codec_num_quantizers={q} asked")
            codes = codes[0, :q].cpu() + torch.arange(q)[:, None] * k
            out.append(codes.T.reshape(-1))
        return out

    def _normalise(self, feats: torch.Tensor) -> torch.Tensor:
        if self.normalize == "utterance":
            return (feats - feats.mean(0)) / (feats.std(0, unbiased=False) + 1e-5)
        if self.normalize == "global" and self._mean is not None:
            return (feats - self._mean) / self._std
        return feats

    def load(self, audio, sampling_rate=None, int_scale=None) -> list[torch.Tensor]:
        """Loads and validates a batch at the backend's rate (see audio_io); errors name the item."""
        rate = self.encoder.config.sampling_rate if self.backend == "codec" else self.sampling_rate
        return load_audio_batch(audio, sampling_rate, rate, int_scale)

    def extract_features(self, audio, sampling_rate=None, int_scale=None, normalize: bool = True) -> list[torch.Tensor]:
        """Frame features (T_i, D) per item, normalised as configured (global stats only once fitted)."""
        waves = self.load(audio, sampling_rate, int_scale)
        if self.backend == "codec":
            raise ValueError("the codec backend has no k-means features: its units are the codec's own codes")
        fn = self._ssl_features if self.backend == "ssl" else self._mel_features
        feats = []
        for start in range(0, len(waves), self.batch_size):
            feats.extend(fn(waves[start : start + self.batch_size]))
        return [self._normalise(f) for f in feats] if normalize else feats

    # ---------------------------------------------------------------- units
    @torch.inference_mode()
    def quantize(self, feats: torch.Tensor) -> np.ndarray:
        """Nearest centroid (squared L2) of each frame: argmin ||c||^2 - 2 x.c, chunked matmul."""
        if self._codebook is None:
            raise ValueError("speech tokenizer has no codebook: fit one with fit_speech_tokenizer.py or load a fitted one")
        if feats.shape[-1] != self._codebook.shape[1]:
            raise ValueError(f"feature dim {feats.shape[-1]} does not match codebook dim {self._codebook.shape[1]}")
        c = self._codebook
        c2 = c.square().sum(1)
        units = [torch.argmin(c2 - 2 * feats[i : i + 4096] @ c.T, dim=1) for i in range(0, len(feats), 4096)]
        units = torch.cat(units) if units else torch.zeros(0, dtype=torch.long)
        return self._collapse(units).numpy().astype(np.int64)

    def __call__(self, raw_speech, sampling_rate: int | None = None, int_scale: float | None = None, **kwargs) -> list[np.ndarray]:
        """Audio (one item or a list) -> list of int64 unit arrays. `sampling_rate` is the rate of raw arrays."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if self.backend == "codec":
            units = self._codec_units(self.load(raw_speech, sampling_rate, int_scale))
            return [self._collapse(u).numpy().astype(np.int64) for u in units]
        if self.backend == "phonetic":
            if self._recognizer is None:
                raise ValueError("phonetic speech tokenizer has no trained recognizer: fit one with "
                                 "fit_phonetic_tokenizer.py or load a fitted one")
            return self._phonetic_units(self.extract_features(raw_speech, sampling_rate, int_scale))
        if self._codebook is None:
            raise ValueError("speech tokenizer has no codebook: fit one with fit_speech_tokenizer.py or load a fitted one")
        return [self.quantize(f) for f in self.extract_features(raw_speech, sampling_rate, int_scale)]

    @torch.inference_mode()
    def _phonetic_units(self, feats: list[torch.Tensor]) -> list[np.ndarray]:
        out = []
        for start in range(0, len(feats), self.batch_size):
            chunk = feats[start : start + self.batch_size]
            lengths = torch.tensor([len(f) for f in chunk])
            batch = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
            logits, out_lengths = self._recognizer(batch, lengths)
            out.extend(u.numpy().astype(np.int64) for u in PhoneRecognizer.greedy_decode(logits, out_lengths))
        return out

    def _collapse(self, units: torch.Tensor) -> torch.Tensor:
        return torch.unique_consecutive(units) if self.collapse_repeats else units
