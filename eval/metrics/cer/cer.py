"""Character error rate as a local `evaluate` metric (load by path: `evaluate.load("eval/metrics/cer")`).

Corpus-level CER = character edits / reference characters (spaces count), computed by jiwer.
"""

import datasets
import evaluate
import jiwer


class CER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Character error rate (jiwer), corpus level.",
            citation="",
            inputs_description="predictions: list[str], references: list[str]",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        if any(not r for r in references):
            bad = next(i for i, r in enumerate(references) if not r)
            raise ValueError(f"reference {bad} is empty: CER is undefined for an empty reference")
        return {"cer": jiwer.cer(list(references), list(predictions))}
