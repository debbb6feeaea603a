"""The comparison grid (issues 9 and 19): train every method on the demo's recipe (same data, base and speech
tokenizer), each at the learning rate a small sweep chose for its family, evaluate ASR, text, spoken QA and the
text-importance shift, and write one report (tables + plots next to the papers' numbers) with the exact commands.

    python grid.py                          # every run in configs/grid/ (budget: gpu when CUDA is there, else cpu)
    python grid.py --budget cpu --only full,lora        # a sitting: these runs (and their families' sweeps) only
    python grid.py --dry_run                # the plan: each stage, cached or to run, and its exact command
    python grid.py --speech_tokenizer outputs/demo/speech_tokenizer    # reuse a fitted speech tokenizer (copied)
    python grid.py --tiny --output_dir /tmp/g --only full,mdu_ebf_interleaved   # smoke test: tiny Llama + tiny corpus

Runs are `configs/grid/<name>.yaml` (train_hf.py keys) merged over `configs/grid/_shared.yaml` (shared keys, the step
budget, the sweep, eval settings), in `_shared.yaml`'s `runs` order. Stages, each skipped when its output exists, so
the grid resumes across sittings (a killed training resumes from its last checkpoint):
  prepare          base model and the multi-synthesizer corpus (prepare/), when missing
  speech tokenizer ONE for every run: a copy of --speech_tokenizer, or of the demo's (outputs/demo/speech_tokenizer)
                   when demo.py fitted it with this recipe on this corpus, else fitted here (fit_phonetic_tokenizer.py);
                   which one is recorded in speech_tokenizer/grid_source.json and in the report
  base             text suite (eval/text.py: the reference for Δ), layer-wise text importance (eval/importance.py)
                   and its control (the base on the next texts: the shift's sampling noise),
                   spoken QA text-to-text (eval/spoken_qa.py)
  sweep            per family (`sweep.families`), before its first run: the training split's units once
                   (training.precompute_units), a validation split carved from it (whole sentences, fixed seed; never a
                   test split), then each candidate learning rate trained `sweep.budgets.<budget>.max_steps` steps with
                   the family's first run's config and scored by the validation loss; the lowest wins (sweep/<family>/)
  per run          train (train_hf.py), ASR WER/CER on `test` and `test_seen` with the listening check (eval/asr.py),
                   text Δ and perplexity ratio (eval/text.py), spoken QA (eval/spoken_qa.py), importance shift against
                   the base (eval/importance.py), then `<run>/run.json` (the summary)
  report           results/report.md, report.json, pareto.png, importance_shift.png (eval/report.py), COMMANDS.md
Every stage calls the module's own `main(argv)`, so COMMANDS.md lists commands that reproduce it exactly; stage
times accumulate in <output_dir>/stage_seconds.json. A run whose `run.json` exists is not touched again; delete its
folder to redo it. The report holds every finished run of the output dir, whichever sitting made it.
"""

import argparse
import gc
import json
import math
import os
import platform
import random
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent
GRID_DIR = ROOT / "configs" / "grid"
LAYERWISE = ("layerwise_lr", "lora_layerwise")
TOKENIZER_RECIPE = ("g2p_voice", "epochs", "recognizer_dim", "recognizer_layers", "spec_augment", "vtlp")  # = demo.TOKENIZER


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"CPU {cpu} ({os.cpu_count()} cores), GPU {gpu}, torch {torch.__version__}, "
            f"python {platform.python_version()}")


def run_names() -> list[str]:
    """The runs in `_shared.yaml`'s order, then any other configs/grid/*.yaml."""
    listed = yaml.safe_load((GRID_DIR / "_shared.yaml").read_text())["runs"]
    extra = sorted(p.stem for p in GRID_DIR.glob("*.yaml") if not p.name.startswith("_") and p.stem not in listed)
    return listed + extra


