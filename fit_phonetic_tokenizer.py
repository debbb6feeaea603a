"""Fit a `phonetic` MDUSpeechTokenizer: a small CTC phoneme recognizer trained on transcribed speech.

    python fit_phonetic_tokenizer.py --dataset cache/data/espeak-demo --split train --voice_column voice \
        --eval_split test --output_dir outputs/phonetic_tokenizer
    python fit_phonetic_tokenizer.py --dataset openslr/librispeech_asr --dataset_config clean --split train.100 \
        --g2p_voice en-us --max_examples 20000 --output_dir outputs/phonetic_tokenizer     # a Hub dataset

Targets are the transcripts turned into phonemes by espeak-ng (`espeak-ng -q -x`: ASCII phoneme mnemonics, one unit
per character, spaces dropped), with the voice in `--voice_column` (the accent the utterance was spoken with) or
`--g2p_voice`. The recognizer (modeling_mdu/phone_recognizer.py) is trained with CTC by the plain loop below (AdamW,
warmup + cosine, utterances batched by length; written by hand: the model is ~2M parameters and the loop ~30 lines).
Its greedy CTC output is the speech units: far less voice-dependent than k-means units of log-mel frames.
With `spec_augment` each training batch gets SpecAugment masks (2 frequency bands of up to 12 mel bins, 2 time spans
of up to 15 frames, at most 10% of an utterance; Park et al. 2019) and with `vtlp` = a each utterance's mel axis is
warped by a random factor in [1 - a, 1 + a] (vocal-tract-length perturbation, Jaitly and Hinton 2013): both on the
cached log-mel frames, before the per-utterance normalisation, so they cost no audio work. Waveform augmentation
(speed, pitch, rooms, noise, codecs) is the corpus's (prepare/augment.py, prepare/multi_corpus.py).
The history records where the time goes (`g2p_s` (espeak-ng) and `features_s` once, `train_s` / `eval_s` per epoch).
The utterances' features are held in memory (float16: ~16 KB per second of audio): cap them with `max_examples`.
espeak-ng is needed to fit, not to use the fitted tokenizer.
"""

import argparse
import logging
import math
import os
import random
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torchaudio
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from modeling_mdu import MDUSpeechTokenizer
from modeling_mdu.phone_recognizer import PhoneRecognizer

logger = logging.getLogger("fit_phonetic_tokenizer")


def espeak_phonemes(texts: list[str], voices: list[str] | None = None, g2p_voice: str = "en-us",
                    workers: int = 8) -> list[str]:
    """Each text's phoneme string from `espeak-ng -q -x -v <voice>`, whitespace removed. Errors name the item."""

    def one(i):
        voice = voices[i] if voices is not None else g2p_voice
        try:
            out = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice], input=texts[i].encode(), capture_output=True)
        except FileNotFoundError:
            raise RuntimeError("espeak-ng is not installed (apt-get install -y espeak-ng): needed to fit phonetic units") from None
        if out.returncode:
            raise ValueError(f"item {i}: espeak-ng -v {voice!r} failed: {out.stderr.decode().strip()}")
        phonemes = re.sub(r"\s+", "", out.stdout.decode())
        if not phonemes:
            raise ValueError(f"item {i}: transcript {texts[i]!r} has no phonemes (empty or unpronounceable)")
        return phonemes

    texts, voices = list(texts), None if voices is None else list(voices)
    if voices is not None and len(voices) != len(texts):
        raise ValueError(f"{len(voices)} voices for {len(texts)} transcripts")
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(len(texts))))


def _features(tok, audio, sampling_rate, desc, step=32, normalize=True):
    feats = []
    for start in tqdm(range(0, len(audio), step), desc=desc, unit="batch"):
        chunk = tok.extract_features(audio[start : start + step], sampling_rate, normalize=normalize)
        feats.extend(f.to(torch.float16) for f in chunk)
    return feats


def _ctc_feasible(label: list[int], frames: int) -> bool:
    """CTC needs a frame per label plus one blank between equal neighbours."""
    return len(label) + sum(a == b for a, b in zip(label, label[1:])) <= frames


