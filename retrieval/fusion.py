"""Learned fusion of dense and lexical FAQ evidence: re-rank the dense top candidates.

Dense search nearly always has the right FAQ among its first five (held-out recall@5 0.99) but not
always first (recall@1 0.82). For each (query, candidate FAQ) among the dense top `candidates`,
`candidate_features` reads how the FAQ matches as a whole, not only through its best wording (the
best cosine, its rank, the mean cosine over the FAQ's wordings, the mean of the best two, the
cosine with the FAQ's centroid) and the words (BM25 of the FAQ's wordings relative to the message's
best FAQ, whether it is that best FAQ, BM25 of its answer). A linear model says which candidate is
the right one.

Training data, made at index build: every paraphrase of the pack's FAQ plays an unseen customer
message, scored with its own wording removed from both the dense and the lexical index
(leave-one-out), plus, when `data.train_dialogs` names them, the FAQ turns of training dialogs
(messages as customers write them: typos, near-verbatim questions, chatter around the question; on
the demo's validation dialogs the paraphrases alone made the fusion worse than dense search). The
regularisation is chosen by cross-validation grouped by FAQ (no FAQ's queries on both sides of a
fold). Held-out files are never read here.

The model is a pairwise logistic regression (no intercept): the right candidate's features minus a
wrong one's. Its score is put on the cosine scale (divided by the sum of its weights on the cosine
features: a weighted mean of the candidate's cosines plus the other evidence in cosine units), and
anchored (`anchored_scores`): the fused top scores the message's best dense cosine, the others that
minus their fused gap. So `Hit.score` of the top still says how close the message is to the FAQ at
all, margins between candidates are the fusion's, in cosine units (the policy's clarify margin and
near-miss band keep their sense), and the answer threshold is calibrated at build time the way the
dense one is, with the fused top's correctness (`calibrate_fused_threshold`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from core.atomic import atomic_write_json
from core.errors import ArtifactError
from retrieval.index import Hit

if TYPE_CHECKING:
    from retrieval.faq import FaqCalibration, FaqIndex
    from retrieval.lexical import LexicalIndex
    from runtime.embedder import Embedder

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FEATURES = ("dense", "dense_rank", "dense_mean", "dense_top2", "dense_centroid",
            "bm25_rel", "bm25_top", "answer_bm25_rel")
COSINES = ("dense", "dense_mean", "dense_top2", "dense_centroid")   # the features that are cosines
DEFAULT_CANDIDATES = 5
C_GRID = (1.0, 10.0, 100.0, 1000.0)


def candidate_features(dense: Sequence[tuple[str, float]], similarities: dict[str, tuple[np.ndarray, float]],
                       lexical: "LexicalIndex", text: str) -> np.ndarray:
    """One row of FEATURES per dense candidate (FAQ id, best cosine), candidates best first.

    `similarities`: per candidate, the cosines with each of its wordings and with its centroid
    (`FaqIndex.wording_similarities`). BM25 is relative to the message's best-scoring FAQ, so its scale
    (which grows with the message's length) does not matter; `bm25_top` marks that best FAQ."""
    if not dense:
        return np.zeros((0, len(FEATURES)))
    bm25, answers = lexical.faq_scores(text), lexical.answer_scores(text)
    best_bm25, best_answer = max(bm25.values(), default=0.0), max(answers.values(), default=0.0)
    rows = []
    for rank, (fid, score) in enumerate(dense):
        sims, centroid = similarities.get(fid, (np.zeros(0), 0.0))
        top2 = np.sort(sims)[::-1][:2]
        b = bm25.get(fid, 0.0)
        rows.append([score, 1.0 / (rank + 1), float(sims.mean()) if len(sims) else score,
                     float(top2.mean()) if len(top2) else score, centroid,
                     b / best_bm25 if best_bm25 > 0 else 0.0, float(best_bm25 > 0 and b >= best_bm25),
                     answers.get(fid, 0.0) / best_answer if best_answer > 0 else 0.0])
    return np.asarray(rows, dtype=np.float64)


@dataclass
class FusionModel:
    weights: list[float]                     # one per FEATURES entry; those of COSINES sum to > 0
    candidates: int = DEFAULT_CANDIDATES     # dense candidates re-ranked per query
    C: float = 1.0
    encoder_fingerprint: str = ""            # the dense scores it was trained on come from this encoder
    features: tuple[str, ...] = FEATURES
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        blob = json.dumps([list(self.features), [round(w, 10) for w in self.weights], self.candidates])
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    @property
    def cosine_weight(self) -> float:
        return _cosine_weight(np.asarray(self.weights, dtype=np.float64))

    def fused_scores(self, x: np.ndarray) -> np.ndarray:
        """Cosine-scale fused scores: the model's score over its total weight on the cosines."""
        w = np.asarray(self.weights, dtype=np.float64)
        return x @ w / _cosine_weight(w) if len(x) else np.zeros(0)

    def rerank(self, dense_hits: Sequence[Hit], similarities: dict[str, tuple[np.ndarray, float]],
               lexical: "LexicalIndex", text: str, k: int) -> list[Hit]:
        """The dense candidates in fused order (best first), scored by `anchored_scores`."""
        hits = list(dense_hits)[: self.candidates]
        x = candidate_features([(h.id, h.score) for h in hits], similarities, lexical, text)
        scores = anchored_scores(x, self.fused_scores(x))
        order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
        return [Hit(hits[i].id, float(scores[i]), hits[i].meta) for i in order[:k]]

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        data = {"format_version": FORMAT_VERSION, "model_id": self.model_id, **asdict(self)}
        data["features"] = list(self.features)
        return atomic_write_json(path, data)

    @classmethod
    def load(cls, path: str | Path, expected_fingerprint: str | None = None, *, hint: str) -> "FusionModel":
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"FAQ fusion model {path} is missing; build it with: {hint}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format version {data.get('format_version') if isinstance(data, dict) else None!r}, "
                                 f"this code reads {FORMAT_VERSION}")
            model = cls(weights=[float(w) for w in data["weights"]], candidates=int(data["candidates"]),
                        C=float(data.get("C", 1.0)),
                        encoder_fingerprint=str(data.get("encoder_fingerprint", "")),
                        features=tuple(data["features"]), training=dict(data.get("training") or {}))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"FAQ fusion model {path} is corrupt ({first}); rebuild it with: {hint}") from None
        if model.features != FEATURES or len(model.weights) != len(FEATURES) or not model.cosine_weight > 0:
            raise ArtifactError(f"FAQ fusion model {path} was trained on other features ({', '.join(model.features)}) "
                                f"than this code computes; rebuild it with: {hint}")
        if data.get("model_id") != model.model_id:
            raise ArtifactError(f"FAQ fusion model {path} does not match its own model id; rebuild it with: {hint}")
        if expected_fingerprint is not None and model.encoder_fingerprint != expected_fingerprint:
            raise ArtifactError(f"FAQ fusion model {path} was trained on another encoder's scores; "
                                f"rebuild it with: {hint}")
        return model


