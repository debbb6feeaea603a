"""eval/ and model_cards/: error rates, normalisation, text Δ, Taylor importance, plots, report, model card."""

import json

import datasets
import pytest
import torch
from audio_fixtures import chirp, fitted_mel_tokenizer, write_wav
from tiny_models import perturb_added_layers, tiny_base, tiny_mdu, tiny_text_tokenizer

from eval.asr import error_rates, evaluate_asr, listening_check, load_metric
from eval.importance import importance_shift, layer_importance, lr_multipliers, plot_importance, split_importance
from eval.normalize import normalize_text, number_to_words
from eval.report import build_report
from eval.text import TASKS_DIR, evaluate_text, load_task
from model_cards.generate import read_front_matter, write_model_card
from modeling_mdu import MDUSpeechProcessor
from modeling_mdu.hf_compat import SUPPORTED_TRANSFORMERS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXTS = ["the cat sat on the mat.", "a quick brown fox jumps over the lazy dog", "hello world, 42 times"]


@pytest.fixture(scope="module")
def tok():
    return tiny_text_tokenizer()


@pytest.fixture(scope="module")
def base_results(tok):
    return evaluate_text(tiny_base(), tok, max_items=6)


# ---------------------------------------------------------------- WER / CER / normalisation
def test_wer_cer_hand_checked():
    wer, cer = load_metric("wer"), load_metric("cer")
    assert wer.compute(predictions=["the cat sit"], references=["the cat sat"])["wer"] == pytest.approx(1 / 3)
    # corpus level: 1 substitution + 1 deletion over 5 reference words
    assert wer.compute(predictions=["the cat sit", "hello"], references=["the cat sat", "hello world"])["wer"] == pytest.approx(2 / 5)
    assert cer.compute(predictions=["the cat sit"], references=["the cat sat"])["cer"] == pytest.approx(1 / 11)
    with pytest.raises(ValueError, match="reference 1 is empty"):
        wer.compute(predictions=["a", "b"], references=["a", " "])


def test_error_rates_normalise_first():
    r = error_rates(["The cat, sat!", "It cost $400."], ["the cat sat", "it cost four hundred"])
    assert r["wer"] == 0.0 and r["cer"] == 0.0 and r["reference_words"] == 7
    assert error_rates(["It cost 400"], ["it cost four hundred"], numbers_to_words=False)["wer"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"references \[1\] are empty"):
        error_rates(["fine", "?!"], ["fine", "x"])


def test_listening_check_flags_one_answer_for_everything():
    refs = ["the cat sat", "a dog ran", "the cat ran"]
    deaf = listening_check(refs, ["The cat ran.", "the cat ran", "the cat ran"])
    assert deaf["distinct_hypotheses"] == 1 and deaf["most_common_count"] == 3
    assert deaf["most_common_hypothesis"] == "the cat ran"
    assert deaf["wer_if_always_most_common"] == pytest.approx(3 / 9)  # 1 + 2 + 0 errors
    assert listening_check(refs, refs)["distinct_hypotheses"] == 3


