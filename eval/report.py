"""Comparison report over runs: one table (method, placement, layer type, trainable params, WER, text score, Δ, and
how many distinct hypotheses the model gave: ~1 means it says its text prior to every input) in
markdown and JSON, a Pareto plot (WER against text Δ, marker size = trainable params), and the papers' numbers.

    python -m eval.report outputs/mdu outputs/full outputs/lora --output_dir runs/report

A run dir is read for (later sources win): `config.json` (placement, layer type), the model card `README.md`
front matter (`mdu` block written by model_cards/generate.py), `run.json` (any of the row fields, e.g. written by
a demo script), and the newest ASR `summary.json` and text `results.json` (from eval/asr.py, eval/text.py) found
in it or its sub-folders: the ASR summary of split `test` (else the newest) for WER/CER and of `test_seen` for the
`*_seen` columns. Sections beside the main table when the runs have them: the learning-rate sweep (`lr_sweep` in
run.json, written by grid.py), spoken QA (eval/spoken_qa.py's results.json) and the text-importance shift against the
base (eval/importance.py's importance.json with a `shift`; table + importance_shift.png).
"""

import argparse
import json
from pathlib import Path

import yaml

from .paper_results import IMPORTANCE_COLUMNS, IMPORTANCE_PAPER, MDU_COLUMNS, MDU_PAPER, as_dicts
from .rundir import make_run_dir, write_json

COLUMNS = ["name", "method", "placement", "layer_type", "trainable_params", "wer", "cer", "text_score", "text_delta",
           "ppl_ratio", "asr_data", "distinct_hyps",  # distinct_hyps: eval/asr.py's listening check
           "wer_seen", "cer_seen", "distinct_hyps_seen",  # split test_seen: training sentences, held-out voices
           "qa_t2t", "qa_s2t", "qa_cascade", "qa_base_cascade",  # spoken QA, mean over tasks (eval/spoken_qa.py)
           "learning_rate", "train_seconds"]
QA_MODES = {"qa_t2t": "t2t", "qa_s2t": "s2t", "qa_cascade": "cascade", "qa_base_cascade": "base_cascade"}


def _newest(root: Path, name: str, predicate):
    found = []
    for path in [root / name, *root.glob(f"*/{name}"), *root.glob(f"*/*/{name}")]:
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            if predicate(data):
                found.append((path.stat().st_mtime, data))
    return max(found, key=lambda x: x[0])[1] if found else None


def _front_matter(readme: Path) -> dict:
    text = readme.read_text() if readme.is_file() else ""
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}


