"""Probability calibration shared by training and serving: softmax and temperature scaling."""
from __future__ import annotations

import math

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_temperature(logits, targets, bounds: tuple[float, float] = (0.1, 10.0)) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on held-out rows (Guo et al. 2017).

    `logits` may be torch or numpy; for probabilities pass `np.log(p)`. Rows whose target is
    negative are ignored. A 1-D problem: a golden-section search on log T is exact enough and has
    no failure modes.
    """
    logits = np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits, dtype=np.float64)
    targets = np.asarray(targets.detach().cpu() if hasattr(targets, "detach") else targets, dtype=int)
    if logits.ndim != 2 or logits.shape[0] == 0:
        return 1.0
    keep = targets >= 0
    if not keep.any():
        return 1.0
    logits, targets = logits[keep], targets[keep]
    rows = np.arange(len(targets))

    def nll(log_t: float) -> float:
        z = logits / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[rows, targets].mean())

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
