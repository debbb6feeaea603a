"""The comparison grid of issue 9: train every method on the same data, base and speech tokenizer, evaluate ASR and
text, and write one report (table + Pareto plot next to the papers' numbers) with the exact commands and hardware.

    python grid.py                          # every run in configs/grid/ (budget: gpu when CUDA is there, else cpu)
    python grid.py --budget cpu --only full,mdu_interleaved
    python grid.py --dry_run                # the plan: each stage, cached or to run, and its exact command
    python grid.py --tiny --output_dir /tmp/g --only full,mdu_ebf_interleaved   # smoke test: tiny Llama + tiny corpus

Runs are `configs/grid/<name>.yaml` (train_hf.py keys) merged over `configs/grid/_shared.yaml` (shared keys, the step
budget, eval settings). Stages, each skipped when its output exists, so the grid resumes across sittings:
  prepare          base model and the multi-synthesizer corpus (prepare/), when missing
  speech tokenizer fitted ONCE on the training audio (fit_speech_tokenizer.py), shared by every run
  base text        the offline text suite on the base model, once (eval/text.py): the reference for Δ
  importance       layer-wise text importance of the base, once, when a layer-wise run is selected (eval/importance.py)
  per run          train (train_hf.py; resumes from the last checkpoint), ASR WER on the test split (held-out voices,
                   eval/asr.py), text suite Δ against the base (eval/text.py), then `<run>/run.json` (the summary)
  report           results/report.md, report.json, pareto.png (eval/report.py) and results/COMMANDS.md
Every stage calls the module's own `main(argv)`, so COMMANDS.md lists commands that reproduce it exactly.
A run whose `run.json` exists is not touched again; delete its folder to redo it. The report holds every finished run
of the output dir, whichever sitting made it. Cost measured on the 2-core CPU (CPU budget, 2026-11-23): base text
suite 24 s, importance 107 s, 2.3-3.0 s a training step (batch 8), 3.5-9 min a run with evaluation, 49 min for the
10 runs.
"""

