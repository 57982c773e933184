"""A tiny evaluation world with known outcomes (tests/evaluation/fixtures/eval/world.json): a deterministic
fake NLU and fake indexes under the real `Assistant`, shared by the evaluator's tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from retrieval.index import Hit
from retrieval.recommend import Suggestion
from service.engine import Assistant
from service.nlu import NLUResult
from service.policy import Thresholds

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
WORLD = json.loads((FIXTURES / "world.json").read_text())
TH = Thresholds(faq=0.6, clarify_margin=0.03, intent=0.5, near_faq=0.08)


# ---------------------------------------------------------------- fakes
class FakeEmbedder:
    name, dim, fingerprint = "fake", 4, "fake-fp"

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode(self, texts, show_progress=False):
        return np.asarray([self.vectors.get(t, [0, 0, 0, 1]) for t in texts], dtype=np.float32)


class FakeNLU:
    """The NLU protocol with fixed answers; `always` makes it the broken model."""

    def __init__(self, table: dict[str, tuple[str, float]], vectors: dict[str, list[float]], labels: list[str],
                 always: str | None = None):
        self.table, self.labels, self.always = table, labels, always
        self.embedder = FakeEmbedder(vectors)

    def parse_batch(self, texts):
        out = []
        for t in texts:
            intent, conf = (self.always, 0.99) if self.always else self.table[t]
            ranking = [(intent, conf)] + [(label, 0.0) for label in self.labels if label != intent][:4]
            out.append(NLUResult(intent, conf, ranking, self.embedder.encode([t])[0]))
        return out

    def parse(self, text) -> NLUResult:
        return self.parse_batch([text])[0]


class FakeFaqIndex:
    def __init__(self, faqs):
        self.faqs = faqs

    def search(self, vector, k=5):
        hits = [Hit(f["id"], float(np.dot(vector, f["vector"])), f) for f in self.faqs]
        return sorted(hits, key=lambda h: -h.score)[:k]


class FakeRecommender:
    def __init__(self, products):
        self.products = products

    def recommend(self, text, vector=None, k=5):
        return [Suggestion(p, 1.0 - i / 10, "fits") for i, p in enumerate(self.products[:k])]


def world_nlu(always: str | None = None) -> FakeNLU:
    msgs = WORLD["messages"]
    labels = sorted({m["intent"] for m in msgs.values()} | {"out_of_scope"})
    return FakeNLU({t: (m["intent"], m["confidence"]) for t, m in msgs.items()},
                   {t: m["vector"] for t, m in msgs.items()}, labels, always)


def world_assistant(nlu) -> Assistant:
    return Assistant(nlu=nlu, faq_index=FakeFaqIndex(WORLD["faqs"]), recommender=FakeRecommender(WORLD["products"]),
                     thresholds=TH, faq_records={f["id"]: f for f in WORLD["faqs"]})
