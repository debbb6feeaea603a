"""Fit the k-means codebook of an MDUSpeechTokenizer, streaming over audio with bounded memory.

    python fit_speech_tokenizer.py --dataset cache/data/espeak --split train --backend mel \
        --codebook_size 256 --output_dir outputs/speech_tokenizer

`--dataset` is a `datasets` dataset saved with `save_to_disk` (Dataset or DatasetDict), a folder of audio files
(wav/flac/mp3/ogg/m4a, searched recursively), or a Hub id (loaded with `load_dataset(..., streaming=True)`).
Frames are buffered `batch_size` at a time and fed to sklearn's `MiniBatchKMeans.partial_fit`, so memory stays at
one buffer whatever the corpus size; `max_frames` caps the total. With `normalize="global"` the feature mean/std are
estimated on the first buffer and kept fixed. Same data order + same seed -> same codebook.
"""

import argparse
import itertools
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from modeling_mdu import MDUSpeechTokenizer

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"}


def fit_speech_tokenizer(
    audio_iterable,
    backend: str = "mel",
    codebook_size: int = 256,
    max_frames: int | None = 2_000_000,
    batch_size: int = 20_000,
    seed: int = 0,
    sampling_rate: int | None = None,
    items_per_step: int = 32,
    epochs: int = 1,
    **backend_kwargs,
) -> MDUSpeechTokenizer:
    """Returns a fitted tokenizer. `audio_iterable` yields audio items (paths, arrays with `sampling_rate`,
    `datasets` Audio dicts/decoders); `backend_kwargs` go to MDUSpeechTokenizer (frame_rate, n_mels, normalize,
    encoder_name_or_path, encoder_layer, collapse_repeats, ...). `batch_size` is in frames (>= codebook_size); `max_frames` caps each of the `epochs` passes (more than one pass
    helps small corpora converge and needs a re-iterable source)."""
    if backend == "codec":
        raise ValueError("backend 'codec' needs no fitting: use MDUSpeechTokenizer(backend='codec', encoder_name_or_path=...)")
    if batch_size < codebook_size:
        raise ValueError(f"batch_size ({batch_size} frames) must be >= codebook_size ({codebook_size})")
    tok = MDUSpeechTokenizer(backend=backend, codebook_size=codebook_size, **backend_kwargs)
    kmeans = MiniBatchKMeans(n_clusters=codebook_size, random_state=seed, batch_size=batch_size, n_init=1)
    buffer, buffered, mean, std = [], 0, None, None

    def flush(frames):
        nonlocal mean, std
        x = np.concatenate(frames).astype(np.float32)
        if tok.normalize == "global":
            if mean is None:
                mean, std = x.mean(0), x.std(0) + 1e-5
            x = (x - mean) / std
        with threadpool_limits(limits=1, user_api="openmp"):  # no idle-spinning sklearn OpenMP pool beside torch's
            kmeans.partial_fit(x)

    if epochs > 1 and iter(audio_iterable) is audio_iterable:
        raise ValueError("epochs > 1 needs a re-iterable audio source (a list, a Dataset), not a one-shot iterator")
    bar = tqdm(total=(max_frames or 0) * epochs or None, unit="frame", desc=f"fit {backend} k-means")
    for _ in range(epochs):
        items, seen = iter(audio_iterable), 0
        while max_frames is None or seen < max_frames:
            chunk = list(itertools.islice(items, items_per_step))
            if not chunk:
                break
            for feats in tok.extract_features(chunk, sampling_rate=sampling_rate):
                if max_frames is not None:
                    feats = feats[: max_frames - seen]
                buffer.append(feats.numpy())
                buffered += len(feats)
                seen += len(feats)
                bar.update(len(feats))
                if buffered >= batch_size:
                    flush(buffer)
                    buffer, buffered = [], 0
        if buffered >= codebook_size:  # end of a pass: use the rest too (smaller remainders carry over)
            flush(buffer)
            buffer, buffered = [], 0
    bar.close()
    if buffered and not hasattr(kmeans, "cluster_centers_"):
        raise ValueError(f"only {buffered} frames of audio: need at least codebook_size={codebook_size} to fit")
    if not hasattr(kmeans, "cluster_centers_"):
        raise ValueError("no audio frames to fit on (empty dataset?)")
    tok.set_codebook(kmeans.cluster_centers_, mean, std)
    return tok


def iter_dataset(dataset: str, split: str = "train", audio_column: str = "audio"):
    """Yields audio items from a folder of files, a save_to_disk dataset, or a Hub id (streaming)."""
    path = Path(dataset)
    if path.is_dir() and not (path / "dataset_dict.json").exists() and not (path / "dataset_info.json").exists():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise ValueError(f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) under {dataset}")
        return (str(f) for f in files)
    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    else:
        from training.data import check_local_or_hub

        check_local_or_hub(dataset, "--dataset")  # a missing local path is reported as a path, not a Hub id
        ds = datasets.load_dataset(dataset, split=split, streaming=True)
    if audio_column not in ds.column_names:
        raise ValueError(f"column {audio_column!r} not in dataset columns {ds.column_names}")
    return (row[audio_column] for row in ds.select_columns([audio_column]))


class _Reiterable:
    """Each iteration opens the source again (for epochs > 1)."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return iter(self.make())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="save_to_disk folder, folder of audio files, or Hub id")
    p.add_argument("--split", default="train")
    p.add_argument("--audio_column", default="audio")
    p.add_argument("--backend", default="mel", choices=["mel", "ssl"])
    p.add_argument("--codebook_size", type=int, default=256)
    p.add_argument("--max_frames", type=int, default=2_000_000)
    p.add_argument("--batch_size", type=int, default=20_000, help="frames per k-means step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1, help="passes over the data (small corpora)")
    p.add_argument("--frame_rate", type=int, default=50)
    p.add_argument("--n_mels", type=int, default=80)
    p.add_argument("--stack_frames", type=int, default=1, help="mel: STFT at stack_frames x frame_rate, frames stacked")
    p.add_argument("--n_mfcc", type=int, default=0, help="mel: keep the first N cepstral coefficients (0: log-mel)")
    p.add_argument("--normalize", default="utterance", choices=["utterance", "global", "none"])
    p.add_argument("--collapse_repeats", action="store_true")
    p.add_argument("--encoder_name_or_path", default=None, help="ssl backend: transformers audio encoder")
    p.add_argument("--encoder_layer", type=int, default=6)
    p.add_argument("--output_dir", required=True)
    args = p.parse_args(argv)
    items = _Reiterable(lambda: iter_dataset(args.dataset, args.split, args.audio_column))
    extra = dict(encoder_name_or_path=args.encoder_name_or_path, encoder_layer=args.encoder_layer) if args.backend == "ssl" else {}
    with torch.no_grad():
        tok = fit_speech_tokenizer(
            items, backend=args.backend, codebook_size=args.codebook_size, max_frames=args.max_frames,
            batch_size=args.batch_size, seed=args.seed, epochs=args.epochs, frame_rate=args.frame_rate, n_mels=args.n_mels,
            normalize=args.normalize, collapse_repeats=args.collapse_repeats, **extra,
            **(dict(stack_frames=args.stack_frames, n_mfcc=args.n_mfcc) if args.backend == "mel" else {}),
        )
    tok.save_pretrained(args.output_dir)
    print(f"saved {args.backend} tokenizer (K={args.codebook_size}) to {os.path.abspath(args.output_dir)}")
    return tok


if __name__ == "__main__":
    main()