SPEC_AUGMENT = dict(freq_masks=2, freq_width=12, time_masks=2, time_width=15, max_time_ratio=0.1)


def _slaney_mel(hz: torch.Tensor) -> torch.Tensor:
    """Hz -> mel on the Slaney scale (linear below 1 kHz, logarithmic above), as the tokenizer's filter bank."""
    log_part = 15.0 + torch.log(hz.clamp(min=1e-6) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(hz < 1000.0, hz / (200.0 / 3), log_part)


def vtlp_warp(frames: torch.Tensor, alpha: float, f_min: float, f_max: float, sampling_rate: int,
              boundary_hz: float = 4800.0) -> torch.Tensor:
    """Vocal-tract-length perturbation of log-mel frames (T, n_mels): the spectrum's frequencies times `alpha`
    (piecewise linear, Jaitly and Hinton 2013: f -> alpha f up to boundary_hz * min(alpha, 1) / alpha, then a line to
    Nyquist), by linear interpolation along the mel axis. alpha > 1 moves formants up (a shorter vocal tract)."""
    n_mels = frames.shape[-1]
    nyquist = sampling_rate / 2
    low, high = float(_slaney_mel(torch.tensor(f_min))), float(_slaney_mel(torch.tensor(f_max)))
    mels = torch.linspace(low, high, n_mels + 2)[1:-1]
    lin = (mels * (200.0 / 3)).where(mels < 15.0, 1000.0 * torch.exp((mels - 15.0) * (math.log(6.4) / 27.0)))
    knee = boundary_hz * min(alpha, 1.0) / alpha
    # the source frequency of every output bin: the inverse of the warp
    slope = (nyquist - alpha * knee) / (nyquist - knee)
    source = torch.where(lin <= alpha * knee, lin / alpha, knee + (lin - alpha * knee) / slope)
    pos = ((_slaney_mel(source) - mels[0]) / (mels[1] - mels[0])).clamp(0, n_mels - 1)
    lo = pos.floor().long().clamp(max=n_mels - 2)
    w = (pos - lo).to(frames.dtype)
    return frames.index_select(-1, lo) * (1 - w) + frames.index_select(-1, lo + 1) * w  # (index_select: ~300x faster)


def apply_spec_augment(frames: torch.Tensor, generator: torch.Generator, freq_masks=2, freq_width=12, time_masks=2,
                 time_width=15, max_time_ratio=0.1) -> torch.Tensor:
    """SpecAugment masks on normalised frames (T, D): bands of up to `freq_width` bins and spans of up to
    `time_width` frames (each at most max_time_ratio of the utterance) set to 0, the utterance mean."""
    out = frames.clone()
    length, dim = frames.shape
    for _ in range(freq_masks):
        width = int(torch.randint(0, freq_width + 1, (), generator=generator))
        start = int(torch.randint(0, max(1, dim - width), (), generator=generator))
        out[:, start : start + width] = 0
    for _ in range(time_masks):
        width = int(torch.randint(0, min(time_width, int(max_time_ratio * length)) + 1, (), generator=generator))
        start = int(torch.randint(0, max(1, length - width), (), generator=generator))
        out[start : start + width] = 0
    return out


def phoneme_error_rate(tok: MDUSpeechTokenizer, audio, phoneme_strings: list[str], sampling_rate=None) -> float:
    """Edit distance between the tokenizer's units and the reference phoneme strings, over all reference symbols."""
    index = {p: i for i, p in enumerate(tok.phonemes)}
    hyps = tok(list(audio), sampling_rate=sampling_rate)
    refs = [[index.get(c, -1) for c in s] for s in phoneme_strings]
    errors = sum(torchaudio.functional.edit_distance(h.tolist(), r) for h, r in zip(hyps, refs))
    return errors / max(1, sum(len(r) for r in refs))


def fit_phonetic_tokenizer(
    audio,
    texts: list[str],
    voices: list[str] | None = None,
    g2p_voice: str = "en-us",
    epochs: int = 12,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    dropout: float = 0.1,
    seed: int = 0,
    bf16: bool = False,
    device: str | None = None,
    sampling_rate: int | None = None,
    eval_audio=None,
    eval_texts: list[str] | None = None,
    eval_voices: list[str] | None = None,
    eval_every_epoch: bool = False,
    spec_augment: bool = False,
    vtlp: float = 0.0,
    **tokenizer_kwargs,
) -> tuple[MDUSpeechTokenizer, list[dict]]:
    """Trains the recognizer on (audio, transcript) pairs -> (fitted tokenizer, per-epoch history).

    `audio` items are anything MDUSpeechTokenizer takes (paths, arrays with `sampling_rate`, datasets Audio);
    `tokenizer_kwargs` go to MDUSpeechTokenizer (recognizer_dim, recognizer_layers, n_mels, frame_rate, ...).
    With eval_* given, the last epoch's history (each epoch's with `eval_every_epoch`) has the phoneme error rate
    there (`eval_per`). `spec_augment` / `vtlp` (a warp half-range, e.g. 0.1): training-time feature augmentation,
    see the module docstring."""
    if not 0 <= vtlp < 0.5:
        raise ValueError(f"vtlp is the warp factor's half-range, in [0, 0.5); got {vtlp}")
    audio, texts = list(audio), list(texts)
    if len(audio) != len(texts):
        raise ValueError(f"{len(audio)} audio items for {len(texts)} transcripts")
    if not audio:
        raise ValueError("no training utterances")
    for name, items in (("transcript", texts), ("eval transcript", eval_texts if eval_audio is not None else [])):
        bad = [i for i, t in enumerate(items) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"{len(bad)} empty or missing {name}s: items {bad[:10]} (position in the list given)")
    torch.manual_seed(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t_g2p = time.perf_counter()
    strings = espeak_phonemes(texts, voices, g2p_voice)
    eval_strings = espeak_phonemes(list(eval_texts), eval_voices, g2p_voice) if eval_audio is not None else None
    g2p_s = time.perf_counter() - t_g2p
    phonemes = sorted(set("".join(strings)))
    settings = dict(frame_rate=100, **tokenizer_kwargs)
    tok = MDUSpeechTokenizer(backend="phonetic", codebook_size=len(phonemes), phonemes=phonemes, **settings)
    index = {p: i + 1 for i, p in enumerate(phonemes)}  # 0 is the CTC blank
    labels = [[index[c] for c in s] for s in strings]

    t_features = time.perf_counter()
    feats = _features(tok, audio, sampling_rate, "phonetic tokenizer: features", normalize=False)
    features_s = time.perf_counter() - t_features
    frames = PhoneRecognizer.output_lengths(torch.tensor([len(f) for f in feats])).tolist()
    usable = [i for i in range(len(feats)) if _ctc_feasible(labels[i], frames[i])]
    if len(usable) < len(feats):
        skipped = sorted(set(range(len(feats))) - set(usable))
        logger.warning("%d of %d utterances are too short for their phoneme strings (CTC needs a frame per phoneme) "
                       "and are left out of training: items %s", len(skipped), len(feats), skipped[:10])
    if not usable:
        raise ValueError("every utterance is shorter than its phoneme string: check the audio/transcript pairing")

    model = tok.new_recognizer(dropout).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    order = sorted(usable, key=lambda i: len(feats[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    total = epochs * len(batches)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(100, total // 10), total)
    rng, history = random.Random(seed), []
    generator = torch.Generator().manual_seed(seed)

    def batch_frames(i):  # cached log-mel -> (VTLP) -> per-utterance normalisation -> (SpecAugment)
        frames = feats[i].float()
        if vtlp:
            alpha = 1.0 + vtlp * (2 * float(torch.rand((), generator=generator)) - 1)
            frames = vtlp_warp(frames, alpha, tok.f_min, tok.f_max, tok.sampling_rate)
        frames = tok._normalise(frames)
        return apply_spec_augment(frames, generator, **SPEC_AUGMENT) if spec_augment else frames
    bar = tqdm(total=total, desc="phonetic tokenizer: CTC training", unit="step")
    for epoch in range(epochs):
        model.train()
        rng.shuffle(batches)
        losses = []
        t_epoch = time.perf_counter()
        for batch in batches:
            lengths = torch.tensor([len(feats[i]) for i in batch])
            x = torch.nn.utils.rnn.pad_sequence([batch_frames(i) for i in batch], batch_first=True).to(device)
            with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=bf16):
                logits, out_lengths = model(x, lengths.to(device))
            log_probs = logits.float().log_softmax(-1).transpose(0, 1)
            target = torch.cat([torch.tensor(labels[i]) for i in batch]).to(device)
            loss = F.ctc_loss(log_probs, target, out_lengths, torch.tensor([len(labels[i]) for i in batch]))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
        record = {"epoch": epoch + 1, "loss": sum(losses) / len(losses),
                  "train_s": round(time.perf_counter() - t_epoch, 1)}
        if epoch == 0:
            record.update(g2p_s=round(g2p_s, 1), features_s=round(features_s, 1))
        if eval_audio is not None and (eval_every_epoch or epoch == epochs - 1):
            t_eval = time.perf_counter()
            tok.set_recognizer(model)  # moves it to the CPU, eval mode
            record["eval_per"] = phoneme_error_rate(tok, eval_audio, eval_strings, sampling_rate)
            record["eval_s"] = round(time.perf_counter() - t_eval, 1)
            model.to(device)
        history.append(record)
        logger.info("phonetic tokenizer epoch %d: %s", epoch + 1, record)
    bar.close()
    tok.set_recognizer(model)
    return tok, history


def main(argv=None):
    from training.data import check_asr_rows, load_asr_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="save_to_disk folder, audio folder/table, or Hub id")
    p.add_argument("--dataset_config", default=None)
    p.add_argument("--split", default="train")
    p.add_argument("--eval_split", default=None, help="report the phoneme error rate on this split after each epoch")
    p.add_argument("--audio_column", default="audio")
    p.add_argument("--text_column", default="text")
    p.add_argument("--voice_column", default=None, help="espeak-ng voice per utterance for its phoneme targets")
    p.add_argument("--g2p_voice", default="en-us", help="espeak-ng voice for the targets when no --voice_column")
    p.add_argument("--max_examples", type=int, default=None)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--recognizer_dim", type=int, default=256)
    p.add_argument("--recognizer_layers", type=int, default=6)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPUs, CPUs with native bf16)")
    p.add_argument("--spec_augment", action="store_true", help="SpecAugment masks on the training batches")
    p.add_argument("--vtlp", type=float, default=0.0, help="vocal-tract-length warp half-range (e.g. 0.1: factor 0.9-1.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    def rows(split, limit=None):
        ds = load_asr_dataset(args.dataset, split, args.dataset_config, args.audio_column, args.text_column)
        ds = ds.select(range(min(limit, len(ds)))) if limit else ds
        check_asr_rows(ds, args.dataset if split == args.split else f"{args.dataset} [{split}]", args.audio_column,
                       args.text_column)  # empty transcripts, missing audio files: named by row before any work
        voices = list(ds[args.voice_column]) if args.voice_column else None
        return list(ds[args.audio_column]), list(ds[args.text_column]), voices

    audio, texts, voices = rows(args.split, args.max_examples)
    ev = rows(args.eval_split) if args.eval_split else (None, None, None)
    tok, history = fit_phonetic_tokenizer(
        audio, texts, voices, args.g2p_voice, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed, bf16=args.bf16, eval_audio=ev[0], eval_texts=ev[1],
        eval_voices=ev[2], eval_every_epoch=True, spec_augment=args.spec_augment, vtlp=args.vtlp,
        recognizer_dim=args.recognizer_dim, recognizer_layers=args.recognizer_layers)
    tok.save_pretrained(args.output_dir)
    print(f"saved phonetic tokenizer ({len(tok.phonemes)} phonemes; last epoch {history[-1]}) to "
          f"{os.path.abspath(args.output_dir)}")
    return tok, history


if __name__ == "__main__":
    main()
