"""demo.py's profiles: the CPU ones fit the 2-core budget, the GPU one asks for CUDA by name (the run itself is the
`make demo` job, not a test)."""

import pytest
import torch

import demo


def test_profiles_and_gpu_without_cuda_is_a_clear_error(monkeypatch):
    quick, cpu, gpu = demo.settings(True), demo.settings(False), demo.settings(False, gpu=True)
    assert quick["max_steps"] < cpu["max_steps"] < gpu["max_steps"] and gpu["bf16"] and not cpu.get("bf16")
    assert len({quick["corpus_dir"], cpu["corpus_dir"], gpu["corpus_dir"]}) == 3  # each its own cached corpus
    assert all(s["corpus"]["text_source"] == "wordnet" for s in (quick, cpu, gpu))
    assert all(s["corpus"]["num_test_seen"] >= s["eval_examples"] for s in (quick, cpu, gpu))  # both test splits evaluated
    fast = demo.settings(False, cpu_bf16=True)  # native bf16: more steps in the same wall-clock budget
    assert fast["bf16"] and fast["max_steps"] > cpu["max_steps"] and {**fast, "bf16": False, "max_steps": 0} == {**cpu, "max_steps": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--profile gpu needs a CUDA device"):
        demo.main(["--profile", "gpu", "--output_dir", "/nonexistent/never-written"])


def test_output_dir_made_with_other_settings_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    calls = []
    monkeypatch.setattr("prepare.base_model.prepare_base_model", lambda **kw: calls.append(kw) or 1 / 0)
    with pytest.raises(ZeroDivisionError):  # settings stamped, then the first stage runs (stubbed here)
        demo.main(["--quick", "--profile", "cpu", "--output_dir", str(out)])
    assert calls and (out / "settings.json").is_file()
    with pytest.raises(ZeroDivisionError):  # same settings: accepted again
        demo.main(["--quick", "--profile", "cpu", "--output_dir", str(out)])
    with pytest.raises(ValueError, match=r"other settings \(changed: \['lr', 'max_steps'\]\)"):
        demo.main(["--quick", "--profile", "cpu", "--output_dir", str(out), "--learning_rate", "1e-4", "--max_steps", "5"])
    assert len(calls) == 2


def test_grid_uses_the_demos_corpus_and_tokenizer_recipe():
    """Whichever runs first builds cache/data/espeak-demo; the other must find it with identical parameters (else
    build_corpus would rebuild it, and the grid's speech tokenizer would be fitted on another corpus). The grid's
    tokenizer recipe (YAML) is the demo's (demo.TOKENIZER, seed 0, fitted on every training utterance)."""
    import yaml

    shared = yaml.safe_load(open("configs/grid/_shared.yaml"))
    cpu = demo.settings(False)
    assert shared["train"]["dataset"] == cpu["corpus_dir"]
    assert {k: v for k, v in shared["corpus"].items() if k != "seed"} == cpu["corpus"]
    recipe = dict(shared["speech_tokenizer"])
    assert (recipe.pop("backend"), recipe.pop("split")) == ("phonetic", "train")
    assert recipe.pop("batch_size") == cpu["fit_batch"] and recipe.pop("bf16") == "auto"  # bf16 as the demo decides
    assert recipe == {**demo.TOKENIZER, "seed": 0} and cpu["fit_examples"] >= cpu["corpus"]["num_train"]


def test_training_subprocess_failure_names_the_script_and_command(tmp_path):
    """demo.py trains in a fresh process; when that process fails the demo stops with the script, its exit status and
    the exact command to rerun, not with a silent success."""
    with pytest.raises(RuntimeError, match=r"(?s)train_hf\.py failed \(exit status [1-9]\d*\).*--no_such_flag --max_steps 0"):
        demo.run_script("train_hf.py", ["--no_such_flag", "--max_steps", "0", "--output_dir", str(tmp_path)])
