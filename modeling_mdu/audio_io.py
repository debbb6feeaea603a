"""Audio loading and validation: anything a user may pass -> mono float32 torch tensor at the target rate.

Accepted items: file paths (wav/flac/mp3/... via torchcodec + ffmpeg), the bytes of such a file, numpy / torch
arrays (1-D, or 2-D with a channel axis of at most 8 channels) together with `sampling_rate`, `datasets` Audio dicts
({"array", "sampling_rate"}, {"bytes"} or {"path"}), the transformers ASR pipeline's {"raw", "sampling_rate"}, and
decoded `torchcodec` AudioDecoder objects (what `datasets` >= 4 returns). Stereo is averaged to mono; any rate is
resampled with `torchaudio.functional.resample`.

Every problem raises a `ValueError` that names the item (its index, and its file when there is one): empty audio,
NaN/inf samples, integer samples without a stated scale, unreadable/corrupt/missing files, raw arrays without a
sampling rate. Nothing is clipped, truncated or silently converted.
"""

import os
from functools import lru_cache

import numpy as np
import torch
import torchaudio

MAX_CHANNELS = 8


def describe_item(index: int, item) -> str:
    """'audio item 3' or 'audio item 3 (file /x/y.wav)' for error messages."""
    path = item if isinstance(item, (str, os.PathLike)) else item.get("path") if isinstance(item, dict) else None
    return f"audio item {index}" + (f" (file {os.fspath(path)})" if path else "")


def _dict_array(item: dict, name: str):
    """The samples of a {"array"|"raw", "sampling_rate"} dict (datasets / transformers ASR pipeline), or None."""
    if "stride" in item:
        raise ValueError(f"{name}: 'stride' in an audio dict is for CTC models; pass chunk_length_s / stride_length_s "
                         f"to cut long audio into overlapping chunks")
    array = item.get("array")
    return item.get("raw") if array is None else array


def _decode(source, name: str) -> tuple[np.ndarray, int]:
    """Decodes a path or bytes with torchcodec (ffmpeg). Returns (channels, samples) float32 and the rate."""
    try:
        from torchcodec.decoders import AudioDecoder

        samples = AudioDecoder(source).get_all_samples()
    except Exception as err:  # torchcodec raises RuntimeError/ValueError for corrupt or unsupported data
        raise ValueError(f"{name}: cannot decode audio ({type(err).__name__}: {str(err).strip()[:200]})") from err
    return samples.data.numpy(), int(samples.sample_rate)


