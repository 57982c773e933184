"""What one turn returns to the UI, the transcript store and the evaluator."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ACTIONS = (
    "answer_faq", "clarify", "recommend", "small_talk",
    "order_status", "start_return", "cancel_order", "change_address", "refund_status",
    "out_of_scope", "fallback", "handoff",
)


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