def make_tiny(root: Path) -> tuple[str, str]:
    """A tiny random Llama (+ char tokenizer) and 16 synthetic utterances (8 train; 4 test and 4 test_seen, with
    other noise seeds), from the test fixtures in tests/. Returns (base dir, dataset dir)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from datasets import DatasetDict
    from train_fixtures import make_audio_folder, save_tiny_base

    from training.data import load_asr_dataset

    base, data = root / "tiny_base", root / "tiny_data"
    if not (base / "config.json").exists():
        save_tiny_base(base)
    if not (data / "dataset_dict.json").exists():
        ds = load_asr_dataset(str(make_audio_folder(root / "tiny_audio", n=16)))
        DatasetDict(train=ds.select(range(8)), test=ds.select(range(8, 12)),
                    test_seen=ds.select(range(12, 16))).save_to_disk(str(data))
    return str(base), str(data)


def flags(**kw) -> list[str]:
    """--key value for every key whose value is not None (True -> bare flag)."""
    out = []
    for k, v in kw.items():
        if v is True:
            out.append(f"--{k}")
        elif v is not None and v is not False:
            out += [f"--{k}", str(v)]
    return out


def resolve_bf16(value, budget: str):
    """`auto`: bf16 where demo.py would use it (CUDA: yes; CPU: native bf16, demo.cpu_has_fast_bf16())."""
    if value != "auto":
        return value
    from demo import cpu_has_fast_bf16

    return True if budget == "gpu" else cpu_has_fast_bf16()


def demo_tokenizer_matches(folder: Path, stok_cfg: dict, corpus: dict, dataset: str, bf16: bool) -> tuple[bool, str]:
    """Was the speech tokenizer in `folder` fitted by demo.py with this grid's recipe, on this corpus, all of train?
    (demo.py stamps its settings in settings.json beside it.) Returns (yes, why)."""
    settings = folder.parent / "settings.json"
    if not (folder / "speech_phone_recognizer.safetensors").is_file() or not settings.is_file():
        return False, f"no fitted demo tokenizer with settings at {folder}"
    s = json.loads(settings.read_text())
    want = {k: stok_cfg.get(k) for k in TOKENIZER_RECIPE}
    checks = [("tokenizer recipe", s.get("tokenizer"), want),
              ("corpus", {k: s.get("corpus", {}).get(k) for k in corpus if k != "seed"},
               {k: v for k, v in corpus.items() if k != "seed"}),
              ("corpus folder", s.get("corpus_dir"), dataset),
              ("bf16", bool(s.get("bf16")), bool(bf16)),
              ("fit batch", s.get("fit_batch", 32), stok_cfg.get("batch_size", 32))]
    if stok_cfg.get("backend") != "phonetic" or stok_cfg.get("seed", 0) != 0 or corpus.get("seed", 0) != 0:
        return False, "the grid's tokenizer is not the demo's phonetic one with seed 0"
    for what, have, need in checks:
        if have != need:
            return False, f"{what} differs: demo {have!r}, grid {need!r}"
    if s.get("fit_examples", 0) < corpus.get("num_train", 0):
        return False, f"the demo fitted it on {s.get('fit_examples')} utterances, not all {corpus.get('num_train')}"
    return True, f"demo.py fitted it with this recipe on {dataset} (all of train; {settings})"


def carve_validation(units_dir, output_dir, size: int, seed: int = 0) -> dict:
    """A sweep dataset from the training split's precomputed units: `validation` = every utterance of training
    sentences drawn with `seed` until it holds >= `size` utterances (at most a quarter of train), `train` = the rest.
    Writes it (with the speech tokenizer copy and units_info.json) to `output_dir`; returns the split record."""
    from datasets import DatasetDict, load_from_disk

    units_dir, output_dir = Path(units_dir), Path(output_dir)
    train = load_from_disk(str(units_dir))["train"]
    texts = train["text"]
    groups = {}
    for i, t in enumerate(texts):
        groups.setdefault(t, []).append(i)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    size = max(1, min(size, len(train) // 4))
    val = []
    for t in order:
        if len(val) >= size:
            break
        val += groups[t]
    held = set(val)
    rest = [i for i in range(len(train)) if i not in held]
    tmp = output_dir.with_name(output_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    DatasetDict(train=train.select(rest), validation=train.select(sorted(val))).save_to_disk(str(tmp))
    shutil.copytree(units_dir / "speech_tokenizer", tmp / "speech_tokenizer")
    info = json.loads((units_dir / "units_info.json").read_text())
    info["splits"] = {"train": {"rows": len(rest)}, "validation": {"rows": len(val)}}
    info["carved"] = {"from": str(units_dir), "seed": seed, "size": size}
    (tmp / "units_info.json").write_text(json.dumps(info, indent=2) + "\n")
    record = {"seed": seed, "requested": size, "train_rows": len(rest), "validation_rows": len(val),
              "validation_sentences": len({texts[i] for i in val}),
              "validation_source_rows": sorted(train.select(sorted(val))["source_row"])}
    (tmp / "split.json").write_text(json.dumps(record) + "\n")  # last: marks the folder complete
    shutil.rmtree(output_dir, ignore_errors=True)
    tmp.rename(output_dir)
    return record


def choose_lr(candidates: list[dict]) -> float:
    """The candidate learning rate with the lowest finite validation loss."""
    finite = [c for c in candidates if c.get("eval_loss") is not None and math.isfinite(c["eval_loss"])]
    if not finite:
        raise ValueError(f"no candidate has a finite validation loss: {candidates}")
    return min(finite, key=lambda c: c["eval_loss"])["learning_rate"]


def lr_tag(lr: float) -> str:
    return f"lr{lr:.1e}".replace("+", "")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=["cpu", "gpu"], default=None, help="step budget (default: gpu if CUDA else cpu)")
    p.add_argument("--only", default=None, help=f"comma-separated runs; of {', '.join(run_names())}")
    p.add_argument("--base", default=None, help="base LLM folder (default: _shared.yaml's, the embedded SmolLM2-135M)")
    p.add_argument("--dataset", default=None, help="ASR dataset with train/test/test_seen splits (default: the demo corpus, cache/data/multi-demo)")
    p.add_argument("--speech_tokenizer", default=None,
                   help="a fitted speech tokenizer to copy and use (default: the demo's when its recipe is the grid's, "
                        "else one is fitted)")
    p.add_argument("--output_dir", default=None, help="runs, tokenizer, caches (default runs/grid-<budget>)")
    p.add_argument("--results_dir", default=None,
                   help="report + COMMANDS.md (default results/; <output_dir>/results with --tiny)")
    p.add_argument("--max_steps", type=int, default=None, help="override the budget's training steps (a quick probe)")
    p.add_argument("--sweep_steps", type=int, default=None, help="override the sweep's steps per candidate (a probe)")
    p.add_argument("--tiny", action="store_true", help="tiny random Llama + tiny generated corpus (smoke test)")
    p.add_argument("--dry_run", action="store_true", help="print the plan and the commands; run nothing")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse(argv)
    shared = yaml.safe_load((GRID_DIR / "_shared.yaml").read_text())
    budget = a.budget or ("gpu" if torch.cuda.is_available() else "cpu")
    names = run_names() if not a.only else [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in run_names()]
    if unknown:
        raise ValueError(f"--only: unknown runs {unknown}; runs are {run_names()}")
    names = [n for n in run_names() if n in names]  # always the grid's order
    out = Path(a.output_dir or f"runs/grid-{'tiny' if a.tiny else budget}")
    results = Path(a.results_dir or (out / "results" if a.tiny else "results"))
    tiny = shared["tiny"] if a.tiny else {}
    ev = tiny.get("eval") or shared["eval"][budget]
    stok_cfg = dict(tiny.get("speech_tokenizer") or shared["speech_tokenizer"])
    imp_cfg = tiny.get("importance") or shared["importance"]
    qa_cfg = {**shared["spoken_qa"], **tiny.get("spoken_qa", {})}
    sweep_cfg, tiny_sweep = shared["sweep"], tiny.get("sweep", {})
    sweep_budget = dict(tiny_sweep.get("budget") or sweep_cfg["budgets"][budget])
    if a.sweep_steps:
        sweep_budget["max_steps"] = a.sweep_steps
    validation = tiny_sweep.get("validation") or sweep_cfg["validation"]
    families = {fam: {**spec, **({"learning_rates": tiny_sweep["learning_rates"]} if "learning_rates" in tiny_sweep else {})}
                for fam, spec in sweep_cfg["families"].items()}
    family_of = {run: fam for fam, spec in families.items() for run in spec["runs"]}
    budget_cfg = dict(shared["budgets"][budget])
    budget_cfg["bf16"] = resolve_bf16(budget_cfg.get("bf16", False), budget)
    stok_cfg["bf16"] = resolve_bf16(stok_cfg.get("bf16", False), budget) if "bf16" in stok_cfg else None
    py = lambda script, args: "python " + script + " " + shlex.join(args)  # noqa: E731
    commands = []  # (stage, command)
    t_start = time.time()
    times_file = out / "stage_seconds.json"

    record_only = []  # set while a finished run's sweep is listed: its stages are recorded, nothing runs

    def stage(label, marker: Path, command: str, fn):
        """Runs `fn` unless `marker` exists (or --dry_run); prints progress; records the command and its time."""
        commands.append((label, command))
        if marker.exists():
            print(f"[grid] {label}: cached ({marker})")
            return
        if record_only:
            return
        print(f"[grid] {label}: {'would run' if a.dry_run else 'running'}: {command}", flush=True)
        if not a.dry_run:
            t0 = time.time()
            fn()
            seconds = round(time.time() - t0, 1)
            times = json.loads(times_file.read_text()) if times_file.is_file() else {}
            times[label] = seconds
            times_file.write_text(json.dumps(times, indent=1) + "\n")
            print(f"[grid] {label}: done in {seconds:.0f} s", flush=True)

    # ---- prepare: base model and corpus
    base, dataset = shared["train"]["base_model"], shared["train"]["dataset"]
    if a.tiny:
        base, dataset = make_tiny(out) if not a.dry_run else (str(out / "tiny_base"), str(out / "tiny_data"))
    base, dataset = a.base or base, a.dataset or dataset
    if not a.tiny and not a.dry_run:
        if base == shared["train"]["base_model"] and not (Path(base) / "config.json").exists():
            from prepare.base_model import prepare_base_model

            prepare_base_model(base)
        if dataset == shared["train"]["dataset"] and not (Path(dataset) / "dataset_dict.json").exists():
            from prepare.multi_corpus import build_multi_corpus

            build_multi_corpus(dataset, **shared["corpus"])
    if not a.dry_run:
        out.mkdir(parents=True, exist_ok=True)
    print(f"[grid] budget {budget} (bf16 {budget_cfg['bf16']}); base {base}; dataset {dataset}; {len(names)} runs "
          f"({', '.join(names)}) -> {out}; report -> {results}")

    # ---- the speech tokenizer: given, the demo's (same recipe), or fitted here
    stok = out / "speech_tokenizer"
    script = "fit_phonetic_tokenizer" if stok_cfg.get("backend") == "phonetic" else "fit_speech_tokenizer"
    source, reason = None, None
    if a.speech_tokenizer:
        source, reason = Path(a.speech_tokenizer), "given by --speech_tokenizer"
    elif not a.tiny and shared.get("reuse_tokenizer") and dataset == shared["train"]["dataset"]:
        ok, why = demo_tokenizer_matches(ROOT / shared["reuse_tokenizer"], stok_cfg, shared["corpus"], dataset,
                                         stok_cfg.get("bf16"))
        source, reason = (ROOT / shared["reuse_tokenizer"], why) if ok else (None, why)
    if source is not None:
        def copy_tokenizer():
            from modeling_mdu import MDUSpeechTokenizer
            from training.data import speech_tokenizer_identity

            tmp = stok.with_name(stok.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)
            identity = speech_tokenizer_identity(MDUSpeechTokenizer.from_pretrained(tmp))
            (tmp / "grid_source.json").write_text(json.dumps({"source": str(source), "reason": reason,
                                                              "identity": identity}, indent=1) + "\n")
            tmp.rename(stok)
        stage("speech tokenizer", stok / "preprocessor_config.json", f"cp -r {shlex.quote(str(source))} {stok}",
              copy_tokenizer)
    else:
        if reason:
            print(f"[grid] not reusing {shared.get('reuse_tokenizer')}: {reason}")
        recipe = {k: v for k, v in stok_cfg.items() if not (k == "backend" and script == "fit_phonetic_tokenizer")}
        args = ["--dataset", dataset, *flags(**recipe), "--output_dir", str(stok)]

        def fit_tokenizer(args=args):
            __import__(script).main(args)
            (stok / "grid_source.json").write_text(json.dumps({"source": "fitted by grid.py", "command":
                                                               py(script + ".py", args)}, indent=1) + "\n")
        stage("speech tokenizer", stok / "preprocessor_config.json", py(script + ".py", args), fit_tokenizer)
    tokenizer_note = None
    if (stok / "grid_source.json").is_file():
        src = json.loads((stok / "grid_source.json").read_text())
        if a.speech_tokenizer and src.get("source") != str(Path(a.speech_tokenizer)):
            from modeling_mdu import MDUSpeechTokenizer
            from training.data import speech_tokenizer_identity

            given = speech_tokenizer_identity(MDUSpeechTokenizer.from_pretrained(a.speech_tokenizer))
            if given != speech_tokenizer_identity(MDUSpeechTokenizer.from_pretrained(stok)):
                raise ValueError(f"{stok} holds another speech tokenizer ({src.get('source')}) than --speech_tokenizer "
                                 f"{a.speech_tokenizer}: the runs there were trained with it; use another --output_dir")
        tokenizer_note = (f"Speech tokenizer (shared by every run): `{stok}`, "
                          + (f"a copy of `{src['source']}` ({src.get('reason')})" if "reason" in src
                             else "fitted by grid.py (`" + src.get("command", "") + "`)") + ".")

    # ---- base: text suite, importance, spoken QA (text to text)
    from eval import asr as eval_asr
    from eval import importance as eval_importance
    from eval import spoken_qa as eval_spoken_qa
    from eval import text as eval_text

    base_text = out / "base" / "eval" / "text" / "results.json"
    text_flags = flags(max_items=ev["text_max_items"], max_length=ev.get("text_max_length"), device=ev["device"])
    bargs = ["--model", base, *text_flags, "--output_dir", str(base_text.parent), "--overwrite"]
    stage("base text", base_text, py("-m eval.text", bargs), lambda: eval_text.main(bargs))
    if not a.dry_run and not (out / "base" / "run.json").exists():
        (out / "base" / "run.json").write_text(json.dumps({"name": "base", "method": "base"}) + "\n")
    importance = out / "importance" / "importance.json"
    imp_flags = flags(max_texts=imp_cfg["max_texts"], lam=imp_cfg["lam"], device=ev["device"])
    iargs = ["--base", base, *imp_flags,
             "--output_dir", str(importance.parent), "--overwrite"]
    stage("base importance", importance, py("-m eval.importance", iargs), lambda: eval_importance.main(iargs))
    # the shift's noise floor: the base against itself, measured on the next max_texts texts (the base row of the table)
    control = out / "base" / "eval" / "importance_control" / "importance.json"
    cargs = ["--base", base, "--base_importance", str(importance), "--adapted", base,
             "--adapted_text_offset", str(imp_cfg["max_texts"]), *imp_flags,
             "--output_dir", str(control.parent), "--overwrite"]
    stage("base importance control (other texts)", control, py("-m eval.importance", cargs),
          lambda: eval_importance.main(cargs))
    audio_cache = str(out / "spoken_qa_audio") if a.tiny else qa_cfg["audio_cache"]
    qa_flags = flags(max_items=ev["text_max_items"], max_length=ev.get("text_max_length"), device=ev["device"])
    base_qa = out / "base" / "eval" / "spoken_qa" / "results.json"
    qargs = ["--base", base, *qa_flags, "--output_dir", str(base_qa.parent), "--overwrite"]
    stage("base spoken QA", base_qa, py("-m eval.spoken_qa", qargs), lambda: eval_spoken_qa.main(qargs))

    def run_config(name, **extra) -> dict:
        own = yaml.safe_load((GRID_DIR / f"{name}.yaml").read_text())
        cfg = {**shared["train"], **budget_cfg, **own, **tiny.get("train", {}), "base_model": base, "dataset": dataset,
               "speech_tokenizer": str(stok), **extra}
        if cfg["method"] in LAYERWISE:
            cfg["importance_file"] = str(importance)
        return cfg

    def write_config(path: Path, cfg: dict, header: str, protect: Path | None = None):
        text = header + yaml.safe_dump(cfg, sort_keys=False)
        if a.dry_run:
            return
        if protect is not None and protect.exists() and path.exists() and path.read_text() != text:
            print(f"[grid] WARNING {path.stem}: config changed since it trained; delete {protect.parent} to train it again")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def train(name, run, config_file, marker, sweep=False):
        from transformers import TrainerCallback

        import train_hf
        from training.checkpoints import last_complete_checkpoint

        class Count(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                self.total = sum(p.numel() for p in model.parameters())

        argv, count, t0 = [str(config_file)], Count(), time.time()
        last = last_complete_checkpoint(str(run))  # skips (and logs) checkpoints a kill left half-written
        if last:
            print(f"[grid] {name}: resuming from {last}")
            argv += ["--resume_from_checkpoint", "last"]
        trainer = train_hf.main(argv, callbacks=[count])
        history = trainer.state.log_history
        info = {"trainable_params": count.trainable, "total_params": count.total,
                "global_step": trainer.state.global_step, "train_seconds": round(time.time() - t0, 1),
                "hardware": hardware(),
                "train_loss": next((h["train_loss"] for h in history if "train_loss" in h), None)}
        if sweep:
            info["eval_loss"] = next((h["eval_loss"] for h in reversed(history) if "eval_loss" in h), None)
            info["learning_rate"] = trainer.args.learning_rate
            info["log_history"] = history
        del trainer
        gc.collect()
        if sweep:  # only the losses are kept: the model is not needed
            shutil.rmtree(run)
        else:
            for ckpt in run.glob("checkpoint-*"):  # the exported model is what the grid needs; checkpoints only resume
                shutil.rmtree(ckpt)
        marker.write_text(json.dumps(info, indent=2) + "\n")

    # ---- the sweep's data: the training split's units, a validation split carved from it
    sweep_root = out / "sweep"
    sweep_data = sweep_root / "data"
    sweep_data_done = []

    def ensure_sweep_data():
        if sweep_data_done:  # once per invocation
            return
        sweep_data_done.append(True)
        units = sweep_root / "units"
        uargs = ["--dataset", dataset, "--splits", "train", "--speech_tokenizer", str(stok), "--output_dir", str(units),
                 *flags(num_proc=tiny_sweep.get("units_num_proc", sweep_cfg.get("units_num_proc")))]
        from training import precompute_units

        stage("sweep units", units / "units_info.json", py("-m training.precompute_units", uargs),
              lambda: precompute_units.main(uargs))
        size, seed = validation["size"], validation.get("seed", 0)
        stage("sweep validation split", sweep_data / "split.json",
              f"python -c 'import grid; grid.carve_validation(\"{units}\", \"{sweep_data}\", {size}, {seed})'",
              lambda: carve_validation(units, sweep_data, size, seed))

    def ensure_sweep(family) -> dict | None:
        """Runs the family's missing candidates; returns its summary (None in a dry run before it finished)."""
        spec = families[family]
        rep = spec["runs"][0]
        ensure_sweep_data()
        candidates = []
        for lr in spec["learning_rates"]:
            lr = float(lr)
            tag = lr_tag(lr)
            cand = sweep_root / family / tag
            marker = sweep_root / family / f"{tag}.json"
            cfg = run_config(rep, **sweep_budget, dataset=str(sweep_data), train_split="train", eval_split="validation",
                             eval_strategy="steps", eval_steps=sweep_budget["max_steps"], save_strategy="no",
                             learning_rate=lr, output_dir=str(cand))
            config_file = out / "configs" / "sweep" / f"{family}-{tag}.yaml"
            write_config(config_file, cfg, f"# grid sweep {family} ({rep}'s config, budget {budget}), lr {lr}\n")
            stage(f"sweep {family} {tag}", marker, py("train_hf.py", [str(config_file)]),
                  lambda cand=cand, config_file=config_file, marker=marker, tag=tag:
                  train(f"sweep {family} {tag}", cand, config_file, marker, sweep=True))
            if marker.exists():
                done = json.loads(marker.read_text())
                candidates.append({"learning_rate": lr, "eval_loss": done["eval_loss"], "train_loss": done["train_loss"],
                                   "train_seconds": done["train_seconds"]})
        if len(candidates) < len(spec["learning_rates"]):
            return None
        split = json.loads((sweep_data / "split.json").read_text())
        summary = {"family": family, "representative": rep, "runs": spec["runs"], "candidates": candidates,
                   "chosen_learning_rate": choose_lr(candidates), "max_steps": sweep_budget["max_steps"],
                   "validation_rows": split["validation_rows"], "validation_sentences": split["validation_sentences"],
                   "validation_seed": split["seed"], "budget": budget}
        (sweep_root / family / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"[grid] sweep {family}: " + ", ".join(f"lr {c['learning_rate']:.1e} -> val loss {c['eval_loss']}"
                                                      for c in candidates)
              + f"; chosen {summary['chosen_learning_rate']:.1e}")
        return summary

    # ---- per run: sweep (its family's, once), train, ASR, text, spoken QA, importance shift, summary
    # Runs finished by other sittings are listed too (their stages and sweeps recorded, nothing run), so that
    # COMMANDS.md holds the commands of every run the report shows.
    earlier = [n for n in run_names() if n not in names and (out / n / "run.json").exists()]
    lrs, sweeps, listed = {}, {}, set()
    for name in [n for n in run_names() if n in names or n in earlier]:
        run = out / name
        done = (run / "run.json").exists()
        family = family_of.get(name)
        if family is not None and family not in sweeps and not (done and family in listed):
            if done:  # list its family's sweep (its candidates are cached), run nothing
                record_only.append(name)
            summary = ensure_sweep(family)
            record_only.clear()
            listed.add(family)
            if summary is not None or not done:  # a sweep a later run must finish is not taken as done
                sweeps[family] = summary
        sweep = sweeps.get(family)
        if family is not None and sweep is None and (sweep_root / family / "sweep.json").exists():
            sweep = json.loads((sweep_root / family / "sweep.json").read_text())
        cfg = run_config(name, output_dir=str(run), **({"max_steps": a.max_steps} if a.max_steps else {}))
        if family is not None:
            cfg["learning_rate"] = sweep["chosen_learning_rate"] if sweep else None
        lrs[name] = cfg["learning_rate"]
        config_file = out / "configs" / f"{name}.yaml"
        why_lr = f"sweep {family}" if family else "its YAML"
        header = (f"# grid run {name} (budget {budget}): configs/grid/_shared.yaml + configs/grid/{name}.yaml; "
                  f"learning rate from {why_lr}\n")
        if cfg["learning_rate"] is not None:
            write_config(config_file, cfg, header, protect=run / "train_done.json")
        if name not in earlier:
            print(f"[grid] ({names.index(name) + 1}/{len(names)}) {name}: method {cfg['method']}, learning rate "
                  f"{cfg['learning_rate']} ({why_lr})")

        asr_stages = []
        for split in ev["asr_splits"]:
            folder = run / "eval" / ("asr" if split == "test" else f"asr_{split}")
            aargs = ["--model", str(run), "--dataset", dataset, "--split", split,
                     *flags(max_examples=ev["asr_max_examples"], batch_size=ev["asr_batch_size"],
                            max_new_tokens=ev["asr_max_new_tokens"], device=ev["device"]),
                     "--output_dir", str(folder), "--overwrite"]
            asr_stages.append((f"{name} asr {split}", folder / "summary.json", py("-m eval.asr", aargs),
                               lambda aargs=aargs: eval_asr.main(aargs)))
        targs = ["--model", str(run), "--base_results", str(base_text), *text_flags,
                 "--output_dir", str(run / "eval" / "text"), "--overwrite"]
        sargs = ["--model", str(run), "--base", base, "--dataset", dataset,
                 "--families", ",".join(qa_cfg["families"]), "--audio_cache", audio_cache,
                 *flags(max_new_tokens=qa_cfg.get("max_new_tokens")), *qa_flags,
                 "--output_dir", str(run / "eval" / "spoken_qa"), "--overwrite"]
        hargs = ["--base", base, "--base_importance", str(importance), "--adapted", str(run),
                 *imp_flags,
                 "--output_dir", str(run / "eval" / "importance"), "--overwrite"]
        stages = [(f"{name} train", run / "train_done.json", py("train_hf.py", [str(config_file)]),
                   lambda name=name, run=run, config_file=config_file:
                   train(name, run, config_file, run / "train_done.json")),
                  *asr_stages,
                  (f"{name} text", run / "eval" / "text" / "results.json", py("-m eval.text", targs),
                   lambda targs=targs: eval_text.main(targs)),
                  (f"{name} spoken QA", run / "eval" / "spoken_qa" / "results.json", py("-m eval.spoken_qa", sargs),
                   lambda sargs=sargs: eval_spoken_qa.main(sargs)),
                  (f"{name} importance shift", run / "eval" / "importance" / "importance.json",
                   py("-m eval.importance", hargs), lambda hargs=hargs: eval_importance.main(hargs))]
        if done:  # the summary (run.json) exists: this run is finished, nothing of it runs again
            if name not in earlier:
                print(f"[grid] {name}: finished earlier ({run / 'run.json'})")
            commands += [(label, command) for label, _, command, _ in stages]
            continue
        if cfg["learning_rate"] is None:  # dry run before the family's sweep finished
            commands += [(label, command) for label, _, command, _ in stages]
            print(f"[grid] {name}: waits for sweep {family}")
            continue
        for st in stages:
            stage(*st)
        if a.dry_run:
            continue
        from eval.report import read_run

        summary = {**read_run(run), **json.loads((run / "train_done.json").read_text()), "budget": budget,
                   "config": str(config_file), "lr_sweep": sweep,
                   "learning_rate": yaml.safe_load(config_file.read_text())["learning_rate"],  # the one it trained with
                   "speech_tokenizer": str(stok), "bf16": bool(cfg.get("bf16"))}
        (run / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
        num = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"[grid] {name}: WER {num(summary['wer'])}% (test_seen {num(summary['wer_seen'])}%), text "
              f"{num(summary['text_score'])} (Δ {num(summary['text_delta'])}), spoken QA S2T {num(summary['qa_s2t'])} "
              f"cascade {num(summary['qa_cascade'])}, trainable {summary['trainable_params']:,}")
        gc.collect()

    # ---- report + commands
    if a.dry_run:
        print(f"[grid] dry run: {len(commands)} stages planned; nothing run")
        return {"commands": commands, "output_dir": str(out), "results_dir": str(results), "learning_rates": lrs,
                "runs": names}
    from eval.report import build_report

    finished = [str(out / n) for n in run_names() if (out / n / "run.json").exists()]  # every finished run, any sitting
    notes = [tokenizer_note] if tokenizer_note else []
    effective = {**budget_cfg, **tiny.get("train", {}), **({"max_steps": a.max_steps} if a.max_steps else {})}
    notes.append(f"Budget `{budget}`{' (--tiny)' if a.tiny else ''}: "
                 + ", ".join(f"{k} {effective.get(k)}" for k in ("max_steps", "per_device_train_batch_size", "bf16"))
                 + f"; each sweep candidate: {json.dumps(sweep_budget)}.")
    report = build_report([str(out / "base"), *finished], results, overwrite=True, notes=notes)
    lines = ["# Grid commands and hardware", "",
             f"Grid invocation ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.time() - t_start:.0f} s): "
             f"`python grid.py {shlex.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"Hardware of this invocation: {hardware()}", "", *notes, "",
             f"Budget `{budget}`; base `{base}`; dataset `{dataset}`; run configs: `{out / 'configs'}` "
             "(configs/grid/_shared.yaml + the run's YAML, merged; the learning rate from the family's sweep). "
             "Equivalent stage commands of every run in the report (this invocation's and earlier sittings'), in "
             "order (train_hf.py resumes a killed run with `--resume_from_checkpoint last`):", "", "```"]
    lines += [f"# {label}\n{cmd}" for label, cmd in commands]
    lines += ["```", "", "## Hardware each run trained on", "",
              "| run | learning rate | steps | train s | hardware |", "|---|---|---|---|---|"]
    for d in finished:
        r = json.loads((Path(d) / "run.json").read_text())
        lines.append(f"| {r['name']} | {r.get('learning_rate')} | {r.get('global_step')} | {r.get('train_seconds')} | "
                     f"{r.get('hardware')} |")
    if times_file.is_file():
        lines += ["", "## Stage times (seconds, last time each ran)", "", "| stage | s |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in json.loads(times_file.read_text()).items()]
    (results / "COMMANDS.md").write_text("\n".join(lines) + "\n")
    print(f"[grid] report: {results / 'report.md'} ({len(finished)} runs); commands: {results / 'COMMANDS.md'}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
