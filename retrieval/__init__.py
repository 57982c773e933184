"""Embedding, FAISS indexes (FAQ, products) and recommendations.

Names are re-exported lazily so `import retrieval` does not load torch or faiss.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Embedder": "runtime.embedder", "resolve_model_path": "runtime.embedder", "DEFAULT_ENCODER": "runtime.embedder",
    "VectorIndex": "retrieval.index", "Hit": "retrieval.index",
    "FaqIndex": "retrieval.faq", "calibrate_faq_threshold": "retrieval.faq",
    "Recommender": "retrieval.recommend", "Suggestion": "retrieval.recommend",
    "Filters": "retrieval.filters", "parse_filters": "retrieval.filters", "category_vocabulary": "retrieval.filters",
    "build_indexes": "retrieval.build", "load_indexes": "retrieval.build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
