"""Intent classification on a labelled intents set: accuracy, macro-F1, per-intent report,
confusions, calibration (ECE) and out-of-scope detection over confidence thresholds.

Metric definitions:
- accuracy: sklearn `accuracy_score` over all examples (an `oos` example is right when the
  model predicts the OOS label).
- macro_f1: sklearn `f1_score(average="macro")` over the intents present in the gold data.
- per-intent precision/recall/F1: sklearn `classification_report`.
- ece: expected calibration error, 15 equal-width confidence bins:
  sum over bins of (examples in bin / all) * |accuracy in bin - mean confidence in bin|.
- OOS (when gold labels include `oos` or `out_of_scope`): at threshold t an example is predicted
  OOS when the predicted label is an OOS label or the top probability is below t; precision and
  recall of that prediction against the gold OOS examples (sklearn), for t = 0.00, 0.01, ... 1.00;
  in-scope accuracy at t = in-scope examples predicted correctly and not rejected / in-scope
  examples; oos_average_precision = sklearn `average_precision_score` with the OOS score
  (1 - top probability, or above 1 when the predicted label is OOS).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from core.errors import DataError
from evaluation.base import EvalResult, Evaluator, batched, finite
from service.nlu import read_intent_examples

log = logging.getLogger(__name__)

OOS_LABELS = ("oos", "out_of_scope")
ECE_BINS = 15
OOS_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)
TOP_CONFUSIONS = 20


@dataclass
class IntentSet:
    """Labelled intent examples and where they came from (`source` names the file/split)."""

    texts: list[str]
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def read_intents(path: str | Path) -> IntentSet:
    texts, labels = read_intent_examples(Path(path))
    return IntentSet(texts, labels, str(path))


def load_intent_data(path: str | Path) -> tuple[IntentSet, IntentSet | None]:
    """(evaluation set, training set or None) from an intents file or a folder of splits.

    A folder is evaluated on `test.jsonl`, else `val.jsonl`; its `train.jsonl` (when present) is
    the training set a linear probe or cross-validation may use. A single file has no training set.
    """
    path = Path(path)
    if path.is_file():
        return read_intents(path), None
    if not path.is_dir():
        raise DataError(f"intents data not found: {path} (pass an intents .jsonl file or a folder with "
                        "train.jsonl/val.jsonl/test.jsonl)")
    for split in ("test", "val"):
        if (path / f"{split}.jsonl").is_file():
            train = path / "train.jsonl"
            return read_intents(path / f"{split}.jsonl"), (read_intents(train) if train.is_file() else None)
    raise DataError(f"{path}: no test.jsonl or val.jsonl to evaluate on")


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
                               ) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width bins, and the per-bin table (for the reliability diagram)."""
    confidences = np.asarray(confidences, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidences, edges[1:-1], right=True), 0, bins - 1)
    table, ece, n = [], 0.0, len(confidences)
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        if count:
            acc, conf = float(correct[mask].mean()), float(confidences[mask].mean())
            ece += count / n * abs(acc - conf)
        else:
            acc = conf = float("nan")
        table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "accuracy": acc,
                      "confidence": conf})
    return (ece if n else float("nan")), table


def top_confusions(gold: Sequence[str], pred: Sequence[str], n: int = TOP_CONFUSIONS) -> list[dict[str, Any]]:
    """The n most frequent (gold -> predicted) mistakes, from sklearn's confusion matrix."""
    labels = sorted(set(gold) | set(pred))
    cm = confusion_matrix(gold, pred, labels=labels)
    np.fill_diagonal(cm, 0)
    flat = np.argsort(-cm, axis=None, kind="stable")[:n]
    pairs = []
    for idx in flat:
        i, j = divmod(int(idx), len(labels))
        if cm[i, j] == 0:
            break
        pairs.append({"gold": labels[i], "predicted": labels[j], "count": int(cm[i, j])})
    return pairs


def oos_curve(gold: Sequence[str], pred: Sequence[str], confidences: np.ndarray,
              thresholds: np.ndarray = OOS_THRESHOLDS) -> list[dict[str, float | None]]:
    gold_oos = np.isin(np.asarray(gold), OOS_LABELS)
    pred_label_oos = np.isin(np.asarray(pred), OOS_LABELS)
    correct = np.asarray(gold) == np.asarray(pred)
    in_scope = ~gold_oos
    rows = []
    for t in thresholds:
        predicted_oos = pred_label_oos | (confidences < t)
        rows.append({
            "threshold": float(t),
            "oos_precision": finite(precision_score(gold_oos, predicted_oos, zero_division=np.nan)),
            "oos_recall": finite(recall_score(gold_oos, predicted_oos, zero_division=np.nan)),
            "oos_f1": finite(f1_score(gold_oos, predicted_oos, zero_division=np.nan)),
            "in_scope_accuracy": float((correct & ~predicted_oos)[in_scope].mean()) if in_scope.any() else None,
        })
    return rows


