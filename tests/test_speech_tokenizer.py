"""Speech tokenizer: deterministic, rate- and batch-invariant units, every input type, clear errors, save/load."""

import subprocess

import numpy as np
import pytest
import torch
import torchaudio
from audio_fixtures import SR, agreement, chirp, corpus, fitted_mel_tokenizer, write_wav

from fit_speech_tokenizer import fit_speech_tokenizer
from fit_speech_tokenizer import main as fit_main
from modeling_mdu import MDUSpeechTokenizer


@pytest.fixture(scope="module")
def tok():
    return fitted_mel_tokenizer()


@pytest.fixture(scope="module")
def clips():
    return corpus(6, seconds=0.6)


def test_fit_and_units_are_deterministic(tok, clips):
    again = fitted_mel_tokenizer()
    assert torch.equal(again._codebook, tok._codebook)
    first, second = tok(clips, sampling_rate=SR), again(clips, sampling_rate=SR)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert all(u.dtype == np.int64 and u.min() >= 0 and u.max() < 16 for u in first)
    assert len(set(np.concatenate(first).tolist())) > 4  # the units are not all one centroid


def test_frame_rate_and_lengths(clips):
    for rate in (25, 50):
        t = fitted_mel_tokenizer(frame_rate=rate)
        units = t(clips[:2], sampling_rate=SR)
        assert [len(u) for u in units] == [1 + len(x) // (SR // rate) for x in clips[:2]]


@pytest.mark.parametrize("rate", [22050, 44100, 8000])
def test_resampled_input_gives_native_units(tok, clips, rate):
    native = tok(clips, sampling_rate=SR)
    other = [torchaudio.functional.resample(torch.from_numpy(x), SR, rate).numpy() for x in clips]
    units = tok(other, sampling_rate=rate)
    scores = [agreement(a, b) for a, b in zip(native, units)]
    # 8 kHz drops everything above 4 kHz: only a loose check there; 22.05/44.1 kHz must match closely
    assert min(scores) >= (0.5 if rate == 8000 else 0.9), scores


def test_batch_equals_one_by_one(tok, clips):
    batch = tok(clips, sampling_rate=SR)
    single = [tok(x, sampling_rate=SR)[0] for x in clips]
    assert all(np.array_equal(a, b) for a, b in zip(batch, single))


def test_input_types_give_the_same_units(tok, tmp_path):
    x = chirp(0.7, seed=3)
    ref = tok(x, sampling_rate=SR)[0]
    path = write_wav(tmp_path / "a.wav", x)
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", path, str(tmp_path / "a.flac")], check=True)
    from torchcodec.decoders import AudioDecoder

    items = [
        torch.from_numpy(x),
        x.astype(np.float64),
        {"array": x, "sampling_rate": SR},
        {"path": path, "bytes": None},
        path,
        str(tmp_path / "a.flac"),
        AudioDecoder(path),
        np.stack([x, x]),  # stereo, channels first
        np.stack([x, x], axis=1),  # stereo, channels last
    ]
    units = tok(items, sampling_rate=SR)
    for i, u in enumerate(units):
        assert agreement(u, ref) >= 0.95, (i, agreement(u, ref))  # files are 16-bit: tiny quantisation noise
    assert tok(pcm, sampling_rate=SR, int_scale=32768)[0].tolist() == units[4].tolist()  # same samples as the wav


def test_mp3_file_is_read(tok, tmp_path):
    path = write_wav(tmp_path / "b.wav", chirp(0.7, seed=4))
    mp3 = tmp_path / "b.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", path, "-b:a", "128k", str(mp3)], check=True)
    assert agreement(tok(str(mp3))[0], tok(path)[0]) >= 0.8  # lossy codec, encoder delay


