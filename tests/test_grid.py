"""grid.py in --tiny mode: two runs (full fine-tuning, MDU E-Branchformer interleaved) go through sweep -> train ->
ASR (test, test_seen) -> text -> spoken QA -> importance shift -> report, and land in the report with the numbers
their own summary files hold; each run trains at its family's swept learning rate (the lowest validation loss); a run
killed mid-training resumes from its checkpoint; the speech tokenizer is fitted once and shared; a second invocation
touches nothing that is finished."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import grid
import train_hf

RUNS = ["full", "mdu_ebf_interleaved"]
SHARED = grid.yaml.safe_load((grid.GRID_DIR / "_shared.yaml").read_text())
TINY_STEPS = SHARED["tiny"]["train"]["max_steps"]
FAMILIES = {"full": "full", "mdu_ebf_interleaved": "mdu_e_branchformer"}


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
    assert _json(out / "speech_tokenizer" / "grid_source.json")["source"] == "fitted by grid.py"
    for name in RUNS:
        cfg = grid.yaml.safe_load((out / "configs" / f"{name}.yaml").read_text())
        assert cfg["speech_tokenizer"] == str(out / "speech_tokenizer") and cfg["seed"] == 0
        assert "lr_scale" not in cfg
        assert torch.equal(load_file(out / name / "speech_codebook.safetensors")["codebook"], codebook)
    assert "fitted by grid.py" in (out / "results" / "report.md").read_text()


def test_each_run_trains_at_its_familys_lowest_validation_loss(tiny_grid):
    from datasets import load_from_disk

    out, _ = tiny_grid
    rows = {r["name"]: r for r in _json(out / "results" / "report.json")["runs"]}
    split = _json(out / "sweep" / "data" / "split.json")
    sweep_data = load_from_disk(str(out / "sweep" / "data"))
    assert split["validation_rows"] == len(sweep_data["validation"]) >= 1 and len(sweep_data["train"]) >= 1
    assert not set(sweep_data["validation"]["text"]) & set(sweep_data["train"]["text"])  # whole sentences held out
    assert split["train_rows"] + split["validation_rows"] == len(load_from_disk(str(out / "tiny_data"))["train"])
    steps = SHARED["tiny"]["sweep"]["budget"]["max_steps"]
    for name, family in FAMILIES.items():
        sweep = _json(out / "sweep" / family / "sweep.json")
        cands = sweep["candidates"]
        assert [c["learning_rate"] for c in cands] == SHARED["tiny"]["sweep"]["learning_rates"]
        for c in cands:  # the table holds the loss each candidate's own training logged
            done = _json(out / "sweep" / family / f"{grid.lr_tag(c['learning_rate'])}.json")
            logged = [h for h in done["log_history"] if "eval_loss" in h]
            assert c["eval_loss"] == done["eval_loss"] == logged[-1]["eval_loss"] and logged[-1]["step"] == steps
            assert done["learning_rate"] == c["learning_rate"] and done["global_step"] == steps
            assert not (out / "sweep" / family / grid.lr_tag(c["learning_rate"])).exists()  # the model is not kept
        best = min(cands, key=lambda c: c["eval_loss"])["learning_rate"]
        assert sweep["chosen_learning_rate"] == best and sweep["representative"] == name
        cfg = grid.yaml.safe_load((out / "configs" / f"{name}.yaml").read_text())
        assert cfg["learning_rate"] == best == rows[name]["learning_rate"]
        assert _json(out / name / "trainer_state.json")["log_history"][0]["learning_rate"] == pytest.approx(best)
        assert rows[name]["lr_sweep"]["chosen_learning_rate"] == best
        sweep_cfg = grid.yaml.safe_load((out / "configs" / "sweep" / f"{family}-{grid.lr_tag(best)}.yaml").read_text())
        assert sweep_cfg["eval_split"] == "validation" and sweep_cfg["dataset"] == str(out / "sweep" / "data")
    md = (out / "results" / "report.md").read_text()
    assert "## Learning rates: the sweep" in md and "| **yes** |" in md
    assert grid.choose_lr([{"learning_rate": 1, "eval_loss": float("nan")}, {"learning_rate": 2, "eval_loss": 3.0}]) == 2


def test_asr_on_test_and_test_seen_spoken_qa_and_importance_shift(tiny_grid):
    from prepare.multi_corpus import VOICE_SPLITS

    out, _ = tiny_grid
    rows = {r["name"]: r for r in _json(out / "results" / "report.json")["runs"]}
    base_text = _json(out / "base" / "eval" / "text" / "results.json")
    base_qa = _json(out / "base" / "eval" / "spoken_qa" / "results.json")
    for task in ("mdu_arith", "mdu_cloze"):  # the base's text-to-text accuracy is eval.text's on the same items
        assert base_qa["text"]["tasks"][task]["base_t2t"]["acc"] == pytest.approx(base_text["tasks"][task]["acc"])
        assert base_qa["text"]["tasks"][task]["base_t2t"]["score"] == pytest.approx(base_text["tasks"][task]["score"])
    for name in RUNS:
        seen = _json(out / name / "eval" / "asr_test_seen" / "summary.json")
        assert seen["split"] == "test_seen" and rows[name]["wer_seen"] == pytest.approx(100 * seen["wer"])
        assert rows[name]["distinct_hyps_seen"] == seen["listening_check"]["distinct_hypotheses"]
        res = _json(out / name / "eval" / "spoken_qa" / "results.json")
        espeak = res["sets"]["espeak"]
        assert rows[name]["qa_s2t"] == pytest.approx(espeak["score"]["s2t"])
        assert rows[name]["qa_cascade"] == pytest.approx(espeak["score"]["cascade"])
        assert set(espeak["voices"]) <= set(VOICE_SPLITS["espeak"][1])  # held-out voices only
        assert not set(espeak["voices"]) & set(VOICE_SPLITS["espeak"][0])
        for task in ("mdu_arith", "mdu_cloze"):
            assert espeak["tasks"][task]["base_t2t"]["acc"] == pytest.approx(base_text["tasks"][task]["acc"])
        lines = (out / name / "eval" / "spoken_qa" / "items.jsonl").read_text().splitlines()
        assert len(lines) == 2 * SHARED["tiny"]["eval"]["text_max_items"]
        assert (out / name / "eval" / "spoken_qa" / "results.md").is_file()
        imp = _json(out / name / "eval" / "importance" / "importance.json")
        assert imp["importance"] == _json(out / "importance" / "importance.json")["importance"]  # the base's, reused
        assert rows[name]["importance_shift"]["l1"] == pytest.approx(imp["shift"]["l1"])
    assert rows["mdu_ebf_interleaved"]["importance_shift"]["added_share"] > 0
    assert rows["full"]["importance_shift"]["added_importance"] == []
    n_texts = SHARED["tiny"]["importance"]["max_texts"]  # the control: the base against itself on the next texts
    control = _json(out / "base" / "eval" / "importance_control" / "importance.json")
    assert control["adapted_text_offset"] == n_texts and control["num_texts"] == n_texts
    assert control["importance"] == _json(out / "importance" / "importance.json")["importance"]
    assert control["shift"]["js_divergence"] > 0  # other texts, another distribution: the noise a shift is read against
    assert rows["base"]["importance_shift"]["text_offset"] == n_texts
    md = (out / "results" / "report.md").read_text()
    assert f"| base (control: the base on texts {n_texts}+) | " in md
    assert "## Spoken QA" in md and "| mdu_ebf_interleaved | espeak | mean |" in md
    assert "## Text-importance shift" in md and "| mdu_ebf_interleaved | " in md
    assert (out / "results" / "importance_shift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "spoken_qa_audio").glob("espeak-*/manifest.json"))


def test_commands_file_lists_exact_commands_and_hardware(tiny_grid):
    out, _ = tiny_grid
    text = (out / "results" / "COMMANDS.md").read_text()
    assert f"python train_hf.py {out / 'configs' / 'full.yaml'}" in text
    assert f"python -m eval.asr --model {out / 'mdu_ebf_interleaved'}" in text
    assert "python fit_speech_tokenizer.py" in text and "CPU " in text and "GPU " in text


def test_second_invocation_skips_finished_runs(tiny_grid, capsys):
    out, _ = tiny_grid
    names = ("run.json", "model.safetensors", "eval/asr/summary.json", "eval/asr_test_seen/summary.json",
             "eval/text/results.json", "eval/spoken_qa/results.json", "eval/importance/importance.json")
    files = [out / n / f for n in RUNS for f in names]
    files += [out / "speech_tokenizer" / "speech_codebook.safetensors", out / "base" / "eval" / "text" / "results.json",
              out / "base" / "eval" / "spoken_qa" / "results.json", out / "importance" / "importance.json",
              out / "base" / "eval" / "importance_control" / "importance.json",
              out / "sweep" / "data" / "split.json", out / "sweep" / "units" / "units_info.json",
              *(out / "sweep").glob("*/lr*.json")]
    before = {f: f.stat().st_mtime_ns for f in files}
    capsys.readouterr()
    grid.main(["--tiny", "--output_dir", str(out), "--only", ",".join(RUNS)])
    printed = capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert all(f"[grid] {n}: finished earlier" in printed for n in RUNS) and "running" not in printed


def test_commands_file_keeps_the_runs_of_earlier_sittings(tiny_grid, capsys):
    """A sitting of one run rewrites COMMANDS.md with the commands of every run in the report, the other run's
    training and its family's sweep included, and runs none of them."""
    out, _ = tiny_grid
    markers = [out / "mdu_ebf_interleaved" / "run.json", *(out / "sweep").glob("*/lr*.json")]
    before = {f: f.stat().st_mtime_ns for f in markers}
    capsys.readouterr()
    grid.main(["--tiny", "--output_dir", str(out), "--only", "full"])
    printed = capsys.readouterr().out
    text = (out / "results" / "COMMANDS.md").read_text()
    assert "`python grid.py --tiny --output_dir" in text and "--only full`" in text
    for label in ("# mdu_ebf_interleaved train", "# mdu_ebf_interleaved importance shift", "# full train"):
        assert text.count(label + "\n") == 1, label
    assert f"python train_hf.py {out / 'configs' / 'mdu_ebf_interleaved.yaml'}" in text
    lrs = SHARED["tiny"]["sweep"]["learning_rates"]
    for family in ("full", "mdu_e_branchformer"):
        assert all(text.count(f"# sweep {family} {grid.lr_tag(lr)}\n") == 1 for lr in lrs), family
    assert {f: f.stat().st_mtime_ns for f in markers} == before and "running" not in printed
    rows = {r["name"] for r in _json(out / "results" / "report.json")["runs"]}
    assert rows == {"base", *RUNS}


