"""What customers ask that the assistant cannot answer: candidate FAQ entries, ranked.

The messages of turns that ended in fallback, out of scope or a clarification question, or that got a
thumbs down, are embedded with the served encoder and grouped by agglomerative clustering on cosine
distance (average linkage) cut at a distance threshold, so the number of clusters follows the data
instead of being chosen in advance. Clusters are ranked by size; each shows its most central message
(the medoid, the draft question) and examples. `draft_faq` turns a cluster into the payload of a
`new_faq` correction for review (service/corrections.py reviews and exports them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from evaluation.monitoring import UNANSWERED_ACTIONS
from service.corrections import MAX_PARAPHRASES, MAX_QUESTION_CHARS, MAX_TEXT_CHARS

DISTANCE_THRESHOLD = 0.4     # cosine distance: paraphrases of one question sit well inside it (tests plant some)
MAX_MESSAGES = 2000          # the newest ones: clustering is quadratic in the number of messages
NEW_FAQ = "new_faq"          # the correction kind: payload {"question", "answer", "paraphrases"}


@dataclass
class Cluster:
    question: str                              # the medoid message: the draft FAQ question
    size: int                                  # messages in it (repeats included)
    examples: list[str] = field(default_factory=list)
    turn_ids: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)   # why they count as unanswered: action / thumbs down


def unanswered_turns(turns: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turns with a customer message that ended unanswered or got a thumbs down."""
    out = []
    for t in turns:
        if not (t.get("user_text") or "").strip():
            continue
        if t.get("action") in UNANSWERED_ACTIONS or (t.get("feedback") or 0) < 0:
            out.append(t)
    return out


def _reason(t: dict[str, Any]) -> str:
    return "thumbs down" if (t.get("feedback") or 0) < 0 else str(t.get("action"))


def cluster_messages(texts: Sequence[str], embeddings: np.ndarray, *, threshold: float = DISTANCE_THRESHOLD,
                     turn_ids: Sequence[str] | None = None, reasons: Sequence[str] | None = None) -> list[Cluster]:
    """Group messages whose embeddings are close (average cosine distance under `threshold`), largest first."""
    n = len(texts)
    if n == 0:
        return []
    emb = np.asarray(embeddings, np.float32)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    if n == 1:
        labels = np.zeros(1, int)
    else:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                         distance_threshold=threshold).fit_predict(emb)
    clusters = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        sims = emb[members] @ emb[members].T
        medoid = members[int(np.argmax(sims.mean(axis=1)))]
        ordered = sorted(members, key=lambda i: -float(emb[i] @ emb[medoid]))
        examples, seen = [], set()
        for i in ordered:
            key = texts[i].strip().lower()
            if key not in seen:
                seen.add(key)
                examples.append(texts[i])
        counts: dict[str, int] = {}
        for i in members:
            r = reasons[i] if reasons is not None else "unanswered"
            counts[r] = counts.get(r, 0) + 1
        clusters.append(Cluster(texts[medoid], len(members), examples,
                                [turn_ids[i] for i in ordered] if turn_ids is not None else [], counts))
    clusters.sort(key=lambda c: (-c.size, c.question))
    return clusters


def find_unanswered(turns: Iterable[dict[str, Any]], encoder: Any, *, threshold: float = DISTANCE_THRESHOLD,
                    max_messages: int = MAX_MESSAGES) -> list[Cluster]:
    """The clusters of unanswered messages among `turns`; `encoder.encode(texts)` embeds them."""
    rows = unanswered_turns(turns)[-max_messages:]
    if not rows:
        return []
    texts = [str(t["user_text"]).strip() for t in rows]
    return cluster_messages(texts, encoder.encode(texts), threshold=threshold,
                            turn_ids=[str(t.get("turn_id", "")) for t in rows], reasons=[_reason(t) for t in rows])


def draft_faq(cluster: Cluster, max_paraphrases: int = MAX_PARAPHRASES) -> dict[str, Any]:
    """The `new_faq` correction payload: the question to answer, an empty answer for the operator to
    write, the other messages as paraphrases; within the limits a correction is checked against
    (service/corrections.py), so a draft of long messages can still be saved: a question too long
    is cut at a word, paraphrases too long are left out."""
    question = _cut(cluster.question, MAX_QUESTION_CHARS)
    paraphrases = [e for e in cluster.examples if e != cluster.question and len(e) <= MAX_TEXT_CHARS]
    return {"question": question, "answer": "", "paraphrases": paraphrases[:max_paraphrases]}


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip() + "…"