def _bad_items(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 3)
    x = chirp(0.3)
    return {
        "empty audio": (np.zeros(0, np.float32), "empty audio"),
        "nan": (np.where(np.arange(len(x)) == 5, np.nan, x).astype(np.float32), "NaN"),
        "inf": (np.where(np.arange(len(x)) == 5, np.inf, x).astype(np.float32), "inf"),
        "int16": ((x * 1000).astype(np.int16), "integer audio"),
        "corrupt file": (str(corrupt), "cannot decode"),
        "missing file": (str(tmp_path / "nope.wav"), "file not found"),
        "empty dict": ({"sampling_rate": SR}, "needs 'array'"),
    }


@pytest.mark.parametrize(
    "kind", ["empty audio", "nan", "inf", "int16", "corrupt file", "missing file", "empty dict"]
)
def test_bad_input_raises_naming_item(tok, tmp_path, kind):
    bad, problem = _bad_items(tmp_path)[kind]
    with pytest.raises(ValueError, match="audio item 1") as err:
        tok([chirp(0.3), bad, chirp(0.3)], sampling_rate=SR)
    assert problem in str(err.value)
    if isinstance(bad, str):
        assert bad in str(err.value)  # names the file


def test_raw_array_without_sampling_rate_raises(tok):
    with pytest.raises(ValueError, match="audio item 0.*without a sampling rate"):
        tok([chirp(0.3)])
    with pytest.raises(ValueError, match="audio item 1: ambiguous 2-D audio of shape \\(10, 10\\)"):
        tok([chirp(0.3), np.zeros((10, 10), np.float32)], sampling_rate=SR)
    with pytest.raises(ValueError, match="list of numbers"):
        tok([0.1] * 1000, sampling_rate=SR)


def test_unfitted_tokenizer_raises():
    with pytest.raises(ValueError, match="no codebook"):
        MDUSpeechTokenizer()(chirp(0.3), sampling_rate=SR)


def test_collapse_repeats(clips):
    plain = fitted_mel_tokenizer()
    collapsed = fitted_mel_tokenizer(collapse_repeats=True)
    for a, b in zip(plain(clips, sampling_rate=SR), collapsed(clips, sampling_rate=SR)):
        assert np.array_equal(b, torch.unique_consecutive(torch.from_numpy(a)).numpy())
        assert len(b) < len(a) and np.all(b[1:] != b[:-1])


@pytest.mark.parametrize("normalize", ["utterance", "global"])
def test_save_load_round_trip(tmp_path, clips, normalize):
    t = fitted_mel_tokenizer(normalize=normalize)
    t.save_pretrained(tmp_path)
    assert (tmp_path / "speech_codebook.safetensors").is_file() and (tmp_path / "preprocessor_config.json").is_file()
    loaded = MDUSpeechTokenizer.from_pretrained(tmp_path)
    assert loaded.normalize == normalize and loaded.codebook_size == 16
    for a, b in zip(t(clips, sampling_rate=SR), loaded(clips, sampling_rate=SR)):
        assert np.array_equal(a, b)
    from transformers import AutoFeatureExtractor

    auto = AutoFeatureExtractor.from_pretrained(tmp_path, trust_remote_code=True)
    assert np.array_equal(auto(clips[0], sampling_rate=SR)[0], t(clips[0], sampling_rate=SR)[0])


def test_units_invariant_to_gain(clips):
    """Per-utterance normalisation (the default) makes units (nearly) independent of the recording level."""
    t = fitted_mel_tokenizer()
    for x in clips[:3]:
        assert agreement(t(x, sampling_rate=SR)[0], t(x * 0.25, sampling_rate=SR)[0]) >= 0.95


def _tiny_hubert(path):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    HubertModel(config).eval().save_pretrained(path)
    return str(path)


