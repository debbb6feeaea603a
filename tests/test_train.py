"""train_hf.py: every method trains, MDU keeps the base bitwise, the optimizer sees only trainable parameters,
layer-wise LRs reach the optimizer, a killed run resumes to the same weights, LoRA rank matches MDU's count.

Tiny random Llama saved to disk, 8 synthetic utterances (tone patterns per word), a 16-unit mel tokenizer."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from devices import CPU_TRAINING
from safetensors.torch import load_file
from tiny_models import tiny_base, tiny_mdu, tiny_text_tokenizer
from train_fixtures import fit_tiny_speech_tokenizer, make_audio_folder, save_tiny_base
from transformers import LlamaConfig, TrainerCallback

import train_hf
from modeling_mdu import MDUSpeechForCausalLM, MDUSpeechProcessor, MDUSpeechTokenizer
from training.arguments import parse_args
from training.collator import ASRCollator
from training.data import add_speech_units, drop_long, load_asr_dataset, mix_text
from training.layerwise_lr import lr_multipliers
from training.lora_rank import lora_trainable_count, matched_lora_rank, mdu_trainable_count
from training.methods import METHODS

LR = 3e-3


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    audio = make_audio_folder(root / "audio")
    base = save_tiny_base(root / "base")
    stok = fit_tiny_speech_tokenizer(audio, root / "speech_tokenizer")
    return {"root": root, "audio": audio, "base": base, "stok": stok}


class Probe(TrainerCallback):
    """Records what the Trainer trains with: trainable parameters and optimizer groups at the start."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        self.optimizer_ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
        self.groups = [{k: v for k, v in g.items() if k != "params"} | {"n": len(g["params"])} for g in optimizer.param_groups]
        self.group_params = {g.get("name"): list(g["params"]) for g in optimizer.param_groups}
        self.names = {id(p): n for n, p in model.named_parameters()}


class KillAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("killed")


def run(work, method, out, *extra, callbacks=None):
    argv = ["configs/tiny_test.yaml", "--method", method, "--base_model", str(work["base"]),
            "--dataset", str(work["audio"]), "--output_dir", str(out), "--learning_rate", str(LR), *extra]
    if not {"--speech_tokenizer", "--speech_codebook_size", "--speech_tokenizer_backend"} & set(extra):
        argv += ["--speech_tokenizer", str(work["stok"])]
    return train_hf.main(argv, callbacks=callbacks)


def losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def assert_loss_down(trainer):
    ls = losses(trainer)
    assert len(ls) >= 8
    assert sum(ls[-3:]) / 3 < sum(ls[:3]) / 3 - 0.05, ls


def assert_optimizer_holds_exactly_trainable(probe):
    assert len(probe.optimizer_ids) == len(set(probe.optimizer_ids))
    assert set(probe.optimizer_ids) == {id(p) for p in probe.trainable.values()}


def base_state():
    return tiny_base().state_dict()


# ---------------------------------------------------------------- methods


def test_mdu_trains_added_layers_and_keeps_base_bitwise(work):
    probe = Probe()
    out = work["root"] / "mdu"
    trainer = run(work, "mdu", out, "--layer_type", "e_branchformer", "--cgmlp_units", "32", "--cgmlp_conv_kernel", "3",
                  "--merge_conv_kernel", "5", callbacks=[probe])
    assert_loss_down(trainer)
    assert_optimizer_holds_exactly_trainable(probe)
    model = MDUSpeechForCausalLM.from_pretrained(out)
    assert sorted(probe.trainable) == sorted(model.mdu_trainable_parameter_names())
    for key, ref in base_state().items():  # the base comes back bitwise
        assert torch.equal(model.to_text_model().state_dict()[key], ref), key
    trained = load_file(out / "model.safetensors")
    start = tiny_mdu(tiny_base(), num_added_layers=1, cgmlp_units=32, cgmlp_conv_kernel=3, merge_conv_kernel=5).state_dict()
    changed = [n for n in model.mdu_trainable_parameter_names() if n in trained and not torch.equal(trained[n], start[n])]
    assert "model.embed_tokens.speech_weight" in changed and any(".mlp.down_proj" in n for n in changed)
    assert model.config.logits_at_labels_only is False  # training-only switch not exported
    assert MDUSpeechProcessor.from_pretrained(out).speech_token_start == model.config.speech_token_start
    # the export also runs as a Space: the web demo and what it needs
    assert (out / "app.py").read_text() == (Path(__file__).resolve().parent.parent / "app.py").read_text()
    assert "gradio" in (out / "requirements.txt").read_text()


