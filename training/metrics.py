"""Classification metrics shared by training, tuning and the benchmark (numpy only, no extra state)."""
from __future__ import annotations

import numpy as np


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, n_labels: int | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels present in `labels` (the usual BANKING77 convention)."""
    predictions = np.asarray(predictions).astype(int)
    labels = np.asarray(labels).astype(int)
    if labels.size == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}
    n = int(max(n_labels or 0, predictions.max() + 1, labels.max() + 1))
    tp = np.bincount(labels[predictions == labels], minlength=n).astype(float)
    predicted = np.bincount(predictions, minlength=n).astype(float)
    actual = np.bincount(labels, minlength=n).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(n), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    present = actual > 0
    return {
        "accuracy": float((predictions == labels).mean()),
        "macro_f1": float(f1[present].mean()),
        "n": int(labels.size),
    }
