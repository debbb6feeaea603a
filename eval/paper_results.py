"""Published numbers of the two papers (DESIGN.md §1–2), for the comparison table of `eval/report.py`."""

MDU_COLUMNS = ["model", "method", "trainable", "wer_clean", "wer_other", "text", "delta"]
# arXiv 2604.00489: WER on LibriSpeech test-clean / test-other (%), text = mean of 8 tasks, Δ = adapted − base (points)
MDU_PAPER = [
    ("360M", "base", "–", None, None, 56.8, None),
    ("360M", "full fine-tuning", "all", 2.7, 6.0, 34.6, -22.2),
    ("360M", "LoRA r=144 (matched params)", "~MDU", 11.3, 17.3, 34.9, -21.9),
    ("360M", "MDU INTERLEAVED", "25% layers", 3.1, 6.7, 54.9, -1.9),
    ("360M", "MDU SANDWICH", "25% layers", 3.3, 7.0, None, -3.8),
    ("360M", "MDU TOP", "25% layers", 3.5, 7.5, None, -0.9),
    ("360M", "MDU MIDDLE", "25% layers", 3.5, 7.6, None, -3.9),
    ("360M", "MDU BOTTOM", "25% layers", 3.4, 7.4, None, -5.8),
    ("360M", "MDU E-Branchformer INTERLEAVED", "220M", 2.9, 6.2, None, -2.2),
    ("1.7B", "base", "–", None, None, 69.0, None),
    ("1.7B", "full fine-tuning", "1.87B", 2.3, 5.6, 36.5, -32.6),
    ("1.7B", "LoRA r=356", "~MDU", 3.2, 7.1, None, -35.7),
    ("1.7B", "MDU INTERLEAVED", "25% layers", 2.4, 5.5, None, -8.3),
    ("1.7B", "MDU TOP", "25% layers", 2.9, 6.3, None, -2.7),
    ("1.7B", "MDU E-Branchformer INTERLEAVED", "0.75B", 2.3, 5.3, None, -6.8),
]

IMPORTANCE_COLUMNS = ["model", "method", "text_to_text", "speech_to_text"]
# arXiv 2509.23755: Llama-3.1-8B speech LLM, spoken QA accuracy (%); base text accuracy 84.7
IMPORTANCE_PAPER = [
    ("8B", "base (text)", 84.7, None),
    ("8B", "full fine-tuning", 80.0, 72.0),
    ("8B", "layer-wise LR (λ=0.4)", 81.3, 73.3),
    ("8B", "LoRA (r=8/16)", 81.0, 75.0),
]


def as_dicts(columns, rows) -> list[dict]:
    return [dict(zip(columns, r)) for r in rows]
