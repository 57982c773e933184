"""Fitting an OOS detector's settings on validation data: the threshold on its in-scope score
(`calibrate_oos_threshold`) and the temperature of the NLU's probabilities (`validation_temperature`).

Threshold objectives (`OBJECTIVES`):
- `accuracy_floor` (default): the largest threshold whose in-scope accuracy (correct intent and
  not flagged) stays at or above a floor: `min_in_scope_accuracy`, or else the accuracy with no
  threshold minus `max_accuracy_drop`. Flagging more only ever raises OOS recall, so this
  maximises OOS recall subject to the floor, and it is decided by the in-scope examples alone,
  which matters when validation holds few OOS examples (CLINC150's training split has 100).
- `balanced`: maximise the mean of in-scope accuracy and OOS recall (needs OOS examples).
- `f1`: maximise the F1 of the OOS prediction (needs OOS examples).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from runtime.calibration import fit_temperature
from service.oos.scores import as_2d, oos_mask

log = logging.getLogger(__name__)

OBJECTIVES: tuple[str, ...] = ("accuracy_floor", "balanced", "f1")
# In-scope accuracy the default objective may give up on the validation split. One point, not two:
# on CLINC150 a split carved from the training data understated the loss on newly collected
# messages by a factor of about 1.5 (benchmarks/results/oos_clinc150.json, "drop_sweep").
DEFAULT_MAX_ACCURACY_DROP = 0.01
TEMPERATURE_BOUNDS = (0.05, 20.0)


def validation_temperature(probs: np.ndarray, labels: Sequence[str], gold: Sequence[Any]) -> float:
    """The temperature T minimising the NLL of softmax(log p / T) on validation rows (Guo et al. 2017).

    `probs` [n, L] has one column per name in `labels`; rows whose gold label is not among them are ignored.
    """
    col = {name: i for i, name in enumerate(labels)}
    targets = np.asarray([col.get(str(g), -1) for g in gold])
    return fit_temperature(np.log(np.clip(as_2d(probs), 1e-12, 1.0)), targets, bounds=TEMPERATURE_BOUNDS)


@dataclass
class OOSCalibration:
    """A threshold chosen on validation data, how, and what it gave there (JSON-serialisable)."""
    threshold: float
    method: str                      # the score: msp | knn | centroid | combined
    objective: str                   # accuracy_floor | balanced | f1
    floor: float | None = None       # in-scope accuracy floor (accuracy_floor)
    floor_met: bool = True           # False: no threshold met the floor; none beyond the OOS label is applied
    figures: dict[str, float | int | None] = field(default_factory=dict)   # validation figures at the threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OOSCalibration":
        return cls(threshold=float(d["threshold"]), method=str(d["method"]), objective=str(d["objective"]),
                   floor=None if d.get("floor") is None else float(d["floor"]), floor_met=bool(d.get("floor_met", True)),
                   figures=dict(d.get("figures") or {}))


def oos_figures(scores: np.ndarray, gold: Sequence[str], pred: Sequence[str], threshold: float) -> dict[str, Any]:
    """In-scope accuracy, OOS recall/precision/F1 when flagging `pred` in OOS_LABELS or `score < threshold`.

    In-scope accuracy counts an in-scope example as right only when predicted as its own intent
    and not flagged; OOS precision and recall are those of the flag against the gold OOS examples.
    """
    scores = np.asarray(scores, dtype=np.float64)
    gold_oos = oos_mask(gold)
    flagged = oos_mask(pred) | (scores < threshold)
    correct = np.asarray([str(g) for g in gold]) == np.asarray([str(p) for p in pred])
    n_in, n_oos = int((~gold_oos).sum()), int(gold_oos.sum())
    tp = int((flagged & gold_oos).sum())
    n_flag = int(flagged.sum())
    prec = tp / n_flag if n_flag else None
    rec = tp / n_oos if n_oos else None
    f1 = (2 * prec * rec / (prec + rec) if prec is not None and rec is not None and prec + rec > 0 else
          (0.0 if prec is not None and rec is not None else None))
    return {
        "in_scope_accuracy": float((correct & ~flagged)[~gold_oos].mean()) if n_in else None,
        "oos_recall": rec, "oos_precision": prec, "oos_f1": f1,
        "in_scope_flagged": float(flagged[~gold_oos].mean()) if n_in else None,
        "n_in_scope": n_in, "n_oos": n_oos,
    }


def _sweep(scores: np.ndarray, gold: Sequence[str], pred: Sequence[str]) -> dict[str, np.ndarray]:
    """Figures at every distinct threshold (midpoints between consecutive distinct scores), in O(n log n)."""
    scores = np.asarray(scores, dtype=np.float64)
    gold_oos = oos_mask(gold)
    label_flag = oos_mask(pred)
    correct = (np.asarray([str(g) for g in gold]) == np.asarray([str(p) for p in pred])) & ~gold_oos & ~label_flag
    uniq = np.unique(scores)
    # Candidate t: flag nothing by score, then flag every score up to each distinct value.
    cand = np.concatenate([[uniq[0] - 1.0], (uniq[:-1] + uniq[1:]) / 2, [uniq[-1] + 1.0]])
    # Rows with score < t, for each candidate, via searchsorted over the sorted scores.
    order = np.argsort(scores, kind="stable")
    s_sorted = scores[order]
    below = np.searchsorted(s_sorted, cand, side="left")            # how many scores < t

    def cum(mask: np.ndarray) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(mask[order])])[below]

    n_in, n_oos = int((~gold_oos).sum()), int(gold_oos.sum())
    lost_correct = cum(correct)                                      # correct in-scope rows flagged by score
    oos_by_score = cum(gold_oos & ~label_flag)
    in_by_score = cum(~gold_oos & ~label_flag)
    tp = int((gold_oos & label_flag).sum()) + oos_by_score
    flagged = int(label_flag.sum()) + oos_by_score + in_by_score
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = (int(correct.sum()) - lost_correct) / n_in if n_in else np.full(len(cand), np.nan)
        rec = tp / n_oos if n_oos else np.full(len(cand), np.nan)
        prec = np.where(flagged > 0, tp / np.maximum(flagged, 1), np.nan)
        f1 = np.where((prec + rec) > 0, 2 * prec * rec / (prec + rec), 0.0)
    return {"threshold": cand, "in_scope_accuracy": np.asarray(acc, dtype=float), "oos_recall": np.asarray(rec, dtype=float),
            "oos_precision": prec, "oos_f1": f1}


def calibrate_oos_threshold(scores: np.ndarray, gold: Sequence[str], pred: Sequence[str], *,
                            objective: str = "accuracy_floor", method: str = "msp",
                            min_in_scope_accuracy: float | None = None,
                            max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> OOSCalibration:
    """Choose the threshold on VALIDATION scores for `objective` (see the module docstring).

    `scores`: in-scope scores (higher = more in scope) of the validation examples; `gold`: their
    labels (OOS examples labelled `oos`/`out_of_scope`); `pred`: the NLU's top intent for each.
    `accuracy_floor` uses `min_in_scope_accuracy` when given, else (accuracy with no threshold)
    minus `max_accuracy_drop`; when no threshold meets the floor it returns the lowest one
    (nothing flagged by score) with `floor_met=False`. Ties go to the lower threshold.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r} (known: {', '.join(OBJECTIVES)})")
    scores = np.asarray(scores, dtype=np.float64)
    if not (len(scores) == len(gold) == len(pred)) or len(scores) == 0:
        raise ValueError("calibrate_oos_threshold: scores, gold and pred must be non-empty and of equal length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("calibrate_oos_threshold: scores must be finite")
    gold_oos = oos_mask(gold)
    if gold_oos.all():
        raise ValueError("calibrate_oos_threshold: the validation data has no in-scope examples")
    if objective != "accuracy_floor" and not gold_oos.any():
        raise ValueError(f"objective {objective!r} needs OOS examples in the validation data "
                         "(label them 'oos' or 'out_of_scope'), or use objective='accuracy_floor'")
    sw = _sweep(scores, gold, pred)
    floor, floor_met = None, True
    if objective == "accuracy_floor":
        base = float(sw["in_scope_accuracy"][0])
        floor = float(min_in_scope_accuracy) if min_in_scope_accuracy is not None else base - float(max_accuracy_drop)
        ok = np.flatnonzero(sw["in_scope_accuracy"] >= floor - 1e-12)
        if len(ok):
            i = int(ok.max())          # accuracy never rises with t: the largest feasible threshold
        else:
            i, floor_met = 0, False
            log.warning("OOS calibration: in-scope accuracy %.4f is below the floor %.4f even with no threshold",
                        base, floor)
    else:
        value = (sw["in_scope_accuracy"] + sw["oos_recall"]) / 2 if objective == "balanced" else sw["oos_f1"]
        value = np.nan_to_num(value, nan=-1.0)
        i = int(np.flatnonzero(value >= value.max() - 1e-12)[0])
    threshold = float(sw["threshold"][i])
    figures = oos_figures(scores, gold, pred, threshold)
    figures["base_in_scope_accuracy"] = float(sw["in_scope_accuracy"][0])
    return OOSCalibration(threshold, method, objective, floor, floor_met, figures)
