"""Writes the flat trust_remote_code files next to a checkpoint's weights.

In this repository the code lives in two packages (`configuration_mdu/`, `modeling_mdu/`); a checkpoint holds the
same modules as flat files that import each other relatively. Cross-package imports are written as
`try: from .x import y / except ImportError: from package.x import y`, so the very same files run in both layouts
and are copied as they are. In a checkpoint loaded with trust_remote_code, this file sits in the same flat folder
as the others, so re-saving such a model writes them again.
"""

import shutil
from pathlib import Path

PACKAGES = ("configuration_mdu", "modeling_mdu")


def remote_code_files(require_model: bool = True) -> list[Path]:
    """The .py files a checkpoint needs. `require_model=False` also accepts a flat folder holding only the
    processor's modules (a processor loaded on its own with trust_remote_code)."""
    here = Path(__file__).resolve().parent
    if here.name == "modeling_mdu" and (here.parent / "configuration_mdu" / "configuration_mdu.py").is_file():
        folders = [here.parent / p for p in PACKAGES]  # source tree
    else:
        folders = [here]  # flat checkpoint (transformers_modules/...)
    files = [f for folder in folders for f in sorted(folder.glob("*.py")) if f.name != "__init__.py"]
    if require_model and not any(f.name == "modeling_mdu.py" for f in files):
        raise FileNotFoundError(f"modeling_mdu.py not found next to {__file__}: cannot export remote code")
    return files


def export_remote_code(save_directory, require_model: bool = True) -> list[str]:
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    written = []
    for src in remote_code_files(require_model):
        dst = save_directory / src.name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        written.append(str(dst))
    return written


AUTO_MAP = {
    "AutoConfig": "configuration_mdu.MDUSpeechConfig",
    "AutoModel": "modeling_mdu.MDUSpeechModel",
    "AutoModelForCausalLM": "modeling_mdu.MDUSpeechForCausalLM",
}

CUSTOM_PIPELINES = {  # config.custom_pipelines entry that makes pipeline("automatic-speech-recognition") use pipeline_mdu
    "automatic-speech-recognition": {
        "impl": "pipeline_mdu.MDUSpeechRecognitionPipeline",
        "pt": ["AutoModelForCausalLM"],
        "type": "audio",
    }
}
