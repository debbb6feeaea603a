"""Model card for an exported mdu-speech checkpoint: README.md with Hub metadata, usage, results, training, limits.

    python -m model_cards.generate outputs/mdu --base_model cache/base/SmolLM2-135M-Instruct \
        --asr_summary runs/eval/asr-.../summary.json --text_results runs/eval/text-.../results.json

Built with `huggingface_hub.ModelCard` / `ModelCardData` / `EvalResult` from `template.md`. The front matter holds
`base_model` (the base's Hub id when its provenance says it, see `resolve_base`; never a local path), `library_name:
transformers`, `pipeline_tag: automatic-speech-recognition`, `license` (the base's when known), `tags`, `model-index`
(measured WER/CER, text score, text Δ and held-out perplexity ratio, with the data they were measured on) and an `mdu`
block that `eval/report.py` reads.
"""

import argparse
import json
import math
import re
import warnings
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_mdu.hf_compat import SUPPORTED_TRANSFORMERS

TEMPLATE = Path(__file__).resolve().parent / "template.md"
# base models we know by name (a GGUF file of a provenance stamp, or a folder): Hub id and license
KNOWN_BASES = {
    "SmolLM2-135M-Instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "SmolLM2-135M": ("HuggingFaceTB/SmolLM2-135M", "apache-2.0"),
    "SmolLM2-360M": ("HuggingFaceTB/SmolLM2-360M", "apache-2.0"),
    "SmolLM2-360M-Instruct": ("HuggingFaceTB/SmolLM2-360M-Instruct", "apache-2.0"),
    "SmolLM2-1.7B": ("HuggingFaceTB/SmolLM2-1.7B", "apache-2.0"),
    "SmolLM2-1.7B-Instruct": ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "apache-2.0"),
}
METHODS = {
    "mdu": "Multimodal Depth Up-scaling: frozen base LLM, trainable inserted layers + new speech-token rows",
    "full": "full fine-tuning of every weight (baseline)",
    "lora": "LoRA on the frozen base (merged into the weights) + speech-token rows (baseline)",
    "layerwise_lr": "full fine-tuning with per-layer learning rates from text importance (arXiv 2509.23755)",
    "lora_layerwise": "LoRA with per-layer learning rates from text importance (merged)",
}


def resolve_base(base_model: str | None, license: str | None = None) -> tuple[str | None, str | None]:
    """(Hub id, license) of the base model; the id is None (with a warning) when it is not known.

    `base_model` is a Hub id or a local folder. For a folder, the Hub id comes from its provenance, in this order: a
    provenance stamp (`prepare_stamp.json`: a `hub_id` / `base_model` field, or the name of the GGUF file it was
    made from, see `KNOWN_BASES`), the folder's config.json `_name_or_path` when that is a Hub id, the Hugging Face
    cache layout (`.../models--owner--name/snapshots/<commit>`), and last the folder's name in `KNOWN_BASES`. A
    local path is never returned: a card's `base_model` must name a Hub model."""
    if not base_model:
        return None, license
    base_model = str(base_model)
    path = Path(base_model)
    hub_id = None
    if path.is_dir():
        hub_id = _hub_id_from_folder(path)
        readme = path / "README.md"
        if readme.is_file() and not license:
            license = ModelCard.load(readme).data.to_dict().get("license")
    elif _is_hub_id(base_model):
        hub_id = base_model
    if hub_id is None and path.name in KNOWN_BASES:
        hub_id = KNOWN_BASES[path.name][0]
    if hub_id is None:
        warnings.warn(
            f"model card: the Hub id of the base model {base_model!r} is not known (no provenance stamp, Hub id in its "
            "config.json or Hub cache layout), so `base_model` is left out of the card; pass the Hub id as base_model "
            "to name it", stacklevel=2)
        return None, license
    known = {hub: lic for hub, lic in KNOWN_BASES.values()}
    return hub_id, license or known.get(hub_id)


def _is_hub_id(name) -> bool:
    """`owner/name` (or a bare `name`) that is not a local path."""
    return isinstance(name, str) and bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name)) and not Path(name).exists() \
        and not name.startswith((".", "-"))


