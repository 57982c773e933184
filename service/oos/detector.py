"""Out-of-scope (OOS) detection over an NLU's outputs: scores, a validation-calibrated threshold,
and a detector that can be saved next to a model.

Every score is an *in-scope score*: higher means "more like the intents we were trained on"; a
message is flagged out of scope when its score is below the threshold, or when the NLU's top
intent is itself an OOS label (`oos` in CLINC150, `out_of_scope` in the demo pack).

Scores (`SCORE_METHODS`):
- `msp`: the maximum softmax probability, after an optional temperature fitted on validation
  data (Hendrycks & Gimpel 2017; Guo et al. 2017). Needs only the NLU's distribution.
- `knn`: the mean cosine similarity of the message embedding to its `k` nearest in-scope
  training examples (Sun et al. 2022, without their normalisation of the feature space).
- `centroid`: the largest cosine similarity to an in-scope intent's centroid (mean training
  embedding, re-normalised).
- `combined`: the mean of `msp` (as a logit, log p / (1 - p)) and `knn`, each standardised with the
  mean and standard deviation of the in-scope validation examples: no OOS examples are needed
  to weigh the two.

Threshold calibration (`calibrate_oos_threshold`) uses validation data only; its objectives:
- `accuracy_floor` (default): the largest threshold whose in-scope accuracy (correct intent and
  not flagged) stays at or above a floor: `min_in_scope_accuracy`, or else the accuracy with no
  threshold minus `max_accuracy_drop`. Flagging more only ever raises OOS recall, so this
  maximises OOS recall subject to the floor, and it is decided by the in-scope examples alone,
  which matters when validation holds few OOS examples (CLINC150's training split has 100).
- `balanced`: maximise the mean of in-scope accuracy and OOS recall (needs OOS examples).
- `f1`: maximise the F1 of the OOS prediction (needs OOS examples).

Pure numpy: no torch import, so the service can load a detector without the training stack.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from service.errors import ArtifactError

log = logging.getLogger(__name__)

OOS_LABELS: tuple[str, ...] = ("oos", "out_of_scope")
SCORE_METHODS: tuple[str, ...] = ("msp", "knn", "centroid", "combined")
OBJECTIVES: tuple[str, ...] = ("accuracy_floor", "balanced", "f1")
DETECTOR_FILE = "oos.json"
REFERENCE_FILE = "oos_reference.npy"
FORMAT_VERSION = 1
_EPS = 1e-6
# In-scope accuracy the default objective may give up on the validation split. One point, not two:
# on CLINC150 a split carved from the training data understated the loss on newly collected
# messages by a factor of about 1.5 (benchmarks/results/oos_clinc150.json, "drop_sweep").
DEFAULT_MAX_ACCURACY_DROP = 0.01


def is_oos_label(label: Any) -> bool:
    return str(label) in OOS_LABELS


def oos_mask(labels: Iterable[Any]) -> np.ndarray:
    return np.asarray([is_oos_label(x) for x in labels], dtype=bool)


# ---------------------------------------------------------------------- probabilities and temperature

def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[None, :] if x.ndim == 1 else x


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same as softmax(logits / T) when p = softmax(logits)."""
    probs = _as_2d(probs)
    if temperature == 1.0:
        return probs
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, targets: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimising the NLL of softmax(log p / T) on held-out rows (golden section on log T).

    `targets` are column indices of the gold class; rows with a negative target are ignored.
    """
    probs = _as_2d(probs)
    targets = np.asarray(targets, dtype=int)
    keep = targets >= 0
    if not keep.any():
        return 1.0
    logp = np.log(np.clip(probs[keep], 1e-12, 1.0))
    t = targets[keep]

    def nll(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(t)), t]))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(math.exp((lo + hi) / 2))


def max_prob_score(probs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Maximum softmax probability per row (after temperature scaling): [n]."""
    return apply_temperature(probs, temperature).max(axis=1)


# ---------------------------------------------------------------------- embedding scores

