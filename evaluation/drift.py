"""Drift: do today's customers still look like the data the served model was trained on?

Three signals, each compared with a reference built from the training intents and the validation split
the model's training held out (never the held-out evaluation dialogs):

- **intents**: the live mix of recognised intents against the intent mix of the training examples;
- **confidence**: the live top-intent confidences against the model's confidences on the validation
  split (for the frozen-encoder NLU, which is fitted on every example: out-of-fold confidences);
- **distance**: each live message's cosine distance to its nearest training example against the same
  distance of the validation examples (frozen-encoder NLU: leave-one-out among the examples).

Each signal has an effect size, the population stability index (PSI = sum (a - e) ln(a / e) over
bins or intents), and a two-sample test (chi-square for intents, Kolmogorov-Smirnov for the
continuous ones). PSI is biased upwards on small samples (with k bins it is about (k-1)(1/n + 1/N)
under no shift at all: 0.57 for 28 intents and 50 messages), so the PSI compared with the configured
level is corrected by that expectation. A signal fires when its corrected PSI is at least the level
AND its test's p-value is below `monitoring.drift_ks_pvalue`: a large shift that is also not chance.
Under `monitoring.min_messages` live messages there is no verdict.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

OTHER = "(other)"
MAX_BINS = 10
PSEUDO_COUNT = 0.5


# ------------------------------------------------------------------------------- statistics
def psi(expected: np.ndarray, actual: np.ndarray, pseudo: float = PSEUDO_COUNT) -> float:
    """Population stability index between two count vectors over the same bins."""
    e = np.asarray(expected, float) + pseudo
    a = np.asarray(actual, float) + pseudo
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def psi_noise(bins: int, n_live: int, n_reference: int) -> float:
    """What PSI is expected to be with no shift at all, from sampling alone: (k-1)(1/n + 1/N)."""
    return (max(bins, 1) - 1) * (1.0 / max(n_live, 1) + 1.0 / max(n_reference, 1))


def quantile_edges(reference: np.ndarray, bins: int = MAX_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (at least ~10 reference values a bin)."""
    reference = np.asarray(reference, float)
    k = int(max(2, min(bins, len(reference) // 10)))
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, k + 1)[1:-1]))
    return edges


def binned_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, np.asarray(values, float), side="right"), minlength=len(edges) + 1)


@dataclass
class Signal:
    name: str
    psi: float                # raw PSI
    psi_corrected: float      # minus its expected value under no shift (what is compared with the level)
    level: float
    p_value: float
    test: str                 # "chi-square" | "KS"
    statistic: float
    fired: bool
    detail: str = ""


@dataclass
class DriftReport:
    n_live: int
    n_reference: int
    signals: list[Signal] = field(default_factory=list)
    checked_at: float = 0.0
    enough: bool = True       # False: fewer live messages than min_messages, no verdict

    @property
    def alert(self) -> bool:
        return self.enough and any(s.fired for s in self.signals)

    def scores(self) -> dict[str, float]:
        return {s.name: s.psi_corrected for s in self.signals}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["alert"] = self.alert
        return d

    def summary(self) -> str:
        if not self.enough:
            return f"not enough live messages for a verdict ({self.n_live} < the configured minimum)"
        fired = [s for s in self.signals if s.fired]
        if not fired:
            return f"no drift ({self.n_live} live messages)"
        return "DRIFT: " + "; ".join(f"{s.name} PSI {s.psi_corrected:.2f} >= {s.level:g} (p={s.p_value:.1e})"
                                     for s in fired) + f" over {self.n_live} live messages"