def test_cpu_plan_is_the_demos_recipe_in_the_issues_order(tmp_path):
    plan = grid.main(["--dry_run", "--budget", "cpu", "--output_dir", str(tmp_path / "plan")])
    assert plan["runs"][:5] == ["full", "lora", "mdu_interleaved", "mdu_ebf_interleaved", "mdu_top"]
    assert set(plan["runs"]) == {"full", "lora", "layerwise_lr", "lora_layerwise", "mdu_interleaved", "mdu_bottom",
                                 "mdu_middle", "mdu_top", "mdu_sandwich", "mdu_ebf_interleaved", "mdu_ebf_narrow"}
    cpu = SHARED["budgets"]["cpu"]
    assert (cpu["max_steps"], cpu["per_device_train_batch_size"], cpu["bf16"]) == (700, 8, "auto")
    assert "lr_scale" not in cpu
    families = {run for spec in SHARED["sweep"]["families"].values() for run in spec["runs"]}
    assert families == set(plan["runs"]) and all(plan["learning_rates"][n] is None for n in plan["runs"])
    labels = [label for label, _ in plan["commands"]]
    assert labels.index("sweep full lr1.0e-04") < labels.index("full train") < labels.index("sweep lora lr1.0e-03")
    assert not any("--split test" in cmd for label, cmd in plan["commands"] if label.startswith("sweep"))
    assert not (tmp_path / "plan").exists()  # a dry run writes nothing


def test_unknown_run_is_named():
    with pytest.raises(ValueError, match="unknown runs \\['mdu_nowhere'\\]"):
        grid.main(["--dry_run", "--only", "full,mdu_nowhere"])
