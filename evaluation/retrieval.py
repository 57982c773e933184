"""Retrieval quality through the indexes the assistant serves (retrieval's own search code).

Metric definitions:
- faq_recall_at_k (k = 1, 5): held-out paraphrases whose FAQ is among the first k FAQs that
  `FaqIndex.search` returns / paraphrases.
- faq_mrr: mean over paraphrases of 1 / rank of the right FAQ in the first 10 (0 when absent).
- product_precision_at_5: mean over shopping requests of (suggested products that are relevant) / 5,
  the suggestions being what `Recommender.recommend(text, vector, k=5)` returns (filters included).
- product_hit_at_5: requests with at least one relevant product among the 5 / requests.
- product_recall_at_5: mean of (relevant products among the 5) / min(5, relevant products).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from evaluation.base import EvalResult, Evaluator, batched, read_records

log = logging.getLogger(__name__)

MRR_DEPTH = 10


def read_faq_heldout(path: str | Path) -> list[dict[str, Any]]:
    return [{"faq_id": str(r["faq_id"]), "text": str(r["text"])}
            for r in read_records(path, ("faq_id", "text"), "held-out FAQ paraphrase")]


def read_shopping_requests(path: str | Path) -> list[dict[str, Any]]:
    return [{"text": str(r["text"]), "relevant_ids": [str(i) for i in r["relevant_ids"]]}
            for r in read_records(path, ("text", "relevant_ids"), "shopping request")]


def _read(assistant: Any, text: str) -> str:
    """The text as the assistant reads a message (typos corrected), or as written for a bare target."""
    return assistant.read(text) if hasattr(assistant, "read") else text


def _encode(embedder: Any, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    return np.concatenate([np.asarray(embedder.encode(list(c)), dtype=np.float32) for c in batched(list(texts), batch_size)])


class FaqRetrievalEvaluator(Evaluator):
    """FAQ recall@k and MRR on held-out paraphrases; target: an object with `nlu.embedder` and `faq_index`
    (an `Assistant`)."""

    name = "faq_retrieval"

    def __init__(self, queries: Sequence[dict[str, Any]] | str | Path, ks: Sequence[int] = (1, 5)):
        self.queries = read_faq_heldout(queries) if isinstance(queries, (str, Path)) else list(queries)
        self.ks = tuple(ks)

    def run(self, assistant: Any) -> EvalResult:
        texts = [_read(assistant, q["text"]) for q in self.queries]
        vectors = _encode(assistant.nlu.embedder, texts)
        depth = max(max(self.ks), MRR_DEPTH)
        rows, ranks = [], []
        for q, text, v in zip(self.queries, texts, vectors):
            # as the assistant searches (the typos corrected, the words read by a fusion model)
            hits = assistant.search_faq(v, text, depth) if hasattr(assistant, "search_faq") \
                else assistant.faq_index.search(v, depth)
            ids = [h.id for h in hits]
            rank = ids.index(q["faq_id"]) + 1 if q["faq_id"] in ids else None
            ranks.append(rank)
            rows.append([q["faq_id"], q["text"], ids[0] if ids else None,
                         round(float(hits[0].score), 4) if hits else None, rank])
        n = len(ranks)
        metrics: dict[str, Any] = {"faq_queries": n}
        for k in self.ks:
            metrics[f"faq_recall_at_{k}"] = sum(r is not None and r <= k for r in ranks) / n
        metrics["faq_mrr"] = sum(1.0 / r for r in ranks if r is not None) / n
        misses = [{"faq_id": r[0], "text": r[1], "top": r[2], "score": r[3], "rank": r[4]}
                  for r in rows if r[4] != 1]
        log.info("FAQ retrieval on %d paraphrases: recall@1 %.4f, MRR %.4f", n, metrics.get("faq_recall_at_1", 0.0),
                 metrics["faq_mrr"])
        return EvalResult(self.name, metrics, {"faq_misses": misses},
                          ["faq_id", "text", "top_faq_id", "top_score", "rank"], rows)


class ProductRetrievalEvaluator(Evaluator):
    """Product precision@k on labelled shopping requests; target: an object with `nlu.embedder` and
    `recommender` (an `Assistant`)."""

    name = "product_retrieval"

    def __init__(self, requests: Sequence[dict[str, Any]] | str | Path, k: int = 5):
        self.requests = read_shopping_requests(requests) if isinstance(requests, (str, Path)) else list(requests)
        self.k = k

    def run(self, assistant: Any) -> EvalResult:
        texts = [_read(assistant, r["text"]) for r in self.requests]
        vectors = _encode(assistant.nlu.embedder, texts)
        rows, precisions, hits, recalls = [], [], [], []
        for req, text, v in zip(self.requests, texts, vectors):
            got = [s.product["id"] for s in assistant.recommender.recommend(text, v, k=self.k)][: self.k]
            relevant = set(req["relevant_ids"])
            n_rel = len(set(got) & relevant)
            precisions.append(n_rel / self.k)
            hits.append(n_rel > 0)
            recalls.append(n_rel / min(self.k, len(relevant)) if relevant else 0.0)
            rows.append([req["text"], req["relevant_ids"], got, n_rel])
        n = len(rows)
        k = self.k
        metrics = {"product_queries": n, f"product_precision_at_{k}": float(np.mean(precisions)),
                   f"product_hit_at_{k}": float(np.mean(hits)), f"product_recall_at_{k}": float(np.mean(recalls))}
        log.info("product retrieval on %d requests: precision@%d %.4f", n, k, metrics[f"product_precision_at_{k}"])
        misses = [{"text": r[0], "relevant_ids": r[1], "suggested": r[2]} for r in rows if r[3] == 0]
        return EvalResult(self.name, metrics, {"product_misses": misses},
                          ["text", "relevant_ids", "suggested_ids", "relevant_suggested"], rows)