def test_full_trains_every_parameter_with_text_rehearsal(work):
    probe = Probe()
    text = work["root"] / "rehearsal.txt"
    text.write_text("the cat sat on the mat\nhello world\nyes we can go up\n" * 4)
    trainer = run(work, "full", work["root"] / "full", "--text_dataset", str(text), "--text_mix_ratio", "0.3",
                  callbacks=[probe])
    assert_loss_down(trainer)
    assert not probe.frozen and len(probe.trainable) == len(list(trainer.model.parameters()))
    assert_optimizer_holds_exactly_trainable(probe)
    model = MDUSpeechForCausalLM.from_pretrained(work["root"] / "full")
    assert model.config.num_added_layers == 0
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, base_state()["model.layers.0.mlp.up_proj.weight"])


def test_lora_auto_rank_matches_mdu_count_and_exports_merged(work):
    probe = Probe()
    out = work["root"] / "lora"
    trainer = run(work, "lora", out, "--lora_rank", "auto", "--num_added_layers", "1", "--learning_rate", "1e-2",
                  callbacks=[probe])
    assert_loss_down(trainer)
    assert_optimizer_holds_exactly_trainable(probe)
    assert all("lora_" in n or n.endswith("speech_weight") for n in probe.trainable)
    n_trainable = sum(p.numel() for p in {id(p): p for p in probe.trainable.values()}.values())
    mdu_count = tiny_mdu(tiny_base(), layer_type="transformer", num_added_layers=1).parameter_report()["trainable"]
    assert abs(n_trainable - mdu_count) <= 0.02 * mdu_count, (n_trainable, mdu_count)
    trained = load_file(out / "model.safetensors")
    assert not any("lora" in k for k in trained)  # merged: a plain MDU checkpoint
    model = MDUSpeechForCausalLM.from_pretrained(out)
    assert not torch.equal(model.model.layers[1].self_attn.q_proj.weight, base_state()["model.layers.1.self_attn.q_proj.weight"])
    assert torch.equal(model.model.layers[1].input_layernorm.weight, base_state()["model.layers.1.input_layernorm.weight"])
    code = ("import sys, torch; from transformers import AutoModelForCausalLM, AutoProcessor;"
            f"m = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True);"
            f"p = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True);"
            "assert 'modeling_mdu' not in sys.modules and 'training' not in sys.modules;"
            "print(type(m).__name__, type(p).__name__, sum(t.numel() for t in m.parameters()))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], cwd=out.parent, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    n_params = sum(t.numel() for t in model.parameters())
    assert res.stdout.split()[-3:] == ["MDUSpeechForCausalLM", "MDUSpeechProcessor", str(n_params)]


def test_layerwise_lr_groups_carry_computed_lrs(work):
    probe = Probe()
    imp = work["root"] / "importance.json"
    importance = [0.1, 0.4, 0.2, 0.3]
    imp.write_text(json.dumps({"importance": importance}))
    trainer = run(work, "layerwise_lr", work["root"] / "lw", "--importance_file", str(imp),
                  "--speech_codebook_size", "16", callbacks=[probe])  # also fits the speech tokenizer at start
    assert_loss_down(trainer)
    assert_optimizer_holds_exactly_trainable(probe)
    mult = [1.0, 0.6, 1 - 0.4 / 3, 1 - 0.8 / 3]
    assert lr_multipliers(importance, 0.4) == pytest.approx(mult)
    by_name = {g["name"]: g for g in probe.groups}
    for i, m in enumerate(mult):
        assert by_name[f"layer.{i}"]["initial_lr"] == pytest.approx(LR * m)
        assert by_name[f"layer.{i}.no_decay"]["initial_lr"] == pytest.approx(LR * m)  # the layer's norms
        names = {probe.names[id(p)] for p in probe.group_params[f"layer.{i}"]}
        assert names and all(f"layers.{i}." in n for n in names)
    assert by_name["other"]["initial_lr"] == pytest.approx(LR)
    assert (work["root"] / "lw" / "speech_tokenizer" / "speech_codebook.safetensors").exists()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (scripts/setup.sh installs it)")
def test_phonetic_tokenizer_fitted_at_start_ships_in_the_checkpoint(work):
    """--speech_tokenizer_backend phonetic: a CTC phoneme recognizer is trained on the transcripts first; the model gets
    one speech row per phoneme, and the exported checkpoint gives the same units through AutoProcessor."""
    from transformers import AutoProcessor

    class FirstRows(TrainerCallback):  # the speech rows as training starts (speech_init auto: the phonemes' text rows)
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            embed = model.model.embed_tokens
            self.rows = embed.speech_weight.detach().clone()[model.config.speech_token_start - model.config.text_vocab_size:]
            self.text = embed.weight.detach().clone()

    out, first = work["root"] / "phonetic", FirstRows()
    trainer = run(work, "mdu", out, "--speech_tokenizer_backend", "phonetic", "--max_steps", "2", callbacks=[first])
    fe = trainer.processing_class.feature_extractor
    for i, name in enumerate(fe.phonemes):
        ids = trainer.processing_class.tokenizer(name, add_special_tokens=False)["input_ids"]
        assert torch.allclose(first.rows[i], first.text[ids].mean(0)), name
    assert fe.backend == "phonetic" and fe.codebook_size == len(fe.phonemes) == trainer.model.config.speech_vocab_size
    assert (out / "speech_tokenizer" / "speech_phone_recognizer.safetensors").is_file()
    assert {"phone_recognizer.py", "speech_phone_recognizer.safetensors"} <= {p.name for p in out.iterdir()}
    clips = sorted(str(p) for p in work["audio"].glob("*.wav"))[:3]
    loaded = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert loaded.encode_speech(clips) == trainer.processing_class.encode_speech(clips)


def test_speech_init_names_needs_named_units(work):
    with pytest.raises(ValueError, match="speech_init='names' needs a speech tokenizer whose units have names"):
        run(work, "mdu", work["root"] / "names", "--speech_init", "names")


def test_streaming_with_text_rehearsal(work):
    """--streaming: units computed lazily on an IterableDataset, rehearsal text interleaved, max_steps bounds the run."""
    text = work["root"] / "rehearsal_stream.txt"
    text.write_text("the cat sat on the mat\nhello world\n" * 4)
    trainer = run(work, "mdu", work["root"] / "stream", "--streaming", "true", "--max_steps", "4",
                  "--text_dataset", str(text), "--text_mix_ratio", "0.5")
    import datasets

    assert isinstance(trainer.train_dataset, datasets.IterableDataset)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["input_ids"] >= 128).any(dim=1).tolist().count(False) >= 1  # a text-only row in the mix
    assert trainer.state.global_step == 4