# ---- training ----------------------------------------------------------------------------------
@dataclass
class _Group:
    """One training query: its candidates' features, which candidate is right, and the FAQ it asks."""
    faq_id: str
    x: np.ndarray
    y: np.ndarray
    paraphrase: bool = True   # a leave-one-out paraphrase (else a dialog turn)


@dataclass
class FusionTraining:
    model: FusionModel
    oof_top: list[tuple[float, bool]]   # per paraphrase: out-of-fold fused top-1 score, and whether it is right
    stats: dict[str, Any]


def _loo_groups(faq_index: "FaqIndex", lexical: "LexicalIndex", embedder: "Embedder",
                candidates: int) -> tuple[list[_Group], int, int]:
    """Leave-one-out groups from the FAQ's paraphrases: (groups, queries, dense top-1 correct)."""
    entries, vectors = faq_index.paraphrase_vectors(embedder, "fusion training")
    dense = faq_index.search_batch(vectors, candidates, exclude=[{eid} for eid, _ in entries])
    groups, dense_correct = [], 0
    for (eid, m), vector, hits in zip(entries, vectors, dense):
        gold = m["faq_id"]
        dense_correct += bool(hits) and hits[0].id == gold
        if not any(h.id == gold for h in hits):
            continue   # nothing to re-rank towards; the query still counts in recall
        sims = faq_index.wording_similarities(vector, [h.id for h in hits], {eid})
        x = candidate_features([(h.id, h.score) for h in hits], sims, lexical.without({eid}), m["text"])
        groups.append(_Group(gold, x, np.asarray([h.id == gold for h in hits], dtype=np.int64)))
    return groups, len(entries), dense_correct


