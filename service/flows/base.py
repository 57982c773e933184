"""A tiny declarative flow runner: a flow is a list of slots, an eligibility check, an optional
confirmation and a final step. The runner does the rest: slot filling across turns, re-prompts
with a limit, topic switches (the flow is suspended and can be resumed), abandonment, and an
explicit confirmation before anything is written.

A flow module declares its flows in a module-level `FLOWS` tuple; `service.domain` collects them,
so the policy, the action list and the docs know every flow without listing it anywhere else.

Trust rules the runner enforces for every flow:
- A slot that `verifies` (the email on the order) is checked against the order at once and never
  kept: the session remembers only which orders are verified and until when
  (`FlowsConfig.verification_ttl_s`). Every failed check counts, also one made from the message
  that started the flow, in the flow and in the database (per order number and per session, see
  `Store.record_verification_failure`): back-off from the second failure, a lock and a person (a
  ticket) at the limit. The answer to a failed check is the same whether the order exists or not.
- A write happens only after an explicit "yes" to a confirmation that has not expired
  (`confirmation_ttl_s`) and while the order is still verified. The flow's `check` runs again
  inside the write's transaction, the store's writes are conditional on the order's status, the
  confirmation's idempotency key is recorded with the write (the same "yes" applied twice returns
  the first result), and the flow's end is saved with the session in that same transaction.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from core.config import FlowsConfig
from service.domain import CONTROL, Domain, default_domain
from service.nlu import NLUResult
from service.phrases import ABANDON, NO, RESUME, YES
from service.pii import redact
from service.reply import Reply
from service.sessions import SessionState
from service.store import Order, Store, WriteConflict

log = logging.getLogger(__name__)

MISMATCH = "That order number and email don't match our records."
ASK_BOTH = ("Please check both and send them again: the order number (it looks like HC-123456) and the email "
            "address you used for it.")
LOCKED = ("For your security I can't check that order here right now, so I've passed your request to a member of "
          "our team.")


@dataclass
class FlowContext:
    """What a flow's functions see: the slots so far, the store, the order, the business rules."""
    store: Store
    slots: dict[str, Any]
    today: dt.date
    policy: FlowsConfig
    verified_orders: list[str]       # orders verified in this session whose verification has not expired

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
    # A secret that proves who the customer is (the email on the order): `validate` checks it against
    # the order at once; it is never stored, failures are counted and rate-limited (see the module doc).
    verifies: bool = False


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


def answers_pending(flow: Flow, flow_state: dict[str, Any], text: str, nlu: NLUResult,
                    verified_orders: Any = ()) -> bool:
    """Whether a message answers what a running flow waits for: yes/no to its confirmation, a value for
    the slot it asks, or (while it asks for the email) a corrected order number. The policy reads it so
    that an answer said with feeling ("like I said it's dead", the right email after a wrong one) goes
    to the flow instead of a person. Extractors get a context without a store: they read the message."""
    if flow_state.get("stage") == "confirm":
        return bool(YES.match(text) or NO.match(text))
    if flow_state.get("stage") not in (None, "slots"):
        return False
    slots = dict(flow_state.get("slots") or {})
    ctx = FlowContext(store=None, slots=slots, today=dt.date.today(), policy=FlowsConfig(),  # type: ignore[arg-type]
                      verified_orders=list(verified_orders))
    earlier: list[Slot] = []
    for slot in flow.slots:
        if slot.name in slots or (slot.skip and slot.skip(ctx)):
            earlier.append(slot)
            continue
        asked = [slot] + ([s for s in earlier if not s.verifies] if slot.verifies else [])
        return any(s.extract(text, nlu, ctx) is not None for s in asked)
    return False


class _Refused(Exception):
    def __init__(self, refusal: Refusal):
        self.refusal = refusal


def _render(prompt: str | Callable[[FlowContext], str], ctx: FlowContext) -> str:
    return prompt(ctx) if callable(prompt) else prompt


