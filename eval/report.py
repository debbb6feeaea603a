"""Comparison report over runs: one table (method, placement, layer type, trainable params, WER, text score, Δ, and
how many distinct hypotheses the model gave: ~1 means it says its text prior to every input) in
markdown and JSON, a Pareto plot (WER against text Δ, marker size = trainable params), and the papers' numbers.

    python -m eval.report outputs/mdu outputs/full outputs/lora --output_dir runs/report

A run dir is read for (later sources win): `config.json` (placement, layer type), the model card `README.md`
front matter (`mdu` block written by model_cards/generate.py), `run.json` (any of the row fields, e.g. written by
a demo script), and the newest ASR `summary.json` and text `results.json` (from eval/asr.py, eval/text.py) found
in it or its sub-folders.
"""

import argparse
import json
from pathlib import Path

import yaml

from .paper_results import IMPORTANCE_COLUMNS, IMPORTANCE_PAPER, MDU_COLUMNS, MDU_PAPER, as_dicts
from .rundir import make_run_dir, write_json

COLUMNS = ["name", "method", "placement", "layer_type", "trainable_params", "wer", "cer", "text_score", "text_delta",
           "ppl_ratio", "asr_data", "distinct_hyps"]  # distinct_hyps: eval/asr.py's listening check


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
        row.update({k: v for k, v in json.loads((root / "run.json").read_text()).items() if k in COLUMNS})
    asr = _newest(root, "summary.json", lambda d: d.get("task") == "asr")
    if asr:
        row.update(wer=100 * asr["wer"], cer=100 * asr["cer"], asr_data=f"{asr.get('dataset')}:{asr.get('split')} (n={asr['num_utterances']})")
        if asr.get("listening_check"):
            row["distinct_hyps"] = asr["listening_check"]["distinct_hypotheses"]
    text = _newest(root, "results.json", lambda d: "suite" in d and "score" in d)
    if text:
        row.update(text_score=text["score"], text_delta=(text.get("delta") or {}).get("score"),
                   ppl_ratio=(text.get("delta") or {}).get("perplexity_ratio"))
    return row


def pareto_front(rows) -> list[str]:
    """Names of runs no other run beats on both WER (lower) and text Δ (higher)."""
    pts = [r for r in rows if r["wer"] is not None and r["text_delta"] is not None]
    dominated = lambda r: any(o["wer"] <= r["wer"] and o["text_delta"] >= r["text_delta"] and
                              (o["wer"], o["text_delta"]) != (r["wer"], r["text_delta"]) for o in pts)
    return [r["name"] for r in pts if not dominated(r)]


def _cell(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1000:
        return f"{v / 1e9:.2f}B" if v >= 1e9 else f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}K"
    return str(v)


def markdown_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
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


def build_report(run_dirs, output_dir=None, overwrite: bool = False) -> dict:
    """Reads the runs, writes report.md, report.json and pareto.png into `output_dir` (new folder unless
    `overwrite`); returns the report dict (with `output_dir`)."""
    if not run_dirs:
        raise ValueError("no run dirs given")
    rows = [read_run(d) for d in run_dirs]
    front = pareto_front(rows)
    out = make_run_dir(output_dir, "report", overwrite)
    paper, importance_paper = as_dicts(MDU_COLUMNS, MDU_PAPER), as_dicts(IMPORTANCE_COLUMNS, IMPORTANCE_PAPER)
    md = ["# mdu-speech comparison", "",
          "Measured here. WER/CER in %, after English normalisation; text score = mean accuracy (points) of the text "
          "suite; text Δ = run − base (points); ppl ratio = held-out perplexity run / base. "
          f"Pareto-optimal (WER vs Δ): {', '.join(front) or '–'}.", "",
          markdown_table(COLUMNS, rows), "", "![pareto](pareto.png)", "",
          "## Published: MDU (arXiv 2604.00489), LibriSpeech WER %, 8-task text average", "",
          markdown_table(MDU_COLUMNS, paper), "",
          "## Published: importance / layer-wise LR (arXiv 2509.23755), 8B spoken QA accuracy %", "",
          markdown_table(IMPORTANCE_COLUMNS, importance_paper), ""]
    report = {"runs": rows, "pareto_front": front, "paper_mdu": paper, "paper_importance": importance_paper}
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
