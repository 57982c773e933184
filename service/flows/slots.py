"""Slot extractors and validators shared by the order flows."""
from __future__ import annotations

import hmac
import re

from service.flows.base import MISMATCH, FlowContext
from service.nlu import NLUResult
from service.phrases import DEFECT

ORDER_ID = re.compile(r"\bHC[\s#-]?(\d{6})\b", re.I)
BARE_ORDER_NUMBER = re.compile(r"(?<![\d-])(\d{6})(?!\d)")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def extract_order_id(text: str, nlu: NLUResult, ctx: FlowContext) -> str | None:
    m = ORDER_ID.search(text) or BARE_ORDER_NUMBER.search(text)
    return f"HC-{m.group(1)}" if m else None


def validate_order_id(order_id: str, ctx: FlowContext) -> str | None:
    """Only the form (the extractor guarantees it): whether the order exists is never told apart
    from a wrong email, so trying order numbers reveals nothing (the email check answers both)."""
    return None if ORDER_ID.fullmatch(order_id) else "That doesn't look like an order number (HC-123456)."


def extract_email(text: str, nlu: NLUResult, ctx: FlowContext) -> str | None:
    m = EMAIL.search(text)
    return m.group(0).lower() if m else None


def validate_email(email: str, ctx: FlowContext) -> str | None:
    order = ctx.order
    expected = order.email.lower() if order is not None else ""
    if not hmac.compare_digest(expected.encode(), email.lower().encode()) or not expected:
        # Same message whether the order exists or not: it must not confirm who ordered what.
        return MISMATCH
    return None


def email_already_verified(ctx: FlowContext) -> bool:
    return ctx.slots.get("order_id") in ctx.verified_orders


_OPEN_WORDS = r"(opened|open|used|unpacked|unboxed|unwrapped|touched|set up|taken out)"
# "never been opened", "hasn't even been unpacked", "not used": a negation shortly before the word.
_NEGATED_OPEN = re.compile(r"\b(never|not|n't|nobody|no one|haven'?t|hasn'?t|didn'?t|wasn'?t)\b(\W+\w+){0,3}?\W+"
                           + _OPEN_WORDS + r"\b", re.I)
_UNOPENED = re.compile(r"\b(unopened|sealed|still in (the|its|their) (original )?(box|boxes|packaging|wrapping)|"
                       r"brand new|unused|original packaging|in (the|its) box)\b", re.I)
_OPENED = re.compile(r"\b" + _OPEN_WORDS + r"\b|\btried (it|them)\b|\bopen box\b", re.I)


# "isabella@example.com is the email I used": the email, card or account used, not the item.
_USED_FOR_ORDERING = re.compile(r"\b(e-?mail|address|account|card)\b[^.?!,]{0,25}?\b(i|we)( have| had|'ve)? "
                                r"(used|use)\b", re.I)


def extract_condition(text: str, nlu: NLUResult, ctx: FlowContext) -> str | None:
    text = _USED_FOR_ORDERING.sub(" ", text)
    if DEFECT.search(text):
        return "defective"
    if _NEGATED_OPEN.search(text) or _UNOPENED.search(text):
        return "unopened"
    if _OPENED.search(text):
        return "opened"
    # Answers to "Is it still unopened in its original packaging?"
    if re.match(r"^\s*(yes|yeah|yep|yup|it is|they are|correct)\b", text, re.I):
        return "unopened"
    if re.match(r"^\s*(no|nope|nah|it'?s not|they'?re not|not really)\b", text, re.I):
        return "opened"
    return None


def extract_address(text: str, nlu: NLUResult, ctx: FlowContext) -> str | None:
    """A delivery address: a house number and a street, at least four words."""
    candidate = re.sub(r"^(please\s+)?(change|send|ship|deliver)[^:]*?\b(to|:)\s*", "", text.strip(), flags=re.I)
    candidate = re.sub(r"^(the\s+)?(new\s+)?address\s+(is\s*)?:?\s*", "", candidate, flags=re.I).strip(" .")
    if re.search(r"\d", candidate) and re.search(r"[A-Za-z]{3,}", candidate) and len(candidate.split()) >= 4 \
            and not ORDER_ID.search(candidate) and len(candidate) <= 200:
        return candidate
    return None