def test_layerwise_importance_computed_at_start(work, monkeypatch):
    """Without --importance_file the run asks eval.importance.layer_importance(text model, tokenizer, texts)."""
    import sys
    import types

    calls = []

    def layer_importance(model, tokenizer, texts):
        calls.append((type(model).__name__, len(texts), texts[0]))
        return [4.0, 1.0, 3.0, 2.0]

    fake = types.ModuleType("eval.importance")
    fake.layer_importance = layer_importance
    monkeypatch.setitem(sys.modules, "eval", sys.modules.get("eval") or types.ModuleType("eval"))
    monkeypatch.setitem(sys.modules, "eval.importance", fake)
    probe = Probe()
    run(work, "layerwise_lr", work["root"] / "lw_at_start", "--max_steps", "1", "--importance_texts", "5",
        callbacks=[probe])
    assert calls == [("LlamaForCausalLM", 5, "yes no")]  # the base text model, on the transcripts
    lrs = {g["name"]: g["initial_lr"] for g in probe.groups}
    assert [lrs[f"layer.{i}"] for i in range(4)] == pytest.approx([LR * 0.6, LR, LR * (1 - 0.8 / 3), LR * (1 - 0.4 / 3)])


def test_lora_layerwise_groups_hold_lora_weights_per_layer(work):
    probe = Probe()
    imp = work["root"] / "multipliers.json"
    mult = [0.6, 1.0, 0.8, 0.9]
    imp.write_text(json.dumps({"lr_multipliers": mult}))
    trainer = run(work, "lora_layerwise", work["root"] / "lolw", "--importance_file", str(imp), "--lora_rank", "4",
                  "--learning_rate", "1e-2", callbacks=[probe])
    assert_loss_down(trainer)
    assert_optimizer_holds_exactly_trainable(probe)
    by_name = {g["name"]: g for g in probe.groups}
    for i, m in enumerate(mult):
        names = {probe.names[id(p)] for p in probe.group_params[f"layer.{i}"]}
        assert by_name[f"layer.{i}"]["initial_lr"] == pytest.approx(1e-2 * m)
        assert len(names) == 14 and all("lora_" in n and f"layers.{i}." in n for n in names)  # 7 projections x A, B
    assert {probe.names[id(p)] for p in probe.group_params.get("other.no_decay", []) + probe.group_params["other"]} == {
        n for n in probe.trainable if n.endswith("speech_weight")}


