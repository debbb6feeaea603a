"""grid.py in --tiny mode: two runs (full fine-tuning, MDU E-Branchformer interleaved) train, are evaluated and land in
the report with the numbers their own summary files hold; a run killed mid-training resumes from its checkpoint; the
speech tokenizer is fitted once and shared; a second invocation touches nothing that is finished."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import grid
import train_hf

RUNS = ["full", "mdu_ebf_interleaved"]
TINY_STEPS = grid.yaml.safe_load((grid.GRID_DIR / "_shared.yaml").read_text())["tiny"]["train"]["max_steps"]


class CountSteps(TrainerCallback):
    steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        CountSteps.steps += 1


class KillAtStep3(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 3 and "mdu_ebf" in args.output_dir:
            raise KeyboardInterrupt("killed")


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """The grid killed during the second run's training (after checkpoint-2), then started again: it resumes."""
    out = tmp_path_factory.mktemp("grid")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is many times faster on a shared 2-core machine
    try:
        return _killed_then_resumed(out)
    finally:
        torch.set_num_threads(threads)


def _killed_then_resumed(out):
    argv = ["--tiny", "--output_dir", str(out), "--only", ",".join(RUNS)]
    original = train_hf.main
    train_hf.main = lambda a, callbacks=None: original(a, callbacks=[*(callbacks or []), KillAtStep3()])
    try:
        with pytest.raises(KeyboardInterrupt):
            grid.main(argv)
    finally:
        train_hf.main = original
    assert [p.name for p in (out / "mdu_ebf_interleaved").glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (out / "mdu_ebf_interleaved" / "run.json").exists() and (out / "full" / "run.json").exists()
    train_hf.main = lambda a, callbacks=None: original(a, callbacks=[*(callbacks or []), CountSteps()])
    try:
        report = grid.main(argv)
    finally:
        train_hf.main = original
    assert CountSteps.steps == 2  # steps 3 and 4 only: resumed from checkpoint-2, not started again
    return out, report


def _json(path):
    return json.loads(Path(path).read_text())


def test_report_rows_carry_the_measured_numbers(tiny_grid):
    out, report = tiny_grid
    rows = {r["name"]: r for r in _json(out / "results" / "report.json")["runs"]}
    assert set(rows) == {"base", *RUNS}
    for name in RUNS:
        asr = _json(out / name / "eval" / "asr" / "summary.json")
        text = _json(out / name / "eval" / "text" / "results.json")
        train = _json(out / name / "train_done.json")
        row = rows[name]
        assert asr["num_utterances"] == 4 and asr["split"] == "test"
        assert row["wer"] == pytest.approx(100 * asr["wer"]) and row["cer"] == pytest.approx(100 * asr["cer"])
        assert row["text_score"] == pytest.approx(text["score"])
        assert row["text_delta"] == pytest.approx(text["delta"]["score"])
        assert row["trainable_params"] == train["trainable_params"] > 0
        assert train["global_step"] == TINY_STEPS
        trainer_state = _json(out / name / "trainer_state.json")
        assert [h["step"] for h in trainer_state["log_history"] if "loss" in h] == [1, 2, 3, 4]
        assert _json(out / name / "run.json")["wer"] == pytest.approx(row["wer"])
        assert not list((out / name).glob("checkpoint-*"))  # removed once the model is exported
    base_text = _json(out / "base" / "eval" / "text" / "results.json")
    assert rows["base"]["text_score"] == pytest.approx(base_text["score"])
    assert _json(out / "full" / "eval" / "text" / "results.json")["base_score"] == pytest.approx(base_text["score"])
    assert (rows["full"]["placement"], rows["full"]["layer_type"]) == (None, None)
    ebf = rows["mdu_ebf_interleaved"]
    assert (ebf["placement"], ebf["layer_type"]) == ("interleaved", "e_branchformer")
    assert rows["mdu_ebf_interleaved"]["trainable_params"] < rows["full"]["trainable_params"]
    assert (out / "results" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| mdu_ebf_interleaved | mdu | interleaved | e_branchformer |" in (out / "results" / "report.md").read_text()


def test_speech_tokenizer_fitted_once_and_shared(tiny_grid):
    out, _ = tiny_grid
    codebook = load_file(out / "speech_tokenizer" / "speech_codebook.safetensors")["codebook"]
    for name in RUNS:
        cfg = grid.yaml.safe_load((out / "configs" / f"{name}.yaml").read_text())
        assert cfg["speech_tokenizer"] == str(out / "speech_tokenizer") and cfg["seed"] == 0
        assert cfg["learning_rate"] == 3.0e-3 and "lr_scale" not in cfg  # the budget's factor is applied, not passed on
        assert torch.equal(load_file(out / name / "speech_codebook.safetensors")["codebook"], codebook)


def test_commands_file_lists_exact_commands_and_hardware(tiny_grid):
    out, _ = tiny_grid
    text = (out / "results" / "COMMANDS.md").read_text()
    assert f"python train_hf.py {out / 'configs' / 'full.yaml'}" in text
    assert f"python -m eval.asr --model {out / 'mdu_ebf_interleaved'}" in text
    assert "python fit_speech_tokenizer.py" in text and "CPU " in text and "GPU " in text


def test_second_invocation_skips_finished_runs(tiny_grid, capsys):
    out, _ = tiny_grid
    names = ("run.json", "model.safetensors", "eval/asr/summary.json", "eval/text/results.json")
    files = [out / n / f for n in RUNS for f in names]
    files += [out / "speech_tokenizer" / "speech_codebook.safetensors", out / "base" / "eval" / "text" / "results.json"]
    before = {f: f.stat().st_mtime_ns for f in files}
    capsys.readouterr()
    grid.main(["--tiny", "--output_dir", str(out), "--only", ",".join(RUNS)])
    printed = capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert all(f"[grid] {n}: finished earlier" in printed for n in RUNS) and "running" not in printed


def test_cpu_budget_scales_every_learning_rate_alike():
    plan = grid.main(["--dry_run", "--budget", "cpu", "--output_dir", "/tmp/grid-plan-unused"])
    shared = grid.yaml.safe_load((grid.GRID_DIR / "_shared.yaml").read_text())
    scale = shared["budgets"]["cpu"]["lr_scale"]
    for name in ("full", "mdu_interleaved"):
        own = grid.yaml.safe_load((grid.GRID_DIR / f"{name}.yaml").read_text())
        assert plan["learning_rates"][name] == pytest.approx(own["learning_rate"] * scale)


def test_unknown_run_is_named():
    with pytest.raises(ValueError, match="unknown runs \\['mdu_nowhere'\\]"):
        grid.main(["--dry_run", "--only", "full,mdu_nowhere"])
