"""Dialogue policy: session state + NLU + retrieval scores -> exactly one action.

Pure decision logic with no I/O, so every branch is easy to test. The engine carries the
decision out (looks up answers, runs flows, writes the transcript).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from service.nlu import NLUResult
from service.sessions import SessionState

SMALL_TALK_INTENTS = frozenset({"greeting", "goodbye", "thanks", "bot_identity", "capabilities"})
# Intents that start a service flow, and the action each flow reports.
FLOW_ACTIONS = {
    "order_status": "order_status",
    "return_request": "start_return",
    "cancel_order": "cancel_order",
    "change_address": "change_address",
    "refund_status": "refund_status",
}
_ORDINALS = {"1": 0, "first": 0, "one": 0, "top": 0, "2": 1, "second": 1, "two": 1, "3": 2, "third": 2, "three": 2}
_PICK = re.compile(r"^\s*(?:the\s+)?(1|2|3|first|second|third|one|two|three|top)\b(?:\s+one)?[\s.!]*$", re.I)


@dataclass
class Thresholds:
    faq: float               # best FAQ score needed to answer (calibrated at index build)
    clarify_margin: float    # two different FAQs closer than this: ask which one
    intent: float = 0.5      # NLU confidence needed to act on an intent
    near_faq: float = 0.08   # below `faq` by less than this: offer the candidates instead of guessing


@dataclass
class Decision:
    action: str
    intent: str | None = None
    faq_ids: list[str] = field(default_factory=list)
    reason: str = ""
    flow: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _picked_candidate(text: str, state: SessionState, faq_hits: list) -> str | None:
    """Resolve the customer's answer to a clarifying question ("the second one", or a close re-ask)."""
    if not state.pending_clarify:
        return None
    m = _PICK.match(text)
    if m:
        i = _ORDINALS[m.group(1).lower()]
        return state.pending_clarify[i] if i < len(state.pending_clarify) else None
    if faq_hits and faq_hits[0].id in state.pending_clarify:
        return faq_hits[0].id
    return None


def decide(text: str, state: SessionState, nlu: NLUResult, faq_hits: list, th: Thresholds,
           flows_available: bool = False) -> Decision:
    intent, conf = nlu.intent, nlu.confidence
    confident = conf >= th.intent

    if state.handoff:
        return Decision("handoff", intent, reason="already with a person")

    picked = _picked_candidate(text, state, faq_hits)
    if picked:
        return Decision("answer_faq", intent, [picked], reason="customer picked a clarification candidate")

    if confident and intent == "human_request":
        return Decision("handoff", intent, reason="the customer asked for a person")
    if confident and intent == "complaint":
        return Decision("handoff", intent, reason="the customer is frustrated")

    if flows_available and (state.flow or (confident and intent in FLOW_ACTIONS)):
        return Decision(FLOW_ACTIONS.get(intent, "flow"), intent, flow=FLOW_ACTIONS.get(intent), reason="service flow")

    if confident and intent in SMALL_TALK_INTENTS:
        return Decision("small_talk", intent)
    if confident and intent == "product_search":
        return Decision("recommend", intent)

    top = faq_hits[0] if faq_hits else None
    if top is not None and top.score >= th.faq:
        close = [h for h in faq_hits[1:3] if h.score >= th.faq and top.score - h.score < th.clarify_margin]
        if close and not intent.startswith("faq_"):
            # The NLU does not vouch for a FAQ topic and two answers fit equally: ask.
            return Decision("clarify", intent, [top.id] + [h.id for h in close], reason="two FAQ answers are close")
        if close:
            same_topic = [h for h in [top] + close if h.meta.get("category") == intent[4:]]
            if len(same_topic) != 1:
                return Decision("clarify", intent, [h.id for h in [top] + close], reason="two FAQ answers are close")
            return Decision("answer_faq", intent, [same_topic[0].id], reason="the NLU topic broke the tie")
        return Decision("answer_faq", intent, [top.id])

    if confident and intent == "out_of_scope":
        return Decision("out_of_scope", intent)
    if confident and intent in ("affirm", "deny"):
        return Decision("small_talk", intent)
    if top is not None and top.score >= th.faq - th.near_faq and (intent.startswith("faq_") or not confident):
        cands = [h.id for h in faq_hits[:3] if h.score >= th.faq - th.near_faq]
        return Decision("clarify", intent, cands, reason="no FAQ answer was certain enough")
    if confident and intent.startswith("faq_") and top is not None:
        return Decision("fallback", intent, reason="FAQ topic recognised but no answer matched")
    if not confident and top is not None and top.score < th.faq - th.near_faq and intent == "out_of_scope":
        return Decision("out_of_scope", intent)
    if confident and intent in FLOW_ACTIONS:
        return Decision("fallback", intent, reason=f"no flow for {intent} is available")
    return Decision("fallback", intent, reason="nothing matched with confidence")
