"""Replay held-out dialogs through the real `Assistant`, turn by turn, and score every turn.

Dialog format (JSON Lines): `{"id", "turns": [{"user": "...", "expect": {...}}], "expect_state"?: {...}}`.
A turn is checked only on what its `expect` states; every key is optional:
- `intent`: the reply's intent label (a diagnostic: it does not count towards resolution).
- `action`: the reply's action; `not_action`: an action, or a list of actions, the reply must not take.
  A stated `recommend` is also met by `compare`: both show the customer products, and a side-by-side
  comparison is how the products a customer named are shown (`product_ids` still says which ones).
- `faq_id`: the FAQ answered (`answer_faq` with it as the first source); `faq_ids`: a list of
  acceptable FAQ ids, any of them answered first is a hit.
- `product_ids`: the suggestions include at least one of these product ids.
- `handoff`: whether the reply hands the conversation to a person.
- `reply_contains`: a string, or a list of strings, that must all appear in the reply text
  (case-insensitive).
`expect_state` (dialog level) checks the store after the last turn: `order` (the order the checks
are about), its `status`, `refund_status`, `shipping_address` (contained, case-insensitive),
`return_created` (a return was opened on it during the dialog), `fee` (that return's restocking fee
as a fraction of the order total, ±0.005), `refund_amount` (±0.01), and `writes`: how many of the
orders the dialog mentions it changed (status, address or refund status, or a return opened).

Metric definitions (all in [0, 1]; None when there is nothing to count):
- resolution: dialogs in which every turn was customer-visibly right and the end-of-dialog state
  checks passed / dialogs. A turn is customer-visibly right when it met every stated expectation
  except the intent label (action, not_action, FAQ, products, handoff, reply text).
- turn_resolution: customer-visibly right turns / all turns.
- intent_accuracy: turns whose reply intent equals the stated intent / turns that state an intent.
- action_accuracy: turns whose reply action meets the stated one (equal, or `compare` for `recommend`) /
  turns that state an action.
- faq_hit_at_1: turns answered (`answer_faq`) with a stated FAQ as the first source /
  turns that state faq_id or faq_ids. A clarifying question that lists the right FAQ is not a hit.
- product_hit: turns whose suggested products include any stated product id / turns that state
  product_ids.
- turn_success: turns that met every stated expectation (intent included) / all turns.
- task_success: dialogs in which every turn met every stated expectation (intent included) and
  the end-of-dialog state checks passed / dialogs.
- state_success: dialogs whose end-of-dialog state checks all passed / dialogs that state some.
- containment: dialogs the assistant finished without handing off to a human / dialogs.
- contained_success: dialogs with task success and no handoff / dialogs.
- handoff_precision / handoff_recall: per dialog, predicted = some reply had `handoff`,
  expected = some turn states `handoff: true` or `action: handoff`; sklearn precision/recall.
- unnecessary_handoff_rate: dialogs handed off that expected no handoff / dialogs that expected none.
- fallback_rate: turns whose reply action is `fallback` / all turns.
- internal_errors: turns where the assistant caught an exception and apologised (a count; should be 0).

Error analysis (`details["error_analysis"]`): every failed turn gets one cause (`CAUSES`, first
matching rule of `classify_turn`), every failed state check the cause `state_check_failed`; the
causes are counted, each with up to 3 examples. The examples of turns name the turn
(`dialog_id`, `turn`) in `failed_turns`, which holds the message: the console's Model tab leaves that
list out, and with it every customer message.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, precision_score, recall_score

from core.errors import DataError
from evaluation.base import EvalResult, Evaluator, finite, ratio, read_records
from service import smalltalk
from service.flows.slots import BARE_ORDER_NUMBER, ORDER_ID
from service.reply import ACTIONS, Reply

log = logging.getLogger(__name__)

EXPECT_KEYS = ("intent", "action", "faq_id", "faq_ids", "product_ids", "handoff", "not_action", "reply_contains")
# Every expectation but the intent label is customer-visible (what resolution counts).
VISIBLE_KEYS = tuple(k for k in EXPECT_KEYS if k != "intent")
ORDER_STATE_KEYS = ("status", "refund_status", "shipping_address", "return_created", "fee", "refund_amount")
STATE_KEYS = ("order", *ORDER_STATE_KEYS, "writes")
NO_VALUE = "<none>"
MAX_EXAMPLES = 3

# Why a turn failed, in the order the report lists causes of equal count (see `classify_turn`).
CAUSES = {
    "wrong_faq": "answered another FAQ",
    "clarified_right_candidate": "asked to clarify, the right answer among the candidates",
    "clarified_wrong_candidates": "asked to clarify, the right answer not among the candidates",
    "faq_instead_of_task": "answered an FAQ instead of starting a flow or searching products",
    "wrong_flow": "started the wrong flow",
    "flow_instead_of_answer": "started a flow when an answer (FAQ, products, small talk) was expected",
    "out_of_scope_in_scope": "flagged out of scope, but the message is in scope",
    "fallback": "fell back (asked to rephrase) instead of answering",
    "unnecessary_handoff": "handed off to a person when it should not have",
    "missed_handoff": "did not hand off when it should have",
    "wrong_products": "suggested none of the expected products",
    "reply_missing_content": "the reply text lacks expected content",
    "forbidden_action": "took an action the turn rules out",
    "wrong_action": "another action than the expected one",
    "internal_error": "the assistant failed internally",
    "state_check_failed": "end-of-dialog state check failed (the store is not as expected)",
    "intent_only": "wrong intent label only (the reply itself was right)",
}


@dataclass
class Turn:
    user: str
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass
class Dialog:
    id: str
    turns: list[Turn]
    expect_state: dict[str, Any] = field(default_factory=dict)

    @property
    def expects_handoff(self) -> bool:
        return any(t.expect.get("handoff") is True or t.expect.get("action") == "handoff" for t in self.turns)

    def order_ids(self) -> list[str]:
        """The orders the dialog is about: `expect_state.order` and every order number its messages name
        (read the way the flows read them)."""
        found = [str(self.expect_state["order"]).upper()] if self.expect_state.get("order") else []
        for t in self.turns:
            found += [f"HC-{m.group(1)}" for m in ORDER_ID.finditer(t.user)]
            found += [f"HC-{m.group(1)}" for m in BARE_ORDER_NUMBER.finditer(t.user)]
        return list(dict.fromkeys(found))


def _strings(value: Any, what: str, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise DataError(f"{where}: '{what}' must be a non-empty string or a non-empty list of them")
    return list(items)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_state_spec(spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, dict) or not spec:
        raise DataError(f"{where}: 'expect_state' must be a non-empty object")
    unknown = sorted(set(spec) - set(STATE_KEYS))
    if unknown:
        raise DataError(f"{where}: unknown state check(s) {', '.join(unknown)} (known: {', '.join(STATE_KEYS)})")
    if set(spec) & set(ORDER_STATE_KEYS) and not spec.get("order"):
        raise DataError(f"{where}: 'expect_state' checks an order but names none (add \"order\": \"HC-123456\")")
    if "order" in spec and not (isinstance(spec["order"], str) and ORDER_ID.fullmatch(spec["order"].strip())):
        raise DataError(f"{where}: 'expect_state.order' must be an order number like HC-123456")
    for key in ("status", "refund_status", "shipping_address"):
        if key in spec and not (spec[key] is None or isinstance(spec[key], str)):
            raise DataError(f"{where}: 'expect_state.{key}' must be a string (or null)")
    if "return_created" in spec and not isinstance(spec["return_created"], bool):
        raise DataError(f"{where}: 'expect_state.return_created' must be true or false")
    if "fee" in spec and not (_number(spec["fee"]) and 0 <= spec["fee"] <= 1):
        raise DataError(f"{where}: 'expect_state.fee' is the restocking fee as a fraction of the order total (0 to 1)")
    if "refund_amount" in spec and not (_number(spec["refund_amount"]) and spec["refund_amount"] >= 0):
        raise DataError(f"{where}: 'expect_state.refund_amount' must be a number >= 0")
    if "writes" in spec and not (isinstance(spec["writes"], int) and not isinstance(spec["writes"], bool)
                                 and spec["writes"] >= 0):
        raise DataError(f"{where}: 'expect_state.writes' must be a whole number >= 0")
    return {**spec, "order": spec["order"].strip().upper()} if "order" in spec else dict(spec)


def load_dialogs(path: str | Path) -> list[Dialog]:
    """Read and validate a dialogs file; DataError names the dialog and what is wrong."""
    rows = read_records(path, ("id", "turns"), "dialog")
    dialogs, seen = [], set()
    for row in rows:
        did = str(row["id"])
        where = f"{path}: dialog {did!r}"
        if did in seen:
            raise DataError(f"{where}: duplicate dialog id")
        seen.add(did)
        if not isinstance(row["turns"], list) or not row["turns"]:
            raise DataError(f"{where}: 'turns' must be a non-empty list")
        turns = []
        for n, t in enumerate(row["turns"], 1):
            at = f"{where}, turn {n}"
            if not isinstance(t, dict) or not isinstance(t.get("user"), str):
                raise DataError(f"{at}: expected {{\"user\": \"...\", \"expect\": {{...}}}}")
            expect = t.get("expect") or {}
            if not isinstance(expect, dict):
                raise DataError(f"{at}: 'expect' must be an object")
            unknown = sorted(set(expect) - set(EXPECT_KEYS))
            if unknown:
                raise DataError(f"{at}: unknown expectation(s) {', '.join(unknown)} "
                                f"(known: {', '.join(EXPECT_KEYS)})")
            if "action" in expect and expect["action"] not in ACTIONS:
                raise DataError(f"{at}: unknown action {expect['action']!r} (known: {', '.join(ACTIONS)})")
            if "handoff" in expect and not isinstance(expect["handoff"], bool):
                raise DataError(f"{at}: 'handoff' must be true or false")
            expect = dict(expect)
            if "product_ids" in expect:
                ids = expect["product_ids"]
                expect["product_ids"] = [ids] if isinstance(ids, str) else [str(i) for i in ids]
            if "faq_ids" in expect:
                expect["faq_ids"] = _strings(expect["faq_ids"], "faq_ids", at)
            if "not_action" in expect:
                expect["not_action"] = _strings(expect["not_action"], "not_action", at)
                bad = [a for a in expect["not_action"] if a not in ACTIONS]
                if bad:
                    raise DataError(f"{at}: unknown action(s) {', '.join(map(repr, bad))} in 'not_action' "
                                    f"(known: {', '.join(ACTIONS)})")
            if "reply_contains" in expect:
                expect["reply_contains"] = _strings(expect["reply_contains"], "reply_contains", at)
            turns.append(Turn(t["user"], expect))
        state = _check_state_spec(row["expect_state"], where) if "expect_state" in row else {}
        dialogs.append(Dialog(did, turns, state))
    return dialogs


def actual_of(reply: Reply) -> dict[str, Any]:
    """The parts of a reply that expectations are checked against (and the failed-turn list shows)."""
    return {
        "intent": reply.intent,
        "confidence": round(float(reply.confidence or 0.0), 4),
        "action": reply.action,
        "faq_id": reply.sources[0].faq_id if reply.sources else None,
        "candidates": [s.faq_id for s in reply.sources],   # a clarifying question lists several
        "product_ids": [p.id for p in reply.products],
        "handoff": bool(reply.handoff),
        "text": reply.text[:200],
        "internal_error": reply.text == smalltalk.INTERNAL_ERROR,
    }


# (stated, taken) action pairs that look the same to the customer: products shown, side by side.
SHOWS_PRODUCTS = {("recommend", "compare")}


def expected_faqs(expect: dict[str, Any]) -> list[str]:
    return ([expect["faq_id"]] if "faq_id" in expect else []) + list(expect.get("faq_ids") or [])


def check_turn(expect: dict[str, Any], actual: dict[str, Any], text: str | None = None) -> dict[str, bool]:
    """One bool per stated expectation: did the reply meet it? `text`: the whole reply text (else
    `actual["text"]`, which is cut at 200 characters)."""
    checks: dict[str, bool] = {}
    if "intent" in expect:
        checks["intent"] = actual["intent"] == expect["intent"]
    if "action" in expect:
        checks["action"] = actual["action"] == expect["action"] or (expect["action"], actual["action"]) in SHOWS_PRODUCTS
    if "not_action" in expect:
        checks["not_action"] = actual["action"] not in expect["not_action"]
    if "faq_id" in expect:
        checks["faq_id"] = actual["action"] == "answer_faq" and actual["faq_id"] == expect["faq_id"]
    if "faq_ids" in expect:
        checks["faq_ids"] = actual["action"] == "answer_faq" and actual["faq_id"] in expect["faq_ids"]
    if "product_ids" in expect:
        checks["product_ids"] = bool(set(expect["product_ids"]) & set(actual["product_ids"]))
    if "handoff" in expect:
        checks["handoff"] = actual["handoff"] == expect["handoff"]
    if "reply_contains" in expect:
        body = (actual["text"] if text is None else text).casefold()
        checks["reply_contains"] = all(s.casefold() in body for s in expect["reply_contains"])
    return checks


def visibly_right(checks: dict[str, bool]) -> bool:
    """Every customer-visible expectation met (the intent label is not one)."""
    return all(ok for k, ok in checks.items() if k != "intent")


def classify_turn(expect: dict[str, Any], actual: dict[str, Any], checks: dict[str, bool],
                  flow_actions: frozenset[str] | set[str] | None = None) -> str:
    """The one cause (a key of CAUSES) of a failed turn: the first rule that matches."""
    if flow_actions is None:
        from service.domain import default_domain

        flow_actions = set(default_domain().flow_actions.values())
    failed = {k for k, ok in checks.items() if not ok}
    if not failed - {"intent"}:
        return "intent_only"
    act, exp_action = actual["action"], expect.get("action")
    if actual.get("internal_error"):
        return "internal_error"
    wants_handoff = expect.get("handoff") is True or exp_action == "handoff"
    if wants_handoff and not actual["handoff"]:
        return "missed_handoff"
    if actual["handoff"] and not wants_handoff and failed & {"handoff", "action", "not_action"}:
        return "unnecessary_handoff"
    if failed & {"action", "not_action", "faq_id", "faq_ids"}:
        faqs = expected_faqs(expect)
        if act == "out_of_scope":
            return "out_of_scope_in_scope"
        if act == "fallback":
            return "fallback"
        if act == "clarify":
            right = bool(set(faqs) & set(actual.get("candidates") or []))
            return "clarified_right_candidate" if right else "clarified_wrong_candidates"
        if act == "answer_faq" and (exp_action == "recommend" or exp_action in flow_actions):
            return "faq_instead_of_task"
        if act == "answer_faq" and faqs and actual["faq_id"] not in faqs:
            return "wrong_faq"
        if act in flow_actions and exp_action != act:
            return "wrong_flow" if exp_action in flow_actions else "flow_instead_of_answer"
        if "not_action" in failed:
            return "forbidden_action"
        return "wrong_action"
    if "product_ids" in failed:
        return "wrong_products"
    if "reply_contains" in failed:
        return "reply_missing_content"
    return "wrong_action"


# ---- end-of-dialog state ----------------------------------------------------------------------
def store_of(assistant: Any) -> Any:
    """The store the assistant's flows read and write (None without flows)."""
    return getattr(getattr(assistant, "flows", None), "store", None)