def intent_signal(reference: dict[str, float], n_reference: int, live: Sequence[str], level: float,
                  p_level: float) -> Signal:
    """The live intent mix against the reference's (shares), chi-square test on the counts."""
    from scipy.stats import chi2_contingency

    names = sorted(reference)
    counts = Counter(x if x in reference else OTHER for x in live)
    ref = np.array([reference[n] * n_reference for n in names] + [0.0])
    act = np.array([counts.get(n, 0) for n in names] + [counts.get(OTHER, 0)], float)
    value = psi(ref, act)
    used = (ref + act) > 0
    table = np.vstack([ref[used], act[used]])
    if table.shape[1] >= 2 and act.sum() > 0:
        stat, p, _, _ = chi2_contingency(table)
    else:
        stat, p = 0.0, 1.0
    corrected = max(0.0, value - psi_noise(int(used.sum()), int(act.sum()), n_reference))
    top = sorted(((act[i] / max(act.sum(), 1) - (ref[i] / max(ref.sum(), 1)), n)
                  for i, n in enumerate(names + [OTHER])), reverse=True)[:3]
    detail = ", ".join(f"{n} {d:+.0%}" for d, n in top if d > 0)
    return Signal("intents", value, corrected, level, float(p), "chi-square", float(stat),
                  bool(corrected >= level and p < p_level), f"most over-represented: {detail}" if detail else "")


def continuous_signal(name: str, reference: np.ndarray, live: np.ndarray, level: float, p_level: float,
                      larger_only: bool = False) -> Signal:
    """Quantile-binned PSI and a two-sample Kolmogorov-Smirnov test; `larger_only`: a one-sided test, only
    live values larger than the reference's count (messages farther from the training data)."""
    from scipy.stats import ks_2samp

    reference, live = np.asarray(reference, float), np.asarray(live, float)
    edges = quantile_edges(reference)
    value = psi(binned_counts(reference, edges), binned_counts(live, edges))
    corrected = max(0.0, value - psi_noise(len(edges) + 1, len(live), len(reference)))
    # alternative="greater": the reference's CDF lies above the live one somewhere, i.e. live values are larger.
    test = ks_2samp(reference, live, alternative="greater" if larger_only else "two-sided")
    detail = f"median {np.median(live):.3f} live vs {np.median(reference):.3f} reference"
    return Signal(name, value, corrected, level, float(test.pvalue), "KS", float(test.statistic),
                  bool(corrected >= level and test.pvalue < p_level), detail)


