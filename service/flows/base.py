"""A tiny declarative flow runner: a flow is a list of slots, an eligibility check, an optional
confirmation and a final step. The runner does the rest: slot filling across turns, re-prompts
with a limit, topic switches (the flow is suspended and can be resumed), abandonment, and an
explicit confirmation before anything is written.

A flow module declares its flows in a module-level `FLOWS` tuple; `service.domain` collects them,
so the policy, the action list and the docs know every flow without listing it anywhere else.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Callable

from core.config import FlowsConfig
from service.domain import CONTROL, Domain, default_domain
from service.nlu import NLUResult
from service.phrases import ABANDON, NO, RESUME, YES
from service.reply import Reply
from service.sessions import SessionState
from service.store import Order, Store

log = logging.getLogger(__name__)

@dataclass
class FlowContext:
    """What a flow's functions see: the slots so far, the store, the order, the business rules."""
    store: Store
    slots: dict[str, Any]
    today: dt.date
    policy: FlowsConfig
    verified_orders: list[str]

    @property
    def order(self) -> Order | None:
        oid = self.slots.get("order_id")
        return self.store.get_order(oid) if oid else None


@dataclass(frozen=True)
class Slot:
    name: str
    prompt: str | Callable[[FlowContext], str]
    extract: Callable[[str, NLUResult, FlowContext], Any]      # the value in this message, or None
    validate: Callable[[Any, FlowContext], str | None] | None = None   # an error message, or None if fine
    skip: Callable[[FlowContext], bool] | None = None          # already known (e.g. email verified earlier)
    max_attempts: int = 3
    on_exhausted: str = "handoff"                               # what happens after max_attempts


@dataclass(frozen=True)
class Flow:
    name: str                 # stored in the session
    intent: str               # the intent that starts it
    action: str               # the Reply.action of every turn inside the flow
    title: str                # "checking your order status", for messages
    slots: tuple[Slot, ...]
    finish: Callable[[FlowContext], str]                      # does the work, returns the closing text
    check: Callable[[FlowContext], "Refusal | None"] | None = None  # once verified: is this allowed?
    confirm: Callable[[FlowContext], str] | None = None       # the question asked before writing anything


@dataclass(frozen=True)
class Refusal:
    """A request the policy does not allow; `handoff` when a person could still make an exception."""
    text: str
    handoff: bool = True


@dataclass
class FlowResult:
    reply: Reply | None = None          # None: the flow stepped aside and the message is handled normally
    note: str | None = None             # appended to the normal reply after a topic switch
    handoff_reason: str | None = None   # the engine opens a ticket


def _render(prompt: str | Callable[[FlowContext], str], ctx: FlowContext) -> str:
    return prompt(ctx) if callable(prompt) else prompt


