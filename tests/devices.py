"""Which device a test runs its model on is said on the command line and in the test, never left to chance.

The run's choice (tests/conftest.py; nothing is faked, an accelerator is only ever hidden):
    pytest tests                 --device auto (default): CUDA when the machine has it, else the CPU
    pytest tests --device cpu    the CPU only, also on a GPU machine: CUDA is hidden (CUDA_VISIBLE_DEVICES="") from
                                 this process, its xdist workers and every subprocess, before torch looks for it
    pytest tests --device cuda   refused at start without a CUDA device (a GPU check that ran on the CPU by mistake)

Within a run, each test says what it means:
- a model on its device (device_map="auto", the Trainer and pipeline() put models on the accelerator): inputs go to
  `model.device` (`on_device_of`), references are computed on that device;
- the CPU (bitwise comparisons with CPU references or across training runs, whose GPU kernels are not deterministic;
  launches of CPU processes): `CPU_TRAINING` flags for train_hf.py, `use_cpu=True`, `device_map="cpu"`, or
  `cpu_only_env(env)` for a subprocess.
"""

import os

import pytest
import torch

CPU_TRAINING = ("--use_cpu", "true")  # train_hf.py / TrainingArguments on the CPU whatever the machine has


def run_device() -> torch.device:
    """The device this run puts models on when a test does not pin one: CUDA if this run may use it, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_device_of(model, *tensors):
    """`tensors` moved to the device of `model`'s (first) parameters: one tensor alone, else a tuple."""
    device = next(model.parameters()).device
    moved = tuple(t.to(device) for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def cpu_only_env(env: dict) -> dict:
    """`env` for a subprocess that must run on the CPU (its results are compared with this process's CPU ones)."""
    return {**env, "CUDA_VISIBLE_DEVICES": ""}


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda})"
    hidden = " (CUDA hidden: CUDA_VISIBLE_DEVICES=\"\")" if os.environ.get("CUDA_VISIBLE_DEVICES") == "" else ""
    return f"cpu, torch {torch.__version__}{hidden}"


# ---------------------------------------------------------------- the run's choice (pytest hooks; tests/conftest.py)


def pytest_addoption(parser):
    parser.addoption("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto: CUDA when there is one, else the CPU; cpu: hide CUDA from the run and its "
                          "subprocesses; cuda: refuse to run without a CUDA device (tests/devices.py)")


def pytest_configure(config):
    choice = config.getoption("--device")
    if choice == "cpu":  # before any test asks torch for a device; inherited by xdist workers and subprocesses
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif choice == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: torch.cuda.is_available() is False on this machine")


def pytest_report_header(config):
    return f"device: {describe(run_device())} (--device {config.getoption('--device')})"


def needs_cpu_fp8() -> None:
    """Skip an FP8 test on the CPU where torch has no row-wise scaled FP8 matmul there: only below our torch range
    (2.11, the GPU image's, has it on GPUs only). Inside the range (2.14) its absence is a failure, not a skip."""
    from packaging.version import Version

    from modeling_mdu.modeling_mdu import cpu_has_rowwise_fp8_matmul

    if cpu_has_rowwise_fp8_matmul():
        return
    message = f"torch {torch.__version__} has no row-wise scaled FP8 matmul on the CPU (2.14 has)"
    if Version(torch.__version__.split("+")[0]) >= Version("2.14"):
        pytest.fail(message)
    pytest.skip(message)