def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    x = x[None, :] if x.ndim == 1 else x
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_similarity_score(embeddings: np.ndarray, reference: np.ndarray, k: int = 10, chunk: int = 1024) -> np.ndarray:
    """Mean cosine similarity to the k most similar reference rows: [n] (k=1: the nearest neighbour)."""
    q = l2_normalise(embeddings)
    ref = l2_normalise(reference)
    if len(ref) == 0:
        raise ValueError("knn score: the reference set is empty")
    k = max(1, min(int(k), len(ref)))
    out = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), chunk):
        sims = q[start:start + chunk] @ ref.T
        top = np.partition(sims, len(ref) - k, axis=1)[:, len(ref) - k:] if k < len(ref) else sims
        out[start:start + chunk] = top.mean(axis=1)
    return out


def class_centroids(embeddings: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(names, re-normalised mean embedding per label), OOS labels left out."""
    emb = l2_normalise(embeddings)
    labels = np.asarray([str(x) for x in labels])
    names = sorted(set(labels[~oos_mask(labels)]))
    cents = np.stack([emb[labels == n].mean(axis=0) for n in names]) if names else np.zeros((0, emb.shape[1]))
    return names, l2_normalise(cents)


def centroid_similarity_score(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Largest cosine similarity to an intent centroid: [n]."""
    return (l2_normalise(embeddings) @ l2_normalise(centroids).T).max(axis=1).astype(np.float64)


def prob_logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


# ---------------------------------------------------------------------- threshold calibration

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


# ---------------------------------------------------------------------- the detector

@dataclass(eq=False)   # holds numpy arrays: compare scores, not objects
class OOSDetector:
    """Scores one NLU output (probabilities + embedding) and says whether it is out of scope.

    Fit with `OOSDetector.fit(...)` on the training examples' embeddings (the kNN/centroid
    reference; OOS-labelled rows are left out of it) and a validation split scored by the same
    NLU (temperature, normalisation and threshold). Save with `save(dir)` (`oos.json` +
    `oos_reference.npy`), load with `OOSDetector.load(dir)`.
    """
    labels: list[str]                          # the NLU's classes, in the column order of its probabilities
    method: str = "combined"
    threshold: float = 0.0
    temperature: float = 1.0
    k: int = 10
    norm: dict[str, list[float]] = field(default_factory=dict)   # component -> [mean, std] (combined)
    reference: np.ndarray | None = None        # [n, d] L2-normalised in-scope training embeddings
    reference_labels: list[str] = field(default_factory=list)
    calibration: OOSCalibration | None = None
    encoder_fingerprint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in SCORE_METHODS:
            raise ValueError(f"unknown OOS score {self.method!r} (known: {', '.join(SCORE_METHODS)})")
        self.labels = [str(x) for x in self.labels]
        self._oos_cols = np.asarray([is_oos_label(x) for x in self.labels], dtype=bool)
        self._centroids: np.ndarray | None = None
        if self.reference is not None:
            self.reference = l2_normalise(self.reference)
            if self.reference_labels and len(self.reference_labels) != len(self.reference):
                raise ValueError("reference_labels and reference differ in length")
        if self.method in ("knn", "centroid", "combined") and (self.reference is None or not len(self.reference)):
            raise ValueError(f"OOS score {self.method!r} needs reference embeddings")
        if self.method == "centroid" and not self.reference_labels:
            raise ValueError("OOS score 'centroid' needs reference_labels")

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, labels: Sequence[str], train_embeddings: np.ndarray, train_labels: Sequence[str],
            val_probs: np.ndarray, val_embeddings: np.ndarray | None, val_labels: Sequence[str], *,
            method: str = "combined", k: int = 10, objective: str = "accuracy_floor",
            min_in_scope_accuracy: float | None = None, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
            calibrate_temperature: bool = True, encoder_fingerprint: str | None = None,
            val_embedding_scores: Mapping[str, np.ndarray] | None = None) -> "OOSDetector":
        """Build the reference from the training rows, then fit temperature, normalisation and threshold
        on the validation rows (probabilities and embeddings from the same NLU, labels = gold intents).

        The validation rows must not be among the training rows (a row would find itself as its own
        nearest neighbour), unless `val_embedding_scores` gives their knn/centroid scores computed
        against references that leave them out (as `fit_cross_validated` does)."""
        labels = [str(x) for x in labels]
        train_labels = [str(x) for x in train_labels]
        keep = ~oos_mask(train_labels)
        reference = l2_normalise(np.asarray(train_embeddings))[keep] if method != "msp" else None
        ref_labels = [lab for lab, kp in zip(train_labels, keep) if kp] if method != "msp" else []
        val_probs = _as_2d(val_probs)
        if val_probs.shape[1] != len(labels):
            raise ValueError(f"val_probs has {val_probs.shape[1]} columns but labels has {len(labels)}")
        col = {name: i for i, name in enumerate(labels)}
        temperature = 1.0
        if calibrate_temperature:
            targets = np.asarray([col.get(str(g), -1) for g in val_labels])
            temperature = fit_temperature(val_probs, targets)
        det = cls(labels=labels, method=method, temperature=temperature, k=k, reference=reference,
                  reference_labels=ref_labels, encoder_fingerprint=encoder_fingerprint)
        comps = det.components(val_probs, val_embeddings, val_embedding_scores)
        in_scope = ~oos_mask(val_labels)
        det.norm = {name: [float(v[in_scope].mean()), float(max(v[in_scope].std(), 1e-6))]
                    for name, v in comps.items() if name in ("msp_logit", "knn")}
        scores = det._combine(comps)
        pred = det.predicted_labels(val_probs)
        det.calibration = calibrate_oos_threshold(scores, [str(g) for g in val_labels], pred, objective=objective,
                                                  method=method, min_in_scope_accuracy=min_in_scope_accuracy,
                                                  max_accuracy_drop=max_accuracy_drop)
        det.threshold = det.calibration.threshold
        det.meta = {"n_reference": 0 if reference is None else int(len(reference)), "n_validation": int(len(val_labels)),
                    "n_validation_oos": int((~in_scope).sum())}
        log.info("OOS detector (%s, %s): threshold %.4f, validation in-scope accuracy %s, OOS recall %s",
                 method, objective, det.threshold, det.calibration.figures.get("in_scope_accuracy"),
                 det.calibration.figures.get("oos_recall"))
        return det

    @classmethod
    def fit_cross_validated(cls, embeddings: np.ndarray, labels: Sequence[str], *, folds: int = 5, C: float = 10.0,
                            seed: int = 0, method: str = "combined", k: int = 10, **fit_kwargs: Any) -> "OOSDetector":
        """For an NLU that is a logistic regression on frozen embeddings (`service.nlu.FrozenEncoderNLU`),
        fitted on *all* the intent examples: there is no held-out split, so the validation scores are
        out-of-fold ones (stratified K-fold, the same LogisticRegression(C) per fold), and the kNN
        reference is every in-scope example. Intents with fewer than `folds` examples still count as
        references but are left out of the validation rows. `fit_kwargs` go to `fit` (objective, ...).
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        X = l2_normalise(np.asarray(embeddings))
        y = np.asarray([str(x) for x in labels])
        classes = sorted(set(y.tolist()))
        names, counts = np.unique(y, return_counts=True)
        usable = np.isin(y, names[counts >= folds])
        if len(set(y[usable])) < 2:
            raise ValueError(f"cross-validated OOS calibration needs at least two intents with {folds}+ examples")
        col = {c: i for i, c in enumerate(classes)}
        oof = np.zeros((len(y), len(classes)))
        emb_scores = {"knn": np.zeros(len(y)), "centroid": np.zeros(len(y))}
        in_scope = ~oos_mask(y)
        idx = np.flatnonzero(usable)
        for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X[idx], y[idx]):
            tr_rows = np.concatenate([idx[tr], np.flatnonzero(~usable)])   # rare intents always train
            clf = LogisticRegression(C=C, max_iter=2000).fit(X[tr_rows], y[tr_rows])
            oof[np.ix_(idx[te], [col[c] for c in clf.classes_])] = clf.predict_proba(X[idx[te]])
            if method != "msp":
                ref = tr_rows[in_scope[tr_rows]]
                if method == "centroid":
                    emb_scores["centroid"][idx[te]] = centroid_similarity_score(
                        X[idx[te]], class_centroids(X[ref], y[ref].tolist())[1])
                else:
                    emb_scores["knn"][idx[te]] = knn_similarity_score(X[idx[te]], X[ref], k)
        det = cls.fit(classes, X, y.tolist(), oof[idx], X[idx], y[idx].tolist(), method=method, k=k,
                      val_embedding_scores={n: v[idx] for n, v in emb_scores.items()}, **fit_kwargs)
        if det.method != "msp":
            # Calibrated out of fold against the other folds; served against all examples, so the
            # reference grows by 1/(folds-1): kNN similarities rise a little and a touch fewer are flagged.
            det.meta["reference_note"] = f"validation scores out of {folds} folds; reference = all examples"
        det.meta["cross_validated"] = {"folds": folds, "C": C, "seed": seed, "n_validation": int(len(idx))}
        return det

    # ------------------------------------------------------------------ scoring
    @property
    def centroids(self) -> np.ndarray:
        if self._centroids is None:
            _, self._centroids = class_centroids(self.reference, self.reference_labels)
        return self._centroids

    def components(self, probs: np.ndarray, embeddings: np.ndarray | None,
                   embedding_scores: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The raw component scores the method needs, each [n] (`embedding_scores`: precomputed knn/centroid)."""
        out: dict[str, np.ndarray] = {}
        if self.method in ("msp", "combined"):
            out["msp"] = max_prob_score(probs, self.temperature)
            out["msp_logit"] = prob_logit(out["msp"])
        if embedding_scores is not None and self.method != "msp":
            name = "centroid" if self.method == "centroid" else "knn"
            out[name] = np.asarray(embedding_scores[name], dtype=np.float64)
        elif self.method in ("knn", "combined", "centroid"):
            if embeddings is None:
                raise ValueError(f"OOS score {self.method!r} needs the message embedding")
            if self.method == "centroid":
                out["centroid"] = centroid_similarity_score(embeddings, self.centroids)
            else:
                out["knn"] = knn_similarity_score(embeddings, self.reference, self.k)
        return out

    def _combine(self, comps: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.method == "msp":
            return comps["msp"]
        if self.method in ("knn", "centroid"):
            return comps[self.method]
        z = [(comps[name] - self.norm[name][0]) / self.norm[name][1] for name in ("msp_logit", "knn")]
        return (z[0] + z[1]) / 2

    def scores(self, probs: np.ndarray, embeddings: np.ndarray | None = None) -> np.ndarray:
        """In-scope scores for a batch: probs [n, L], embeddings [n, d] -> [n]."""
        probs = _as_2d(probs)
        if probs.shape[1] != len(self.labels):
            raise ValueError(f"probs has {probs.shape[1]} columns but the detector knows {len(self.labels)} labels")
        return self._combine(self.components(probs, embeddings))

    def score(self, probs_row: np.ndarray, embedding: np.ndarray | None = None) -> float:
        """In-scope score of one message (higher = more in scope): probs [L], embedding [d]."""
        emb = None if embedding is None else np.asarray(embedding)[None, :]
        return float(self.scores(np.asarray(probs_row)[None, :], emb)[0])

    def predicted_labels(self, probs: np.ndarray) -> list[str]:
        return [self.labels[i] for i in _as_2d(probs).argmax(axis=1)]

    def flags(self, probs: np.ndarray, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Out-of-scope flags for a batch: the top intent is an OOS label, or the score is below the threshold."""
        probs = _as_2d(probs)
        return self._oos_cols[probs.argmax(axis=1)] | (self.scores(probs, embeddings) < self.threshold)

    def is_out_of_scope(self, probs_row: np.ndarray, embedding: np.ndarray | None = None) -> bool:
        return bool(self.flags(np.asarray(probs_row)[None, :],
                               None if embedding is None else np.asarray(embedding)[None, :])[0])

    def probs_from_ranking(self, ranking: Sequence[tuple[str, float]]) -> np.ndarray:
        """A full probability row from an `NLUResult.ranking` (top intents only): the mass not listed
        is spread evenly over the other labels. Exact for `msp` at temperature 1."""
        row = np.zeros(len(self.labels), dtype=np.float64)
        col = {name: i for i, name in enumerate(self.labels)}
        listed = np.zeros(len(self.labels), dtype=bool)
        for name, p in ranking:
            if name in col:
                row[col[name]] = float(p)
                listed[col[name]] = True
        rest = max(0.0, 1.0 - row.sum())
        if (~listed).any():
            row[~listed] = rest / int((~listed).sum())
        return row

    def check_result(self, result: Any) -> tuple[bool, float]:
        """(out of scope?, score) for a `service.nlu.NLUResult` (uses its ranking and embedding)."""
        probs = self.probs_from_ranking(result.ranking)
        emb = None if self.method == "msp" else np.asarray(result.embedding)
        score = self.score(probs, emb)
        return bool(is_oos_label(result.intent) or score < self.threshold), score

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Everything but the reference embeddings (those go to an .npy; see `save`)."""
        return {"format_version": FORMAT_VERSION, "labels": list(self.labels), "method": self.method,
                "threshold": float(self.threshold), "temperature": float(self.temperature), "k": int(self.k),
                "norm": {k: [float(a), float(b)] for k, (a, b) in self.norm.items()},
                "reference_labels": list(self.reference_labels),
                "n_reference": 0 if self.reference is None else int(len(self.reference)),
                "reference_dim": None if self.reference is None else int(self.reference.shape[1]),
                "calibration": None if self.calibration is None else self.calibration.to_dict(),
                "encoder_fingerprint": self.encoder_fingerprint, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], reference: np.ndarray | None = None) -> "OOSDetector":
        if int(d.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise ValueError(f"OOS detector format {d.get('format_version')} is newer than this code ({FORMAT_VERSION})")
        n_ref = d.get("n_reference") or 0
        if reference is not None and n_ref and len(reference) != n_ref:
            raise ValueError(f"reference has {len(reference)} rows, the detector was saved with {n_ref}")
        cal = d.get("calibration")
        return cls(labels=list(d["labels"]), method=str(d["method"]), threshold=float(d["threshold"]),
                   temperature=float(d.get("temperature", 1.0)), k=int(d.get("k", 10)),
                   norm={k: [float(v[0]), float(v[1])] for k, v in (d.get("norm") or {}).items()},
                   reference=reference, reference_labels=list(d.get("reference_labels") or []),
                   calibration=None if cal is None else OOSCalibration.from_dict(cal),
                   encoder_fingerprint=d.get("encoder_fingerprint"), meta=dict(d.get("meta") or {}))

    def save(self, directory: str | Path) -> Path:
        """Write `oos.json` (+ `oos_reference.npy` when there is a reference) into `directory`, atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.reference is not None:
            _atomic_write(directory / REFERENCE_FILE, lambda fh: np.save(fh, self.reference.astype(np.float32)))
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        _atomic_write(directory / DETECTOR_FILE, lambda fh: fh.write(text.encode("utf-8")))
        return directory / DETECTOR_FILE

    @classmethod
    def load(cls, directory: str | Path, expected_fingerprint: str | None = None) -> "OOSDetector":
        """Read a saved detector; `ArtifactError` when missing, corrupt or built with another encoder."""
        directory = Path(directory)
        path = directory / DETECTOR_FILE
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            reference = None
            if d.get("n_reference"):
                reference = np.load(directory / REFERENCE_FILE, allow_pickle=False)
            det = cls.from_dict(d, reference)
        except FileNotFoundError as exc:
            raise ArtifactError(f"no OOS detector at {directory} ({Path(exc.filename or path).name} missing); "
                                "rebuild the model's artifacts") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"OOS detector at {directory} is corrupt ({exc}); rebuild the model's artifacts") from None
        if expected_fingerprint and det.encoder_fingerprint and det.encoder_fingerprint != expected_fingerprint:
            raise ArtifactError(f"OOS detector at {directory} was fitted with another encoder "
                                f"({det.encoder_fingerprint[:12]}… vs {expected_fingerprint[:12]}…); rebuild it")
        return det


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