class FlowRunner:
    """Runs the flows of a domain registry against session state; plugs into `Assistant(flows=...)`."""

    def __init__(self, store: Store, policy: FlowsConfig | None = None, *, domain: Domain | None = None,
                 intent_threshold: float = 0.5, clock: Callable[[], float] = time.time):
        self.domain = domain or default_domain()
        self.flows = dict(self.domain.flows)     # keyed by the intent that starts each
        self.by_name = {f.name: f for f in self.flows.values()}
        self.store = store
        self.policy = policy or FlowsConfig()
        self.intent_threshold = intent_threshold
        self.clock = clock                       # epoch seconds; tests move it to expire things
        self._yes_no = self.domain.intents_of(CONTROL)

    def today(self) -> dt.date:
        return self.policy.reference_date or dt.date.today()

    def _ctx(self, state: SessionState, slots: dict[str, Any]) -> FlowContext:
        now = self.clock()
        verified = [oid for oid, until in state.verified_orders.items() if until > now]
        return FlowContext(self.store, slots, self.today(), self.policy, verified)

    # -- entry point ----------------------------------------------------------------------------
    def handle(self, state: SessionState, text: str, nlu: NLUResult) -> FlowResult:
        self._repair(state)
        confident = nlu.confidence >= self.intent_threshold
        if state.flow is not None and state.flow.get("stage") == "done":
            # The turn that wrote was not saved by the engine (a crash): "yes" again gets the same answer.
            flow, key = self.by_name[state.flow["name"]], str(state.flow.get("confirm_key"))
            state.flow = None
            done = self.store.confirmation_result(key)
            if done is not None and YES.match(text):
                return FlowResult(self._reply(flow, done, nlu))
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
        # A confident request for another flow replaces this one, keeping the order number.
        other = self.flows.get(nlu.intent)
        if confident and other is not None and other.name != flow.name and not self._fills_current(flow, state, text, nlu):
            carried = {k: v for k, v in state.flow["slots"].items() if k == "order_id"}
            state.flow = None
            return self._start(other, state, text, nlu, carried)
        if state.flow.get("stage") == "confirm":
            return self._on_confirmation(flow, state, text, nlu)
        return self._on_slot(flow, state, text, nlu)

    def _repair(self, state: SessionState) -> None:
        """A saved flow this registry does not know (renamed, removed, tampered with) is dropped."""
        def known(f: dict[str, Any]) -> bool:
            flow = self.by_name.get(f.get("name"))
            oid = f.get("slots", {}).get("order_id")
            return flow is not None and (oid is None or isinstance(oid, str))
        if state.flow is not None and not known(state.flow):
            log.warning("session %s: dropped an unknown or malformed flow %r", state.session_id, state.flow.get("name"))
            state.flow = None
        kept = [f for f in state.suspended_flows if known(f) and f.get("stage") != "done"]
        if len(kept) != len(state.suspended_flows):
            log.warning("session %s: dropped unknown or malformed suspended flows", state.session_id)
            state.suspended_flows = kept

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
        # "where is HC-104233" fills the order number at once; a wrong email in it counts all the same.
        failed = self._prefill(flow, state, text, nlu)
        return failed or self._advance(flow, state, nlu)

    def _prefill(self, flow: Flow, state: SessionState, text: str, nlu: NLUResult) -> FlowResult | None:
        """Fill every empty slot this message answers, in order (one message may hold order and email).
        Returns the reply when a verification in it failed or was refused."""
        ctx = self._ctx(state, state.flow["slots"])
        for slot in flow.slots:
            if slot.name in ctx.slots or (slot.skip and slot.skip(ctx)):
                continue
            value = slot.extract(text, nlu, ctx)
            if value is None:
                break
            if slot.verifies:
                failed = self._verify(flow, slot, state, ctx, value, nlu)
                if failed is not None:
                    return failed
                ctx = self._ctx(state, state.flow["slots"])
                continue
            if slot.validate is not None and slot.validate(value, ctx) is not None:
                break
            ctx.slots[slot.name] = value
        return None

    def _verify(self, flow: Flow, slot: Slot, state: SessionState, ctx: FlowContext, value: Any,
                nlu: NLUResult) -> FlowResult | None:
        """Check a secret against the order (None when it matches: the order is verified). The answer
        to a failure does not depend on whether the order exists, and every failure counts."""
        now = self.clock()
        order_id = str(ctx.slots.get("order_id") or "")
        subjects = {f"order:{order_id}": self.policy.max_failures_per_order,
                    f"session:{state.session_id}": self.policy.max_failures_per_session}
        lock = self.store.verification_lock(subjects, now)
        if lock is not None and lock.hard:
            state.flow = None
            return FlowResult(self._reply(flow, LOCKED, nlu),
                              handoff_reason=f"{flow.title}: verification locked after repeated failed checks")
        if lock is not None:
            wait = max(1, math.ceil(lock.until - now))
            return FlowResult(self._reply(flow, f"There have been several attempts in a short time. Please wait "
                                                f"{wait} second{'s' if wait != 1 else ''}, then send the order "
                                                "number and email again.", nlu))
        error = slot.validate(value, ctx) if slot.validate else None
        if error is None:
            state.verified_orders = {oid: until for oid, until in state.verified_orders.items() if until > now}
            state.verified_orders[order_id] = now + self.policy.verification_ttl_s
            state.flow["attempts"].pop(slot.name, None)
            return None
        lock = self.store.record_verification_failure(subjects, now, lockout_s=self.policy.lockout_s,
                                                      backoff_s=self.policy.backoff_s)
        attempts = state.flow["attempts"].get(slot.name, 0) + 1
        state.flow["attempts"][slot.name] = attempts
        if (lock is not None and lock.hard) or attempts >= slot.max_attempts:
            state.flow = None
            return FlowResult(self._reply(flow, error, nlu),
                              handoff_reason=f"{flow.title}: {slot.name.replace('_', ' ')} could not be verified")
        return FlowResult(self._reply(flow, f"{error} {ASK_BOTH}", nlu))

    def _fills_current(self, flow: Flow, state: SessionState, text: str, nlu: NLUResult) -> bool:
        slot = self._current_slot(flow, state)
        if slot is None:
            return False
        ctx = self._ctx(state, state.flow["slots"])
        return slot.extract(text, nlu, ctx) is not None or (slot.verifies and self._corrects(flow, slot, text, nlu, ctx))

    def _corrects(self, flow: Flow, current: Slot, text: str, nlu: NLUResult, ctx: FlowContext,
                  apply: bool = False) -> bool:
        """While a secret is asked, a new value for an earlier slot ("HC-104203, sorry") replaces it."""
        changed = False
        for slot in flow.slots:
            if slot is current:
                break
            if slot.name not in ctx.slots or slot.verifies:
                continue
            value = slot.extract(text, nlu, ctx)
            if value is not None and value != ctx.slots[slot.name] and \
                    (slot.validate is None or slot.validate(value, ctx) is None):
                if apply:
                    ctx.slots[slot.name] = value
                changed = True
        return changed

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
        corrected = slot.verifies and self._corrects(flow, slot, text, nlu, ctx, apply=True)
        value = slot.extract(text, nlu, ctx)
        if corrected and value is None:
            return self._advance(flow, state, nlu)          # a new order number: ask its email
        if value is None and nlu.confidence >= self.intent_threshold and nlu.intent not in self._yes_no \
                and nlu.intent not in self.flows:
            # The customer changed the subject: park the flow; they can come back to it.
            state.suspended_flows = (state.suspended_flows + [state.flow])[-3:]
            state.flow = None
            return FlowResult(note=f"(We were {flow.title}. Say \"continue\" whenever you want to pick it up again.)")
        if value is not None and slot.verifies:
            failed = self._verify(flow, slot, state, ctx, value, nlu)
            if failed is not None:
                return failed
            return self._prefill(flow, state, text, nlu) or self._advance(flow, state, nlu)
        error = slot.validate(value, ctx) if value is not None and slot.validate else None
        if value is not None and error is None:
            ctx.slots[slot.name] = value
            state.flow["attempts"].pop(slot.name, None)
            return self._prefill(flow, state, text, nlu) or self._advance(flow, state, nlu)
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
        # Policy is checked as soon as the customer is verified, before asking for anything else
        # (and again inside the write's transaction, see `_finish`).
        refusal = flow.check(ctx) if flow.check and self._verified(ctx) else None
        if refusal:
            return self._refuse(flow, state, refusal, nlu)
        if slot is not None:
            return FlowResult(self._reply(flow, _render(slot.prompt, ctx), nlu))
        if flow.confirm:
            state.flow["stage"] = "confirm"
            # A fresh idempotency key for this question: the write it leads to happens at most once.
            state.flow["confirm_key"] = uuid.uuid4().hex
            state.flow["confirm_at"] = self.clock()
            return FlowResult(self._reply(flow, flow.confirm(ctx), nlu))
        return self._finish(flow, state, ctx, nlu)

    def _refuse(self, flow: Flow, state: SessionState, refusal: Refusal, nlu: NLUResult) -> FlowResult:
        state.flow = None
        return FlowResult(self._reply(flow, refusal.text, nlu),
                          handoff_reason=f"request outside policy while {flow.title}" if refusal.handoff else None)

    def _on_confirmation(self, flow: Flow, state: SessionState, text: str, nlu: NLUResult) -> FlowResult:
        ctx = self._ctx(state, state.flow["slots"])
        yes = YES.match(text) or (nlu.intent == "affirm" and nlu.confidence >= self.intent_threshold)
        no = NO.match(text) or (nlu.intent == "deny" and nlu.confidence >= self.intent_threshold)
        if yes and not no:
            if any(s.verifies for s in flow.slots) and not self._verified(ctx):
                # The verification ran out while the question waited: ask for the email again first.
                state.flow["stage"] = "slots"
                self._drop_confirmation(state)
                slot = self._current_slot(flow, state)
                prompt = _render(slot.prompt, ctx) if slot else ""
                return FlowResult(self._reply(flow, "For your security, please confirm it's you once more before "
                                                    "I change anything. " + prompt, nlu))
            asked = state.flow.get("confirm_at")
            if not state.flow.get("confirm_key") or not isinstance(asked, (int, float)) \
                    or self.clock() - asked > self.policy.confirmation_ttl_s:
                # An old question: the order may have changed since; check and ask again.
                self._drop_confirmation(state)
                state.flow["stage"] = "slots"
                result = self._advance(flow, state, nlu)
                if result.reply is not None and state.flow is not None and state.flow.get("stage") == "confirm":
                    result.reply.text = "That question has expired, so let me ask again. " + result.reply.text
                return result
            return self._finish(flow, state, ctx, nlu)
        if no:
            state.flow = None
            return FlowResult(self._reply(flow, "OK, I haven't changed anything. Is there anything else I can help with?", nlu))
        if self._asks_something(text, nlu):
            # A question while the yes/no waits ("how long does the refund take?"): it is answered as usual
            # and the confirmation asked again underneath; the flow stays pending with the same key.
            state.flow["confirm_at"] = self.clock()
            return FlowResult(note=flow.confirm(ctx))
        attempts = state.flow["attempts"].get("confirm", 0) + 1
        state.flow["attempts"]["confirm"] = attempts
        if attempts >= 3:
            state.flow = None
            return FlowResult(self._reply(flow, "I'll leave it there; nothing was changed.", nlu))
        return FlowResult(self._reply(flow, "Please answer yes or no. " + flow.confirm(ctx), nlu))

    def _asks_something(self, text: str, nlu: NLUResult) -> bool:
        """Neither yes nor no but a question or a request of its own: a confident intent outside yes/no
        and the flows, or a question mark."""
        if nlu.intent in self._yes_no or nlu.intent in self.flows:
            return False
        return nlu.confidence >= self.intent_threshold or text.rstrip().endswith("?")

    @staticmethod
    def _drop_confirmation(state: SessionState) -> None:
        state.flow.pop("confirm_key", None)
        state.flow.pop("confirm_at", None)

    def _finish(self, flow: Flow, state: SessionState, ctx: FlowContext, nlu: NLUResult) -> FlowResult:
        if not flow.confirm:                   # reads only (order status, refund status)
            text = flow.finish(ctx)
            state.flow = None
            return FlowResult(self._reply(flow, text, nlu))
        key = str(state.flow["confirm_key"])
        try:
            with self.store.transaction():
                # Inside the write's transaction: nothing can change the order between this check and the write.
                done = self.store.confirmation_result(key)
                if done is None:
                    refusal = flow.check(ctx) if flow.check else None
                    if refusal:
                        raise _Refused(refusal)
                    text = flow.finish(ctx)
                    # Kept redacted: the answer may hold the new address, which the database keeps only on the order.
                    self.store.record_confirmation(key, state.session_id, flow.name, ctx.slots.get("order_id"),
                                                   redact(text))
                else:
                    text = done                 # this confirmation was applied already: its first answer
                # The flow's end is saved with the write: a marker (no slots) that lets a "yes" repeated
                # after a crash, before the engine saved the turn, get this answer again.
                state.flow = {"name": flow.name, "slots": {}, "attempts": {}, "stage": "done", "confirm_key": key}
                self.store.save(state)
            state.flow = None
        except _Refused as refused:
            return self._refuse(flow, state, refused.refusal, nlu)
        except WriteConflict as exc:
            log.warning("session %s: %s", state.session_id, exc)
            refusal = flow.check(ctx) if flow.check else None
            return self._refuse(flow, state, refusal or Refusal(
                "The order changed while we were talking, so I haven't changed anything. I've asked a member of "
                "our team to look at it."), nlu)
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
        return bool(oid) and oid in ctx.verified_orders

    @staticmethod
    def _reply(flow: Flow, text: str, nlu: NLUResult) -> Reply:
        return Reply(text, action=flow.action, intent=nlu.intent, confidence=nlu.confidence)
