"""Resume after a kill: `--resume_from_checkpoint last` skips a checkpoint that a kill left half-written (and says
which and why), resumes from the complete one before it, and ends bitwise where an uninterrupted run ends. Every
checkpoint the Trainer finishes carries `checkpoint_complete.json` (training/checkpoints.py)."""

import json
import logging
import shutil

import pytest
import torch
from devices import CPU_TRAINING
from safetensors.torch import load_file
from train_fixtures import fit_tiny_speech_tokenizer, make_audio_folder, save_tiny_base
from transformers import Trainer, TrainerCallback

import train_hf
from training.checkpoints import MARKER, checkpoint_problem, last_complete_checkpoint, mark_complete, resolve_resume

# on the CPU: resumed and uninterrupted runs must agree bitwise (GPU attention backward is not deterministic)
COMMON = [*CPU_TRAINING, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2", "--learning_rate", "3e-3"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    audio = make_audio_folder(root / "audio")
    return {"root": root, "audio": audio, "base": save_tiny_base(root / "base"),
            "stok": fit_tiny_speech_tokenizer(audio, root / "speech_tokenizer")}


def run(work, out, *extra, callbacks=None):
    return train_hf.main(["configs/tiny_test.yaml", "--base_model", str(work["base"]), "--dataset", str(work["audio"]),
                          "--speech_tokenizer", str(work["stok"]), "--output_dir", str(out), *COMMON, *extra],
                         callbacks=callbacks)


@pytest.fixture(scope="module")
def straight(work):
    out = work["root"] / "straight"
    run(work, out)
    return out


def kill_while_saving(monkeypatch, step):
    """The Trainer writes the model first, then optimizer/scheduler, RNG, trainer_state.json: a kill after the model
    of checkpoint-<step> leaves a folder with weights and nothing else."""
    original = Trainer._save_optimizer_and_scheduler

    def save(self, output_dir):
        if self.state.global_step == step:
            raise KeyboardInterrupt(f"killed while writing {output_dir}")
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", save)


def test_killed_while_saving_resumes_from_the_complete_checkpoint(work, straight, monkeypatch, caplog):
    out = work["root"] / "killed_while_saving"
    with monkeypatch.context() as m:
        kill_while_saving(m, 4)
        with pytest.raises(KeyboardInterrupt):
            run(work, out)
    assert (out / "checkpoint-4" / "model.safetensors").is_file()  # half-written: weights, no state
    assert not (out / "checkpoint-4" / "trainer_state.json").exists() and not (out / "checkpoint-4" / MARKER).exists()
    assert (out / "checkpoint-2" / MARKER).is_file()

    steps = []
    caplog.set_level(logging.INFO, logger="training.checkpoints")
    trainer = run(work, out, "--resume_from_checkpoint", "last", callbacks=[StepRecorder(steps)])
    assert steps == [3, 4, 5, 6]  # resumed from checkpoint-2
    skipped = [r.getMessage() for r in caplog.records if "skipping incomplete checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and "checkpoint-4" in skipped[0] and "no trainer_state.json" in skipped[0]
    a, b = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert trainer.state.global_step == 6
    assert checkpoint_problem(str(out / "checkpoint-4")) is None  # written again, completely, on the way


class StepRecorder(TrainerCallback):
    def __init__(self, steps):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_every_checkpoint_is_marked_complete_with_its_files(straight):
    for step in (2, 4, 6):
        folder = straight / f"checkpoint-{step}"
        marker = json.loads((folder / MARKER).read_text())
        assert marker["global_step"] == step
        on_disk = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.name != MARKER}
        assert marker["files"] == on_disk
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"} <= set(on_disk)
    assert last_complete_checkpoint(str(straight)) == str(straight / "checkpoint-6")


def test_incomplete_checkpoints_are_named_with_the_reason(straight, tmp_path, caplog):
    for step in (2, 4, 6, 8, 10, 12):
        shutil.copytree(straight / f"checkpoint-{min(step, 6)}", tmp_path / f"checkpoint-{step}")
    (tmp_path / "checkpoint-12" / MARKER).unlink()  # no marker, and trainer_state.json of another step
    (tmp_path / "checkpoint-10" / MARKER).unlink()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 10, "log_hi')  # cut mid-write
    weights = tmp_path / "checkpoint-8" / "model.safetensors"  # complete once, then truncated
    weights.write_bytes(weights.read_bytes()[:100])
    (tmp_path / "checkpoint-6" / "optimizer.pt").unlink()
    (tmp_path / "checkpoint-4" / MARKER).unlink()  # as a plain Trainer (or a kill right after its save) leaves it
    assert checkpoint_problem(str(tmp_path / "checkpoint-12")) == (
        "trainer_state.json is for step 6, the folder for step 12")
    assert "trainer_state.json is not valid JSON" in checkpoint_problem(str(tmp_path / "checkpoint-10"))
    assert checkpoint_problem(str(tmp_path / "checkpoint-8")).startswith("model.safetensors has 100 bytes")
    assert checkpoint_problem(str(tmp_path / "checkpoint-6")).startswith("optimizer.pt is missing")
    assert checkpoint_problem(str(tmp_path / "checkpoint-4")) is None  # the Trainer wrote trainer_state.json last
    caplog.set_level(logging.INFO, logger="training.checkpoints")
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    skipped = [r.getMessage() for r in caplog.records if "skipping incomplete checkpoint" in r.getMessage()]
    assert [m.split(":")[0].rsplit("-", 1)[1] for m in skipped] == ["12", "10", "8", "6"]
    with pytest.raises(ValueError, match="checkpoint-8: cannot resume from it: model.safetensors has 100 bytes"):
        resolve_resume(str(tmp_path / "checkpoint-8"), str(tmp_path))
    assert resolve_resume("last", str(tmp_path / "nowhere")) is None  # a fresh output dir: start from scratch


def test_folder_written_again_is_incomplete_until_marked(straight, tmp_path):
    folder = tmp_path / "checkpoint-2"
    shutil.copytree(straight / "checkpoint-2", folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 2}) + "\n")  # rewritten: another size
    assert "trainer_state.json has" in checkpoint_problem(str(folder))
    mark_complete(str(folder), 2)
    assert checkpoint_problem(str(folder)) is None


def test_explicit_incomplete_checkpoint_is_refused_before_any_work(work, tmp_path, monkeypatch):
    half = tmp_path / "checkpoint-3"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 10)
    monkeypatch.setattr(train_hf, "load_asr_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    with pytest.raises(ValueError, match="checkpoint-3: cannot resume from it: no trainer_state.json"):
        run(work, tmp_path, "--resume_from_checkpoint", str(half))
