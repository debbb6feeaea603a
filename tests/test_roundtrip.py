"""Checkpoint round trips: every way a checkpoint gets written (train_hf's export; model and processor loaded with the
Auto classes and trust_remote_code, then saved; a PEFT merge of such a model; a processor saved on its own) leaves a
complete one, on which `pipeline()`, `AutoProcessor` and `AutoModelForCausalLM` work in a clean interpreter
(python -I, empty cwd, fresh module cache). The speech tokenizer's settings have one source,
preprocessor_config.json."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from audio_fixtures import SR, chirp, fitted_mel_tokenizer, write_wav
from devices import cpu_only_env
from tiny_models import perturb_added_layers, tiny_mdu, tiny_text_tokenizer
from train_fixtures import fit_tiny_speech_tokenizer, make_audio_folder, save_tiny_base
from transformers import AutoFeatureExtractor, AutoProcessor

from modeling_mdu import MDUSpeechProcessor, MDUSpeechTokenizer, remote_code

GEN = dict(max_new_tokens=8, min_new_tokens=4)  # a random tiny model: force a few tokens so the texts can differ
ROOT = Path(__file__).resolve().parent.parent
CODE_FILES = {p.name for package in ("configuration_mdu", "modeling_mdu") for p in (ROOT / package).glob("*.py")}
CODE_FILES -= {"__init__.py"}

# Loads `src` with the Auto classes (the checkpoint's own code) and writes the other checkpoints from it.
RESAVE = textwrap.dedent(
    """
    import sys
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoProcessor
    assert "modeling_mdu" not in sys.modules
    src, resaved, merged, processor_only = sys.argv[1:5]
    model = AutoModelForCausalLM.from_pretrained(src, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(src, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    model.save_pretrained(resaved)                     # a fine-tune of a Hub checkpoint saves like this
    processor.save_pretrained(resaved)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(src, trust_remote_code=True),
                          LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft.merge_and_unload().save_pretrained(merged)    # a PEFT merge; its processor saved on its own
    AutoProcessor.from_pretrained(src, trust_remote_code=True).save_pretrained(merged)
    AutoProcessor.from_pretrained(src, trust_remote_code=True).save_pretrained(processor_only)
    """
)

# What a user does with each folder; prints one JSON line {folder: {"pipeline"|"transcribe"|"units"|"error": ...}}.
CHECK = textwrap.dedent(
    """
    import json, sys, traceback
    from transformers import AutoFeatureExtractor, AutoModelForCausalLM, AutoProcessor, pipeline
    assert "modeling_mdu" not in sys.modules
    wav, folders = sys.argv[1], sys.argv[2:]
    gen = dict(max_new_tokens=8, min_new_tokens=4)
    out = {}
    for folder in folders:
        res = out[folder] = {}
        try:
            res["units"] = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)(wav)[0].tolist()
            processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
            res["ids"] = processor(audio=wav)["input_ids"][0].tolist()
            if folder.endswith("processor_only"):
                continue
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
            res["transcribe"] = processor.transcribe(model, [wav], **gen)[0]
            asr = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)
            res["pipeline"] = asr(wav, **gen)["text"]
        except Exception:
            res["error"] = traceback.format_exc()[-1500:]
    print(json.dumps(out))
    """
)


def run_clean(script: str, args: list[str], tmp_path: Path, name: str):
    """`python -I` in an empty folder with a fresh dynamic-module cache and no network: this repo is not importable."""
    run_dir = tmp_path / f"cwd_{name}"
    run_dir.mkdir()
    (tmp_path / f"{name}.py").write_text(script)
    env = cpu_only_env({k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})  # as in-process
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / f"modules_{name}"))
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / f"{name}.py"), *args], cwd=run_dir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def train_hf_export(root: Path) -> Path:
    """train_hf.py's exported output folder, after two steps on the tiny test data."""
    import train_hf

    audio = make_audio_folder(root / "audio")
    base = save_tiny_base(root / "base")
    stok = fit_tiny_speech_tokenizer(audio, root / "speech_tokenizer")
    out = root / "train_hf"
    train_hf.main(["configs/tiny_test.yaml", "--base_model", str(base), "--dataset", str(audio), "--speech_tokenizer",
                   str(stok), "--output_dir", str(out), "--max_steps", "2"])
    return out


def test_remote_code_files_name_every_module():
    """The list of a complete checkpoint's files, the modules of the two packages and the relative imports that make
    transformers copy all of them with any one agree."""
    for package, names in remote_code.REMOTE_CODE_FILES.items():
        assert set(names) == {p.name for p in (ROOT / package).glob("*.py")} - {"__init__.py"}, package
    scanned = set(re.findall(r"^\s*from\s+\.(\S+)\s+import", Path(remote_code.__file__).read_text(), flags=re.M))
    assert {f"{m}.py" for m in scanned} == CODE_FILES - {"remote_code.py"}
    for module in ("modeling_mdu", "processing_mdu"):  # the files transformers loads first import remote_code
        assert re.search(r"^from \.remote_code import", (ROOT / "modeling_mdu" / f"{module}.py").read_text(), re.M)


