"""The performance levers of issue 20 as train_hf.py flags (README "Performance levers"): each flag reaches the model
or the batches, a run with it trains like the run without it (recompute, packing: the same losses; FP8: within a few
%), the base comes back bitwise, the saved config has the training-time switches off, and the combinations that
cannot work are refused before any work, naming the flags.

What each lever keeps exact at the model level is tested in tests/test_levers.py; speed and memory are in bench/.
Tiny random Llama saved to disk, 8 synthetic utterances, a 16-unit mel tokenizer (as tests/test_train.py)."""

import json

import pytest
import torch
from devices import CPU_TRAINING, needs_cpu_fp8
from safetensors.torch import load_file
from tiny_models import speech_prompt, tiny_base
from train_fixtures import fit_tiny_speech_tokenizer, make_audio_folder, save_tiny_base
from transformers import TrainerCallback, TrainingArguments

import train_hf
from modeling_mdu import MDUSpeechForCausalLM
from modeling_mdu import modeling_mdu as modeling
from training.arguments import check_levers, parse_args
from training.trainer import MDUTrainer

STEPS = 3


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("levers")
    audio = make_audio_folder(root / "audio")
    text = root / "rehearsal.txt"
    text.write_text("the cat sat on the mat\nhello world\nyes we can go up\n" * 4)
    return {"root": root, "audio": audio, "base": save_tiny_base(root / "base"), "text": text,
            "stok": fit_tiny_speech_tokenizer(audio, root / "speech_tokenizer")}


def argv(work, out, *extra):
    return ["configs/tiny_test.yaml", *CPU_TRAINING, "--base_model", str(work["base"]), "--dataset", str(work["audio"]),
            "--speech_tokenizer", str(work["stok"]), "--output_dir", str(out), "--max_steps", str(STEPS), *extra]


@pytest.fixture
def batches(monkeypatch):
    """Every loss the Trainer computes: (training?, packed batch?, loss)."""
    seen = []
    compute_loss = MDUTrainer.compute_loss

    def recorded(self, model, inputs, *args, **kwargs):
        out = compute_loss(self, model, inputs, *args, **kwargs)
        loss = (out[0] if isinstance(out, tuple) else out).detach()
        seen.append((model.training, "position_ids" in inputs and "attention_mask" not in inputs, loss.item()))
        return out

    monkeypatch.setattr(MDUTrainer, "compute_loss", recorded)
    return seen


def train_losses(seen):
    return [loss for training, _, loss in seen if training]


def assert_base_bitwise(out):
    text = MDUSpeechForCausalLM.from_pretrained(out).to_text_model().state_dict()
    for key, ref in tiny_base().state_dict().items():
        assert torch.equal(text[key], ref), key


def saved_config(folder) -> dict:
    return json.loads((folder / "config.json").read_text())


