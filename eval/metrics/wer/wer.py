"""Word error rate as a local `evaluate` metric (load by path: `evaluate.load("eval/metrics/wer")`, no Hub fetch).

Corpus-level WER = (substitutions + deletions + insertions) / reference words, computed by jiwer. Normalise the
strings first (`eval.normalize.normalize_text`); this module compares them as given.
"""

import datasets
import evaluate
import jiwer


class WER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Word error rate (jiwer), corpus level.",
            citation="",
            inputs_description="predictions: list[str], references: list[str]",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        if any(not r.strip() for r in references):
            bad = next(i for i, r in enumerate(references) if not r.strip())
            raise ValueError(f"reference {bad} is empty: WER is undefined for an empty reference")
        return {"wer": jiwer.wer(list(references), list(predictions))}