@pytest.mark.parametrize("raw, expected", [
    ("Mr. Smith paid $400, didn't he?", "mr smith paid four hundred didn't he"),
    ("'Hello'  World -- strife-torn", "hello world strife torn"),
    ("It’s 3.25 or 1,905", "it's three point two five or one thousand nine hundred five"),
    ("  MIXED\tcase\nLines ", "mixed case lines"),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw, numbers_to_words=True) == expected


def test_normalize_keeps_digits_by_default_and_rejects_non_strings():
    assert normalize_text("Room 101.") == "room 101"
    assert number_to_words(2_000_013) == "two million thirteen"
    with pytest.raises(ValueError, match="expects a string"):
        normalize_text(None)


# ---------------------------------------------------------------- ASR evaluation
class FixedProcessor:
    """Stands in for MDUSpeechProcessor: returns known transcripts, records the batches it was given."""

    def __init__(self, outputs):
        self.outputs, self.calls = list(outputs), []

    def transcribe(self, model, audio, batch_size=8, max_new_tokens=None):
        self.calls.append(len(audio))
        return [self.outputs.pop(0) for _ in audio]


def _dataset(tmp_path, texts):
    paths = [write_wav(tmp_path / f"{i}.wav", chirp(0.3, seed=i)) for i in range(len(texts))]
    return datasets.Dataset.from_dict({"audio": paths, "text": texts, "id": [f"utt{i}" for i in range(len(texts))]})


def test_evaluate_asr_scores_and_writes_without_overwriting(tmp_path):
    ds = _dataset(tmp_path, ["The cat sat.", "Hello world!", "Two dogs"])
    proc = FixedProcessor(["the cat sit", "hello world", "2 dogs"])
    out = tmp_path / "run"
    s = evaluate_asr(tiny_base(), proc, ds, batch_size=2, output_dir=out)
    assert proc.calls == [2, 1]
    assert s["wer"] == pytest.approx(1 / 7) and s["num_utterances"] == 3 and s["substitutions"] == 1
    assert s["listening_check"]["distinct_hypotheses"] == 3
    rows = [json.loads(line) for line in (out / "hypotheses.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["utt0", "utt1", "utt2"]
    assert rows[0]["wer"] == pytest.approx(1 / 3) and rows[2]["hypothesis_norm"] == "two dogs"
    assert json.loads((out / "summary.json").read_text())["wer"] == pytest.approx(1 / 7)
    with pytest.raises(FileExistsError, match="already holds results"):
        evaluate_asr(tiny_base(), FixedProcessor(["a", "b", "c"]), ds, output_dir=out)


def test_evaluate_asr_runs_the_real_processor(tmp_path):
    model = tiny_mdu()
    perturb_added_layers(model, std=0.3)
    proc = MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(), tiny_text_tokenizer())
    ds = _dataset(tmp_path, ["a b", "c d", "e f"])
    s = evaluate_asr(model, proc, ds, batch_size=2, max_new_tokens=6, output_dir=tmp_path / "run")
    hyps = [json.loads(line)["hypothesis"] for line in (tmp_path / "run" / "hypotheses.jsonl").read_text().splitlines()]
    assert hyps == proc.transcribe(model, list(ds["audio"]), batch_size=3, max_new_tokens=6)
    assert s["wer"] == pytest.approx(error_rates(list(ds["text"]), hyps)["wer"])
    with pytest.raises(ValueError, match="no column 'speech'"):
        evaluate_asr(model, proc, ds, audio_column="speech")


# ---------------------------------------------------------------- text capability
def test_offline_tasks_are_harness_yaml_with_data():
    names = {p.stem: load_task(p) for p in TASKS_DIR.glob("*.yaml")}
    assert set(names) == {"mdu_arith", "mdu_cloze", "mdu_word_order", "mdu_heldout_ppl"}
    for name, (config, docs) in names.items():
        assert config["task"] == name and len(docs) >= 50
        if config["output_type"] == "multiple_choice":
            assert len(docs) >= 100 and all(0 <= d["label"] < len(d["choices"]) for d in docs)


def test_text_delta_against_itself_is_zero(tok, base_results):
    again = evaluate_text(tiny_base(), tok, max_items=6, base_results=base_results)
    assert again["delta"]["score"] == 0.0 and all(v == 0.0 for v in again["delta"]["tasks"].values())
    assert again["delta"]["perplexity_ratio"] == 1.0


def test_text_delta_of_perturbed_copy_is_not_zero(tok, base_results):
    model = tiny_base()
    with torch.no_grad():
        for p in model.model.layers[1].parameters():
            p.add_(torch.randn_like(p) * 0.5)
    delta = evaluate_text(model, tok, max_items=6, base_results=base_results)["delta"]
    assert delta["perplexity_ratio"] != 1.0
    with pytest.raises(ValueError, match="max_items"):
        evaluate_text(model, tok, max_items=3, base_results=base_results)


def test_mdu_at_init_keeps_text_over_the_text_vocabulary(tok):
    base = tiny_base()
    ref = evaluate_text(base, tok, max_items=4, text_vocab_only=True)
    mdu = evaluate_text(tiny_mdu(base, layer_type="transformer"), tok, max_items=4, base_results=ref, text_vocab_only=True)
    assert mdu["delta"]["perplexity_ratio"] == 1.0 and mdu["delta"]["score"] == 0.0


# ---------------------------------------------------------------- importance
def test_importance_matches_hand_computed_taylor_score(tok):
    model = tiny_base()
    raw = layer_importance(model, tok, TEXTS[:1], normalize=False)
    ids = torch.tensor([tok(TEXTS[0])["input_ids"]])
    for p in model.parameters():
        p.requires_grad_(True)
    loss = model(input_ids=ids, labels=ids).loss
    layer = list(model.model.layers[2].parameters())
    grads = torch.autograd.grad(loss, layer)
    hand = sum((p * g).abs().sum().item() for p, g in zip(layer, grads))
    assert raw[2] == pytest.approx(hand, rel=1e-5)
    norm = layer_importance(model, tok, TEXTS[:1])
    assert sum(norm) == pytest.approx(1.0) and norm[2] == pytest.approx(raw[2] / sum(raw), rel=1e-5)


def test_importance_independent_of_batch_size_and_restores_flags(tok):
    model = tiny_mdu(layer_type="transformer")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    a = layer_importance(model, tok, TEXTS, batch_size=1)
    b = layer_importance(model, tok, TEXTS, batch_size=3)
    assert a == pytest.approx(b, rel=1e-4)
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    parts = split_importance(model, a)
    assert parts["added_positions"] == model.config.added_layer_positions and len(parts["base"]) == 4


def test_lr_multipliers_and_shift():
    assert lr_multipliers([0.1, 0.3, 0.2], lam=0.4) == pytest.approx([1.0, 0.6, 0.8])
    assert lr_multipliers([0.5, 0.5]) == [1.0, 1.0]
    same = importance_shift([1, 2, 3], [2, 4, 6])
    assert same["js_divergence"] == pytest.approx(0.0) and same["l1"] == pytest.approx(0.0)
    apart = importance_shift([1, 0], [0, 1])
    assert apart["js_divergence"] == pytest.approx(1.0) and apart["l1"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="3 and 2 layers"):
        importance_shift([1, 2, 3], [1, 2])


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 2000


def test_importance_texts_from_an_offset_and_too_few_named(tmp_path):
    from eval.importance import default_texts, read_texts

    first, nxt = read_texts(None, 4), read_texts(None, 4, offset=4)
    assert first == default_texts(8)[:4] and nxt == default_texts(8)[4:] and not set(first) & set(nxt)
    f = tmp_path / "texts.txt"
    f.write_text("one\n\ntwo\nthree\n")  # the empty line is not a text
    assert read_texts(str(f), 2, offset=1) == ["two", "three"]
    with pytest.raises(ValueError, match=r"texts.txt: 1 texts from line 2 on, 2 wanted"):
        read_texts(str(f), 2, offset=2)


def test_importance_plot_is_png(tmp_path):
    path = plot_importance({"base": [0.1, 0.4, 0.5], "adapted": [0.2, 0.3, 0.5]}, tmp_path / "imp.png",
                           added={"positions": [1], "values": [0.05]})
    _assert_png(path)


def test_importance_shift_plot_greys_the_control_by_its_text_offset_not_its_name(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from eval.importance import plot_importance_shift

    figs = []
    monkeypatch.setattr(plt, "close", figs.append)  # keep the figure to read its lines
    shift = {"per_layer_shift": [0.01, -0.02, 0.01], "added_follow": [], "added_importance": []}
    runs = {"control arm of my ablation": dict(shift, text_offset=0), "base on other texts": dict(shift, text_offset=64)}
    _assert_png(plot_importance_shift(runs, tmp_path / "shift.png"))
    lines = {ln.get_label(): ln for ln in figs[0].axes[0].get_lines() if not ln.get_label().startswith("_")}
    assert lines["base on other texts"].get_linestyle() == "--" and lines["base on other texts"].get_color() == "0.5"
    assert lines["control arm of my ablation"].get_linestyle() == "-"
    assert lines["control arm of my ablation"].get_color() != "0.5"


# ---------------------------------------------------------------- report and model card
def _run(tmp_path, name, method, wer, delta, trainable, model=None):
    d = tmp_path / name
    (d / "eval_asr").mkdir(parents=True)
    if model is not None:
        model.save_pretrained(d)
    (d / "run.json").write_text(json.dumps({"method": method, "trainable_params": trainable}))
    (d / "eval_asr" / "summary.json").write_text(json.dumps({"task": "asr", "wer": wer, "cer": wer / 2, "dataset": "espeak",
                                                              "split": "test", "num_utterances": 10,
                                                              "listening_check": {"distinct_hypotheses": trainable // 50_000}}))
    (d / "results.json").write_text(json.dumps({"suite": "offline", "score": 40 + delta, "delta": {"score": delta}}))
    return d


def test_report_rows_pareto_and_plot(tmp_path):
    runs = [_run(tmp_path, "mdu_ebf", "mdu", 0.10, -1.0, 100_000, tiny_mdu()),
            _run(tmp_path, "full", "full", 0.08, -20.0, 250_000),
            _run(tmp_path, "lora", "lora", 0.15, -21.0, 100_000)]
    report = build_report(runs, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| mdu_ebf | mdu | interleaved | e_branchformer | 100.0K | 10.00 | 5.00 | 39.00 | -1.00 |" in md
    assert "| full | full |" in md and "MDU E-Branchformer INTERLEAVED" in md and "layer-wise LR" in md
    assert report["pareto_front"] == ["mdu_ebf", "full"]
    assert json.loads((tmp_path / "report" / "report.json").read_text())["runs"][2]["wer"] == pytest.approx(15.0)
    assert "| espeak:test (n=10) | 2 |" in md and "| espeak:test (n=10) | 5 |" in md  # distinct hypotheses
    _assert_png(tmp_path / "report" / "pareto.png")
    with pytest.raises(FileExistsError):
        build_report(runs, tmp_path / "report")


def test_model_card_front_matter_carries_results(tmp_path):
    model = tiny_mdu()
    model.save_pretrained(tmp_path)
    results = {"asr": {"wer": 0.125, "cer": 0.05, "dataset": "cache/data/espeak", "split": "test", "num_utterances": 40,
                       "listening_check": {"distinct_hypotheses": 37, "wer_if_always_most_common": 0.9}},
               "asr_more": [{"wer": 0.5, "dataset": "espeak seen", "split": "test_seen", "num_utterances": 20}],
               "text": {"suite": "offline", "score": 41.0, "delta": {"score": -1.5, "perplexity_ratio": 1.02}}}
    path = write_model_card(tmp_path, base_model="cache/base/SmolLM2-135M-Instruct", results=results, method="mdu",
                            dataset="cache/data/espeak", training_args={"learning_rate": 1e-4})
    meta = read_front_matter(path)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "automatic-speech-recognition"
    wers = [(m["value"], r["dataset"]["name"]) for r in meta["model-index"][0]["results"] for m in r["metrics"] if m["type"] == "wer"]
    metrics = {m["type"]: (m["value"], r["dataset"]["name"]) for r in meta["model-index"][0]["results"] for m in r["metrics"]}
    assert wers == [(12.5, "cache/data/espeak"), (50.0, "espeak seen")] and metrics["text_delta"][0] == -1.5
    assert meta["mdu"]["trainable_params"] == model.parameter_report()["trainable"]
    assert meta["mdu"]["wer"] == 12.5  # the headline number is the first (`asr`) summary's
    assert meta["mdu"]["distinct_hyps"] == 37 and meta["mdu"]["asr_data"] == "cache/data/espeak:test (n=40)"
    body = path.read_text()
    assert "trust_remote_code=True" in body and "learning_rate=0.0001" in body and "## Limitations" in body
    assert "| distinct hypotheses | 37 of 40 |" in body and "most common hypothesis | 90.00 |" in body
    assert "| ASR WER (%) | 50.00 | espeak seen:test_seen (20 utterances) |" in body
    assert "discrete speech units (discrete units;" in body  # no processor saved: the tokenizer is not named
    assert f"tested\nwith `transformers{SUPPORTED_TRANSFORMERS}`" in body  # the remote code's range
    (tmp_path / "preprocessor_config.json").write_text('{"backend": "phonetic"}')
    body = write_model_card(tmp_path, base_model="cache/base/SmolLM2-135M-Instruct", results=results).read_text()
    assert "discrete speech units (phoneme units from a small CTC phoneme recognizer;" in body


# ---------------------------------------------------------------- loading any checkpoint
def test_load_model_reads_mdu_and_lora_folders(tmp_path, tok):
    from peft import LoraConfig, get_peft_model

    from eval.loading import load_model

    ids = torch.tensor([tok(TEXTS[0])["input_ids"]])
    mdu = tiny_mdu()
    perturb_added_layers(mdu)
    mdu.save_pretrained(tmp_path / "mdu")
    tok.save_pretrained(tmp_path / "mdu")
    loaded, _ = load_model(str(tmp_path / "mdu"))
    assert type(loaded).__name__ == "MDUSpeechForCausalLM"
    assert torch.equal(loaded(input_ids=ids).logits, mdu(input_ids=ids).logits)

    lora = get_peft_model(tiny_base(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "lora")
    tok.save_pretrained(tmp_path / "lora")
    adapter_config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(tmp_path / "base")  # a random base has no name: peft writes null or ""
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps(adapter_config))
    tiny_base().save_pretrained(tmp_path / "base")
    merged, _ = load_model(str(tmp_path / "lora"), merge=True)
    assert torch.allclose(merged(input_ids=ids).logits, lora.eval()(input_ids=ids).logits, atol=1e-5)