# ---------------------------------------------------------------- recompute_frozen_segments
def test_recompute_flag_trains_exactly_like_flag_off(work, batches, monkeypatch):
    calls = []
    checkpoint = modeling.checkpoint
    monkeypatch.setattr(modeling, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    root = work["root"]
    off = train_hf.main(argv(work, root / "recompute-off"))
    assert not calls
    losses_off, batches[:] = train_losses(batches), []
    on = train_hf.main(argv(work, root / "recompute-on", "--recompute_frozen_segments", "true",
                            "--save_strategy", "steps", "--save_steps", "2"))
    stack = on.model.model  # each run of frozen base layers recomputed under one checkpoint per step
    frozen_segments = sum(not stack.layer_is_added[start] for start, _ in stack.segments)
    assert frozen_segments >= 1 and len(calls) == frozen_segments * STEPS
    assert on.model.config.recompute_frozen_segments is True
    assert train_losses(batches) == losses_off and len(losses_off) == STEPS  # bitwise: the same ops, kept or redone
    a, b = (load_file(root / name / "model.safetensors") for name in ("recompute-off", "recompute-on"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert_base_bitwise(root / "recompute-on")
    # a training switch: saved off, in the export and in checkpoint-N; a checkpoint loaded with it on generates alike
    for folder in (root / "recompute-on", root / "recompute-on" / "checkpoint-2"):
        assert saved_config(folder).get("recompute_frozen_segments", False) is False, folder
    ids = speech_prompt(batch=2, units=9, text_tokens=0)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    plain = MDUSpeechForCausalLM.from_pretrained(root / "recompute-on")
    flagged = MDUSpeechForCausalLM.from_pretrained(root / "recompute-on", recompute_frozen_segments=True)
    assert flagged.config.recompute_frozen_segments is True
    assert torch.equal(flagged.generate(ids, **kw), plain.generate(ids, **kw))
    del off


# ---------------------------------------------------------------- pack_batches
def test_pack_batches_flag_trains_and_evaluates_like_padded_batches(work, batches):
    """ASR and text-rehearsal rows; the eval batches are packed too, with the same eval loss."""
    root = work["root"]
    common = ("--text_dataset", str(work["text"]), "--text_mix_ratio", "0.3", "--eval_split", "train",
              "--max_eval_examples", "6", "--per_device_eval_batch_size", "3")
    runs = {}
    for name, flags in (("padded", ()), ("packed", ("--pack_batches", "true")), ("rows", ("--pack_batches", "true",
                                                                                           "--pack_length", "0"))):
        batches[:] = []
        trainer = train_hf.main(argv(work, root / f"pack-{name}", *common, *flags))
        metrics = trainer.evaluate()
        runs[name] = (list(batches), metrics["eval_loss"])
    assert {packed for _, packed, _ in runs["padded"][0]} == {False}
    for name in ("packed", "rows"):
        seen, eval_loss = runs[name]
        assert {packed for _, packed, _ in seen} == {True}  # train and eval batches
        assert any(not training for training, _, _ in seen)
        torch.testing.assert_close(train_losses(seen), train_losses(runs["padded"][0]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(eval_loss, runs["padded"][1], rtol=1e-5, atol=1e-6)
        assert_base_bitwise(root / f"pack-{name}")
    a, b = (load_file(root / name / "model.safetensors") for name in ("pack-padded", "pack-packed"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    assert "pack_batches=True" in (root / "pack-packed" / "README.md").read_text()  # the card says how it trained


# ---------------------------------------------------------------- fp8_frozen_linears
class FP8Probe(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.fp8 = sum(type(m).__name__ == "FP8FrozenLinear" for m in model.modules())


@pytest.mark.parametrize("method", ["mdu", "lora"])
def test_fp8_flag_trains_close_to_full_precision_and_keeps_the_base(work, batches, method):
    needs_cpu_fp8()  # torch 2.11's CPU (below our range): --fp8_frozen_linears is refused up front there
    root = work["root"]
    batches[:] = []
    train_hf.main(argv(work, root / f"fp8-{method}-off", "--method", method))
    losses_off, batches[:] = train_losses(batches), []
    probe = FP8Probe()
    train_hf.main(argv(work, root / f"fp8-{method}-on", "--method", method, "--fp8_frozen_linears", "true"),
                  callbacks=[probe])
    assert probe.fp8 == 7 * tiny_base().config.num_hidden_layers  # q k v o gate up down of every base layer
    losses_on = train_losses(batches)
    assert losses_on[0] != losses_off[0]  # FP8 did compute
    assert abs(losses_on[0] - losses_off[0]) / losses_off[0] < 0.03, (losses_on, losses_off)
    assert all(abs(a - b) / b < 0.05 for a, b in zip(losses_on, losses_off)), (losses_on, losses_off)
    if method == "mdu":  # LoRA merges into the base at export
        assert_base_bitwise(root / f"fp8-{method}-on")
    assert saved_config(root / f"fp8-{method}-on").get("fp8_frozen_linears", False) is False
    loaded = MDUSpeechForCausalLM.from_pretrained(root / f"fp8-{method}-on")
    assert not any(type(m).__name__ == "FP8FrozenLinear" for m in loaded.modules())
    plain = MDUSpeechForCausalLM.from_pretrained(root / f"fp8-{method}-off")
    assert loaded.state_dict().keys() == plain.state_dict().keys()


# ---------------------------------------------------------------- what cannot work is refused up front
@pytest.mark.parametrize("flags, error", [
    (("--pack_batches", "true", "--ctc_weight", "0.3"), r"--pack_batches true and --ctc_weight 0.3 cannot be combined"),
    (("--pack_length", "64"), r"--pack_length 64 packs rows, but --pack_batches is false"),
    (("--pack_batches", "true", "--pack_length", "-1"), r"--pack_length must be >= 0"),
    (("--recompute_frozen_segments", "true", "--method", "full"),
     r"--recompute_frozen_segments true needs --method mdu.*--method full.*--gradient_checkpointing"),
    (("--recompute_frozen_segments", "true", "--method", "lora"), r"--method lora, LoRA trains in every base layer"),
    (("--fp8_frozen_linears", "true", "--method", "layerwise_lr"),
     r"--fp8_frozen_linears true .*--method layerwise_lr every base weight trains"),
])
def test_bad_lever_combinations_are_refused_before_any_work(tmp_path, flags, error, monkeypatch):
    work = dict(base=tmp_path / "no-base", audio=tmp_path / "no-audio", stok=tmp_path / "no-stok")  # never read
    monkeypatch.setattr(train_hf, "check_local_or_hub", lambda *a: pytest.fail("work started before the check"))
    with pytest.raises(ValueError, match=error):
        train_hf.main(argv(work, tmp_path / "out", *flags))


@pytest.mark.parametrize("capability, refused", [((8, 0), True), ((9, 0), False)])
def test_fp8_flag_refuses_a_gpu_without_fp8_matmuls_up_front(tmp_path, monkeypatch, capability, refused):
    args = parse_args(argv(dict(base="b", audio="d", stok="s"), tmp_path, "--fp8_frozen_linears", "true"))
    monkeypatch.setattr(TrainingArguments, "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    if refused:  # an A100
        with pytest.raises(RuntimeError, match=r"--fp8_frozen_linears true: .*compute capability >= 8.9.*8\.0"):
            check_levers(*args)
    else:  # an H100
        check_levers(*args)


def test_lever_flags_from_yaml(tmp_path):
    config = tmp_path / "levers.yaml"
    config.write_text("method: mdu\nrecompute_frozen_segments: true\nfp8_frozen_linears: true\npack_batches: true\n"
                      "pack_length: 0\n")
    model_args, data_args, _, _ = parse_args([str(config), "--base_model", "b", "--dataset", "d", "--output_dir",
                                              str(tmp_path), "--fp8_frozen_linears", "false"])
    assert model_args.recompute_frozen_segments is True and model_args.fp8_frozen_linears is False  # CLI wins
    assert data_args.pack_batches is True and data_args.pack_length == 0
