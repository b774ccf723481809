"""Accuracy and F1 as a local `evaluate` module: evaluate.load(<this folder>) (the hub's `accuracy` and
`f1` modules cannot be loaded offline).

Add `predictions` and `references` (class ids); compute(num_labels=k) returns the accuracy and the
macro-averaged F1 over the k classes (a class never predicted and never present is left out of the
average; one that is present but never predicted counts as F1 0), as fractions in [0, 1].
"""

import datasets
import evaluate
import torch


def accuracy_and_macro_f1(predictions, references, num_labels):
    """Accuracy and macro F1 of class ids. predictions, references: (N,) int tensors."""
    if len(predictions) != len(references) or len(references) == 0:
        raise ValueError(
            f"need as many predictions as references, and at least one: {len(predictions)}, {len(references)}"
        )
    scores = []
    for label in range(num_labels):
        predicted, actual = predictions == label, references == label
        if not predicted.any() and not actual.any():
            continue
        true_positives = float((predicted & actual).sum())
        scores.append(2 * true_positives / (float(predicted.sum()) + float(actual.sum())))
    return {"accuracy": float((predictions == references).double().mean()), "f1": sum(scores) / len(scores)}


class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions, references: lists of class ids.",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        predictions, references = torch.tensor(predictions), torch.tensor(references)
        num_labels = num_labels or int(max(predictions.max(), references.max())) + 1
        return accuracy_and_macro_f1(predictions, references, num_labels)
