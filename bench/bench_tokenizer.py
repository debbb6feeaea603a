"""Real-time factor (RTF = processing seconds / audio seconds; lower is faster) of speech tokenization per backend.

    PYTHONPATH=. .venv/bin/python bench/bench_tokenizer.py [--quick]

Audio: synthetic 5 s chirps at 16 kHz (numpy), tokenized in one call per batch; arrays in memory and the same audio
read back from 16-bit wav files (decode + validation included). `ssl` and `codec` run randomly initialised models (the timing does not depend on the weights):
a tiny one (as in the tests) and one with HuBERT-base dimensions (12 layers, 768 wide: what a real `ssl` tokenizer
costs), the `phonetic` CTC recognizer at its default size (untrained), and EnCodec, tiny and with the 24 kHz model's dimensions (K=1024, first codebook). The codebooks are fitted on the same audio (K=256 mel, K=64 ssl); fitting time is not part of the RTF.
"""

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path[:0] = [os.path.join(os.path.dirname(__file__), ".."), os.path.join(os.path.dirname(__file__), "..", "tests")]

from audio_fixtures import SR, chirp, write_wav  # noqa: E402

from fit_speech_tokenizer import fit_speech_tokenizer  # noqa: E402
from modeling_mdu import MDUSpeechTokenizer  # noqa: E402


def _rtf(tok, items, seconds, repeats=5, **kwargs) -> float:
    tok(items[:1], **kwargs)  # warm-up (filter banks, resampler kernels, threads)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tok(items, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best / seconds


def _hubert(path, hidden, layers, heads, ffn, conv):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    config = HubertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn, conv_dim=(conv,) * 7)
    HubertModel(config).eval().save_pretrained(path)
    return path


@torch.no_grad()
def run(quick: bool = False) -> dict:
    n, secs = (8, 5.0) if quick else (32, 5.0)
    clips = [chirp(secs, f0=100 + 20 * i, f1=800 + 100 * i, seed=i) for i in range(n)]
    total = n * secs
    results = {"threads": torch.get_num_threads(), "audio_seconds": total}
    mel = fit_speech_tokenizer(clips, codebook_size=256, batch_size=5000, sampling_rate=SR)
    results["mel_rtf_arrays"] = _rtf(mel, clips, total, sampling_rate=SR)
    symbols = [chr(c) for c in range(48, 48 + 47)]  # the demo's phonetic tokenizer has 47 phoneme symbols
    phonetic = MDUSpeechTokenizer(backend="phonetic", codebook_size=47, phonemes=symbols, frame_rate=100)
    torch.manual_seed(0)
    phonetic.set_recognizer(phonetic.new_recognizer())  # default size (dim 256, 6 conv blocks); weights do not change the time
    results["phonetic_rtf_arrays"] = _rtf(phonetic, clips, total, sampling_rate=SR)
    with tempfile.TemporaryDirectory() as tmp:
        files = [write_wav(os.path.join(tmp, f"{i}.wav"), x) for i, x in enumerate(clips)]
        results["mel_rtf_wav_files"] = _rtf(mel, files, total)
        resampled = [{"array": x[:: 2].copy(), "sampling_rate": SR // 2} for x in clips]  # 8 kHz -> 16 kHz inside
        results["mel_rtf_8khz_arrays_resampled"] = _rtf(mel, resampled, total)
        encoders = {"ssl_tiny": (32, 2, 2, 64, 16)}
        if not quick:
            encoders["ssl_hubert_base_size"] = (768, 12, 12, 3072, 512)
        for name, dims in encoders.items():
            enc = _hubert(os.path.join(tmp, name), *dims)
            few = clips[: 4 if "base" in name else n]
            ssl = fit_speech_tokenizer(few, backend="ssl", codebook_size=64, batch_size=500, sampling_rate=SR, encoder_name_or_path=enc, encoder_layer=dims[1])
            results[f"{name}_rtf"] = _rtf(ssl, few, len(few) * secs, repeats=1 if "base" in name else 3, sampling_rate=SR)
        codecs = {"codec_encodec_tiny": dict(hidden_size=16, num_filters=4, codebook_size=32, num_residual_layers=1, codebook_dim=16, num_lstm_layers=1)}
        if not quick:
            codecs["codec_encodec_24khz_size"] = {}  # EncodecConfig defaults = the facebook/encodec_24khz architecture
        for name, dims in codecs.items():
            from transformers import EncodecConfig, EncodecModel

            torch.manual_seed(0)
            model = EncodecModel(EncodecConfig(**dims)).eval()
            model.save_pretrained(os.path.join(tmp, name))
            codec = MDUSpeechTokenizer(backend="codec", codebook_size=model.config.codebook_size, encoder_name_or_path=os.path.join(tmp, name))
            few = clips[:4]
            results[f"{name}_rtf"] = _rtf(codec, few, len(few) * secs, repeats=1 if "size" in name else 3, sampling_rate=SR)
    for key, value in results.items():
        print(f"{key:32s} {value:.5f}" if isinstance(value, float) else f"{key:32s} {value}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args().quick)
