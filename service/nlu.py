"""Natural-language understanding: one message in, an intent distribution and an embedding out.

Two implementations behind one interface, so the trained student drops in without the rest of
the service noticing:
- `FrozenEncoderNLU`: the pretrained encoder's embeddings + a logistic regression fitted on the
  intent examples at start-up (about a second). Used until a model has been trained.
- `ModelNLU`: a trained `SupportModel` directory (teacher, student or served student), whose
  own intent head gives the distribution and whose encoder gives the embedding.
The embedding is computed once per message and reused by retrieval.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from core.errors import DataError
from core.jsonl import read_jsonl
from runtime.loading import ModelEmbedder

log = logging.getLogger(__name__)


@dataclass
class NLUResult:
    intent: str
    confidence: float
    ranking: list[tuple[str, float]]   # top intents, best first
    embedding: np.ndarray              # L2-normalised, the same space as the indexes


class TextEncoder(Protocol):
    name: str
    dim: int
    fingerprint: str

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray: ...


class NLU(Protocol):
    embedder: TextEncoder
    labels: list[str]

    def parse(self, text: str) -> NLUResult: ...

    def parse_batch(self, texts: Sequence[str]) -> list[NLUResult]: ...


def read_intent_examples(path: Path) -> tuple[list[str], list[str]]:
    rows = read_jsonl(path, ("text", "intent"), "intent example")
    texts, labels = [str(r["text"]) for r in rows], [str(r["intent"]) for r in rows]
    if not texts:
        raise DataError(f"{path}: no intent examples")
    return texts, labels


def _results(probs: np.ndarray, embeddings: np.ndarray, labels: list[str], top: int = 5) -> list[NLUResult]:
    out = []
    for p, e in zip(probs, embeddings):
        order = np.argsort(-p)[:top]
        ranking = [(labels[i], float(p[i])) for i in order]
        out.append(NLUResult(ranking[0][0], ranking[0][1], ranking, e.astype(np.float32)))
    return out


class FrozenEncoderNLU:
    """Pretrained encoder + logistic regression on the operator's intent examples."""

    def __init__(self, embedder: TextEncoder, texts: Sequence[str], labels: Sequence[str], C: float = 10.0):
        from sklearn.linear_model import LogisticRegression

        self.embedder = embedder
        self.C = C
        X = embedder.encode(list(texts))
        self._clf = LogisticRegression(C=C, max_iter=2000)
        self._clf.fit(X, list(labels))
        self.labels = [str(c) for c in self._clf.classes_]
        # Kept for calibrating the out-of-scope detector without encoding everything again.
        self.train_embeddings, self.train_labels = X, [str(x) for x in labels]

    @classmethod
    def from_file(cls, embedder: TextEncoder, intents_path: Path) -> "FrozenEncoderNLU":
        texts, labels = read_intent_examples(intents_path)
        return cls(embedder, texts, labels)

    def parse_batch(self, texts: Sequence[str]) -> list[NLUResult]:
        emb = self.embedder.encode(list(texts))
        return _results(self._clf.predict_proba(emb), emb, self.labels)

    def parse(self, text: str) -> NLUResult:
        return self.parse_batch([text])[0]


class ModelNLU:
    """A trained SupportModel: its head gives the intents, its encoder the embedding."""

    def __init__(self, model):
        self.model = model
        self.labels = list(model.labels)
        self.embedder = ModelEmbedder(model)

    def parse_batch(self, texts: Sequence[str]) -> list[NLUResult]:
        probs, emb = self.model.predict(list(texts))
        return _results(np.asarray(probs), np.asarray(emb), self.labels)

    def parse(self, text: str) -> NLUResult:
        return self.parse_batch([text])[0]