def predict(nlu: Any, texts: Sequence[str], batch_size: int = 256) -> tuple[list[str], np.ndarray]:
    """Top intent and its probability for each text, through the NLU's own `parse_batch`."""
    labels, confs = [], []
    for chunk in batched(list(texts), batch_size):
        for r in nlu.parse_batch(list(chunk)):
            labels.append(r.intent)
            confs.append(r.confidence)
    return labels, np.asarray(confs, dtype=float)


def classification_metrics(gold: Sequence[str], pred: Sequence[str], confidences: np.ndarray,
                           name: str = "nlu") -> EvalResult:
    """Everything NLUEvaluator reports, from predictions already made (also used by the CV evaluator)."""
    gold, pred = list(gold), list(pred)
    gold_labels = sorted(set(gold))
    correct = np.asarray(gold) == np.asarray(pred)
    ece, bins = expected_calibration_error(confidences, correct)
    report = classification_report(gold, pred, labels=gold_labels, output_dict=True, zero_division=0)
    per_intent = {k: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
                  for k, v in report.items() if k in gold_labels}
    metrics: dict[str, Any] = {
        "examples": len(gold),
        "intents": len(gold_labels),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=gold_labels, average="macro", zero_division=0)),
        "ece": finite(ece),
        "mean_confidence": float(np.mean(confidences)) if len(confidences) else None,
    }
    details: dict[str, Any] = {"per_intent": per_intent, "top_confusions": top_confusions(gold, pred),
                               "reliability": bins}
    if any(g in OOS_LABELS for g in gold):
        curve = oos_curve(gold, pred, confidences)
        gold_oos = np.isin(gold, OOS_LABELS)
        score = np.where(np.isin(pred, OOS_LABELS), 2.0, 1.0 - confidences)
        best = max(curve, key=lambda r: (r["oos_f1"] or 0.0, -r["threshold"]))
        metrics.update({
            "oos_examples": int(gold_oos.sum()),
            "oos_precision": curve[0]["oos_precision"], "oos_recall": curve[0]["oos_recall"],
            "in_scope_accuracy": curve[0]["in_scope_accuracy"],
            "oos_average_precision": float(average_precision_score(gold_oos, score)),
            "oos_best_threshold": best["threshold"], "oos_best_f1": best["oos_f1"],
            "oos_precision_at_best": best["oos_precision"], "oos_recall_at_best": best["oos_recall"],
            "in_scope_accuracy_at_best": best["in_scope_accuracy"],
        })
        details["oos_curve"] = curve
    header = ["intent", "precision", "recall", "f1", "support"]
    rows = [[k, v["precision"], v["recall"], v["f1"], v["support"]] for k, v in per_intent.items()]
    arrays = {"gold": gold, "pred": pred, "confidences": np.asarray(confidences, dtype=float), "correct": correct}
    return EvalResult(name, metrics, details, header, rows, arrays)


class NLUEvaluator(Evaluator):
    """Scores an NLU (anything with `labels` and `parse_batch`) on labelled intent examples.

    When the gold intents are not the model's (e.g. BANKING77 against the demo model), the
    result says so (`label_overlap` < 1, `unknown_intents`, a warning in `notes`): the numbers
    then measure the mismatch, not the model; use a linear probe or `--folds`.
    """

    name = "nlu"

    def __init__(self, data: IntentSet, name: str = "nlu", batch_size: int = 256):
        self.data = data
        self.name = name
        self.batch_size = batch_size

    def run(self, nlu: Any) -> EvalResult:
        pred, conf = predict(nlu, self.data.texts, self.batch_size)
        result = classification_metrics(self.data.labels, pred, conf, self.name)
        model_labels = set(getattr(nlu, "labels", []) or [])
        gold_labels = sorted(set(self.data.labels))
        unknown = [g for g in gold_labels if model_labels and g not in model_labels]
        overlap = 1.0 - len(unknown) / len(gold_labels) if model_labels else None
        result.metrics["label_overlap"] = overlap
        result.details["source"] = self.data.source
        result.details["unknown_intents"] = unknown
        notes = []
        if unknown:
            share = sum(g in set(unknown) for g in self.data.labels) / len(self.data.labels)
            notes.append(f"{len(unknown)} of {len(gold_labels)} gold intents ({100 * share:.0f}% of the examples) "
                         f"are not among the model's {len(model_labels)} intents"
                         + (": the labels differ, so these numbers measure the mismatch, not the model"
                            if overlap is not None and overlap < 0.5 else ""))
            log.warning("%s: %s", self.data.source, notes[-1])
        result.details["notes"] = notes
        log.info("%s on %s: accuracy %.4f, macro-F1 %.4f (%d examples)", self.name, self.data.source,
                 result.metrics["accuracy"], result.metrics["macro_f1"], len(self.data))
        return result