def read_run(run_dir) -> dict:
    """One table row from a run dir (missing values are None)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ValueError(f"run dir {root} does not exist")
    row = dict.fromkeys(COLUMNS)
    row["name"] = root.name
    config = json.loads((root / "config.json").read_text()) if (root / "config.json").is_file() else {}
    if config.get("model_type") == "mdu_speech":
        row.update(placement=config.get("placement"), layer_type=config.get("layer_type"))
        if not config.get("num_added_layers"):
            row.update(placement=None, layer_type=None)
    row.update({k: v for k, v in (_front_matter(root / "README.md").get("mdu") or {}).items() if k in COLUMNS})
    if (root / "run.json").is_file():
        run = json.loads((root / "run.json").read_text())
        row.update({k: v for k, v in run.items() if k in COLUMNS})
        if run.get("lr_sweep"):
            row["lr_sweep"] = run["lr_sweep"]
    by_split = _asr_by_split(root)
    asr = by_split.get("test") or (max(by_split.values(), key=lambda x: x[0]) if by_split else None)
    if asr:
        asr = asr[1]
        row.update(wer=100 * asr["wer"], cer=100 * asr["cer"], asr_data=f"{asr.get('dataset')}:{asr.get('split')} (n={asr['num_utterances']})")
        if asr.get("listening_check"):
            row["distinct_hyps"] = asr["listening_check"]["distinct_hypotheses"]
    if "test_seen" in by_split:
        seen = by_split["test_seen"][1]
        row.update(wer_seen=100 * seen["wer"], cer_seen=100 * seen["cer"],
                   distinct_hyps_seen=(seen.get("listening_check") or {}).get("distinct_hypotheses"))
    text = _newest(root, "results.json", lambda d: "suite" in d and "score" in d)
    if text:
        row.update(text_score=text["score"], text_delta=(text.get("delta") or {}).get("score"),
                   ppl_ratio=(text.get("delta") or {}).get("perplexity_ratio"))
    qa = _newest(root, "results.json", lambda d: d.get("task") == "spoken_qa")
    if qa:
        sets = qa.get("sets") or {}
        family = "espeak" if "espeak" in sets else next(iter(sets), None)
        if family:
            row.update({col: sets[family]["score"].get(mode) for col, mode in QA_MODES.items()})
        else:  # the base: text only
            row["qa_t2t"] = qa["text"]["score"].get("base_t2t")
        row["spoken_qa"] = {"family": family, "sets": sets, "text": qa.get("text")}
    imp = _newest(root, "importance.json", lambda d: "shift" in d)
    if imp:
        row["importance_shift"] = {"js_divergence": imp["shift"]["js_divergence"], "l1": imp["shift"]["l1"],
                                   "max_shift_layer": imp["shift"]["max_shift_layer"],
                                   "per_layer_shift": imp["shift"]["per_layer_shift"],
                                   "added_follow": imp.get("adapted_added_follow") or [],
                                   "added_importance": imp.get("adapted_added_importance") or [],
                                   "added_share": imp.get("adapted_added_share") or 0.0,
                                   "text_offset": imp.get("adapted_text_offset") or 0}
    return row


def _asr_by_split(root: Path) -> dict:
    """{split: (mtime, summary)} of the newest ASR summary.json per split in `root` and two levels below."""
    found = {}
    for path in [root / "summary.json", *root.glob("*/summary.json"), *root.glob("*/*/summary.json")]:
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if data.get("task") == "asr":
            mtime, split = path.stat().st_mtime, data.get("split")
            if split not in found or found[split][0] < mtime:
                found[split] = (mtime, data)
    return found


def pareto_front(rows) -> list[str]:
    """Names of runs no other run beats on both WER (lower) and text Δ (higher)."""
    pts = [r for r in rows if r["wer"] is not None and r["text_delta"] is not None]
    dominated = lambda r: any(o["wer"] <= r["wer"] and o["text_delta"] >= r["text_delta"] and
                              (o["wer"], o["text_delta"]) != (r["wer"], r["text_delta"]) for o in pts)
    return [r["name"] for r in pts if not dominated(r)]


def _cell(v, column: str | None = None):
    if column == "learning_rate" and isinstance(v, (int, float)):
        return f"{v:.1e}"
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1000:
        return f"{v / 1e9:.2f}B" if v >= 1e9 else f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}K"
    return str(v)


def markdown_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c), c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_pareto(rows, path, front=()) -> Path:
    """WER (%) against text Δ (points); marker area grows with trainable parameters; Pareto runs outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r["wer"] is not None and r["text_delta"] is not None]
    fig, ax = plt.subplots(figsize=(7, 5))
    biggest = max([r["trainable_params"] or 0 for r in pts] + [1])
    for r in pts:
        size = 40 + 600 * ((r["trainable_params"] or 0) / biggest) ** 0.5
        ax.scatter(r["text_delta"], r["wer"], s=size, alpha=0.6, edgecolors="k" if r["name"] in front else "none")
        ax.annotate(r["name"], (r["text_delta"], r["wer"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    frontier = sorted((r for r in pts if r["name"] in front), key=lambda r: r["text_delta"])
    if len(frontier) > 1:
        ax.plot([r["text_delta"] for r in frontier], [r["wer"] for r in frontier], "k--", lw=0.8, label="Pareto front")
        ax.legend()
    ax.set_xlabel("text Δ vs base (points, higher is better)")
    ax.set_ylabel("WER (%)")
    ax.set_title("Speech gained vs text kept (marker size = trainable params)")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def sweep_section(rows) -> list[str]:
    """The learning-rate sweep (grid.py): one line per family and candidate, the chosen rate marked."""
    families = {}
    for r in rows:
        sweep = r.get("lr_sweep")
        if sweep:
            families.setdefault(sweep["family"], {**sweep, "used_by": []})["used_by"].append(r["name"])
    if not families:
        return []
    some = next(iter(families.values()))
    md = ["## Learning rates: the sweep", "",
          f"Per method family, each candidate trained {some.get('max_steps')} steps on the training split minus a "
          f"validation split of {some.get('validation_rows')} utterances carved from it (seed "
          f"{some.get('validation_seed')}); the rate with the lowest validation loss (transcript tokens) is the "
          "family's, for every run of the family.", "",
          "| family | swept with | used by | learning rate | validation loss | train loss | chosen |",
          "|---|---|---|---:|---:|---:|---|"]
    for fam, sw in families.items():
        for c in sw["candidates"]:
            md.append(f"| {fam} | {sw['representative']} | {', '.join(sw['used_by'])} | {c['learning_rate']:.1e} | "
                      f"{_cell(c.get('eval_loss'))} | {_cell(c.get('train_loss'))} | "
                      f"{'**yes**' if c['learning_rate'] == sw['chosen_learning_rate'] else ''} |")
    return md + [""]


def spoken_qa_section(rows) -> list[str]:
    have = [r for r in rows if r.get("spoken_qa")]
    if not have:
        return []
    md = ["## Spoken QA (arXiv 2509.23755's measure)", "",
          "The text suite's arithmetic questions and cloze contexts spoken by held-out voices (eval/spoken_qa.py), "
          "multiple choice by log-likelihood. Points (arithmetic acc, cloze acc_norm). T2T: question as text; S2T "
          "direct: the speech units of the question, then the answer cue; cascade: the run answers its own transcript; "
          "base cascade: the frozen base answers the run's transcript; question WER: the run's transcripts of the "
          "questions.", "",
          "| run | voices | task | base T2T | T2T | S2T direct | cascade | base cascade | question WER % |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in have:
        qa = r["spoken_qa"]
        if not qa["family"]:
            text = qa["text"]
            for task, m in text["tasks"].items():
                md.append(f"| {r['name']} | – | {task} | {_cell(m['base_t2t']['score'])} | – | – | – | – | – |")
            continue
        s = qa["sets"][qa["family"]]
        wer = _cell(100 * s["question_asr"]["wer"])
        for task, m in [*s["tasks"].items(), ("mean", None)]:
            get = (lambda mode: m[mode]["score"] if mode in m else None) if m else (lambda mode: s["score"].get(mode))
            md.append(f"| {r['name']} | {qa['family']} | {task} | " + " | ".join(
                _cell(get(x)) for x in ("base_t2t", "t2t", "s2t", "cascade", "base_cascade")) + f" | {wer} |")
    return md + [""]


def importance_section(rows, out: Path) -> list[str]:
    from .importance import plot_importance_shift

    have = [r for r in rows if r.get("importance_shift")]
    if not have:
        return []
    md = ["## Text-importance shift against the base (arXiv 2509.23755)", "",
          "Layer-wise first-order Taylor importance |θ·∂L/∂θ| on general English text (eval/importance.py), each run's "
          "base layers renormalised and compared with the base's distribution: Jensen–Shannon divergence (base 2), L1 "
          "distance, the base layer whose share moved most (signed, points); for MDU the added layers are left out of "
          "that comparison and their share of the whole stack's importance is given apart. The `base` row is the "
          "control: the base against itself on the next texts of the same source, i.e. the shift that sampling "
          "texts alone gives (a run's shift is read against it).", "",
          "| run | JS divergence | L1 | most-moved base layer | its shift (points) | added layers' share % |",
          "|---|---:|---:|---:|---:|---:|"]
    curves = {}
    for r in have:
        imp = r["importance_shift"]
        layer = imp["max_shift_layer"]
        added = f"{100 * imp['added_share']:.1f}" if imp["added_importance"] else "–"
        label = (f"{r['name']} (control: the base on texts {imp['text_offset']}+)" if imp["text_offset"]
                 else r["name"])
        md.append(f"| {label} | {imp['js_divergence']:.4f} | {imp['l1']:.3f} | {layer} | "
                  f"{100 * imp['per_layer_shift'][layer]:+.2f} | {added} |")
        curves["base, other texts (control)" if imp["text_offset"] else r["name"]] = imp
    plot_importance_shift(curves, out / "importance_shift.png")
    return md + ["", "![importance shift](importance_shift.png)", ""]


def build_report(run_dirs, output_dir=None, overwrite: bool = False, notes=()) -> dict:
    """Reads the runs, writes report.md, report.json and pareto.png (and importance_shift.png when runs have an
    importance shift) into `output_dir` (new folder unless `overwrite`); returns the report dict (with `output_dir`).
    `notes`: lines put under the title (e.g. which speech tokenizer the runs share)."""
    if not run_dirs:
        raise ValueError("no run dirs given")
    rows = [read_run(d) for d in run_dirs]
    front = pareto_front(rows)
    out = make_run_dir(output_dir, "report", overwrite)
    paper, importance_paper = as_dicts(MDU_COLUMNS, MDU_PAPER), as_dicts(IMPORTANCE_COLUMNS, IMPORTANCE_PAPER)
    md = ["# mdu-speech comparison", "", *[f"{n}" for n in notes], *([""] if notes else []),
          "Measured here. WER/CER in %, after English normalisation (`*_seen`: split test_seen, training sentences "
          "said by held-out voices); text score = mean accuracy (points) of the text "
          "suite; text Δ = run − base (points); ppl ratio = held-out perplexity run / base; qa_*: spoken QA, mean "
          "points over its tasks (below). "
          f"Pareto-optimal (WER vs Δ): {', '.join(front) or '–'}.", "",
          markdown_table(COLUMNS, rows), "", "![pareto](pareto.png)", "",
          *sweep_section(rows), *spoken_qa_section(rows), *importance_section(rows, out),
          "## Published: MDU (arXiv 2604.00489), LibriSpeech WER %, 8-task text average", "",
          markdown_table(MDU_COLUMNS, paper), "",
          "## Published: importance / layer-wise LR (arXiv 2509.23755), 8B spoken QA accuracy %", "",
          markdown_table(IMPORTANCE_COLUMNS, importance_paper), ""]
    report = {"runs": rows, "pareto_front": front, "paper_mdu": paper, "paper_importance": importance_paper,
              "notes": list(notes)}
    (out / "report.md").write_text("\n".join(md))
    write_json(out / "report.json", report, overwrite)
    plot_pareto(rows, out / "pareto.png", front)
    return {**report, "output_dir": str(out)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--output_dir", default=None, help="default: a new runs/eval/report-<time> folder")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    report = build_report(a.run_dirs, a.output_dir, a.overwrite)
    print(Path(report["output_dir"]) / "report.md")
    return report


if __name__ == "__main__":
    main()