@pytest.mark.parametrize("method", ["mdu", "lora"])
def test_killed_run_resumes_to_same_weights(work, method):
    """Killed after checkpoint-3, resumed with --resume_from_checkpoint: bitwise the uninterrupted run's weights
    (for LoRA the checkpoint is the adapter + the speech rows in trainable_extra.safetensors). On the CPU: GPU
    attention backward kernels are not deterministic, so two GPU runs need not agree bitwise."""
    common = [*CPU_TRAINING, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--lr_scheduler_type",
              "warmup_stable_decay", "--warmup_steps", "2",
              "--lr_scheduler_kwargs", '{"decay_type": "linear", "min_lr_ratio": 0.2}']
    if method == "lora":
        common += ["--lora_rank", "4", "--learning_rate", "1e-2"]
    straight, killed = work["root"] / f"straight_{method}", work["root"] / f"killed_{method}"
    full = run(work, method, straight, *common)
    with pytest.raises(KeyboardInterrupt):
        run(work, method, killed, *common, callbacks=[KillAt(4)])
    assert (killed / "checkpoint-3").is_dir() and not (killed / "model.safetensors").exists()
    resumed = run(work, method, killed, *common, "--resume_from_checkpoint", "last")
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses(full)[-1] == losses(resumed)[-1]
    if method == "mdu":
        lrs = [h["learning_rate"] for h in full.state.log_history if "learning_rate" in h]
        assert lrs == pytest.approx([LR * f for f in (0.2, 0.6, 1.0, 0.8, 0.6, 0.4)])  # warmup, linear decay to 0.2*LR


# ---------------------------------------------------------------- pieces


def test_lora_rank_matching_within_two_percent():
    base = tiny_base().config
    for fields in (dict(num_added_layers=1), dict(num_added_layers=2, layer_type="e_branchformer", cgmlp_units=32)):
        target = mdu_trainable_count(base, speech_vocab_size=16, **fields)
        rank = matched_lora_rank(base, 16, **fields)
        assert abs(lora_trainable_count(base, rank, 16) - target) <= 0.02 * target
    smollm2_360m = LlamaConfig(vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                               num_attention_heads=15, num_key_value_heads=5, tie_word_embeddings=True)
    assert matched_lora_rank(smollm2_360m, 1024) == 145  # the paper reports r = 144 for this model
    with pytest.raises(ValueError, match="no LoRA rank matches"):  # rank 9 is 0.3% off: not within 0.1%
        matched_lora_rank(base, 16, tolerance=0.001, num_added_layers=1)