def test_ssl_backend_round_trip(tmp_path, clips):
    enc = _tiny_hubert(tmp_path / "enc")
    t = fit_speech_tokenizer(clips, backend="ssl", codebook_size=8, batch_size=100, sampling_rate=SR,
                             encoder_name_or_path=enc, encoder_layer=1)
    units = t(clips, sampling_rate=SR)
    lengths = t.encoder._get_feat_extract_output_lengths(torch.tensor([len(x) for x in clips])).tolist()
    assert [len(u) for u in units] == lengths  # 320x down-sampling, ~50 Hz
    assert all(np.array_equal(a, t(x, sampling_rate=SR)[0]) for a, x in zip(units, clips))
    t.save_pretrained(tmp_path / "tok")
    assert (tmp_path / "tok" / "speech_encoder" / "config.json").is_file()  # encoder ships with the tokenizer
    loaded = MDUSpeechTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.encoder_subfolder == "speech_encoder"
    assert all(np.array_equal(a, b) for a, b in zip(units, loaded(clips, sampling_rate=SR)))


def test_fit_cli_on_folder_and_saved_dataset(tmp_path):
    folder = tmp_path / "wavs"
    folder.mkdir()
    for i, x in enumerate(corpus(6)):
        write_wav(folder / f"{i}.wav", x)
    fit_main(["--dataset", str(folder), "--codebook_size", "8", "--batch_size", "200", "--output_dir", str(tmp_path / "a")])
    from_folder = MDUSpeechTokenizer.from_pretrained(tmp_path / "a")

    import datasets

    files = sorted(str(p) for p in folder.glob("*.wav"))
    ds = datasets.Dataset.from_dict({"audio": files}).cast_column("audio", datasets.Audio(sampling_rate=SR))
    datasets.DatasetDict(train=ds).save_to_disk(str(tmp_path / "ds"))
    fit_main(["--dataset", str(tmp_path / "ds"), "--codebook_size", "8", "--batch_size", "200", "--output_dir", str(tmp_path / "b")])
    from_ds = MDUSpeechTokenizer.from_pretrained(tmp_path / "b")
    # same audio, same order, same seed -> the same codebook whichever way the audio arrives
    assert torch.allclose(from_folder._codebook, from_ds._codebook, atol=1e-4)


def test_fit_respects_max_frames():
    """Audio after the first max_frames frames is never read: appending more data changes nothing."""
    data = corpus()
    small = fit_speech_tokenizer(data, codebook_size=8, batch_size=100, max_frames=200, sampling_rate=SR)
    more = fit_speech_tokenizer(data + [chirp(2.0, seed=9)] * 3, codebook_size=8, batch_size=100, max_frames=200, sampling_rate=SR)
    full = fit_speech_tokenizer(data, codebook_size=8, batch_size=100, sampling_rate=SR)
    assert torch.equal(small._codebook, more._codebook) and not torch.equal(small._codebook, full._codebook)
    with pytest.raises(ValueError, match="at least codebook_size"):
        fit_speech_tokenizer(corpus(1, seconds=0.2), codebook_size=64, batch_size=100, sampling_rate=SR)


def _tiny_encodec(path):
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    config = EncodecConfig(hidden_size=16, num_filters=4, codebook_size=32, num_residual_layers=1, codebook_dim=16,
                           num_lstm_layers=1, upsampling_ratios=[4, 4, 4, 5], target_bandwidths=[1.5, 3.0])
    EncodecModel(config).eval().save_pretrained(path)
    return str(path)


