"""Follow-ups: a short message that leans on the previous turn ("how long does that take?",
"and how many days do I have?", "anything for military too?") is understood together with it.

When the previous reply answered a FAQ and the new message reads like a follow-up, the engine
parses the previous customer message and this one together (one more encoder pass, on follow-ups
only) and merges that search with the message's own: the answer may come from either. The policy
may then answer from the FAQ where the words alone would have started a flow or been called out of
scope. A follow-up that, read with its previous message, asks the entry just answered again gets that
answer when nothing else answers it (`same_entry`). (A small score bonus for the previous answer's
topic in the ranking itself was tried: no change on the validation dialogs, so it is not here.)

After products were shown, a follow-up ("one that mops too?") is about them (`follows_products`): the
policy recommends, and a new search reads it with the request that showed them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retrieval.followup import MAX_FOLLOW_UP_WORDS, reads_like_follow_up

if TYPE_CHECKING:   # retrieval.index loads FAISS; the engine imports this module on every start
    from retrieval.index import Hit

@dataclass(frozen=True)
class Context:
    previous_user: str          # the previous customer message (redacted, as stored)
    faq_id: str                 # the FAQ entry the previous reply answered with


def follow_up_context(history: list[dict[str, Any]], text: str) -> Context | None:
    """The context a follow-up message needs, or None when the message stands on its own."""
    if len(history) < 2:
        return None
    last, before = history[-1], history[-2]
    faq_id = last.get("faq_id")
    if last.get("role") != "assistant" or last.get("action") != "answer_faq" or not faq_id:
        return None
    if before.get("role") != "user" or not before.get("text"):
        return None
    if not reads_like_follow_up(text):
        return None
    return Context(str(before["text"]), str(faq_id))


def merge_hits(own: list[Hit], with_context: list[Hit], k: int, answered: str | None = None) -> list[Hit]:
    """One ranking from the message's own FAQ hits and those of the message read with its context:
    each entry's best score. The entry just `answered` scores on the message alone: read with the
    previous message it would always look like the answer again, and a follow-up asks for something new."""
    best: dict[str, Hit] = {}
    for hit in list(own) + [h for h in with_context if h.id != answered]:
        if hit.id not in best or hit.score > best[hit.id].score:
            best[hit.id] = hit
    return sorted(best.values(), key=lambda h: -h.score)[:k]


def same_entry(context: Context | None, with_context: list[Hit], threshold: float) -> str | None:
    """The entry just answered, when the follow-up read with its previous message finds that entry
    first and certainly ("do they bring the bracket?" after the TV-mounting answer, "how much?" after
    the assembly one): the answer already holds what is asked. The policy falls back on it only when
    nothing else answers the message."""
    if context is None or not with_context:
        return None
    best = with_context[0]
    return context.faq_id if best.id == context.faq_id and best.score >= threshold else None


# "something lighter I can carry to clients?", "something she could take in the pool?": after products,
# a short message opening with "something" asks for another of them.
_SOMETHING_ELSE = re.compile(r"^\W*(?:(?:is there|got|maybe|or|ok(?:ay)?|hmm+),?\s+)?something\b", re.I)


def follows_products(state: Any, text: str) -> bool:
    """The previous reply showed products and this message reads like a follow-up to it ("one that
    mops too?", "does it need the internet?", "something lighter?")."""
    last = state.history[-1] if state.history else {}
    return bool(state.last_products) and last.get("role") == "assistant" \
        and last.get("action") in ("recommend", "compare") \
        and (reads_like_follow_up(text)
             or (len(text.split()) <= MAX_FOLLOW_UP_WORDS and bool(_SOMETHING_ELSE.search(text))))