class FlowRunner:
    """Runs the flows of a domain registry against session state; plugs into `Assistant(flows=...)`."""

    def __init__(self, store: Store, policy: FlowsConfig | None = None, *, domain: Domain | None = None,
                 intent_threshold: float = 0.5):
        self.domain = domain or default_domain()
        self.flows = dict(self.domain.flows)     # keyed by the intent that starts each
        self.by_name = {f.name: f for f in self.flows.values()}
        self.store = store
        self.policy = policy or FlowsConfig()
        self.intent_threshold = intent_threshold
        self._yes_no = self.domain.intents_of(CONTROL)

    def today(self) -> dt.date:
        return self.policy.reference_date or dt.date.today()

    def _ctx(self, state: SessionState, slots: dict[str, Any]) -> FlowContext:
        return FlowContext(self.store, slots, self.today(), self.policy, state.verified_orders)

    # -- entry point ----------------------------------------------------------------------------
    def handle(self, state: SessionState, text: str, nlu: NLUResult) -> FlowResult:
        confident = nlu.confidence >= self.intent_threshold
        if state.flow is None:
            if state.suspended_flows and RESUME.search(text):
                state.flow = state.suspended_flows.pop()
                flow = self.by_name[state.flow["name"]]
                if state.flow.get("stage") != "confirm" and self._fills_current(flow, state, text, nlu):
                    return self._on_slot(flow, state, text, nlu)   # "back to my return: jo@example.com"
                return FlowResult(self._reply(flow, "Sure, let's pick up where we left off. " +
                                              self._prompt_current(flow, state), nlu))
            flow = self.flows.get(nlu.intent)
            if flow is None:
                return FlowResult()
            return self._start(flow, state, text, nlu)

        flow = self.by_name[state.flow["name"]]
        if ABANDON.match(text):
            state.flow = None
            return FlowResult(self._reply(flow, f"OK, I've stopped {flow.title}. Nothing was changed. "
                                                "Is there anything else I can help with?", nlu))
        # A confident request for another flow replaces this one, keeping what we know (order, email).
        other = self.flows.get(nlu.intent)
        if confident and other is not None and other.name != flow.name and not self._fills_current(flow, state, text, nlu):
            carried = {k: v for k, v in state.flow["slots"].items() if k in ("order_id", "email")}
            state.flow = None
            return self._start(other, state, text, nlu, carried)
        if state.flow.get("stage") == "confirm":
            return self._on_confirmation(flow, state, text, nlu)
        return self._on_slot(flow, state, text, nlu)

    # -- steps --------------------------------------------------------------------------------
    def _start(self, flow: Flow, state: SessionState, text: str, nlu: NLUResult,
               carried: dict[str, Any] | None = None) -> FlowResult:
        # Coming back to a suspended flow of the same kind resumes it instead of starting over.
        for i, suspended in enumerate(state.suspended_flows):
            if suspended["name"] == flow.name:
                state.flow = state.suspended_flows.pop(i)
                break
        else:
            state.flow = {"name": flow.name, "slots": dict(carried or {}), "attempts": {}, "stage": "slots"}
        self._prefill(flow, state, text, nlu)   # "where is HC-104233" fills the order number at once
        return self._advance(flow, state, nlu)

    def _prefill(self, flow: Flow, state: SessionState, text: str, nlu: NLUResult) -> None:
        """Fill every empty slot this message answers, in order (one message may hold order and email)."""
        ctx = self._ctx(state, state.flow["slots"])
        for slot in flow.slots:
            if slot.name in ctx.slots or (slot.skip and slot.skip(ctx)):
                continue
            value = slot.extract(text, nlu, ctx)
            if value is None or (slot.validate is not None and slot.validate(value, ctx) is not None):
                break
            ctx.slots[slot.name] = value
            if slot.name == "email" and ctx.slots.get("order_id"):
                self._mark_verified(state, ctx.slots["order_id"])

    def _fills_current(self, flow: Flow, state: SessionState, text: str, nlu: NLUResult) -> bool:
        slot = self._current_slot(flow, state)
        return slot is not None and slot.extract(text, nlu, self._ctx(state, state.flow["slots"])) is not None

    def _current_slot(self, flow: Flow, state: SessionState) -> Slot | None:
        ctx = self._ctx(state, state.flow["slots"])
        for slot in flow.slots:
            if slot.name not in ctx.slots and not (slot.skip and slot.skip(ctx)):
                return slot
        return None

    def _on_slot(self, flow: Flow, state: SessionState, text: str, nlu: NLUResult) -> FlowResult:
        slot = self._current_slot(flow, state)
        if slot is None:
            return self._advance(flow, state, nlu)
        ctx = self._ctx(state, state.flow["slots"])
        value = slot.extract(text, nlu, ctx)
        if value is None and nlu.confidence >= self.intent_threshold and nlu.intent not in self._yes_no \
                and nlu.intent not in self.flows:
            # The customer changed the subject: park the flow; they can come back to it.
            state.suspended_flows = (state.suspended_flows + [state.flow])[-3:]
            state.flow = None
            return FlowResult(note=f"(We were {flow.title}. Say \"continue\" whenever you want to pick it up again.)")
        error = slot.validate(value, ctx) if value is not None and slot.validate else None
        if value is not None and error is None:
            ctx.slots[slot.name] = value
            if slot.name == "email" and ctx.slots.get("order_id"):
                self._mark_verified(state, ctx.slots["order_id"])
            state.flow["attempts"].pop(slot.name, None)
            self._prefill(flow, state, text, nlu)
            return self._advance(flow, state, nlu)
        attempts = state.flow["attempts"].get(slot.name, 0) + 1
        state.flow["attempts"][slot.name] = attempts
        if attempts >= slot.max_attempts:
            state.flow = None
            why = error or f"I still couldn't get the {slot.name.replace('_', ' ')}"
            if slot.on_exhausted == "handoff":
                return FlowResult(self._reply(flow, why + ".", nlu),
                                  handoff_reason=f"{flow.title}: {slot.name.replace('_', ' ')} could not be verified")
            return FlowResult(self._reply(flow, why + ". I've stopped " + flow.title + ".", nlu))
        lead = (error + " ") if error else "Sorry, I didn't catch that. "
        return FlowResult(self._reply(flow, lead + _render(slot.prompt, ctx), nlu))

    def _advance(self, flow: Flow, state: SessionState, nlu: NLUResult) -> FlowResult:
        ctx = self._ctx(state, state.flow["slots"])
        slot = self._current_slot(flow, state)
        # Policy is checked as soon as the customer is verified, before asking for anything else.
        refusal = flow.check(ctx) if flow.check and self._verified(ctx) else None
        if refusal:
            state.flow = None
            return FlowResult(self._reply(flow, refusal.text, nlu),
                              handoff_reason=f"request outside policy while {flow.title}" if refusal.handoff else None)
        if slot is not None:
            return FlowResult(self._reply(flow, _render(slot.prompt, ctx), nlu))
        if flow.confirm:
            state.flow["stage"] = "confirm"
            return FlowResult(self._reply(flow, flow.confirm(ctx), nlu))
        return self._finish(flow, state, ctx, nlu)

    def _on_confirmation(self, flow: Flow, state: SessionState, text: str, nlu: NLUResult) -> FlowResult:
        ctx = self._ctx(state, state.flow["slots"])
        yes = YES.match(text) or (nlu.intent == "affirm" and nlu.confidence >= self.intent_threshold)
        no = NO.match(text) or (nlu.intent == "deny" and nlu.confidence >= self.intent_threshold)
        if yes and not no:
            return self._finish(flow, state, ctx, nlu)
        if no:
            state.flow = None
            return FlowResult(self._reply(flow, "OK, I haven't changed anything. Is there anything else I can help with?", nlu))
        attempts = state.flow["attempts"].get("confirm", 0) + 1
        state.flow["attempts"]["confirm"] = attempts
        if attempts >= 3:
            state.flow = None
            return FlowResult(self._reply(flow, "I'll leave it there; nothing was changed.", nlu))
        return FlowResult(self._reply(flow, "Please answer yes or no. " + flow.confirm(ctx), nlu))

    def _finish(self, flow: Flow, state: SessionState, ctx: FlowContext, nlu: NLUResult) -> FlowResult:
        text = flow.finish(ctx)
        state.flow = None
        return FlowResult(self._reply(flow, text, nlu))

    def _prompt_current(self, flow: Flow, state: SessionState) -> str:
        ctx = self._ctx(state, state.flow["slots"])
        if state.flow.get("stage") == "confirm" and flow.confirm:
            return flow.confirm(ctx)
        slot = self._current_slot(flow, state)
        return _render(slot.prompt, ctx) if slot else ""

    @staticmethod
    def _verified(ctx: FlowContext) -> bool:
        oid = ctx.slots.get("order_id")
        return bool(oid) and (oid in ctx.verified_orders or "email" in ctx.slots)

    @staticmethod
    def _mark_verified(state: SessionState, order_id: str) -> None:
        if order_id not in state.verified_orders:
            state.verified_orders.append(order_id)

    @staticmethod
    def _reply(flow: Flow, text: str, nlu: NLUResult) -> Reply:
        return Reply(text, action=flow.action, intent=nlu.intent, confidence=nlu.confidence)