def test_yaml_defaults_cli_overrides_and_unknown_keys(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base_model: b\ndataset: d\nmethod: lora\nlearning_rate: 1.0e-4\nadded_after: [0, 2]\n")
    m, d, meth, t = parse_args([str(cfg), "--learning_rate", "5e-4", "--output_dir", str(tmp_path / "o")])
    assert (m.base_model, d.dataset, meth.method, meth.added_after) == ("b", "d", "lora", [0, 2])
    assert t.learning_rate == 5e-4
    cfg.write_text("base_model: b\ndataset: d\nlearning_rat: 1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_args([str(cfg)])


@pytest.mark.parametrize("name", ["mdu_interleaved_ebf", "mdu_transformer", "full", "lora", "layerwise_lr", "lora_layerwise"])
def test_shipped_configs_parse(name, tmp_path):
    m, d, meth, t = parse_args([f"configs/{name}.yaml", "--output_dir", str(tmp_path)])
    assert meth.method in METHODS and t.learning_rate > 0 and m.base_model and d.dataset
    if t.lr_scheduler_type == "warmup_stable_decay":
        assert t.lr_scheduler_kwargs == {"decay_type": "linear", "min_lr_ratio": 0.2}  # 1e-4 -> 2e-5 as the paper


def test_collator_labels_transcript_only_and_text_rehearsal(work):
    tok = MDUSpeechTokenizer.from_pretrained(work["stok"])
    model = tiny_mdu(tiny_base(), layer_type="transformer", num_added_layers=1)
    proc = MDUSpeechProcessor.from_model_config(model.config, tok, tiny_text_tokenizer())
    ex = [{"unit_ids": [140, 141, 142], "text": "go"}, {"unit_ids": [], "text": "hi"}]
    batch = ASRCollator(proc)(ex)
    go = proc.tokenizer("go", add_special_tokens=False)["input_ids"]
    eos = proc.tokenizer.eos_token_id
    assert batch["input_ids"][0].tolist() == [128, 140, 141, 142, 129, *go, eos]
    assert batch["labels"][0].tolist() == [-100] * 5 + go + [eos]
    hi = proc.tokenizer("hi")["input_ids"] + [eos]
    assert batch["labels"][1].tolist()[: len(hi)] == hi and batch["attention_mask"][1].sum() == len(hi)
    assert ASRCollator(proc, train_on_speech=True)(ex[:1])["labels"][0].tolist()[:5] == [-100, 140, 141, 142, -100]
    with pytest.raises(ValueError, match="example 0"):
        ASRCollator(proc)([{"text": "x"}])


class CountingProcessor:
    def __init__(self, proc):
        self.proc, self.feature_extractor, self.speech_token_start, self.calls = proc, proc.feature_extractor, proc.speech_token_start, 0

    def encode_speech(self, audio):
        self.calls += 1
        return self.proc.encode_speech(audio)


def test_units_computed_once_then_cached(work):
    import datasets

    saved = work["root"] / "saved"
    load_asr_dataset(str(work["audio"])).cast_column("audio", datasets.Audio()).save_to_disk(str(saved))
    ds = load_asr_dataset(str(saved))
    tok = MDUSpeechTokenizer.from_pretrained(work["stok"])
    proc = CountingProcessor(MDUSpeechProcessor(tok, tiny_text_tokenizer(), speech_token_start=130,
                                                speech_start_token_id=128, speech_end_token_id=129))
    first = add_speech_units(ds, proc)
    calls = proc.calls
    second = add_speech_units(load_asr_dataset(str(saved)), proc)
    assert calls > 0 and proc.calls == calls  # second pass read the cache
    assert first["unit_ids"] == second["unit_ids"] and min(min(u) for u in first["unit_ids"]) >= 130
    tokenizer = tiny_text_tokenizer()
    lengths = [len(u) + 3 + len(t) for u, t in zip(first["unit_ids"], first["text"])]  # chars = tokens here
    cut = min(lengths)
    kept = drop_long(first, cut, tokenizer)
    assert len(kept) == sum(n <= cut for n in lengths) < len(first)
    with pytest.raises(ValueError, match="every example is longer"):
        drop_long(first, 3, tokenizer)
    mixed = mix_text(first, datasets.Dataset.from_dict({"text": ["a b", "c d"] * 4}), 0.5, seed=0)
    assert any(len(u) == 0 for u in mixed["unit_ids"]) and any(len(u) > 0 for u in mixed["unit_ids"])


def test_bad_dataset_names_the_problem(tmp_path):
    (tmp_path / "x.csv").write_text("file_name,words\na.wav,hello\n")
    with pytest.raises(ValueError, match="no transcript column 'text'"):
        load_asr_dataset(str(tmp_path / "x.csv"))
    with pytest.raises(ValueError, match="does not exist"):
        load_asr_dataset(str(tmp_path / "missing.csv"))
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="without a transcript"):
        load_asr_dataset(str(tmp_path / "clips"))


def test_trl_sft_trainer_finetunes_mdu_checkpoint(work, tmp_path):
    """TRL on a prompt-completion dataset (prompt = speech prompt ids, completion = transcript ids, given tokenized
    as input_ids + completion_mask), through MDUSFTTrainer (an SFTTrainer that takes the model's own loss, see
    training/sft.py): the loss falls, trainable weights move, the base stays bitwise."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from training.sft import MDUSFTTrainer

    tiny_mdu(tiny_base(), layer_type="e_branchformer", num_added_layers=1, cgmlp_units=32, cgmlp_conv_kernel=3,
             merge_conv_kernel=5).save_pretrained(tmp_path / "ckpt")
    model = MDUSpeechForCausalLM.from_pretrained(tmp_path / "ckpt")
    model.freeze_base()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tokenizer = tiny_text_tokenizer()
    proc = MDUSpeechProcessor.from_model_config(model.config, MDUSpeechTokenizer.from_pretrained(work["stok"]), tokenizer)
    ds = load_asr_dataset(str(work["audio"]))
    rows = []
    for units, text in zip(proc.encode_speech(list(ds["audio"])), ds["text"]):
        prompt = [model.config.speech_start_token_id, *units, model.config.speech_end_token_id]
        completion = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append({"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)})
    train = datasets.Dataset.from_list(rows)
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=10, per_device_train_batch_size=4, learning_rate=1e-2,
                     logging_steps=1, report_to="none", completion_only_loss=True, save_strategy="no", disable_tqdm=True, bf16=False)
    trainer = MDUSFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    assert isinstance(trainer, SFTTrainer)
    assert_loss_down(trainer)
    trainable = set(model.mdu_trainable_parameter_names())
    after = {n: p.detach().cpu() for n, p in model.named_parameters()}  # the Trainer moved them to its device
    assert all(torch.equal(after[n], before[n]) for n in before if n not in trainable)
    assert not torch.equal(after["model.embed_tokens.speech_weight"], before["model.embed_tokens.speech_weight"])


# ---------------------------------------------------------------- launching several processes on CPU


def _accelerate(work, out, *flags):
    """`accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2 <flags> train_hf.py ...`."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch_vars = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launch_vars}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/ddp.yaml",
           "--num_processes", "2", "--main_process_port", str(port), *flags, "train_hf.py", "configs/tiny_test.yaml",
           "--base_model", str(work["base"]), "--dataset", str(work["audio"]), "--speech_tokenizer", str(work["stok"]),
           "--output_dir", str(out), "--max_steps", "2"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_accelerate_ddp_config_launches_its_processes_on_cpu(work):
    """Without a GPU the two processes form one world of 2 (each consumes half of every global batch): with 8
    utterances, 4 per device, 2 steps are 2 epochs. Before, each process trained alone (2 steps = 1 epoch) and both
    wrote the same output dir."""
    out = work["root"] / "ddp_cpu"
    res = _accelerate(work, out)
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["epoch"] == 2.0


def test_sharding_config_without_gpu_says_it_runs_unsharded(monkeypatch, caplog):
    """accelerate shards (FSDP, DeepSpeed) on GPUs only; launched on the CPU its processes train as plain data
    parallel. That is said once (rank 0), by name; with a GPU, or with the DDP config, nothing is said."""
    import logging

    from training.launch import launch_defaults, sharding_without_accelerator

    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    for flag, kind in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="training.launch"):
            assert launch_defaults({"WORLD_SIZE": "2", "RANK": "0", flag: "true"}) == {"use_cpu": True}
            launch_defaults({"WORLD_SIZE": "2", "RANK": "1", flag: "true"})
        assert len(caplog.records) == 1, caplog.text
        assert f"asks for {kind}" in caplog.text and "nothing is sharded" in caplog.text
    assert sharding_without_accelerator({"WORLD_SIZE": "2"}) is None  # the DDP config
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert sharding_without_accelerator({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"}) is None


def test_accelerate_cpu_flag_with_several_processes_is_refused(work):
    """accelerate's --cpu starts one process whatever --num_processes says (its CPU multi-process launch is MPI):
    refused before any work, with the lines that do launch them."""
    out = work["root"] / "ddp_cpu_flag"
    res = _accelerate(work, out, "--cpu")
    assert res.returncode != 0
    assert "with --num_processes > 1 starts a single process" in res.stderr
    assert "torchrun --nproc_per_node 2" in res.stderr
    assert not out.exists()
