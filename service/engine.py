"""The turn pipeline: message -> validate -> NLU -> retrieval -> policy -> action -> Reply.

`Assistant.respond` never raises: whatever goes wrong becomes a polite reply and a log line,
and the session stays usable.
"""
from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from retrieval.compare import compare_rows, comparison_text, refers_to_shown
from service import smalltalk
from service.context import follow_up_context, follows_products, merge_hits, same_entry
from service.domain import Domain, default_domain
from service.flows.slots import ORDER_ID
from service.handoff import HandoffDesk, InMemoryHandoffDesk
from service.nlu import NLU, NLUResult
from service.phrases import asks_for_a_person
from service.pii import redact
from service.policy import Decision, Signals, Thresholds, decide
from service.reply import ProductCard, Reply, Source
from service.sessions import InMemorySessionStore, SessionLocks, SessionState, SessionStore
from service.text import clean_message

log = logging.getLogger(__name__)

_PRODUCT_ID = re.compile(r"\bP\d{3,6}\b", re.I)
_SIMILAR = re.compile(r"\b(similar|like (this|that|it|the)|alternatives?|comparable)\b", re.I)
MAX_FAILED_TURNS = 2


class FlowEngine(Protocol):
    """Runs multi-turn service flows (order status, returns...); see service/flows."""

    def handle(self, state: SessionState, text: str, nlu: NLUResult) -> Any: ...


class TranscriptLog(Protocol):
    def append_transcript(self, session_id: str, role: str, text: str, action: str | None = None,
                          intent: str | None = None, confidence: float | None = None, *,
                          turn_id: str | None = None, model_version: str | None = None,
                          latency_ms: float | None = None, details: dict[str, Any] | None = None) -> None: ...


STAGES = ("understanding", "retrieval", "policy", "action", "store")


@dataclass
class TurnEvent:
    """What an observer (metrics, monitoring) learns of a finished turn: no message text."""
    session_id: str
    reply: Reply
    stages_ms: dict[str, float] = field(default_factory=dict)   # per stage of STAGES that ran
    total_ms: float = 0.0
    error: bool = False


def new_turn_id() -> str:
    return "t-" + secrets.token_hex(8)


