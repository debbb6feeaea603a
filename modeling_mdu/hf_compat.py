"""What differs between the transformers releases we support, in one place.

Checkpoints are `trust_remote_code`: every user runs these files with the transformers they have, so the model must
be right on each release of the supported range (`SUPPORTED_TRANSFORMERS`, the same range as in pyproject.toml;
`make test` runs the oldest and the newest of it). Differences are detected by feature, not by version number:

- The generation cache. transformers >= 5.24 passes it to `forward` as `cache=` and reads it back from the output's
  `cache` field; older releases use `past_key_values` for both. A forward that only knows one name silently decodes
  without its cache on the other releases. Our forwards take both names (`take_cache`) and hand the cache on, to the
  Llama layers, `create_causal_mask` and the output, under the installed release's name (`CACHE_NAME`).
- Activation checkpointing: `activation_checkpointing_enable` and `TrainingArguments.activation_checkpointing*`
  (transformers >= 5.23) were `gradient_checkpointing_*` before (now deprecated aliases).

Outside the supported range the model still loads, with one warning naming the range.
"""

import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import logging

SUPPORTED_TRANSFORMERS = ">=5.14,<5.26"

CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

logger = logging.get_logger(__name__)


def transformers_is_supported(version: str = transformers.__version__) -> bool:
    return Version(version) in SpecifierSet(SUPPORTED_TRANSFORMERS, prereleases=True)


def warn_if_unsupported(version: str = transformers.__version__) -> bool:
    """Logs a warning when `version` is outside the tested range; returns whether it did."""
    if transformers_is_supported(version):
        return False
    logger.warning(
        f"mdu-speech: transformers {version} is outside the tested range {SUPPORTED_TRANSFORMERS}. Cached generation "
        "(and with it every transcript) depends on transformers internals that change between releases: check "
        "`model.generate(..., use_cache=True)` against `use_cache=False` on your inputs, or install a tested "
        f"release (pip install 'transformers{SUPPORTED_TRANSFORMERS}')."
    )
    return True


warn_if_unsupported()  # once per process: modules run once


def take_cache(past_key_values, cache):
    """The one generation cache of a forward that accepts it as `past_key_values` or (transformers >= 5.24) `cache`."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("got two caches: pass the cache once, as `cache` or as `past_key_values`")
    return cache if cache is not None else past_key_values


def cache_kwarg(cache) -> dict:
    """{name: cache} under the name the installed transformers uses (for layers, masks and outputs)."""
    return {CACHE_NAME: cache}


def output_cache(outputs):
    """The cache of a model output, read under the installed release's name (no deprecation warning)."""
    return getattr(outputs, CACHE_NAME, None)


def enable_activation_checkpointing(model, use_reentrant: bool = False) -> None:
    """Activation (gradient) checkpointing with non-reentrant checkpoints (frozen layers break the reentrant kind)."""
    kwargs = {"use_reentrant": use_reentrant}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def is_activation_checkpointing(model) -> bool:
    name = "is_activation_checkpointing" if hasattr(model, "activation_checkpointing_enable") else "is_gradient_checkpointing"
    return bool(getattr(model, name))


def checkpointing_requested(training_args) -> bool:
    """Whether TrainingArguments ask for activation checkpointing (new name first, deprecated alias second)."""
    return bool(getattr(training_args, "activation_checkpointing", None) or training_args.gradient_checkpointing)


def set_checkpointing_kwargs(training_args, kwargs: dict) -> None:
    """Sets the checkpointing kwargs the installed Trainer reads, unless the user gave some."""
    names = [n for n in ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs") if hasattr(training_args, n)]
    if all(getattr(training_args, n) is None for n in names):
        for n in names:
            setattr(training_args, n, dict(kwargs))


def pretrained_source_from_caller(max_depth: int = 6):
    """(path or Hub id, hub kwargs) of the `from_pretrained` call that is building a feature extractor from its dict.

    transformers >= 5.25's `AutoFeatureExtractor.from_pretrained` hands a remote-code class only the config dict
    (`cls.from_dict(config_dict)`), not the folder, so a feature extractor with weight files next to its
    preprocessor_config.json (our speech tokenizer) cannot find them. This reads the folder from the caller's frame;
    None when there is no such caller (a plain `from_dict`)."""
    import sys

    frame = sys._getframe(1)
    for _ in range(max_depth):
        frame = frame.f_back
        if frame is None:
            return None
        if frame.f_code.co_name == "from_pretrained" and "pretrained_model_name_or_path" in frame.f_locals:
            local = frame.f_locals
            hub = dict(local.get("hub_kwargs") or {})
            hub.update({k: local[k] for k in ("cache_dir", "revision", "token", "subfolder") if local.get(k)})
            return local["pretrained_model_name_or_path"], hub
    return None