import argparse
import gc
import json
import os
import platform
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
    """A tiny random Llama (+ char tokenizer) and 12 synthetic utterances (8 train, 4 test with other noise seeds),
    from the test fixtures in tests/. Returns (base dir, dataset dir)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from datasets import DatasetDict
    from train_fixtures import make_audio_folder, save_tiny_base

    from training.data import load_asr_dataset

    base, data = root / "tiny_base", root / "tiny_data"
    if not (base / "config.json").exists():
        save_tiny_base(base)
    if not (data / "dataset_dict.json").exists():
        ds = load_asr_dataset(str(make_audio_folder(root / "tiny_audio", n=12)))
        DatasetDict(train=ds.select(range(8)), test=ds.select(range(8, 12))).save_to_disk(str(data))
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


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=["cpu", "gpu"], default=None, help="step budget (default: gpu if CUDA else cpu)")
    p.add_argument("--only", default=None, help=f"comma-separated runs; of {', '.join(run_names())}")
    p.add_argument("--base", default=None, help="base LLM folder (default: _shared.yaml's, the embedded SmolLM2-135M)")
    p.add_argument("--dataset", default=None, help="ASR dataset with train/test splits (default: the demo corpus, cache/data/multi-demo)")
    p.add_argument("--output_dir", default=None, help="runs, tokenizer, caches (default runs/grid-<budget>)")
    p.add_argument("--results_dir", default=None,
                   help="report + COMMANDS.md (default results/; <output_dir>/results with --tiny)")
    p.add_argument("--max_steps", type=int, default=None, help="override the budget's training steps (a quick probe)")
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
    out = Path(a.output_dir or f"runs/grid-{'tiny' if a.tiny else budget}")
    results = Path(a.results_dir or (out / "results" if a.tiny else "results"))
    tiny = shared["tiny"] if a.tiny else {}
    ev = tiny.get("eval") or shared["eval"][budget]
    stok_cfg = tiny.get("speech_tokenizer") or shared["speech_tokenizer"]
    imp_cfg = tiny.get("importance") or shared["importance"]
    py = lambda script, args: "python " + script + " " + shlex.join(args)  # noqa: E731
    commands = []  # (stage, command)
    t_start = time.time()

    def stage(label, marker: Path, command: str, fn):
        """Runs `fn` unless `marker` exists (or --dry_run); prints progress; records the command."""
        commands.append((label, command))
        if marker.exists():
            print(f"[grid] {label}: cached ({marker})")
            return
        print(f"[grid] {label}: {'would run' if a.dry_run else 'running'}: {command}", flush=True)
        if not a.dry_run:
            t0 = time.time()
            fn()
            print(f"[grid] {label}: done in {time.time() - t0:.0f} s", flush=True)

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
    print(f"[grid] budget {budget}; base {base}; dataset {dataset}; {len(names)} runs -> {out}; report -> {results}")

    # ---- shared stages: speech tokenizer, base text results, importance
    stok = out / "speech_tokenizer"
    script = "fit_phonetic_tokenizer" if stok_cfg.get("backend") == "phonetic" else "fit_speech_tokenizer"
    recipe = {k: v for k, v in stok_cfg.items() if not (k == "backend" and script == "fit_phonetic_tokenizer")}
    args = ["--dataset", dataset, *flags(**recipe), "--output_dir", str(stok)]
    stage("speech tokenizer", stok / "preprocessor_config.json", py(script + ".py", args),
          lambda: __import__(script).main(args))

    base_text = out / "base" / "eval" / "text" / "results.json"
    text_flags = flags(max_items=ev["text_max_items"], max_length=ev.get("text_max_length"), device=ev["device"])
    bargs = ["--model", base, *text_flags, "--output_dir", str(base_text.parent), "--overwrite"]
    from eval import asr as eval_asr
    from eval import importance as eval_importance
    from eval import text as eval_text

    stage("base text", base_text, py("-m eval.text", bargs), lambda: eval_text.main(bargs))
    if not a.dry_run and not (out / "base" / "run.json").exists():
        (out / "base" / "run.json").write_text(json.dumps({"name": "base", "method": "base"}) + "\n")

    importance = out / "importance" / "importance.json"
    methods = {n: yaml.safe_load((GRID_DIR / f"{n}.yaml").read_text())["method"] for n in names}
    if any(m in LAYERWISE for m in methods.values()):
        iargs = ["--base", base, *flags(max_texts=imp_cfg["max_texts"], lam=imp_cfg["lam"], device=ev["device"]),
                 "--output_dir", str(importance.parent), "--overwrite"]
        stage("importance", importance, py("-m eval.importance", iargs), lambda: eval_importance.main(iargs))

    # ---- per run: train, ASR, text, summary
    lrs = {}
    for i, name in enumerate(names, 1):
        run = out / name
        own = yaml.safe_load((GRID_DIR / f"{name}.yaml").read_text())
        cfg = {**shared["train"], **shared["budgets"][budget], **own, **tiny.get("train", {}),
               "base_model": base, "dataset": dataset, "output_dir": str(run),
               "speech_tokenizer": str(stok), **({"max_steps": a.max_steps} if a.max_steps else {})}
        lr_scale = cfg.pop("lr_scale", 1.0)  # a short budget scales every run's (paper) learning rate alike
        cfg["learning_rate"] = lrs[name] = float(cfg["learning_rate"]) * lr_scale
        if cfg["method"] in LAYERWISE:
            cfg["importance_file"] = str(importance)
        config_file = out / "configs" / f"{name}.yaml"
        header = f"# grid run {name} (budget {budget}): configs/grid/_shared.yaml + configs/grid/{name}.yaml\n"
        text = header + yaml.safe_dump(cfg, sort_keys=False)
        if not a.dry_run:
            if (run / "train_done.json").exists() and config_file.exists() and config_file.read_text() != text:
                print(f"[grid] WARNING {name}: config changed since it trained; delete {run} to train it again")
            else:
                config_file.parent.mkdir(parents=True, exist_ok=True)
                config_file.write_text(text)
        print(f"[grid] ({i}/{len(names)}) {name}: method {cfg['method']}")

        def train(name=name, run=run, config_file=config_file):
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
            info = {"trainable_params": count.trainable, "total_params": count.total,
                    "global_step": trainer.state.global_step, "train_seconds": round(time.time() - t0, 1),
                    "hardware": hardware(),
                    "train_loss": next((h["train_loss"] for h in trainer.state.log_history if "train_loss" in h), None)}
            del trainer
            gc.collect()
            for ckpt in run.glob("checkpoint-*"):  # the exported model is what the grid needs; checkpoints only resume
                shutil.rmtree(ckpt)
            (run / "train_done.json").write_text(json.dumps(info, indent=2) + "\n")

        aargs = ["--model", str(run), "--dataset", dataset, "--split", ev["asr_split"],
                 *flags(max_examples=ev["asr_max_examples"], batch_size=ev["asr_batch_size"],
                        max_new_tokens=ev["asr_max_new_tokens"], device=ev["device"]),
                 "--output_dir", str(run / "eval" / "asr"), "--overwrite"]
        targs = ["--model", str(run), "--base_results", str(base_text), *text_flags,
                 "--output_dir", str(run / "eval" / "text"), "--overwrite"]
        stages = [(f"{name} train", run / "train_done.json", py("train_hf.py", [str(config_file)]), train),
                  (f"{name} asr", run / "eval" / "asr" / "summary.json", py("-m eval.asr", aargs),
                   lambda: eval_asr.main(aargs)),
                  (f"{name} text", run / "eval" / "text" / "results.json", py("-m eval.text", targs),
                   lambda: eval_text.main(targs))]
        if (run / "run.json").exists():  # the summary: this run is finished, nothing of it runs again
            print(f"[grid] {name}: finished earlier ({run / 'run.json'})")
            commands += [(label, command) for label, _, command, _ in stages]
            continue
        for st in stages:
            stage(*st)
        if a.dry_run:
            continue
        from eval.report import read_run

        summary = {**read_run(run), **json.loads((run / "train_done.json").read_text()), "budget": budget,
                   "config": str(config_file)}
        (run / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"[grid] {name}: WER {summary['wer']:.2f}%  text {summary['text_score']:.2f} "
              f"(Δ {summary['text_delta']:+.2f})  trainable {summary['trainable_params']:,}")
        gc.collect()

    # ---- report + commands
    if a.dry_run:
        print(f"[grid] dry run: {len(commands)} stages planned; nothing run")
        return {"commands": commands, "output_dir": str(out), "results_dir": str(results), "learning_rates": lrs}
    from eval.report import build_report

    finished = [str(out / n) for n in run_names() if (out / n / "run.json").exists()]  # every finished run, any sitting
    report = build_report([str(out / "base"), *finished], results, overwrite=True)
    lines = ["# Grid commands and hardware", "",
             f"Grid invocation ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.time() - t_start:.0f} s): "
             f"`python grid.py {shlex.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"Hardware of this invocation: {hardware()}", "",
             f"Budget `{budget}`; base `{base}`; dataset `{dataset}`; run configs: `{out / 'configs'}` "
             "(configs/grid/_shared.yaml + the run's YAML, merged). Equivalent stage commands, in order "
             "(train_hf.py resumes a killed run with `--resume_from_checkpoint last`):", "", "```"]
    lines += [f"# {label}\n{cmd}" for label, cmd in commands]
    lines += ["```", "", "## Hardware each run trained on", "",
              "| run | steps | train s | hardware |", "|---|---|---|---|"]
    for d in finished:
        r = json.loads((Path(d) / "run.json").read_text())
        lines.append(f"| {r['name']} | {r.get('global_step')} | {r.get('train_seconds')} | {r.get('hardware')} |")
    (results / "COMMANDS.md").write_text("\n".join(lines) + "\n")
    print(f"[grid] report: {results / 'report.md'} ({len(finished)} runs); commands: {results / 'COMMANDS.md'}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