def _to_array(array, name: str, int_scale: float | None) -> np.ndarray:
    """Checks are done in numpy: small single-threaded ops, no wake-ups of torch's thread pool per item."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    elif isinstance(array, (list, tuple)):
        array = np.asarray(array)
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name}: unsupported audio type {type(array).__name__}")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name}: audio dtype {array.dtype} is not real-valued audio")
    if np.issubdtype(array.dtype, np.integer):
        if int_scale is None:
            raise ValueError(
                f"{name}: integer audio ({array.dtype}) without a stated scale; pass float samples in [-1, 1] "
                f"or int_scale (e.g. int_scale=32768 for int16)"
            )
        return (array.astype(np.float64) / float(int_scale)).astype(np.float32)
    return array.astype(np.float32, copy=False)


def _to_mono(wave: np.ndarray, name: str, channels_first: bool | None = None) -> np.ndarray:
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise ValueError(f"{name}: audio must be 1-D or 2-D (channels x samples), got shape {tuple(wave.shape)}")
    if channels_first is None:  # the short axis (at most MAX_CHANNELS long) is the channel axis
        rows, cols = wave.shape
        if rows <= MAX_CHANNELS and rows < cols:
            channels_first = True
        elif cols <= MAX_CHANNELS and cols < rows:
            channels_first = False
        else:
            raise ValueError(f"{name}: ambiguous 2-D audio of shape {tuple(wave.shape)}; pass (channels, samples) "
                             f"with <= {MAX_CHANNELS} channels")
    if wave.shape[0 if channels_first else 1] == 1:
        return wave[0] if channels_first else wave[:, 0]
    return wave.mean(0, dtype=np.float32) if channels_first else wave.mean(1, dtype=np.float32)


@lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig, new)


def resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    if orig == new:
        return wave
    return _resampler(int(orig), int(new))(wave)


def load_audio(
    item,
    sampling_rate: int | None = None,
    target_rate: int = 16000,
    int_scale: float | None = None,
    name: str | None = None,
) -> torch.Tensor:
    """One audio item -> 1-D float32 CPU tensor at `target_rate`. `sampling_rate` is the rate of a raw array item;
    a dict's own "sampling_rate" and a file's header take precedence. Raises ValueError naming `name`."""
    name = name or describe_item(0, item)
    channels_first = None
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if path.startswith(("http://", "https://")):
            raise ValueError(f"{name}: URLs are not downloaded here; download the file and pass its path")
        if not os.path.isfile(path):
            raise ValueError(f"{name}: file not found")
        wave, rate = _decode(path, name)
        channels_first = True
    elif isinstance(item, (bytes, bytearray, memoryview)):  # the content of an audio file (wav, flac, mp3, ...)
        wave, rate = _decode(bytes(item), name)
        channels_first = True
    elif hasattr(item, "get_all_samples"):  # torchcodec AudioDecoder, as returned by datasets >= 4
        try:
            samples = item.get_all_samples()
        except Exception as err:
            raise ValueError(f"{name}: cannot decode audio ({type(err).__name__}: {err})") from err
        wave, rate, channels_first = samples.data.numpy(), int(samples.sample_rate), True
    elif isinstance(item, dict):
        array = _dict_array(item, name)
        if array is not None:
            rate = item.get("sampling_rate") or sampling_rate
            wave = _to_array(array, name, int_scale)
        elif item.get("bytes") is not None:
            wave, rate = _decode(item["bytes"], name)
            channels_first = True
        elif item.get("path"):
            return load_audio(item["path"], sampling_rate, target_rate, int_scale, name)
        else:
            raise ValueError(f"{name}: audio dict needs 'array' or 'raw' (+ 'sampling_rate'), 'bytes' or 'path'; got "
                             f"keys {sorted(item)}")
    else:
        rate = sampling_rate
        wave = _to_array(item, name, int_scale)
    if rate is None:
        raise ValueError(f"{name}: raw audio array without a sampling rate; pass sampling_rate=...")
    if int(rate) <= 0:
        raise ValueError(f"{name}: invalid sampling rate {rate}")
    wave = _to_mono(wave, name, channels_first)
    if wave.size == 0:
        raise ValueError(f"{name}: empty audio (0 samples)")
    if not np.isfinite(wave).all():
        bad = "NaN" if np.isnan(wave).any() else "inf"
        raise ValueError(f"{name}: audio contains {bad} samples")
    return resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), int(rate), target_rate).contiguous()


def as_batch(audio) -> list:
    """A single item (path, 1-D/2-D array, dict, decoder) becomes a one-item list; lists/tuples stay batches."""
    if isinstance(audio, (list, tuple)):
        if len(audio) > 0 and all(isinstance(x, (int, float, np.number)) for x in audio[:8]):
            raise ValueError("audio given as a list of numbers: pass a numpy array (one item) or a list of arrays")
        return list(audio)
    return [audio]


def load_audio_batch(audio, sampling_rate=None, target_rate=16000, int_scale=None) -> list[torch.Tensor]:
    """Loads a batch (or one item) of audio; errors name the failing item."""
    items = as_batch(audio)
    if not items:
        raise ValueError("no audio given (empty batch)")
    return [load_audio(x, sampling_rate, target_rate, int_scale, describe_item(i, x)) for i, x in enumerate(items)]