def test_every_way_of_saving_gives_a_complete_checkpoint(tmp_path):
    model = tiny_mdu()
    perturb_added_layers(model, std=0.3)
    processor = MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(), tiny_text_tokenizer())
    exported = tmp_path / "exported"  # what train_hf's Trainer writes: model + processor save_pretrained
    model.save_pretrained(exported)
    processor.save_pretrained(exported)
    wav = write_wav(tmp_path / "clip.wav", chirp(0.6, seed=7))
    expected = processor.transcribe(model, [wav], **GEN)[0]
    assert expected

    folders = {name: tmp_path / name for name in ("resaved", "merged", "processor_only")}
    run_clean(RESAVE, [str(exported), *map(str, folders.values())], tmp_path, "resave")
    folders["exported"] = exported
    folders["train_hf"] = train_hf_export(tmp_path / "train")
    for name, folder in folders.items():
        missing = CODE_FILES - {p.name for p in folder.iterdir()}
        assert not missing, f"{name}: {sorted(missing)} missing"

    stdout = run_clean(CHECK, [wav, *map(str, folders.values())], tmp_path, "check")
    result = json.loads(stdout.strip().splitlines()[-1])
    result = {name: result[str(folder)] for name, folder in folders.items()}
    errors = {name: r["error"] for name, r in result.items() if "error" in r}
    assert not errors, "\n\n".join(f"{name}:\n{e}" for name, e in errors.items())
    units = processor.feature_extractor(wav)[0].tolist()
    ids = processor(audio=wav)["input_ids"][0].tolist()
    for name in ("exported", "resaved", "merged", "processor_only"):
        assert (result[name]["units"], result[name]["ids"]) == (units, ids), name
    for name in ("exported", "resaved", "merged"):  # LoRA starts as a no-op: the merge keeps the transcript
        assert result[name]["transcribe"] == result[name]["pipeline"] == expected, name
    trained = result["train_hf"]
    assert trained["pipeline"] == trained["transcribe"] and len(trained["units"]) > 0


def test_preprocessor_config_is_the_one_source_of_the_speech_tokenizer_settings(tmp_path):
    """processor_config.json holds no copy of the speech tokenizer's settings, and an edit of preprocessor_config.json
    is what loads, also from a checkpoint written before (whose processor_config.json nests a copy)."""
    model = tiny_mdu()
    processor = MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(), tiny_text_tokenizer())
    processor.save_pretrained(tmp_path)
    processor_config = json.loads((tmp_path / "processor_config.json").read_text())
    assert not {"feature_extractor", "tokenizer", "chat_template"} & set(processor_config)
    settings = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert settings["collapse_repeats"] is False
    processor_config["feature_extractor"] = dict(settings)  # as checkpoints of earlier versions hold it
    (tmp_path / "processor_config.json").write_text(json.dumps(processor_config))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**settings, "collapse_repeats": True}))

    clip = chirp(1.0, seed=3)
    units = processor.feature_extractor(clip, sampling_rate=SR)[0].tolist()
    collapsed = [u for i, u in enumerate(units) if i == 0 or u != units[i - 1]]
    assert collapsed != units  # the edit changes the units
    loaded = [MDUSpeechProcessor.from_pretrained(tmp_path).feature_extractor,
              MDUSpeechTokenizer.from_pretrained(tmp_path),
              AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True).feature_extractor,
              AutoFeatureExtractor.from_pretrained(tmp_path, trust_remote_code=True)]
    for tok in loaded:
        assert tok.collapse_repeats is True, type(tok).__module__
        assert tok(clip, sampling_rate=SR)[0].tolist() == collapsed


@pytest.mark.parametrize("save", ["model", "processor"])
def test_incomplete_code_folder_refuses_to_save(tmp_path, monkeypatch, save):
    """Saving from a folder that lacks one of the code files fails with a message naming it, instead of writing a
    checkpoint that loads but whose pipeline() fails later."""
    monkeypatch.setitem(remote_code.REMOTE_CODE_FILES, "modeling_mdu",
                        remote_code.REMOTE_CODE_FILES["modeling_mdu"] + ("not_there.py",))
    model = tiny_mdu()
    obj = model if save == "model" else MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(),
                                                                              tiny_text_tokenizer())
    with pytest.raises(FileNotFoundError, match=r"\['not_there.py'\] not found"):
        obj.save_pretrained(tmp_path / "out")
