"""The run's device choice (tests/devices.py): `--device cpu` hides CUDA from the tests and their subprocesses and says
so in the header; `--device cuda` refuses to start on a machine without CUDA (and runs where there is one)."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PROBE = """
import os, subprocess, sys
import torch

def test_probe():
    child = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, check=True)
    print("PROBE", repr(os.environ.get("CUDA_VISIBLE_DEVICES")), torch.cuda.is_available(), child.stdout.strip())
"""


def machine_env() -> dict:
    """This environment without the CUDA hiding that `--device cpu` may have put on this very run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    if env.get("CUDA_VISIBLE_DEVICES") == "":
        del env["CUDA_VISIBLE_DEVICES"]
    return {**env, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}


def run_probe(tmp_path, device):
    (tmp_path / "test_probe.py").write_text(PROBE)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "devices", "-p", "no:cacheprovider", "-s",
                           "--device", device, "test_probe.py"], cwd=tmp_path, env=machine_env(),
                          capture_output=True, text=True, timeout=120)


def test_device_cpu_hides_cuda_from_the_tests_and_their_subprocesses(tmp_path):
    out = run_probe(tmp_path, "cpu")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "PROBE '' False False" in out.stdout
    assert "device: cpu" in out.stdout and "CUDA hidden" in out.stdout


def test_device_cuda_runs_only_where_there_is_cuda(tmp_path):
    has_cuda = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                              env=machine_env(), capture_output=True, text=True, check=True).stdout.strip() == "True"
    out = run_probe(tmp_path, "cuda")
    if has_cuda:
        assert out.returncode == 0 and "device: cuda (" in out.stdout and "True True" in out.stdout, out.stdout[-2000:]
    else:
        assert out.returncode != 0 and "--device cuda: torch.cuda.is_available() is False" in out.stderr, out.stderr
