"""The runtime OOS detector: scores one NLU output (probabilities + embedding), flags it, and is saved
next to the model's indexes (`oos.json` + `oos_reference.npy`). Fitting it uses `calibration`."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from core.atomic import atomic_write, atomic_write_text
from core.errors import ArtifactError
from service.oos.calibration import (
    DEFAULT_MAX_ACCURACY_DROP,
    OOSCalibration,
    calibrate_oos_threshold,
    validation_temperature,
)
from service.oos.scores import (
    NORMALISED_COMPONENTS,
    SCORE_METHODS,
    as_2d,
    centroid_similarity_score,
    class_centroids,
    combine_scores,
    is_oos_label,
    knn_similarity_score,
    l2_normalise,
    max_prob_score,
    oos_mask,
    prob_logit,
)

log = logging.getLogger(__name__)

DETECTOR_FILE = "oos.json"
REFERENCE_FILE = "oos_reference.npy"
FORMAT_VERSION = 1


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
        val_probs = as_2d(val_probs)
        if val_probs.shape[1] != len(labels):
            raise ValueError(f"val_probs has {val_probs.shape[1]} columns but labels has {len(labels)}")
        temperature = validation_temperature(val_probs, labels, val_labels) if calibrate_temperature else 1.0
        det = cls(labels=labels, method=method, temperature=temperature, k=k, reference=reference,
                  reference_labels=ref_labels, encoder_fingerprint=encoder_fingerprint)
        comps = det.components(val_probs, val_embeddings, val_embedding_scores)
        in_scope = ~oos_mask(val_labels)
        det.norm = {name: [float(v[in_scope].mean()), float(max(v[in_scope].std(), 1e-6))]
                    for name, v in comps.items() if name in NORMALISED_COMPONENTS}
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
        return combine_scores(self.method, comps, self.norm)

    def scores(self, probs: np.ndarray, embeddings: np.ndarray | None = None) -> np.ndarray:
        """In-scope scores for a batch: probs [n, L], embeddings [n, d] -> [n]."""
        probs = as_2d(probs)
        if probs.shape[1] != len(self.labels):
            raise ValueError(f"probs has {probs.shape[1]} columns but the detector knows {len(self.labels)} labels")
        return self._combine(self.components(probs, embeddings))

    def score(self, probs_row: np.ndarray, embedding: np.ndarray | None = None) -> float:
        """In-scope score of one message (higher = more in scope): probs [L], embedding [d]."""
        emb = None if embedding is None else np.asarray(embedding)[None, :]
        return float(self.scores(np.asarray(probs_row)[None, :], emb)[0])

    def predicted_labels(self, probs: np.ndarray) -> list[str]:
        return [self.labels[i] for i in as_2d(probs).argmax(axis=1)]

    def flags(self, probs: np.ndarray, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Out-of-scope flags for a batch: the top intent is an OOS label, or the score is below the threshold."""
        probs = as_2d(probs)
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
            reference = self.reference.astype(np.float32)
            atomic_write(directory / REFERENCE_FILE, lambda tmp: _save_npy(tmp, reference))
        return atomic_write_text(directory / DETECTOR_FILE, json.dumps(self.to_dict(), indent=1, ensure_ascii=False))

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


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:   # a file object: np.save would add ".npy" to a temporary name
        np.save(fh, array)
