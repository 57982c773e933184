"""Replay held-out dialogs through the real `Assistant`, turn by turn, and score every turn.

Dialog format (JSON Lines): `{"id", "turns": [{"user": "...", "expect": {"intent"?, "action"?,
"faq_id"?, "product_ids"?, "handoff"?}}]}`. A turn is checked only on what its `expect` states.

Metric definitions (all in [0, 1]; None when there is nothing to count):
- intent_accuracy: turns whose reply intent equals the stated intent / turns that state an intent.
- action_accuracy: turns whose reply action equals the stated action / turns that state an action.
- faq_hit_at_1: turns answered (`answer_faq`) with the stated FAQ as the first source /
  turns that state a faq_id. A clarifying question that lists the right FAQ is not a hit.
- product_hit: turns whose suggested products include any stated product id / turns that state
  product_ids.
- turn_success: turns that met every stated expectation / all turns.
- task_success: dialogs in which every turn met every stated expectation / dialogs.
- containment: dialogs the assistant finished without handing off to a human / dialogs.
- contained_success: dialogs with task success and no handoff / dialogs.
- handoff_precision / handoff_recall: per dialog, predicted = some reply had `handoff`,
  expected = some turn states `handoff: true` or `action: handoff`; sklearn precision/recall.
- unnecessary_handoff_rate: dialogs handed off that expected no handoff / dialogs that expected none.
- fallback_rate: turns whose reply action is `fallback` / all turns.
- internal_errors: turns where the assistant caught an exception and apologised (a count; should be 0).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, precision_score, recall_score

from core.errors import DataError
from evaluation.base import EvalResult, Evaluator, finite, ratio, read_records
from service import smalltalk
from service.reply import ACTIONS, Reply

log = logging.getLogger(__name__)

EXPECT_KEYS = ("intent", "action", "faq_id", "product_ids", "handoff")
NO_VALUE = "<none>"


@dataclass
class Turn:
    user: str
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass
class Dialog:
    id: str
    turns: list[Turn]

    @property
    def expects_handoff(self) -> bool:
        return any(t.expect.get("handoff") is True or t.expect.get("action") == "handoff" for t in self.turns)


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
            if not isinstance(t, dict) or not isinstance(t.get("user"), str):
                raise DataError(f"{where}, turn {n}: expected {{\"user\": \"...\", \"expect\": {{...}}}}")
            expect = t.get("expect") or {}
            if not isinstance(expect, dict):
                raise DataError(f"{where}, turn {n}: 'expect' must be an object")
            unknown = sorted(set(expect) - set(EXPECT_KEYS))
            if unknown:
                raise DataError(f"{where}, turn {n}: unknown expectation(s) {', '.join(unknown)} "
                                f"(known: {', '.join(EXPECT_KEYS)})")
            if "action" in expect and expect["action"] not in ACTIONS:
                raise DataError(f"{where}, turn {n}: unknown action {expect['action']!r} (known: {', '.join(ACTIONS)})")
            if "handoff" in expect and not isinstance(expect["handoff"], bool):
                raise DataError(f"{where}, turn {n}: 'handoff' must be true or false")
            if "product_ids" in expect:
                ids = expect["product_ids"]
                expect = {**expect, "product_ids": [ids] if isinstance(ids, str) else [str(i) for i in ids]}
            turns.append(Turn(t["user"], expect))
        dialogs.append(Dialog(did, turns))
    return dialogs


def actual_of(reply: Reply) -> dict[str, Any]:
    """The parts of a reply that expectations are checked against (and the failed-turn list shows)."""
    return {
        "intent": reply.intent,
        "confidence": round(float(reply.confidence or 0.0), 4),
        "action": reply.action,
        "faq_id": reply.sources[0].faq_id if reply.sources else None,
        "product_ids": [p.id for p in reply.products],
        "handoff": bool(reply.handoff),
        "text": reply.text[:200],
        "internal_error": reply.text == smalltalk.INTERNAL_ERROR,
    }


def check_turn(expect: dict[str, Any], actual: dict[str, Any]) -> dict[str, bool]:
    """One bool per stated expectation: did the reply meet it?"""
    checks: dict[str, bool] = {}
    if "intent" in expect:
        checks["intent"] = actual["intent"] == expect["intent"]
    if "action" in expect:
        checks["action"] = actual["action"] == expect["action"]
    if "faq_id" in expect:
        checks["faq_id"] = actual["action"] == "answer_faq" and actual["faq_id"] == expect["faq_id"]
    if "product_ids" in expect:
        checks["product_ids"] = bool(set(expect["product_ids"]) & set(actual["product_ids"]))
    if "handoff" in expect:
        checks["handoff"] = actual["handoff"] == expect["handoff"]
    return checks


AssistantFactory = Callable[[], Any]


class DialogEvaluator(Evaluator):
    """Replays each dialog in its own session of a fresh assistant (from `assistant_factory`).

    `run(assistant_factory)` calls the factory once per dialog, so one dialog's side effects
    (a cancelled order, a handoff) never change another's outcome; an `Assistant` instance is
    also accepted and then shared, each dialog in its own session.
    """

    name = "dialog"

    def __init__(self, dialogs: Sequence[Dialog] | str | Path, max_failed_listed: int = 500):
        self.dialogs = load_dialogs(dialogs) if isinstance(dialogs, (str, Path)) else list(dialogs)
        self.max_failed_listed = max_failed_listed

    def run(self, target: AssistantFactory | Any) -> EvalResult:
        rows: list[dict[str, Any]] = []
        per_dialog: list[dict[str, Any]] = []
        for dialog in self.dialogs:
            assistant = target if hasattr(target, "respond") else target()
            session = f"eval-{dialog.id}"
            turn_rows = []
            for n, turn in enumerate(dialog.turns, 1):
                t0 = time.perf_counter()
                reply = assistant.respond(session, turn.user)
                latency_ms = (time.perf_counter() - t0) * 1000.0
                actual = actual_of(reply)
                checks = check_turn(turn.expect, actual)
                turn_rows.append({"dialog_id": dialog.id, "turn": n, "user": turn.user, "expect": turn.expect,
                                  "actual": actual, "checks": checks, "passed": all(checks.values()),
                                  "latency_ms": latency_ms})
            rows.extend(turn_rows)
            per_dialog.append({"id": dialog.id, "success": all(r["passed"] for r in turn_rows),
                               "handed_off": any(r["actual"]["handoff"] for r in turn_rows),
                               "expects_handoff": dialog.expects_handoff, "turns": len(turn_rows)})
        return self._result(rows, per_dialog)

    def _result(self, rows: list[dict[str, Any]], per_dialog: list[dict[str, Any]]) -> EvalResult:
        def accuracy(key: str) -> tuple[float | None, int]:
            stated = [r for r in rows if key in r["expect"]]
            if not stated:
                return None, 0
            y_true = [str(r["expect"][key]) for r in stated]
            y_pred = [str(r["actual"][key]) if r["actual"][key] is not None else NO_VALUE for r in stated]
            return float(accuracy_score(y_true, y_pred)), len(stated)

        def hit(key: str) -> tuple[float | None, int]:
            stated = [r for r in rows if key in r["expect"]]
            return ratio(sum(r["checks"][key] for r in stated), len(stated)), len(stated)

        intent_acc, intent_n = accuracy("intent")
        action_acc, action_n = accuracy("action")
        faq_hit, faq_n = hit("faq_id")
        product_hit, product_n = hit("product_ids")
        n_dialogs = len(per_dialog)
        expected = [d["expects_handoff"] for d in per_dialog]
        predicted = [d["handed_off"] for d in per_dialog]
        no_handoff_expected = [d for d in per_dialog if not d["expects_handoff"]]
        metrics: dict[str, float | int | None] = {
            "dialogs": n_dialogs,
            "turns": len(rows),
            "intent_accuracy": intent_acc, "intent_turns": intent_n,
            "action_accuracy": action_acc, "action_turns": action_n,
            "faq_hit_at_1": faq_hit, "faq_turns": faq_n,
            "product_hit": product_hit, "product_turns": product_n,
            "turn_success": ratio(sum(r["passed"] for r in rows), len(rows)),
            "task_success": ratio(sum(d["success"] for d in per_dialog), n_dialogs),
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
        failed = [{"dialog_id": r["dialog_id"], "turn": r["turn"], "user": r["user"], "expected": r["expect"],
                   "actual": {k: v for k, v in r["actual"].items() if k not in ("text", "internal_error")}
                   | {"reply": r["actual"]["text"]},
                   "failed": sorted(k for k, ok in r["checks"].items() if not ok)}
                  for r in rows if not r["passed"]]
        if len(failed) > self.max_failed_listed:
            log.info("%d failed turns; the report lists the first %d (the CSV has all)", len(failed), self.max_failed_listed)
        log.info("dialogs: %d dialogs, %d turns, task success %s, %d failed turns",
                 n_dialogs, len(rows), _pct(metrics["task_success"]), len(failed))
        header = ["dialog_id", "turn", "user", "expected", "intent", "confidence", "action", "faq_id",
                  "product_ids", "handoff", "passed", "failed_checks", "latency_ms"]
        csv_rows = [[r["dialog_id"], r["turn"], r["user"], r["expect"], r["actual"]["intent"], r["actual"]["confidence"],
                     r["actual"]["action"], r["actual"]["faq_id"], r["actual"]["product_ids"], r["actual"]["handoff"],
                     r["passed"], [k for k, ok in r["checks"].items() if not ok], round(r["latency_ms"], 3)]
                    for r in rows]
        details = {"failed_turns": failed[: self.max_failed_listed], "failed_turn_count": len(failed),
                   "dialogs": per_dialog}
        return EvalResult(self.name, metrics, details, header, csv_rows,
                          arrays={"latencies_ms": np.array([r["latency_ms"] for r in rows], dtype=float)})


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
