"""The review queue: which conversations an operator should look at first, and why each turn went as
it did. Pure functions over what the store returns (`Store.turns`, `Store.ratings`,
`Store.corrections`); the console's Review tab (webapp/review_tab.py) only shows the result.

A turn's need is the sum of the weights of the signals it shows; a conversation's is the sum over
its turns plus its rating's. The weights put what the customer told us first, then what the
assistant admitted, then what it merely guessed:

| signal          | weight | when |
|-----------------|-------:|------|
| thumbs_down     | 5      | the customer pressed thumbs down on the turn |
| low_rating      | 4      | the conversation was rated 1 or 2 (of 5), counted once |
| handoff         | 3      | the turn handed the conversation to a person |
| fallback        | 3      | the assistant did not understand (asked to rephrase) |
| out_of_scope    | 2      | the assistant said it cannot help with that |
| clarify         | 2      | the assistant asked "did you mean" |
| low_confidence  | 1      | the intent confidence was below 0.5 |

Turns an operator already corrected no longer count, so a reviewed conversation sinks. Ties go to
the most recent conversation.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

WEIGHTS: dict[str, float] = {"thumbs_down": 5, "low_rating": 4, "handoff": 3, "fallback": 3, "out_of_scope": 2,
                             "clarify": 2, "low_confidence": 1}
LOW_CONFIDENCE = 0.5
LOW_RATING = 2           # ratings of this or less are "low"
ACTION_SIGNALS = {"handoff": "handoff", "fallback": "fallback", "out_of_scope": "out_of_scope", "clarify": "clarify"}


@dataclass
class ConversationNeed:
    session_id: str
    score: float
    signals: Counter = field(default_factory=Counter)
    turns: list[dict[str, Any]] = field(default_factory=list)
    rating: int | None = None
    last_at: float = 0.0

    @property
    def model_versions(self) -> list[str]:
        return sorted({str(t.get("model_version")) for t in self.turns if t.get("model_version")})

    def needy_turns(self) -> list[dict[str, Any]]:
        """Its turns that show some signal, neediest first (then in conversation order)."""
        scored = [(turn_score(t), i, t) for i, t in enumerate(self.turns)]
        return [t for s, i, t in sorted(scored, key=lambda x: (-x[0], x[1])) if s > 0]


def turn_signals(turn: dict[str, Any]) -> list[str]:
    """The need signals one stored turn shows (see the table above; `low_rating` is per conversation)."""
    out = []
    if turn.get("feedback") == -1:
        out.append("thumbs_down")
    action = turn.get("action")
    if action in ACTION_SIGNALS:
        out.append(ACTION_SIGNALS[action])
    confidence = turn.get("confidence")
    if isinstance(confidence, (int, float)) and confidence < LOW_CONFIDENCE and action != "handoff":
        out.append("low_confidence")
    return out


def turn_score(turn: dict[str, Any]) -> float:
    return float(sum(WEIGHTS[s] for s in turn_signals(turn)))


def day_bounds(since: str | dt.date | None = None, until: str | dt.date | None = None) -> tuple[float | None, float | None]:
    """Timestamps for a date filter: from the start of `since` to the end of `until` (UTC days;
    'YYYY-MM-DD' strings or dates; None leaves that side open). ValueError on a malformed date."""

    def start(day: str | dt.date) -> float:
        d = dt.date.fromisoformat(day.strip()) if isinstance(day, str) else day
        return dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp()

    lo = start(since) if since not in (None, "") else None
    hi = start(until) + 86400 if until not in (None, "") else None
    return lo, hi


def rank_conversations(turns: Iterable[dict[str, Any]], ratings: Iterable[dict[str, Any]] = (), *,
                       corrected: Iterable[str] = (), action: str | None = None,
                       model_version: str | None = None, include_calm: bool = False) -> list[ConversationNeed]:
    """Conversations by need, neediest first. `turns` as `Store.turns` returns them (already limited
    to a date range by the caller); `ratings` as `Store.ratings`; `corrected` the turn ids operators
    corrected. `action` keeps conversations with a turn of that action, `model_version` those with a
    turn answered by that version. Conversations with no signal are left out unless `include_calm`."""
    done = set(corrected)
    by_session: dict[str, ConversationNeed] = {}
    for t in turns:
        sid = str(t.get("session_id"))
        need = by_session.setdefault(sid, ConversationNeed(sid, 0.0))
        need.turns.append(t)
        need.last_at = max(need.last_at, float(t.get("created_at") or 0.0))
        if t.get("turn_id") in done:
            continue
        for s in turn_signals(t):
            need.signals[s] += 1
            need.score += WEIGHTS[s]
    lowest: dict[str, int] = {}
    for r in ratings:
        sid = str(r.get("session_id"))
        if sid in by_session and r.get("rating") is not None:
            lowest[sid] = min(int(r["rating"]), lowest.get(sid, 99))
    for sid, rating in lowest.items():
        by_session[sid].rating = rating
        if rating <= LOW_RATING:
            by_session[sid].signals["low_rating"] += 1
            by_session[sid].score += WEIGHTS["low_rating"]
    out = []
    for need in by_session.values():
        if action and not any(t.get("action") == action for t in need.turns):
            continue
        if model_version and not any(t.get("model_version") == model_version for t in need.turns):
            continue
        if need.score > 0 or include_calm:
            out.append(need)
    return sorted(out, key=lambda n: (-n.score, -n.last_at, n.session_id))


def explain_turn(turn: dict[str, Any], faq_questions: dict[str, str] | None = None) -> dict[str, Any]:
    """What the customer said, what the assistant did and why, from a stored turn: the policy's
    reason, the top intents with their probabilities, the FAQ candidates with their scores."""
    details = turn.get("details") or {}
    questions = faq_questions or {}
    return {
        "turn_id": turn.get("turn_id"),
        "customer": turn.get("user_text") or "",
        "reply": turn.get("text") or "",
        "action": turn.get("action"),
        "intent": turn.get("intent"),
        "confidence": turn.get("confidence"),
        "model_version": turn.get("model_version"),
        "feedback": turn.get("feedback"),
        "reason": details.get("decision") or "",
        "top_intents": [(str(i), float(p)) for i, p in (details.get("ranking") or [])[:3]],
        "faq_candidates": [(str(f), float(s), questions.get(str(f), "")) for f, s in (details.get("faq") or [])[:5]],
        "oos_score": details.get("oos_score"),
        "sources": list(details.get("sources") or []),
        "products": list(details.get("products") or []),
        "signals": turn_signals(turn),
    }


def model_versions(turns: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({str(t["model_version"]) for t in turns if t.get("model_version")})