# ------------------------------------------------------------------------------- the reference
@dataclass
class Reference:
    """What "looks like the training data" means for one served model."""
    intent_shares: dict[str, float]   # of the training examples' labels
    n_intent_examples: int
    confidences: np.ndarray           # on examples the classifier was not fitted on
    distances: np.ndarray             # nearest-training-example cosine distances of those examples
    train_embeddings: np.ndarray      # L2-normalised, for the live messages' distances
    train_texts: list[str]
    train_intents: list[str]
    model_version: str = ""

    def nearest(self, embeddings: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(cosine distances [n, k], indexes [n, k]) of each row's k nearest training examples."""
        sims = np.asarray(embeddings, np.float32) @ self.train_embeddings.T
        k = min(k, sims.shape[1])
        idx = np.argsort(-sims, axis=1)[:, :k]
        return 1.0 - np.take_along_axis(sims, idx, axis=1), idx


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build_reference(nlu: Any, intents_path: Path, model_version: str = "") -> Reference:
    """The reference for `nlu` from the intents file and, for a trained model, its validation split."""
    from core.jsonl import read_jsonl
    from evaluation.explain import predict_full
    from runtime.folder import read_validation_split

    rows = read_jsonl(intents_path, ("text", "intent"), "intent example")
    texts, intents = [str(r["text"]) for r in rows], [str(r["intent"]) for r in rows]
    shares = {k: v / len(intents) for k, v in Counter(intents).items()}
    model = getattr(nlu, "model", None)
    validation = read_validation_split(model.name_or_path) if model is not None else None
    if validation:
        held = {r["text"] for r in validation}
        train_texts = [t for t in texts if t not in held]
        train_intents = [i for t, i in zip(texts, intents) if t not in held]
        train_emb = _normalise(nlu.embedder.encode(train_texts))
        probs, val_emb = predict_full(nlu, [r["text"] for r in validation])
        confidences = probs.max(axis=1)
        sims = _normalise(val_emb) @ train_emb.T
        distances = 1.0 - sims.max(axis=1)
    else:
        train_texts, train_intents = texts, intents
        train_emb = _normalise(getattr(nlu, "train_embeddings", None) if len(getattr(nlu, "train_embeddings", ())) == len(texts)
                               else nlu.embedder.encode(texts))
        confidences = _out_of_fold_confidences(train_emb, intents, getattr(nlu, "C", 10.0))
        sims = train_emb @ train_emb.T
        np.fill_diagonal(sims, -np.inf)               # leave one out: its nearest *other* example
        distances = 1.0 - sims.max(axis=1)
    return Reference(shares, len(intents), np.asarray(confidences, float), np.asarray(distances, float),
                     train_emb, train_texts, train_intents, model_version)


def _out_of_fold_confidences(embeddings: np.ndarray, labels: list[str], C: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = max(2, min(5, min(Counter(labels).values())))
    probs = cross_val_predict(LogisticRegression(C=C, max_iter=2000), embeddings, labels,
                              cv=StratifiedKFold(folds, shuffle=True, random_state=0), method="predict_proba")
    return probs.max(axis=1)


# ------------------------------------------------------------------------------- the check
@dataclass
class LiveSample:
    intents: list[str]
    confidences: np.ndarray
    texts: list[str]


def live_sample(turns: Sequence[dict[str, Any]], max_messages: int = 1000) -> LiveSample:
    """The turns that went through understanding (a message and an intent), newest `max_messages`."""
    rows = [t for t in turns if t.get("intent") and (t.get("user_text") or "").strip()][-max_messages:]
    return LiveSample([str(t["intent"]) for t in rows], np.array([float(t.get("confidence") or 0.0) for t in rows]),
                      [str(t["user_text"]) for t in rows])


def check_drift(reference: Reference, live: LiveSample, settings: Any, live_embeddings: np.ndarray | None = None,
                encoder: Any = None) -> DriftReport:
    """The three signals of `live` against `reference`; `settings` is core.config.MonitoringConfig."""
    n = len(live.intents)
    report = DriftReport(n, len(reference.confidences), checked_at=time.time(), enough=n >= settings.min_messages)
    if not report.enough:
        return report
    report.signals.append(intent_signal(reference.intent_shares, reference.n_intent_examples, live.intents,
                                        settings.drift_psi, settings.drift_ks_pvalue))
    report.signals.append(continuous_signal("confidence", reference.confidences, live.confidences,
                                            settings.drift_psi, settings.drift_ks_pvalue))
    if live_embeddings is None and encoder is not None:
        live_embeddings = encoder.encode(live.texts)
    if live_embeddings is not None:
        distances = reference.nearest(_normalise(live_embeddings))[0][:, 0]
        report.signals.append(continuous_signal("distance", reference.distances, distances,
                                                settings.drift_distance_psi, settings.drift_ks_pvalue,
                                                larger_only=True))
    return report


def run_check(store: Any, assistant: Any, reference: Reference, settings: Any, *, since: float | None = None,
              until: float | None = None, model_version: str | None = None) -> DriftReport:
    """Drift of the store's turns in [since, until) (default: the configured window) for the served model."""
    if since is None:
        since = time.time() - settings.window_hours * 3600
    sample = live_sample(store.turns(since=since, until=until, model_version=model_version))
    report = check_drift(reference, sample, settings, encoder=assistant.nlu.embedder if sample.texts else None)
    if report.alert:
        log.warning("drift alert: %s", report.summary())
    else:
        log.info("drift check: %s", report.summary())
    return report


# ------------------------------------------------------------------------------- one per model
_cache: dict[int, Reference] = {}
_cache_lock = __import__("threading").Lock()


def reference_for(assistant: Any, intents_path: Path) -> Reference:
    """The reference of the model `assistant` serves now, built once per model version (a few seconds)."""
    version = str(getattr(assistant, "model_version", ""))
    with _cache_lock:
        ref = _cache.get(id(assistant))
        if ref is None or ref.model_version != version:
            ref = _cache[id(assistant)] = build_reference(assistant.nlu, Path(intents_path), version)
        return ref
