"""In-scope scores of NLU outputs (`SCORE_METHODS`): higher means "more like the intents we were trained on".

- `msp`: the maximum softmax probability, after an optional temperature fitted on validation
  data (Hendrycks & Gimpel 2017; Guo et al. 2017). Needs only the NLU's distribution.
- `knn`: the mean cosine similarity of the message embedding to its `k` nearest in-scope
  training examples (Sun et al. 2022, without their normalisation of the feature space).
- `centroid`: the largest cosine similarity to an in-scope intent's centroid (mean training
  embedding, re-normalised).
- `combined`: the mean of `msp` (as a logit, log p / (1 - p)) and `knn`, each standardised with the
  mean and standard deviation of the in-scope validation examples (`combine_scores`): no OOS
  examples are needed to weigh the two.

Pure numpy (no torch), so the service can score without the training stack.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from runtime.calibration import softmax

OOS_LABELS: tuple[str, ...] = ("oos", "out_of_scope")
SCORE_METHODS: tuple[str, ...] = ("msp", "knn", "centroid", "combined")
NORMALISED_COMPONENTS: tuple[str, ...] = ("msp_logit", "knn")   # what `combined` standardises and averages
_EPS = 1e-6


def is_oos_label(label: Any) -> bool:
    return str(label) in OOS_LABELS


def oos_mask(labels: Iterable[Any]) -> np.ndarray:
    return np.asarray([is_oos_label(x) for x in labels], dtype=bool)


# ---------------------------------------------------------------------- probabilities

def as_2d(x: np.ndarray) -> np.ndarray:
    """Probabilities as rows: one row [L] becomes [1, L]."""
    x = np.asarray(x, dtype=np.float64)
    return x[None, :] if x.ndim == 1 else x


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same as softmax(logits / T) when p = softmax(logits)."""
    probs = as_2d(probs)
    if temperature == 1.0:
        return probs
    return softmax(np.log(np.clip(probs, 1e-12, 1.0)) / float(temperature))


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


def combine_scores(method: str, components: Mapping[str, np.ndarray],
                   norm: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
    """The in-scope score of `method` from its components (`msp`, `msp_logit`, `knn`, `centroid`);
    `combined` needs `norm`: component -> (mean, std) of the in-scope validation scores."""
    if method == "msp":
        return components["msp"]
    if method in ("knn", "centroid"):
        return components[method]
    if norm is None:
        raise ValueError("the combined OOS score needs the normalisation of its components")
    z = [(components[name] - norm[name][0]) / norm[name][1] for name in NORMALISED_COMPONENTS]
    return (z[0] + z[1]) / 2