def test_codec_backend_units_and_round_trip(tmp_path, clips):
    enc = _tiny_encodec(tmp_path / "codec")
    one = MDUSpeechTokenizer(backend="codec", codebook_size=32, encoder_name_or_path=enc)
    two = MDUSpeechTokenizer(backend="codec", codebook_size=64, codec_num_quantizers=2, encoder_name_or_path=enc)
    u1, u2 = one(clips, sampling_rate=SR), two(clips, sampling_rate=SR)
    for x, a, b in zip(clips, u1, u2):
        frames = -(-len(x) * 24000 // SR // 320)  # resampled to 24 kHz, 75 Hz frames
        assert len(a) == frames and len(b) == 2 * frames
        assert np.array_equal(b[0::2], a) and b[1::2].min() >= 32 and b.max() < 64  # quantizer 2 offset by K
    assert all(np.array_equal(a, one(x, sampling_rate=SR)[0]) for a, x in zip(u1, clips))
    with pytest.raises(ValueError, match="codebook_size must be codec_num_quantizers"):
        MDUSpeechTokenizer(backend="codec", codebook_size=50, encoder_name_or_path=enc)(clips[0], sampling_rate=SR)
    two.save_pretrained(tmp_path / "tok")
    loaded = MDUSpeechTokenizer.from_pretrained(tmp_path / "tok")
    assert all(np.array_equal(a, b) for a, b in zip(u2, loaded(clips, sampling_rate=SR)))


def test_more_epochs_fit_the_data_better():
    data = corpus()

    def distortion(t):
        feats = torch.cat(t.extract_features(data, sampling_rate=SR))
        return torch.cdist(feats, t._codebook).min(1).values.square().mean().item()

    one = fit_speech_tokenizer(data, codebook_size=16, batch_size=300, sampling_rate=SR)
    three = fit_speech_tokenizer(data, codebook_size=16, batch_size=300, sampling_rate=SR, epochs=3)
    assert distortion(three) < distortion(one)
    with pytest.raises(ValueError, match="re-iterable"):
        fit_speech_tokenizer(iter(data), codebook_size=16, batch_size=300, sampling_rate=SR, epochs=2)


def test_stacked_frames_and_mfcc_features(clips, tmp_path):
    """stack_frames s: the STFT runs at s * frame_rate and s frames sit side by side (no audio between windows is
    skipped); n_mfcc c: the first c orthonormal-DCT coefficients of each log-mel frame."""
    plain = MDUSpeechTokenizer(frame_rate=100, n_mels=20)
    stacked = MDUSpeechTokenizer(frame_rate=25, stack_frames=4, n_mels=20)
    for x in clips[:3]:
        fine = plain.extract_features(x, sampling_rate=SR, normalize=False)[0]  # (n, 20) at 100 Hz
        got = stacked.extract_features(x, sampling_rate=SR, normalize=False)[0]
        n = len(fine)
        assert got.shape == (-(-n // 4), 80)
        padded = torch.cat([fine, fine[-1:].expand(-n % 4, -1)])
        torch.testing.assert_close(got, padded.reshape(-1, 80))
    mfcc = MDUSpeechTokenizer(frame_rate=50, n_mels=20, n_mfcc=8)
    logmel = MDUSpeechTokenizer(frame_rate=50, n_mels=20).extract_features(clips[0], sampling_rate=SR, normalize=False)[0]
    dct = torchaudio.functional.create_dct(8, 20, norm="ortho")
    torch.testing.assert_close(mfcc.extract_features(clips[0], sampling_rate=SR, normalize=False)[0], logmel @ dct)
    t = fitted_mel_tokenizer(stack_frames=2, n_mfcc=10)  # fits, saves and loads with the new fields
    batch = t(clips, sampling_rate=SR)
    assert all(np.array_equal(a, t(x, sampling_rate=SR)[0]) for a, x in zip(batch, clips))  # batch = one by one
    t.save_pretrained(tmp_path)
    loaded = MDUSpeechTokenizer.from_pretrained(tmp_path)
    assert (loaded.stack_frames, loaded.n_mfcc) == (2, 10)
    assert all(np.array_equal(a, b) for a, b in zip(batch, loaded(clips, sampling_rate=SR)))
    for bad, match in (({"stack_frames": 0}, "stack_frames"), ({"n_mfcc": 81}, "n_mfcc"),
                       ({"frame_rate": 25, "stack_frames": 3}, "must divide")):
        with pytest.raises(ValueError, match=match):
            MDUSpeechTokenizer(**bad)