class Assistant:
    def __init__(self, *, nlu: NLU, faq_index: Any, recommender: Any, thresholds: Thresholds,
                 store_name: str = "our store", sessions: SessionStore | None = None,
                 desk: HandoffDesk | None = None, flows: FlowEngine | None = None,
                 max_message_chars: int = 2000, top_k: int = 5, support_hours: str = "",
                 faq_records: dict[str, dict] | None = None, transcripts: TranscriptLog | None = None,
                 oos: Any = None, domain: Domain | None = None, model_version: str = "dev",
                 spelling: Any = None):
        self.nlu = nlu
        self.spelling = spelling   # service.spelling.SpellingCorrector: typos fixed before understanding, or None
        self.model_version = model_version
        self.use_context = True    # follow-ups read with the previous turn (service/context.py)
        # Called after every turn with a TurnEvent (e.g. the metrics exporter); must be quick and never raise.
        self.observers: list[Callable[[TurnEvent], None]] = []
        # The intents, flows and replies the policy works with: the flow runner's, else the default.
        self.domain = domain or getattr(flows, "domain", None) or default_domain()
        self.oos = oos   # service.oos.OOSDetector, or None to rely on the NLU's own out_of_scope intent
        self.transcripts = transcripts
        self.faq_records = faq_records or {}
        self.faq_index = faq_index
        self.recommender = recommender
        self.thresholds = thresholds
        self.store_name = store_name
        self.sessions = sessions or InMemorySessionStore()
        self.desk = desk or InMemoryHandoffDesk()
        self.flows = flows
        self.max_message_chars = max_message_chars
        self.top_k = top_k
        self.support_hours = support_hours
        self._locks = SessionLocks()   # one per session while in use; pruned (weak references)

    # -- the turn -----------------------------------------------------------------------------
    def respond(self, session_id: str, message: object) -> Reply:
        session_id = str(session_id or "anonymous")[:128]
        # One turn per conversation at a time; the store's lock spans processes where it can (PostgreSQL).
        lock = self.sessions.session_lock(session_id) if hasattr(self.sessions, "session_lock") \
            else self._locks[session_id]
        started = time.perf_counter()
        stages: dict[str, float] = {}
        error = False
        with lock:
            try:
                reply = self._respond(session_id, message, stages, started)
            except Exception:  # the customer gets an apology, the operator the traceback
                log.exception("turn failed for session %s", session_id)
                reply, error = Reply(smalltalk.INTERNAL_ERROR, action="fallback"), True
        reply.model_version = reply.model_version or self.model_version
        self._notify(TurnEvent(session_id, reply, stages, (time.perf_counter() - started) * 1000, error))
        return reply

    def _notify(self, event: TurnEvent) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # monitoring never breaks a turn
                log.exception("turn observer %r failed", observer)

    def _respond(self, session_id: str, message: object, stages: dict[str, float], started: float) -> Reply:
        def lap(stage: str, since: float) -> float:
            now = time.perf_counter()
            stages[stage] = (now - since) * 1000
            return now

        state = self.sessions.load(session_id)
        clean = clean_message(message, self.max_message_chars)
        if clean.problem:
            text = smalltalk.EMPTY if clean.problem == "empty" else smalltalk.UNREADABLE
            reply = Reply(text, action="clarify", suggestions=list(smalltalk.SUGGESTED_QUESTIONS[:3]))
            self._record(state, "", reply, stages, started)
            return reply

        t = time.perf_counter()
        # What is understood: the message with its typos corrected (the transcript keeps it as written).
        text = self.read(clean.text)
        nlu = self.nlu.parse(text)
        context = follow_up_context(state.history, text) if self.use_context else None
        context_nlu = self.nlu.parse(f"{context.previous_user} {text}") if context is not None else None
        own_embedding = nlu.embedding
        if context_nlu is not None and nlu.confidence < self.thresholds.intent <= context_nlu.confidence:
            nlu = context_nlu      # the follow-up is understood with the message it follows
        t = lap("understanding", t)
        # The message's own words search on their own: read with the previous message, the entry just
        # answered would come back first (merge_hits keeps it out of the context search).
        faq_hits = self.search_faq(own_embedding, text)
        with_context: list = []
        if context_nlu is not None:
            with_context = self.search_faq(context_nlu.embedding, f"{context.previous_user} {text}")
            faq_hits = merge_hits(faq_hits, with_context, self.top_k, answered=context.faq_id)
        t = lap("retrieval", t)
        signals = self._signals(text, nlu, state)
        signals.follow_up = context is not None
        signals.same_entry = same_entry(context, with_context, self.thresholds.faq)
        if signals.same_entry:
            signals.same_entry_topic = with_context[0].meta.get("category")
        signals.about_products = follows_products(state, text)
        signals.points_at_shown = signals.about_products and refers_to_shown(text)
        decision = decide(text, state, nlu, faq_hits, self.thresholds,
                          flows_available=self.flows is not None, signals=signals, domain=self.domain)
        t = lap("policy", t)
        reply = self._act(decision, state, text, nlu, faq_hits)
        lap("action", t)

        state.failed_turns = state.failed_turns + 1 if reply.action == "fallback" else 0
        if state.failed_turns >= MAX_FAILED_TURNS and not state.handoff:
            reply = self._handoff(state, "two turns in a row the assistant could not help", nlu, clean.text)
        if clean.truncated:
            reply.text = smalltalk.TRUNCATED.format(length=clean.original_length) + reply.text
        reply.debug.update({"decision": decision.reason, "ranking": nlu.ranking[:3], "oos_score": signals.oos_score,
                            "faq": [(h.id, round(h.score, 4)) for h in faq_hits[:3]]})
        if text != clean.text:
            reply.debug["read_as"] = text     # the message as its typos were corrected (debug only: never stored)
        if reply.action in ("fallback", "out_of_scope"):
            # What it would have been: the most asked-for log line when an assistant gives up.
            log.info("%s in session %s: top intent %s (confidence %.3f), decision %r", reply.action, session_id,
                     nlu.intent, nlu.confidence, decision.reason)
        self._record(state, clean.text, reply, stages, started)
        return reply

    def read(self, text: str) -> str:
        """A message as the assistant understands it: its typos corrected when spelling is on."""
        return self.spelling.correct(text) if self.spelling is not None else text

    def search_faq(self, embedding: Any, text: str, k: int | None = None) -> list:
        """The FAQ hits for one message (as read); an index with a fusion model also reads the words
        (retrieval/fusion.py), a plain one (the tests' fakes) the embedding only. The retrieval
        evaluator searches through here too, so it scores what customers get."""
        k = k or self.top_k
        if getattr(self.faq_index, "reads_text", False):
            return self.faq_index.search(embedding, k, text=text)
        return self.faq_index.search(embedding, k)

    def _signals(self, text: str, nlu: NLUResult, state: SessionState | None = None) -> Signals:
        filters = self.recommender.parse(text) if hasattr(self.recommender, "parse") else None
        out_of_scope, oos_score = self.oos.check_result(nlu) if self.oos is not None else (False, None)
        compared = self.recommender.comparison(text, state.last_products if state else ()) \
            if hasattr(self.recommender, "comparison") else []
        return Signals(order_ref=bool(ORDER_ID.search(text)), asks_human=asks_for_a_person(text),
                       shopping=bool(filters is not None and not filters.is_empty()),
                       out_of_scope=bool(out_of_scope), oos_score=oos_score,
                       compare=tuple(str(p["id"]) for p in compared))

    # -- actions ------------------------------------------------------------------------------
    def _act(self, d: Decision, state: SessionState, text: str, nlu: NLUResult, faq_hits: list) -> Reply:
        base = {"intent": nlu.intent, "confidence": nlu.confidence}
        if d.action != "clarify":
            state.pending_clarify = []
        if d.action == "handoff":
            if state.handoff:
                return Reply(smalltalk.HANDOFF_WAITING.format(ticket=state.ticket_id), action="handoff",
                             handoff=True, **base)
            return self._handoff(state, d.reason, nlu, text)
        if self.flows is not None and (d.flow is not None or d.action == "flow"):
            if d.flow is not None and d.intent and d.intent != nlu.intent:
                # The policy chose the flow from more than the top intent ("send it back? HC-104240"):
                # the runner starts the flow of the decided intent.
                nlu = NLUResult(d.intent, nlu.confidence, nlu.ranking, nlu.embedding)
            result = self.flows.handle(state, text, nlu)
            if result.handoff_reason:
                reply = self._handoff(state, result.handoff_reason, nlu, text)
                reply.text = (result.reply.text + "\n\n" if result.reply else "") + reply.text
                return reply
            if result.reply is not None:
                return result.reply
            # The flow stepped aside (a change of topic): handle the message on its own.
            if state.flow is not None:
                faq_hits = self._with_flow_context(state.flow, text, faq_hits)
            d = decide(text, state, nlu, faq_hits, self.thresholds, flows_available=False, domain=self.domain)
            reply = self._act(d, state, text, nlu, faq_hits)
            if result.note:
                reply.text += "\n\n" + result.note
            return reply
        if d.action == "answer_faq":
            reply = self._answer(d.faq_ids[0], faq_hits, base)
            if state.handoff:   # answered while the ticket waits: the person still has the conversation
                reply.text += "\n\n" + smalltalk.STILL_WITH_A_PERSON.format(ticket=state.ticket_id)
            return reply
        if d.action == "clarify":
            return self._clarify(d.faq_ids, faq_hits, state, base)
        if d.action == "recommend":
            return self._recommend(text, nlu, state, base)
        if d.action == "compare":
            return self._compare(d.extra["products"], state, base)
        if d.action == "small_talk":
            # The policy may read the message for another pleasantry than the NLU's ("are you a program?").
            intent = d.intent or nlu.intent
            return Reply(self.domain.small_talk_reply(intent, self.store_name), action="small_talk",
                         **(base | {"intent": intent}))
        if d.action == "out_of_scope":
            return Reply(smalltalk.OUT_OF_SCOPE, action="out_of_scope", suggestions=smalltalk.SUGGESTED_QUESTIONS[:3], **base)
        return Reply(smalltalk.FALLBACK, action="fallback", suggestions=smalltalk.SUGGESTED_QUESTIONS[:3], **base)

    def _with_flow_context(self, flow_state: dict, text: str, faq_hits: list) -> list:
        """A question asked while a flow waits for its yes/no ("before I confirm: when does the money come
        back?" while cancelling) is also read with what the flow is doing, and the two searches merged:
        the answer about a cancellation's refund, not a return's."""
        flow = self.flows.by_name.get(flow_state.get("name"))
        if flow is None or not flow.title:
            return faq_hits
        read_with = f"{flow.title}: {text}"
        return merge_hits(faq_hits, self.search_faq(self.nlu.parse(read_with).embedding, read_with), self.top_k)

    def _faq_record(self, faq_id: str, faq_hits: list) -> tuple[dict, float]:
        for h in faq_hits:
            if h.id == faq_id:
                return h.meta, h.score
        return self.faq_records[faq_id], 0.0

    def _answer(self, faq_id: str, faq_hits: list, base: dict) -> Reply:
        record, score = self._faq_record(faq_id, faq_hits)
        return Reply(record["answer"], action="answer_faq",
                     sources=[Source(faq_id, record["question"], round(float(score), 4))], **base)

    def _clarify(self, faq_ids: list[str], faq_hits: list, state: SessionState, base: dict) -> Reply:
        records = [self._faq_record(i, faq_hits) for i in faq_ids[:3]]
        state.pending_clarify = list(faq_ids[:3])
        lines = [f"{n}. {r['question']}" for n, (r, _) in enumerate(records, 1)]
        text = "I want to be sure I answer the right question. Did you mean:\n" + "\n".join(lines) + \
               "\n\nPick one, reply with its number, or rephrase your question."
        return Reply(text, action="clarify", suggestions=[r["question"] for r, _ in records],
                     sources=[Source(i, r["question"], round(float(s), 4)) for i, (r, s) in zip(faq_ids, records)],
                     **base)

    def _recommend(self, text: str, nlu: NLUResult, state: SessionState, base: dict) -> Reply:
        """Products for the message. One that follows the products just shown ("one that mops too?") is
        searched together with the request that showed them, unless it names another kind of product
        ("what about laptops?")."""
        product_id = _PRODUCT_ID.search(text)
        if product_id and _SIMILAR.search(text):
            suggestions = self.recommender.similar(product_id.group(0).upper(), k=self.top_k)
            intro = "Here are some items similar to that one:"
        else:
            # "which of those is the cheapest", "anything cheaper?": about the products just shown.
            # The customer's message that the last product reply answered ("robot vacuums that mop").
            asked_before = next((str(state.history[i - 1].get("text", ""))
                                 for i in range(len(state.history) - 1, 0, -1)
                                 if state.history[i].get("action") in ("recommend", "compare")
                                 and state.history[i - 1].get("role") == "user"), "")
            follow = self.recommender.follow_up(text, state.last_products, k=self.top_k, asked_before=asked_before) \
                if state.last_products and hasattr(self.recommender, "follow_up") else None
            if follow is not None:
                kind, suggestions = follow
                intro = ("Here are the ones I just showed you, ranked by what you asked:" if kind == "shown"
                         else "Here are some cheaper options of the same kind:")
                if not suggestions:
                    return Reply("I couldn't find anything cheaper of that kind than what I showed you.",
                                 action="recommend", **base)
            elif asked_before and follows_products(state, text) and not (
                    hasattr(self.recommender, "names_another_kind")
                    and self.recommender.names_another_kind(text, state.last_products)):
                request = f"{asked_before} {text}"
                suggestions = self.recommender.recommend(request, self.nlu.parse(request).embedding, k=self.top_k)
                intro = "Here are some products that match what you're looking for:"
            else:
                suggestions = self.recommender.recommend(text, nlu.embedding, k=self.top_k)
                intro = "Here are some products that match what you're looking for:"
        if not suggestions:
            return Reply("I couldn't find products that match that. Could you tell me a bit more, such as the "
                         "kind of product and your budget?", action="recommend", **base)
        cards = [ProductCard(s.product["id"], s.product["title"], s.product.get("category", ""),
                             s.product.get("brand", ""), float(s.product.get("price", 0.0)), s.reason,
                             round(float(s.score), 4)) for s in suggestions]
        state.last_products = [c.id for c in cards]
        lines = [f"- {c.title} (${c.price:,.2f}): {c.reason}" for c in cards]
        return Reply(intro + "\n" + "\n".join(lines), action="recommend", products=cards, **base)

    def _compare(self, product_ids: list[str], state: SessionState, base: dict) -> Reply:
        products = [self.recommender.products[i] for i in product_ids]
        cards = [ProductCard(p["id"], p["title"], p.get("category", ""), p.get("brand", ""),
                             float(p.get("price", 0.0)), "", 1.0) for p in products]
        state.last_products = [c.id for c in cards]
        reply = Reply(comparison_text(products), action="compare", products=cards, **base)
        # The side-by-side table for a page that draws it as a card (label, one value per product).
        reply.debug["comparison"] = compare_rows(products)
        return reply

    def _handoff(self, state: SessionState, reason: str, nlu: NLUResult, text: str) -> Reply:
        transcript = state.history + [{"role": "user", "text": redact(text)}]
        state.ticket_id = self.desk.open_ticket(state.session_id, reason, transcript)
        state.handoff, state.handoff_reason = True, reason
        state.flow = None
        hours = f" during support hours ({self.support_hours})" if self.support_hours else ""
        shown_reason = f" because {reason}" if reason and not reason.startswith("already") else ""
        return Reply(smalltalk.HANDOFF.format(reason=shown_reason, hours=hours, ticket=state.ticket_id),
                     action="handoff", handoff=True, intent=nlu.intent, confidence=nlu.confidence)

    # -- bookkeeping --------------------------------------------------------------------------
    def _record(self, state: SessionState, text: str, reply: Reply, stages: dict[str, float], started: float) -> None:
        reply.turn_id, reply.model_version = new_turn_id(), self.model_version
        t = time.perf_counter()
        user_text, bot_text = redact(text), redact(reply.text)
        # Ids and scores only: why it decided, for the operator's review (no message text).
        details = {k: reply.debug[k] for k in ("decision", "ranking", "oos_score", "faq") if k in reply.debug}
        details["sources"] = [s.faq_id for s in reply.sources]
        details["products"] = [p.id for p in reply.products]
        latency_ms = round((t - started) * 1000, 3)
        state.history.append({"role": "user", "text": user_text})
        state.history.append({"role": "assistant", "text": bot_text, "action": reply.action,
                              "intent": reply.intent, "confidence": round(float(reply.confidence), 4),
                              "turn_id": reply.turn_id,
                              **({"faq_id": reply.sources[0].faq_id} if reply.action == "answer_faq" and reply.sources
                                 else {})})
        # The state and the transcript lines commit together (one transaction when the store has them).
        together = getattr(self.sessions, "transaction", None)
        with together() if together is not None else contextlib.nullcontext():
            self.sessions.save(state)
            if self.transcripts is not None:
                self.transcripts.append_transcript(state.session_id, "user", user_text, turn_id=reply.turn_id)
                self.transcripts.append_transcript(state.session_id, "assistant", bot_text, reply.action,
                                                   reply.intent, float(reply.confidence), turn_id=reply.turn_id,
                                                   model_version=self.model_version, latency_ms=latency_ms,
                                                   details=details)
        stages["store"] = (time.perf_counter() - t) * 1000

    def history(self, session_id: str) -> list[dict[str, Any]]:
        return self.sessions.load(session_id).history

    def reset(self, session_id: str) -> None:
        self.sessions.save(SessionState(session_id))
