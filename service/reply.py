"""What one turn returns to the UI, the transcript store and the evaluator."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Source:
    faq_id: str
    question: str
    score: float


@dataclass
class ProductCard:
    id: str
    title: str
    category: str
    brand: str
    price: float
    reason: str
    score: float


@dataclass
class Reply:
    text: str
    action: str
    intent: str | None = None
    confidence: float = 0.0
    sources: list[Source] = field(default_factory=list)
    products: list[ProductCard] = field(default_factory=list)
    handoff: bool = False
    suggestions: list[str] = field(default_factory=list)   # quick replies the UI may offer
    debug: dict[str, Any] = field(default_factory=dict)     # scores behind the decision, for operators
    turn_id: str = ""          # server-made; the customer's thumbs and the operator's corrections point at it
    model_version: str = ""    # the model version that produced this reply

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def __getattr__(name: str) -> Any:
    # `ACTIONS`: every action a Reply can report, derived from the domain registry (base actions and
    # one per declared flow), read when asked for so that the flows are registered by then.
    if name == "ACTIONS":
        from service.domain import default_domain

        return default_domain().actions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
