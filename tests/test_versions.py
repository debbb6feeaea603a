"""The supported version ranges: pyproject.toml declares them, the locks pin both ends, the remote code knows the
transformers range and warns outside it, and the transformers that runs this suite is inside it."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import transformers
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from tiny_models import tiny_mdu

from modeling_mdu import hf_compat

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DECLARED = {Requirement(r).name: Requirement(r).specifier for r in PYPROJECT["project"]["dependencies"]}
EXTRAS = {Requirement(r).name: Requirement(r).specifier
          for group in PYPROJECT["project"]["optional-dependencies"].values() for r in group}
MATRIX = [re.match(r'\s*"([A-Za-z0-9_\-]+)', line).group(1) for line in (ROOT / "pyproject.toml").read_text().splitlines()
          if re.search(r'",\s*#\s*matrix\b', line)]


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock(name):
    """{name: (version, number of hashes)} of a lock file."""
    text = (ROOT / name).read_text()
    pins = {}
    for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", text, re.M):
        pins[_norm(m.group(1))] = (Version(m.group(2)), m.group(3).count("--hash="))
    return pins


def test_every_dependency_has_a_tested_range():
    for name, spec in {**DECLARED, **EXTRAS}.items():
        ops = {s.operator for s in spec}
        assert ">=" in ops and "<" in ops, f"{name}: {spec} (a range needs a lower and an upper bound)"
    assert {"transformers", "huggingface_hub", "peft", "trl", "datasets"} <= set(MATRIX)


def test_locks_are_hash_pinned_and_inside_the_ranges():
    main, oldest = _lock("requirements.lock"), _lock("requirements-oldest.lock")
    for lock in (main, oldest):
        assert len(lock) > 50 and all(n_hashes >= 1 for _, n_hashes in lock.values())
        assert {"torch", "pytest", "uv", "gradio", "selenium"} <= set(lock)  # the extras are locked too
        for name, spec in {**DECLARED, **EXTRAS}.items():
            assert lock[_norm(name)][0] in spec, f"{name} {lock[_norm(name)][0]} outside {spec}"
    for name in MATRIX:  # the oldest set holds each matrix library at its lower bound
        lower = next(Version(s.version) for s in DECLARED[name] if s.operator == ">=")
        assert oldest[_norm(name)][0] == lower, name
    assert main["transformers"][0] > oldest["transformers"][0]


def test_remote_code_declares_the_pyproject_range():
    assert SpecifierSet(hf_compat.SUPPORTED_TRANSFORMERS) == DECLARED["transformers"]
    readme = (ROOT / "README.md").read_text()
    assert f"transformers{hf_compat.SUPPORTED_TRANSFORMERS}" in readme.replace(" ", "")


def test_this_transformers_is_supported():
    """Every environment of the matrix runs this suite: each must be inside the claimed range."""
    assert hf_compat.transformers_is_supported(), transformers.__version__
    assert not hf_compat.warn_if_unsupported()


def test_supported_range_edges():
    lower = next(s.version for s in DECLARED["transformers"] if s.operator == ">=")
    upper = next(s.version for s in DECLARED["transformers"] if s.operator == "<")
    assert hf_compat.transformers_is_supported(lower)
    assert not hf_compat.transformers_is_supported(upper) and not hf_compat.transformers_is_supported("4.57.1")
    assert not hf_compat.transformers_is_supported(upper + ".dev0")  # an unreleased main branch is not tested


def test_remote_code_warns_once_outside_the_range(tmp_path):
    """A clean interpreter whose transformers claims an untested version loads a checkpoint with one warning that
    names the range (and still loads: the user decides)."""
    ckpt, again = tmp_path / "ckpt", tmp_path / "again"
    tiny_mdu(layer_type="transformer").save_pretrained(ckpt)
    shutil.copytree(ckpt, again)  # another folder: its remote code is imported anew
    script = textwrap.dedent(f"""
        import sys
        from transformers import AutoConfig, AutoModelForCausalLM
        AutoModelForCausalLM.from_pretrained({str(ckpt)!r}, trust_remote_code=True)  # the supported release: silent
        print("first loaded", file=sys.stderr)
        # transformers swaps its module object in sys.modules while loading remote code: patch the one now there
        sys.modules["transformers"].__version__ = "5.99.0"
        AutoConfig.from_pretrained({str(again)!r}, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained({str(again)!r}, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained({str(again)!r}, trust_remote_code=True)
        print("loaded", type(model).__name__)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded MDUSpeechForCausalLM" in proc.stdout
    first, second = proc.stderr.split("first loaded")
    assert "outside the tested range" not in first
    assert second.count("outside the tested range") == 1, proc.stderr[-3000:]
    assert f"transformers 5.99.0 is outside the tested range {hf_compat.SUPPORTED_TRANSFORMERS}" in proc.stderr


def test_requirements_txt_is_pyproject_ranges():
    """requirements.txt (for `pip install -r` and the GPU kit) is written by `make lock` from pyproject.toml."""
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert {Requirement(line).name: Requirement(line).specifier for line in lines} == DECLARED


def test_the_matrix_tests_the_newest_patch_of_every_minor_between_the_locks():
    from scripts.newest_release import between_locks
    versions = [Version(v) for v in ("5.13.1", "5.14.0", "5.14.1", "5.15.0", "5.15.1", "5.16.0", "5.17.0", "5.17.2",
                                     "5.18.0", "5.25.0", "5.26.0")]
    spec = SpecifierSet(">=5.14,<5.26,!=5.16.*")
    got = between_locks(versions, spec, oldest=Version("5.14.0"), newest=Version("5.25.0"))
    assert got == [Version("5.15.1"), Version("5.17.2"), Version("5.18.0")]  # excluded 5.16 and the locks' minors out
    assert between_locks(versions, spec, Version("5.14.0"), Version("5.15.1")) == []
