"""Writes the flat trust_remote_code files next to a checkpoint's weights.

In this repository the code lives in two packages (`configuration_mdu/`, `modeling_mdu/`); a checkpoint holds the
same modules as flat files that import each other relatively. Cross-package imports are written as
`try: from .x import y / except ImportError: from package.x import y`, so the very same files run in both layouts
and are copied as they are.

A checkpoint is complete only with every file of `REMOTE_CODE_FILES`: its config.json names `pipeline_mdu` (the ASR
pipeline) and `processing_mdu` (AutoProcessor) although the model never imports them. transformers copies into its
dynamic-module cache only the file it loads and the files that file imports relatively (a text scan, not an
import), so the block under `TYPE_CHECKING` below names every module: whichever of them transformers loads first, it
copies all of them, and a model or processor loaded with trust_remote_code saves a complete checkpoint again.
"""

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # never executed; read by transformers' relative-import scan (see the module docstring)
    from .audio_io import load_audio_batch  # noqa: F401
    from .base_families import base_family  # noqa: F401
    from .causal_conv import CausalDepthwiseConv1d  # noqa: F401
    from .configuration_mdu import MDUSpeechConfig  # noqa: F401
    from .e_branchformer_layer import EBranchformerLayer  # noqa: F401
    from .hf_compat import take_cache  # noqa: F401
    from .modeling_mdu import MDUSpeechForCausalLM  # noqa: F401
    from .phone_recognizer import PhoneRecognizer  # noqa: F401
    from .pipeline_mdu import MDUSpeechRecognitionPipeline  # noqa: F401
    from .placement import compute_added_after  # noqa: F401
    from .processing_mdu import MDUSpeechProcessor  # noqa: F401
    from .speech_tokenizer import MDUSpeechTokenizer  # noqa: F401
    from .speech_vocab import MDUEmbedding  # noqa: F401
    from .transformer_layer import zero_residual_writers  # noqa: F401
    from .upscaling import base_to_upscaled_keys  # noqa: F401

PACKAGES = ("configuration_mdu", "modeling_mdu")
# the files of a complete checkpoint, by source package (tests/test_roundtrip.py keeps this, the TYPE_CHECKING block
# above and the packages' modules the same)
REMOTE_CODE_FILES = {
    "configuration_mdu": ("configuration_mdu.py", "placement.py"),
    "modeling_mdu": (
        "audio_io.py", "base_families.py", "causal_conv.py", "e_branchformer_layer.py", "hf_compat.py", "modeling_mdu.py",
        "phone_recognizer.py", "pipeline_mdu.py", "processing_mdu.py", "remote_code.py", "speech_tokenizer.py",
        "speech_vocab.py", "transformer_layer.py", "upscaling.py",
    ),
}


def remote_code_files() -> list[Path]:
    """The .py files a checkpoint needs: every module of the two source packages, or of the flat folder this module
    runs in (a checkpoint loaded with trust_remote_code). Raises FileNotFoundError when one of `REMOTE_CODE_FILES` is
    missing: an incomplete checkpoint would load but fail later (pipeline(), AutoProcessor)."""
    here = Path(__file__).resolve().parent
    if here.name == "modeling_mdu" and (here.parent / "configuration_mdu" / "configuration_mdu.py").is_file():
        folders = [here.parent / package for package in PACKAGES]  # source tree
    else:
        folders = [here]  # flat checkpoint (transformers_modules/...)
    files = [f for folder in folders for f in sorted(folder.glob("*.py")) if f.name != "__init__.py"]
    missing = sorted({name for names in REMOTE_CODE_FILES.values() for name in names} - {f.name for f in files})
    if missing:
        raise FileNotFoundError(
            f"remote code files {missing} not found next to {__file__}: cannot write a complete checkpoint (load the "
            "model or processor from a checkpoint that has them, or install mdu-speech)"
        )
    return files


def export_remote_code(save_directory) -> list[str]:
    """Copies the remote code files (`remote_code_files`) into `save_directory`; returns the written paths."""
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    written = []
    for src in remote_code_files():
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