def _fit(groups: Sequence[_Group], C: float) -> np.ndarray:
    """Pairwise logistic regression (RankNet's loss, linear): the right candidate against each wrong one
    of the same query. Only differences within a query count, so the model learns what re-orders
    candidates, not that the dense top is usually right (a pointwise model learns mostly that)."""
    from sklearn.linear_model import LogisticRegression

    diffs = [g.x[g.y == 1][0] - g.x[g.y == 0] for g in groups if g.y.sum() == 1 and len(g.y) > 1]
    if not diffs:
        raise ValueError("fusion training needs queries with more than one candidate FAQ")
    d = np.concatenate(diffs)
    lr = LogisticRegression(C=C, fit_intercept=False, max_iter=2000)
    lr.fit(np.concatenate([d, -d]), np.concatenate([np.ones(len(d)), np.zeros(len(d))]))
    return lr.coef_[0].astype(np.float64)


def anchored_scores(x: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """The scores the policy reads: the fused top gets the message's best dense cosine, every other
    candidate that minus its fused gap to the top. How well the message matches the FAQ at all stays
    the cosine it always was (a typo or a message without shop words loses no lexical "bonus" it
    never had); which FAQ, and how clearly, is the fusion's say, in cosine units."""
    if not len(x):
        return fused
    return float(x[:, 0].max()) - (float(fused.max()) - fused)


def _cosine_weight(w: np.ndarray) -> float:
    return float(sum(w[FEATURES.index(name)] for name in COSINES))


def _top(w: np.ndarray, g: _Group) -> tuple[float, bool]:
    """(score the policy would read for the fused top, whether that top is right)."""
    i = int(np.argmax(g.x @ w))
    return float(g.x[:, 0].max()), bool(g.y[i])


def _message_groups(faq_index: "FaqIndex", embedder: "Embedder", messages: Sequence[tuple[str, str]],
                    candidates: int) -> tuple[list[_Group], int]:
    """Groups from customer messages (text, FAQ id) that are not in the index: (groups, dense top-1 correct)."""
    messages = [(t, f) for t, f in messages if f in faq_index.faqs]
    if not messages:
        return [], 0
    vectors = embedder.encode([t for t, _ in messages])
    groups, dense_correct = [], 0
    for (text, gold), vector, hits in zip(messages, vectors, faq_index.search_batch(vectors, candidates)):
        dense_correct += bool(hits) and hits[0].id == gold
        if any(h.id == gold for h in hits):
            sims = faq_index.wording_similarities(vector, [h.id for h in hits])
            x = candidate_features([(h.id, h.score) for h in hits], sims, faq_index.lexical, text)
            groups.append(_Group(gold, x, np.asarray([h.id == gold for h in hits], dtype=np.int64), False))
    return groups, dense_correct


def train_fusion(faq_index: "FaqIndex", lexical: "LexicalIndex", embedder: "Embedder", *,
                 candidates: int = DEFAULT_CANDIDATES, messages: Sequence[tuple[str, str]] = (),
                 c_grid: Sequence[float] = C_GRID, folds: int = 5, seed: int = 0) -> FusionTraining:
    """Train the fusion model on leave-one-out paraphrases and on `messages` ((text, FAQ id): customer
    messages from training dialogs); C by cross-validation grouped by FAQ."""
    groups, n_paraphrases, dense_correct = _loo_groups(faq_index, lexical, embedder, candidates)
    extra, extra_correct = _message_groups(faq_index, embedder, messages, candidates)
    n_messages = len([1 for _, f in messages if f in faq_index.faqs])
    groups += extra
    n_queries = n_paraphrases + n_messages
    faq_ids = sorted({g.faq_id for g in groups})
    if len(faq_ids) < 2:
        raise ValueError("fusion training needs paraphrases of at least two FAQs")
    rng = np.random.default_rng(seed)
    fold_of = {fid: i % min(folds, len(faq_ids)) for i, fid in enumerate(rng.permutation(faq_ids).tolist())}
    n_folds = len(set(fold_of.values()))
    results: dict[float, list[tuple[float, bool]]] = {}
    for C in c_grid:
        oof: list[tuple[float, bool]] = [(0.0, False)] * len(groups)
        for f in range(n_folds):
            train = [g for g in groups if fold_of[g.faq_id] != f]
            try:
                w = _fit(train, C)
            except ValueError:   # a fold with one candidate per query: score it densely
                w = np.eye(len(FEATURES))[0]
            for i, g in enumerate(groups):
                if fold_of[g.faq_id] == f:
                    oof[i] = _top(w, g)
        results[C] = oof
    # the best out-of-fold top-1 accuracy; ties go to the stronger regularisation (smaller C)
    best_C = max(c_grid, key=lambda c: (sum(ok for _, ok in results[c]), -c))
    paraphrase_oof = [t for t, g in zip(results[best_C], groups) if g.paraphrase]
    w = _fit(groups, best_C)
    if not _cosine_weight(w) > 0:
        raise ValueError("the fusion model gave the dense cosines no positive weight; the FAQ data is too small "
                         "or too uniform to learn a fusion from")
    def share(oks: Sequence[tuple[float, bool]], of: Sequence[_Group], paraphrase: bool, n: int) -> float:
        return round(sum(ok for (_, ok), g in zip(oks, of) if g.paraphrase == paraphrase) / max(n, 1), 4)

    stats = {
        "queries": n_queries, "paraphrases": n_paraphrases, "dialog_messages": n_messages,
        "rerankable": len(groups), "folds": n_folds, "C_grid": list(c_grid), "C": best_C,
        "dense_top1": round((dense_correct + extra_correct) / n_queries, 4),
        "cv_fused_top1": round(sum(ok for _, ok in results[best_C]) / n_queries, 4),
        "cv_fused_top1_by_C": {str(c): round(sum(ok for _, ok in results[c]) / n_queries, 4) for c in c_grid},
        "loo_dense_top1": round(dense_correct / n_paraphrases, 4),
        "loo_cv_fused_top1": share(results[best_C], groups, True, n_paraphrases),
    }
    if n_messages:
        stats["dialog_dense_top1"] = round(extra_correct / n_messages, 4)
        stats["dialog_cv_fused_top1"] = share(results[best_C], groups, False, n_messages)
    model = FusionModel(weights=[round(float(v), 8) for v in w], candidates=candidates,
                        C=best_C, encoder_fingerprint=embedder.fingerprint, training=stats)
    logger.info("FAQ fusion: top-1 %.3f dense -> %.3f fused (cross-validated, C=%g) on %d paraphrases "
                "(left out) and %d dialog messages", stats["dense_top1"], stats["cv_fused_top1"], best_C,
                n_paraphrases, n_messages)
    return FusionTraining(model, paraphrase_oof, stats)


def calibrate_fused_threshold(faq_index: "FaqIndex", embedder: "Embedder", intents: Sequence[dict],
                              oof_top: Sequence[tuple[float, bool]], n_queries: int) -> "FaqCalibration":
    """The answer threshold on the fused score, chosen as `calibrate_faq_threshold` chooses the dense one.

    Positives: the leave-one-out paraphrases whose fused top FAQ is right, by a model that never saw
    that FAQ (out of fold), with the score the policy would read. Negatives: the top-1 scores of the
    non-FAQ intent examples, with the final model (they play no part in its training)."""
    from retrieval.faq import FaqCalibration, _best_threshold, _quantiles

    negatives = [str(r["text"]) for r in intents if not str(r.get("intent", "")).startswith("faq_")]
    if not negatives:
        raise ValueError("calibration needs non-FAQ intent examples (intents not starting with 'faq_')")
    neg = [h[0].score for h in faq_index.search_batch(embedder.encode(negatives), 1, texts=negatives) if h]
    pos = [s for s, ok in oof_top if ok]
    pos_a, neg_a = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    threshold, bacc, tpr, tnr = _best_threshold(pos_a, neg_a)
    cal = FaqCalibration(
        threshold=round(threshold, 4), balanced_accuracy=round(bacc, 4), true_positive_rate=round(tpr, 4),
        true_negative_rate=round(tnr, 4), n_positive=len(pos), n_negative=len(neg),
        loo_top1_accuracy=round(len(pos) / max(n_queries, 1), 4),
        positive_scores=_quantiles(pos_a, [("min", 0), ("p10", 0.1), ("median", 0.5)]),
        negative_scores=_quantiles(neg_a, [("median", 0.5), ("p90", 0.9), ("max", 1)]),
    )
    logger.info("fused FAQ threshold %.3f: balanced accuracy %.3f (answers %.0f%% of unseen paraphrases, "
                "declines %.0f%% of other messages)", cal.threshold, bacc, 100 * tpr, 100 * tnr)
    return cal