class FrozenEmbeddingCVEvaluator(Evaluator):
    """Stratified k-fold cross-validation of a logistic regression on an encoder's frozen embeddings.

    Meant for small intent sets, where a held-out split would be too small to trust: the texts are
    encoded once with the model's encoder (no fine-tuning, CPU, seconds), then for each fold a
    logistic regression (the same one `FrozenEncoderNLU` serves) is fitted on the other K-1 folds.
    Reports per-fold accuracy/macro-F1 (mean and std) and every metric of `NLUEvaluator` on the
    pooled out-of-fold predictions. Intents with fewer than K examples are left out (and listed).
    """

    name = "nlu_cv"

    def __init__(self, data: IntentSet, folds: int = 5, seed: int = 0, C: float = 10.0):
        if folds < 2:
            raise DataError(f"--folds must be at least 2, got {folds}")
        self.data, self.folds, self.seed, self.C = data, folds, seed, C

    def run(self, embedder: Any) -> EvalResult:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        labels = np.asarray(self.data.labels)
        names, counts = np.unique(labels, return_counts=True)
        dropped = sorted(str(n) for n, c in zip(names, counts) if c < self.folds)
        keep = ~np.isin(labels, dropped)
        if len(set(labels[keep])) < 2:
            raise DataError(f"{self.data.source}: too few examples for {self.folds}-fold cross-validation "
                            f"(every intent needs at least {self.folds} examples)")
        if dropped:
            log.warning("cross-validation leaves out %d intent(s) with fewer than %d examples: %s",
                        len(dropped), self.folds, ", ".join(dropped))
        texts = [t for t, k in zip(self.data.texts, keep) if k]
        y = labels[keep]
        log.info("cross-validation: encoding %d examples with %s", len(texts), getattr(embedder, "name", "the encoder"))
        X = np.asarray(embedder.encode(texts), dtype=np.float32)
        oof_pred = np.empty(len(y), dtype=object)
        oof_conf = np.zeros(len(y))
        fold_rows = []
        splitter = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
        for k, (tr, te) in enumerate(splitter.split(X, y), 1):
            clf = LogisticRegression(C=self.C, max_iter=2000)
            clf.fit(X[tr], y[tr])
            probs = clf.predict_proba(X[te])
            oof_pred[te] = clf.classes_[probs.argmax(1)]
            oof_conf[te] = probs.max(1)
            fold_rows.append({"fold": k, "examples": len(te),
                              "accuracy": float(accuracy_score(y[te], oof_pred[te])),
                              "macro_f1": float(f1_score(y[te], list(oof_pred[te]), average="macro", zero_division=0))})
        result = classification_metrics(list(y), [str(p) for p in oof_pred], oof_conf, self.name)
        accs = [r["accuracy"] for r in fold_rows]
        f1s = [r["macro_f1"] for r in fold_rows]
        result.metrics.update({"folds": self.folds, "fold_accuracy_mean": float(np.mean(accs)),
                               "fold_accuracy_std": float(np.std(accs)), "fold_macro_f1_mean": float(np.mean(f1s)),
                               "fold_macro_f1_std": float(np.std(f1s))})
        result.details.update({"source": self.data.source, "fold_results": fold_rows, "left_out_intents": dropped,
                               "method": f"stratified {self.folds}-fold CV, logistic regression (C={self.C}) "
                                         "on the model's frozen embeddings"})
        result.csv_header = ["fold", "examples", "accuracy", "macro_f1"]
        result.csv_rows = [[r["fold"], r["examples"], r["accuracy"], r["macro_f1"]] for r in fold_rows]
        log.info("%d-fold CV on %s: accuracy %.4f ± %.4f", self.folds, self.data.source, np.mean(accs), np.std(accs))
        return result