def _hub_id_from_folder(path: Path) -> str | None:
    """The Hub id a local base folder came from, from its provenance (see `resolve_base`), else None."""
    stamp = path / "prepare_stamp.json"
    if stamp.is_file():
        data = json.loads(stamp.read_text())
        for key in ("hub_id", "base_model"):
            if _is_hub_id(data.get(key)) and "/" in data[key]:
                return data[key]
        gguf = re.sub(r"([.-](I?Q\d\w*|B?F16|F32))?\.gguf$", "", Path(str(data.get("gguf") or "")).name, flags=re.I)
        if gguf in KNOWN_BASES:
            return KNOWN_BASES[gguf][0]
    config = _config(path)
    name = config.get("_name_or_path")
    if _is_hub_id(name) and "/" in name:
        return name
    for parent in [path, *path.resolve().parents]:
        m = re.fullmatch(r"models--([\w.-]+)--([\w.-]+)", parent.name)
        if m:
            return f"{m.group(1)}/{m.group(2)}"
    return None


def _hub_ids(names) -> list[str] | None:
    """Only Hub dataset ids (`name` or `owner/name`, not a local path) belong in the `datasets` metadata."""
    ids = [d for d in names if d and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", d) and not Path(d).exists()]
    return ids or None


def trainable_from_checkpoint(output_dir) -> int | None:
    """Parameters an MDU run trains (added layers + speech rows), counted from the safetensors headers."""
    config = _config(output_dir)
    files = sorted(Path(output_dir).glob("*.safetensors"))
    if config.get("model_type") != "mdu_speech" or not files:
        return None
    from safetensors import safe_open

    from configuration_mdu import MDUSpeechConfig

    added = set(MDUSpeechConfig.from_pretrained(output_dir).added_layer_positions)
    total = 0
    for f in files:
        with safe_open(f, "pt") as st:
            for key in st.keys():
                m = re.search(r"\.layers\.(\d+)\.", key)
                if "speech_weight" in key or (m and int(m.group(1)) in added):
                    total += math.prod(st.get_slice(key).get_shape())
    return total


def _config(output_dir) -> dict:
    path = Path(output_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def eval_results(results: dict | None) -> tuple[list[EvalResult], dict, str]:
    """model-index entries, flat numbers for the `mdu` block, and a markdown table. `results` may hold `asr` (the
    eval/asr.py summary; its WER is the card's headline `wer`), `asr_more` (a list of further summaries, e.g. other
    test splits: rows and model-index entries only) and `text` (eval/text.py results), or flat `wer` (fraction),
    `text_delta`, ..."""
    results = results or {}
    text = results.get("text") or {}
    flat, entries, rows = {}, [], []
    for i, asr in enumerate([results.get("asr") or {}, *(results.get("asr_more") or [])]):
        entries += _asr_rows(asr, results if i == 0 else {}, flat if i == 0 else {}, rows)
    delta = (text.get("delta") or {}).get("score", results.get("text_delta"))
    suite = text.get("suite") or results.get("text_suite") or "offline"
    suite_name = f"mdu-speech text suite ({suite})"
    text_entry = dict(task_type="text-generation", dataset_type=f"mdu-speech/text-{suite}", dataset_name=suite_name)
    score = text.get("score", results.get("text_score"))
    if score is not None:
        flat["text_score"] = score
        entries.append(EvalResult(**text_entry, metric_type="text_score", metric_name="text score (points)",
                                  metric_value=round(score, 2)))
        rows.append(f"| text score (points) | {score:.2f} | {suite_name} |")
    if delta is not None:
        flat["text_delta"] = delta
        entries.append(EvalResult(**text_entry, metric_type="text_delta", metric_name="text Δ vs base (points)",
                                  metric_value=round(delta, 2)))
        rows.append(f"| text Δ vs base (points) | {delta:+.2f} | {suite_name} |")
    ratio = (text.get("delta") or {}).get("perplexity_ratio", results.get("ppl_ratio"))
    if ratio is not None:
        flat["ppl_ratio"] = ratio
        entries.append(EvalResult(task_type="text-generation", dataset_type="mdu-speech/lee-heldout",
                                  dataset_name="gensim lee.cor news text (held out)", metric_type="perplexity_ratio",
                                  metric_name="held-out perplexity ratio vs base", metric_value=round(ratio, 4)))
        rows.append(f"| held-out perplexity ratio vs base | {ratio:.3f} | gensim lee.cor news text |")
    table = "| metric | value | measured on |\n|---|---|---|\n" + "\n".join(rows) if rows else ""
    return entries, flat, table


def _asr_rows(asr: dict, flat_source: dict, flat: dict, rows: list) -> list[EvalResult]:
    """Appends the table rows of one eval/asr.py summary to `rows`, fills `flat` (wer/cer, %), returns its
    model-index entries. `flat_source` holds flat fallbacks (`wer`, `cer`, `asr_dataset`, `asr_split`)."""
    wer = asr.get("wer", flat_source.get("wer"))
    if wer is None:
        return []
    data = asr.get("dataset") or flat_source.get("asr_dataset") or "unknown"
    split = asr.get("split") or flat_source.get("asr_split")
    flat["wer"] = 100 * wer
    entries = [EvalResult(task_type="automatic-speech-recognition", dataset_type=data, dataset_name=data,
                          dataset_split=split, metric_type="wer", metric_name="WER (%)", metric_value=round(100 * wer, 2))]
    cer = asr.get("cer", flat_source.get("cer"))
    if cer is not None:
        flat["cer"] = 100 * cer
        entries.append(EvalResult(task_type="automatic-speech-recognition", dataset_type=data, dataset_name=data,
                                  dataset_split=split, metric_type="cer", metric_name="CER (%)", metric_value=round(100 * cer, 2)))
    n = asr.get("num_utterances")
    flat["asr_data"] = f"{data}:{split} (n={n})"  # as eval/report.py's column, which reads this block
    rows.append(f"| ASR WER (%) | {100 * wer:.2f} | {data}{':' + split if split else ''}{f' ({n} utterances)' if n else ''} |")
    check = asr.get("listening_check")
    if check:  # eval/asr.py: does the model listen, or say its text prior to every input?
        flat["distinct_hyps"] = check["distinct_hypotheses"]
        rows.append(f"| distinct hypotheses | {check['distinct_hypotheses']} of {n} | same utterances |")
        rows.append(f"| WER (%) of always answering the most common hypothesis | "
                    f"{100 * check['wer_if_always_most_common']:.2f} | same utterances |")
    return entries


def write_model_card(output_dir, base_model: str | None = None, results: dict | None = None, training: dict | None = None,
                     datasets=None, license: str | None = None, method: str | None = None, dataset: str | None = None,
                     method_args: dict | None = None, training_args: dict | None = None, train_metrics: dict | None = None,
                     repo_id: str | None = None, trainable_params: int | None = None) -> Path:
    """Writes `output_dir/README.md` (replacing an earlier card) and returns its path. Accepts the keys
    `train_hf.py` passes (method, dataset, method_args, training_args, train_metrics)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    training = dict(training or {})
    method = method or training.get("method") or "mdu"
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    base_given = base_model or training.get("base_model")
    base_id, license = resolve_base(base_given, license)
    # the card names a local base (Hub id unknown) by its folder name only: a local path means nothing to a reader
    base_text = base_id or (f"{Path(str(base_given)).name} (a local model)" if base_given else "unknown")
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or ([dataset] if dataset else []))
    config = _config(output_dir)
    name = repo_id or output_dir.name
    entries, flat, table = eval_results(results)
    if trainable_params is None and method == "mdu":
        trainable_params = trainable_from_checkpoint(output_dir)
    placement = config.get("placement") if config.get("num_added_layers") else None
    layer_type = config.get("layer_type") if config.get("num_added_layers") else None
    mdu_block = {"method": method, "placement": placement, "layer_type": layer_type,
                 "num_added_layers": config.get("num_added_layers"), "trainable_params": trainable_params, **flat}
    card_data = ModelCardData(
        base_model=base_id, library_name="transformers", pipeline_tag="automatic-speech-recognition", license=license,
        language=["en"], tags=["mdu-speech", "speech-recognition", "depth-up-scaling", method] + ([layer_type] if layer_type else []),
        datasets=_hub_ids(datasets), model_name=name,
        eval_results=entries or None, mdu={k: v for k, v in mdu_block.items() if v is not None},
    )
    lines = _training_lines(method_args or training.get("method_args"), training_args or training.get("training_args"),
                            train_metrics or training.get("train_metrics"), placement, layer_type, config)
    method_title = {"mdu": "Multimodal Depth Up-scaling (MDU)"}.get(method, METHODS[method].split(":")[0])
    card = ModelCard.from_template(
        card_data, template_path=str(TEMPLATE), model_name=name, repo_id=repo_id or str(output_dir), base_model=base_text,
        base_link=f"https://huggingface.co/{base_id}" if base_id else None,
        method_title=method_title, method_description=METHODS[method], text_kept=method == "mdu", results_table=table,
        datasets_text=", ".join(f"`{d}`" for d in datasets) or "not recorded", training_lines=lines,
        synthetic=any("espeak" in str(d) for d in datasets), speech_tokenizer=_speech_tokenizer_text(output_dir),
        transformers_range=SUPPORTED_TRANSFORMERS,
    )
    path = output_dir / "README.md"
    card.save(path)
    return path


SPEECH_TOKENIZERS = {
    "phonetic": "phoneme units from a small CTC phoneme recognizer",
    "mel": "k-means units of log-mel frames",
    "ssl": "k-means units of a self-supervised speech encoder's hidden states",
    "codec": "neural-codec codes",
}


def _speech_tokenizer_text(output_dir: Path) -> str:
    """What the checkpoint's speech tokenizer makes (from preprocessor_config.json), for the card's first lines."""
    path = output_dir / "preprocessor_config.json"
    backend = json.loads(path.read_text()).get("backend") if path.is_file() else None
    return SPEECH_TOKENIZERS.get(backend, "discrete units")


def _training_lines(method_args, training_args, train_metrics, placement, layer_type, config) -> list[str]:
    lines = []
    if placement:
        lines.append(f"Inserted layers: {config.get('num_added_layers')} × {layer_type}, placement `{placement}` "
                     f"(after base layers {config.get('added_after')})")
    keep = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
            "warmup_steps", "lr_scheduler_type", "seed")
    if training_args:
        lines.append("Hyper-parameters: " + ", ".join(f"{k}={training_args[k]}" for k in keep if k in training_args))
    if method_args:
        shown = {k: v for k, v in method_args.items() if v not in (None, [], {}) and not k.startswith("_")}
        lines.append("Method settings: " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())))
    if train_metrics:
        lines.append("Training: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in train_metrics.items()))
    return lines


def read_front_matter(readme) -> dict:
    """The YAML metadata block of a README.md."""
    text = Path(readme).read_text()
    if not text.startswith("---"):
        raise ValueError(f"{readme} has no YAML front matter")
    return yaml.safe_load(text.split("---", 2)[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", help="exported checkpoint folder")
    p.add_argument("--base_model", default=None)
    p.add_argument("--method", default="mdu", choices=sorted(METHODS))
    p.add_argument("--dataset", action="append", default=[], help="training data (repeatable)")
    p.add_argument("--asr_summary", default=None, help="summary.json of eval/asr.py")
    p.add_argument("--text_results", default=None, help="results.json of eval/text.py")
    p.add_argument("--license", default=None)
    p.add_argument("--repo_id", default=None)
    p.add_argument("--trainable_params", type=int, default=None)
    a = p.parse_args(argv)
    results = {}
    if a.asr_summary:
        results["asr"] = json.loads(Path(a.asr_summary).read_text())
    if a.text_results:
        results["text"] = json.loads(Path(a.text_results).read_text())
    path = write_model_card(a.output_dir, base_model=a.base_model, results=results, datasets=a.dataset, license=a.license,
                            method=a.method, repo_id=a.repo_id, trainable_params=a.trainable_params)
    print(path)


if __name__ == "__main__":
    main()