def _snapshot(store: Any, order_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What the state checks compare, through the store's public reads: each order's fields and returns."""
    out = {}
    for oid in order_ids:
        order = store.get_order(oid)
        if order is not None:
            out[oid] = {"status": order.status, "shipping_address": order.shipping_address,
                        "refund_status": order.refund_status, "total": order.total,
                        "returns": store.returns_for(oid)}
    return out


def _changed(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    if before is None:
        return False
    fields = ("status", "shipping_address", "refund_status")
    return any(before[k] != after[k] for k in fields) or len(after["returns"]) > len(before["returns"])


def check_state(spec: dict[str, Any], store: Any, before: dict[str, dict[str, Any]],
                order_ids: Sequence[str]) -> tuple[dict[str, bool], dict[str, Any]]:
    """(one bool per state check, what the store holds for each) after a dialog; `before` is the
    snapshot taken before its first turn."""
    if store is None:
        return {k: False for k in spec if k != "order"}, {"error": "the assistant has no store (no flows)"}
    after = _snapshot(store, order_ids)
    checks: dict[str, bool] = {}
    got: dict[str, Any] = {}
    oid = spec.get("order")
    if oid is not None:
        now, then = after.get(oid), before.get(oid)
        got["order"] = oid if now is not None else None
        checks["order"] = now is not None
        known = {r["return_id"] for r in (then or {}).get("returns", [])}
        opened = [r for r in (now or {}).get("returns", []) if r["return_id"] not in known]
        last = opened[-1] if opened else None
        for key in ("status", "refund_status"):
            if key in spec:
                got[key] = now[key] if now else None
                checks[key] = got[key] == spec[key]
        if "shipping_address" in spec:
            got["shipping_address"] = now["shipping_address"] if now else None
            want = spec["shipping_address"]
            checks["shipping_address"] = (got["shipping_address"] is None if want is None else
                                          " ".join(want.split()).casefold() in
                                          " ".join(str(got["shipping_address"] or "").split()).casefold())
        if "return_created" in spec:
            got["return_created"] = bool(opened)
            checks["return_created"] = got["return_created"] == spec["return_created"]
        if "fee" in spec:
            total = now["total"] if now else 0
            got["fee"] = round(last["restocking_fee"] / total, 4) if last is not None and total else None
            checks["fee"] = got["fee"] is not None and abs(got["fee"] - spec["fee"]) <= 0.005
        if "refund_amount" in spec:
            got["refund_amount"] = last["refund_amount"] if last is not None else None
            checks["refund_amount"] = got["refund_amount"] is not None and \
                abs(got["refund_amount"] - spec["refund_amount"]) <= 0.01
        if now is None:
            checks = {k: False for k in checks}
    if "writes" in spec:
        got["writes"] = sum(_changed(before.get(o), a) for o, a in after.items())
        checks["writes"] = got["writes"] == spec["writes"]
    return checks, got


AssistantFactory = Callable[[], Any]


class DialogEvaluator(Evaluator):
    """Replays each dialog in its own session of a fresh assistant (from `assistant_factory`).

    `run(assistant_factory)` calls the factory once per dialog, so one dialog's side effects
    (a cancelled order, a handoff) never change another's outcome; an `Assistant` instance is
    also accepted and then shared, each dialog in its own session (its state checks then compare
    against a snapshot of the orders taken before the dialog's first turn).
    """

    name = "dialog"

    def __init__(self, dialogs: Sequence[Dialog] | str | Path, max_failed_listed: int = 500):
        self.dialogs = load_dialogs(dialogs) if isinstance(dialogs, (str, Path)) else list(dialogs)
        self.max_failed_listed = max_failed_listed

    def run(self, target: AssistantFactory | Any) -> EvalResult:
        rows: list[dict[str, Any]] = []
        per_dialog: list[dict[str, Any]] = []
        flow_actions: set[str] | None = None
        for dialog in self.dialogs:
            assistant = target if hasattr(target, "respond") else target()
            if flow_actions is None:
                domain = getattr(assistant, "domain", None)
                if domain is None:
                    from service.domain import default_domain

                    domain = default_domain()
                flow_actions = set(domain.flow_actions.values())
            store = store_of(assistant) if dialog.expect_state else None
            order_ids = dialog.order_ids() if dialog.expect_state else []
            before = _snapshot(store, order_ids) if store is not None else {}
            session = f"eval-{dialog.id}"
            turn_rows = []
            for n, turn in enumerate(dialog.turns, 1):
                t0 = time.perf_counter()
                reply = assistant.respond(session, turn.user)
                latency_ms = (time.perf_counter() - t0) * 1000.0
                actual = actual_of(reply)
                checks = check_turn(turn.expect, actual, reply.text)
                passed = all(checks.values())
                turn_rows.append({"dialog_id": dialog.id, "turn": n, "user": turn.user, "expect": turn.expect,
                                  "actual": actual, "checks": checks, "passed": passed,
                                  "resolved": visibly_right(checks),
                                  "cause": None if passed else classify_turn(turn.expect, actual, checks, flow_actions),
                                  "latency_ms": latency_ms})
            state_checks, state_got = (check_state(dialog.expect_state, store, before, order_ids)
                                       if dialog.expect_state else ({}, {}))
            state_ok = all(state_checks.values())
            rows.extend(turn_rows)
            per_dialog.append({"id": dialog.id, "success": all(r["passed"] for r in turn_rows) and state_ok,
                               "resolved": all(r["resolved"] for r in turn_rows) and state_ok,
                               "handed_off": any(r["actual"]["handoff"] for r in turn_rows),
                               "expects_handoff": dialog.expects_handoff, "turns": len(turn_rows),
                               **({"expect_state": dialog.expect_state, "state": state_got,
                                   "state_failed": sorted(k for k, ok in state_checks.items() if not ok)}
                                  if dialog.expect_state else {})})
        return self._result(rows, per_dialog)

    def _result(self, rows: list[dict[str, Any]], per_dialog: list[dict[str, Any]]) -> EvalResult:
        def accuracy(key: str) -> tuple[float | None, int]:
            stated = [r for r in rows if key in r["expect"]]
            if not stated:
                return None, 0
            y_true = [str(r["expect"][key]) for r in stated]
            y_pred = [str(r["actual"][key]) if r["actual"][key] is not None else NO_VALUE for r in stated]
            return float(accuracy_score(y_true, y_pred)), len(stated)

        def hit(*keys: str) -> tuple[float | None, int]:
            stated = [r for r in rows if any(k in r["expect"] for k in keys)]
            return ratio(sum(all(r["checks"][k] for k in keys if k in r["checks"]) for r in stated),
                         len(stated)), len(stated)

        intent_acc, intent_n = accuracy("intent")
        action_acc, action_n = accuracy("action")
        faq_hit, faq_n = hit("faq_id", "faq_ids")
        product_hit, product_n = hit("product_ids")
        n_dialogs = len(per_dialog)
        expected = [d["expects_handoff"] for d in per_dialog]
        predicted = [d["handed_off"] for d in per_dialog]
        no_handoff_expected = [d for d in per_dialog if not d["expects_handoff"]]
        with_state = [d for d in per_dialog if "expect_state" in d]
        metrics: dict[str, float | int | None] = {
            "dialogs": n_dialogs,
            "turns": len(rows),
            "resolution": ratio(sum(d["resolved"] for d in per_dialog), n_dialogs),
            "turn_resolution": ratio(sum(r["resolved"] for r in rows), len(rows)),
            "intent_accuracy": intent_acc, "intent_turns": intent_n,
            "action_accuracy": action_acc, "action_turns": action_n,
            "faq_hit_at_1": faq_hit, "faq_turns": faq_n,
            "product_hit": product_hit, "product_turns": product_n,
            "turn_success": ratio(sum(r["passed"] for r in rows), len(rows)),
            "task_success": ratio(sum(d["success"] for d in per_dialog), n_dialogs),
            "state_success": ratio(sum(not d["state_failed"] for d in with_state), len(with_state)),
            "state_dialogs": len(with_state),
            "containment": ratio(sum(not d["handed_off"] for d in per_dialog), n_dialogs),
            "contained_success": ratio(sum(d["success"] and not d["handed_off"] for d in per_dialog), n_dialogs),
            "handoff_precision": finite(precision_score(expected, predicted, zero_division=np.nan)) if n_dialogs else None,
            "handoff_recall": finite(recall_score(expected, predicted, zero_division=np.nan)) if n_dialogs else None,
            "expected_handoffs": sum(expected),
            "predicted_handoffs": sum(predicted),
            "unnecessary_handoff_rate": ratio(sum(d["handed_off"] for d in no_handoff_expected), len(no_handoff_expected)),
            "fallback_rate": ratio(sum(r["actual"]["action"] == "fallback" for r in rows), len(rows)),
            "internal_errors": sum(r["actual"]["internal_error"] for r in rows),
        }
        if metrics["internal_errors"]:
            log.warning("%d replayed turns failed inside the assistant (see the log above for the tracebacks)",
                        metrics["internal_errors"])
        failed_rows = [r for r in rows if not r["passed"]]
        failed = [{"dialog_id": r["dialog_id"], "turn": r["turn"], "user": r["user"], "expected": r["expect"],
                   "actual": {k: v for k, v in r["actual"].items() if k not in ("text", "internal_error", "candidates")}
                   | ({"candidates": r["actual"]["candidates"]} if r["actual"]["action"] == "clarify" else {})
                   | {"reply": r["actual"]["text"]},
                   "failed": sorted(k for k, ok in r["checks"].items() if not ok),
                   "cause": r["cause"], "resolved": r["resolved"]}
                  for r in failed_rows]
        analysis = error_analysis(failed, per_dialog)
        listed = failed[: self.max_failed_listed]
        if len(failed) > self.max_failed_listed:
            # The error analysis's examples stay listed (their messages live only in this list).
            wanted = {(e["dialog_id"], e["turn"]) for c in analysis["causes"] for e in c["examples"]}
            listed += [f for f in failed[self.max_failed_listed:] if (f["dialog_id"], f["turn"]) in wanted]
            log.info("%d failed turns; the report lists the first %d and the error analysis's examples "
                     "(the CSV has all)", len(failed), self.max_failed_listed)
        log.info("dialogs: %d dialogs, %d turns, resolution %s, task success %s, %d failed turns",
                 n_dialogs, len(rows), _pct(metrics["resolution"]), _pct(metrics["task_success"]), len(failed))
        header = ["dialog_id", "turn", "user", "expected", "intent", "confidence", "action", "faq_id",
                  "product_ids", "handoff", "passed", "resolved", "failed_checks", "cause", "latency_ms"]
        csv_rows = [[r["dialog_id"], r["turn"], r["user"], r["expect"], r["actual"]["intent"], r["actual"]["confidence"],
                     r["actual"]["action"], r["actual"]["faq_id"], r["actual"]["product_ids"], r["actual"]["handoff"],
                     r["passed"], r["resolved"], [k for k, ok in r["checks"].items() if not ok], r["cause"] or "",
                     round(r["latency_ms"], 3)]
                    for r in rows]
        details = {"failed_turns": listed, "failed_turn_count": len(failed), "error_analysis": analysis,
                   "dialogs": per_dialog}
        return EvalResult(self.name, metrics, details, header, csv_rows,
                          arrays={"latencies_ms": np.array([r["latency_ms"] for r in rows], dtype=float)})


def error_analysis(failed: list[dict[str, Any]], per_dialog: list[dict[str, Any]],
                   max_examples: int = MAX_EXAMPLES) -> dict[str, Any]:
    """Failed turns (and failed state checks) grouped by cause, most frequent first, with up to
    `max_examples` examples each. Turn examples are (dialog_id, turn) references into `failed`, which
    holds their messages; state examples carry what was expected and what the store held."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for f in failed:
        groups.setdefault(f["cause"], []).append({"dialog_id": f["dialog_id"], "turn": f["turn"]})
    for d in per_dialog:
        if d.get("state_failed"):
            groups.setdefault("state_check_failed", []).append(
                {"dialog_id": d["id"], "turn": "end", "expected": d["expect_state"], "got": d["state"],
                 "failed": d["state_failed"]})
    order = list(CAUSES)
    causes = [{"cause": c, "title": CAUSES[c], "count": len(items), "customer_visible": c != "intent_only",
               "examples": items[:max_examples]}
              for c, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), order.index(kv[0])))]
    return {"failed_turns": len(failed), "customer_visible_failed_turns": sum(not f["resolved"] for f in failed),
            "failed_state_dialogs": len(groups.get("state_check_failed", [])), "causes": causes}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
