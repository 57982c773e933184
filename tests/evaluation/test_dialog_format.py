"""The extended dialog format (faq_ids, not_action, reply_contains, expect_state), the headline
`resolution` metrics and the error analysis, on the hand-made world of test_evaluate.py.

dialogs_v2.jsonl: one single-purpose dialog per new key and per error cause, answered by the fake
NLU and indexes (no flows). flows.jsonl: order flows over a real FlowRunner and SQLite store seeded
with orders.jsonl (HC-100001 processing, $100, jo@example.com; HC-100002 delivered 2026-11-25,
$200, opened, sam@example.com; "today" is 2026-12-01), checked at the end with `expect_state`.
"""
from __future__ import annotations

import datetime as dt
import json
from itertools import count

import pytest

from core.config import FlowsConfig
from core.errors import DataError
from evaluation.dialog import CAUSES, DialogEvaluator, classify_turn, load_dialogs
from evaluation.report import SUMMARY_KEYS, build_report, render_markdown, write_report
from service.engine import Assistant
from service.flows import FlowRunner
from service.store import Store
from tests.evaluation.world import (
    FIXTURES,
    TH,
    WORLD,
    FakeFaqIndex,
    FakeRecommender,
    world_assistant,
    world_nlu,
)

# What the evaluator reported for dialogs.jsonl before the format was extended (HEAD's code, the
# same world): the old metrics must not move.
OLD_GOOD = {"dialogs": 6, "turns": 9, "intent_accuracy": 1.0, "intent_turns": 7, "action_accuracy": 7 / 9,
            "action_turns": 9, "faq_hit_at_1": 0.5, "faq_turns": 2, "product_hit": 1.0, "product_turns": 1,
            "turn_success": 6 / 9, "task_success": 0.5, "containment": 4 / 6, "contained_success": 2 / 6,
            "handoff_precision": 0.5, "handoff_recall": 0.5, "expected_handoffs": 2, "predicted_handoffs": 2,
            "unnecessary_handoff_rate": 0.25, "fallback_rate": 2 / 9, "internal_errors": 0}
OLD_BROKEN = {"dialogs": 6, "turns": 9, "intent_accuracy": 1 / 7, "intent_turns": 7, "action_accuracy": 2 / 9,
              "action_turns": 9, "faq_hit_at_1": 0.0, "faq_turns": 2, "product_hit": 0.0, "product_turns": 1,
              "turn_success": 1 / 9, "task_success": 0.0, "containment": 1.0, "contained_success": 0.0,
              "handoff_precision": None, "handoff_recall": 0.0, "expected_handoffs": 2, "predicted_handoffs": 0,
              "unnecessary_handoff_rate": 0.0, "fallback_rate": 0.0, "internal_errors": 0}


def _run(path, always=None):
    return DialogEvaluator(path).run(lambda: world_assistant(world_nlu(always)))


def _by_id(result):
    return {d["id"]: d for d in result.details["dialogs"]}


def _causes(result):
    return {c["cause"]: c for c in result.details["error_analysis"]["causes"]}


@pytest.fixture
def flow_factory(tmp_path):
    """A fresh store (seeded), flow runner and assistant for every dialog, as evaluate.py builds them."""
    n = count(1)

    def make():
        store = Store(tmp_path / f"eval-{next(n)}.sqlite")
        store.seed_orders(FIXTURES / "orders.jsonl")
        flows = FlowRunner(store, FlowsConfig(reference_date=dt.date(2026, 12, 1)), intent_threshold=TH.intent)
        return Assistant(nlu=world_nlu(), faq_index=FakeFaqIndex(WORLD["faqs"]),
                         recommender=FakeRecommender(WORLD["products"]), thresholds=TH,
                         faq_records={f["id"]: f for f in WORLD["faqs"]}, sessions=store, desk=store,
                         transcripts=store, flows=flows)
    return make


# ---------------------------------------------------------------- backwards compatibility
@pytest.mark.parametrize("always, old", [(None, OLD_GOOD), ("greeting", OLD_BROKEN)])
def test_old_format_file_scores_the_same_old_metrics(always, old):
    m = _run(FIXTURES / "dialogs.jsonl", always).metrics
    assert {k: m[k] for k in old} == pytest.approx(old)
    # The good model gets every intent right: resolution equals task success. The broken one (always
    # "greeting") also answers "thanks a lot" with the right small talk under the wrong label: it counts.
    if always is None:
        assert (m["resolution"], m["turn_resolution"]) == (0.5, pytest.approx(6 / 9))
    else:
        assert (m["resolution"], m["turn_resolution"]) == (0.0, pytest.approx(2 / 9))
    assert m["state_success"] is None and m["state_dialogs"] == 0


def test_resolution_ignores_intent_mismatches():
    by_id = _by_id(_run(FIXTURES / "dialogs_v2.jsonl"))
    d = by_id["v01_intent_only"]       # right FAQ answered, wrong intent label stated
    assert d["resolved"] and not d["success"]


def test_resolution_leads_the_summary_and_is_defined():
    assert SUMMARY_KEYS[:3] == (("dialog", "resolution"), ("dialog", "turn_resolution"), ("dialog", "task_success"))
    report = build_report({"model": "m"}, {"dialog": _run(FIXTURES / "dialogs.jsonl")})
    assert list(report["summary"])[:3] == ["dialog.resolution", "dialog.turn_resolution", "dialog.task_success"]
    assert {"resolution", "turn_resolution", "task_success"} <= set(report["definitions"])
    assert "intent" in report["definitions"]["resolution"]


# ---------------------------------------------------------------- the new turn keys
def test_new_turn_keys_and_metrics():
    result = _run(FIXTURES / "dialogs_v2.jsonl")
    by_id = _by_id(result)
    failed = {(f["dialog_id"], f["turn"]): f["failed"] for f in result.details["failed_turns"]}
    # faq_ids: any listed FAQ answered first; reply_contains is case-insensitive; not_action passes.
    assert by_id["v02_faq_ids_and_text"]["resolved"] and ("v02_faq_ids_and_text", 1) not in failed
    assert failed[("v03_faq_ids_wrong", 1)] == ["faq_ids"]
    assert failed[("v10_reply_text", 1)] == ["reply_contains"]          # "2 days" is not in "3-5 days."
    assert failed[("v11_not_action", 1)] == ["not_action"]              # small talk was ruled out
    assert failed[("v13_unnecessary_handoff", 2)] == ["not_action"]     # the second fallback hands off
    m = result.metrics
    # faq_hit_at_1 counts faq_id and faq_ids turns: v01, v02 hit; v03, v04, v07, v08 miss.
    assert (m["faq_hit_at_1"], m["faq_turns"]) == (pytest.approx(2 / 6), 6)
    # Resolved: v01 (intent only), v02. Of 14 turns, v01, v02 and v13's first turn are visibly right.
    assert m["resolution"] == pytest.approx(2 / 13) and m["turn_resolution"] == pytest.approx(3 / 14)
    assert m["task_success"] == pytest.approx(1 / 13)


def test_new_keys_are_validated(tmp_path):
    bad = tmp_path / "d.jsonl"
    cases = [({"not_action": "dance"}, "unknown action"), ({"faq_ids": []}, "faq_ids"),
             ({"reply_contains": ["ok", 3]}, "reply_contains")]
    for expect, message in cases:
        bad.write_text(json.dumps({"id": "x", "turns": [{"user": "hi", "expect": expect}]}) + "\n")
        with pytest.raises(DataError, match=message):
            load_dialogs(bad)
    for state, message in [({"status": "cancelled"}, "names none"), ({"order": "12"}, "HC-123456"),
                           ({"writes": -1}, "writes"), ({"order": "HC-100002", "fee": 15}, "fee"), ({"colour": "red"}, "unknown state"),
                           ({"order": "HC-100001", "return_created": "yes"}, "return_created")]:
        bad.write_text(json.dumps({"id": "x", "turns": [{"user": "hi"}], "expect_state": state}) + "\n")
        with pytest.raises(DataError, match=message):
            load_dialogs(bad)
    bad.write_text(json.dumps({"id": "x", "turns": [{"user": "hi", "expect": {"not_action": "handoff",
                                                                                "reply_contains": "Hi"}}],
                               "expect_state": {"order": "hc-100001", "writes": 0}}) + "\n")
    (d,) = load_dialogs(bad)
    assert d.turns[0].expect == {"not_action": ["handoff"], "reply_contains": ["Hi"]}
    assert d.expect_state == {"order": "HC-100001", "writes": 0}


# ---------------------------------------------------------------- end-of-dialog state
def test_state_checks_read_the_store_after_the_dialog(flow_factory):
    result = DialogEvaluator(FIXTURES / "flows.jsonl").run(flow_factory)
    by_id = _by_id(result)
    f1 = by_id["f1_cancel_yes"]
    assert f1["resolved"] and f1["state_failed"] == []
    assert f1["state"] == {"order": "HC-100001", "status": "cancelled", "refund_status": "pending", "writes": 1}
    assert by_id["f2_cancel_no"]["resolved"] and by_id["f2_cancel_no"]["state"] == {"writes": 0}
    f3 = by_id["f3_cancel_no_state_wrong"]     # every turn right, but nothing was cancelled
    assert not f3["resolved"] and not f3["success"] and f3["state_failed"] == ["status"]
    assert f3["state"]["status"] == "processing"
    f4 = by_id["f4_return_opened"]
    assert f4["resolved"], f4
    assert f4["state"] == {"order": "HC-100002", "status": "return_requested", "return_created": True,
                           "fee": 0.15, "refund_amount": 170.0, "writes": 1}
    m = result.metrics
    assert (m["state_dialogs"], m["state_success"]) == (4, 0.75)
    assert m["resolution"] == pytest.approx(3 / 5)      # f1, f2, f4 (f5 started the wrong flow)
    causes = _causes(result)
    assert causes["state_check_failed"]["count"] == 1
    (example,) = causes["state_check_failed"]["examples"]
    assert example["dialog_id"] == "f3_cancel_no_state_wrong" and example["got"]["status"] == "processing"
    assert causes["wrong_flow"]["examples"] == [{"dialog_id": "f5_wrong_flow", "turn": 1}]


def test_state_checks_on_a_shared_assistant_compare_with_a_snapshot(flow_factory):
    """One assistant (one store) for every dialog: f2 runs after f1 cancelled the order, and its
    `writes: 0` still holds, because writes are counted against the state before the dialog."""
    dialogs = [d for d in load_dialogs(FIXTURES / "flows.jsonl") if d.id in ("f1_cancel_yes", "f2_cancel_no")]
    by_id = _by_id(DialogEvaluator(dialogs).run(flow_factory()))
    assert by_id["f1_cancel_yes"]["resolved"]
    assert by_id["f2_cancel_no"]["state"] == {"writes": 0}


def test_state_checks_fail_without_a_store():
    dialogs = load_dialogs(FIXTURES / "flows.jsonl")[:1]
    d = _by_id(DialogEvaluator(dialogs).run(lambda: world_assistant(world_nlu())))["f1_cancel_yes"]
    assert not d["resolved"] and "no store" in d["state"]["error"]


# ---------------------------------------------------------------- error analysis
EXPECTED_CAUSES = {
    "v01_intent_only": "intent_only",
    "v03_faq_ids_wrong": "wrong_faq",
    "v04_clarify_right": "clarified_right_candidate",
    "v05_clarify_wrong": "clarified_wrong_candidates",
    "v06_faq_instead_of_search": "faq_instead_of_task",
    "v07_out_of_scope": "out_of_scope_in_scope",
    "v08_fallback": "fallback",
    "v09_wrong_products": "wrong_products",
    "v10_reply_text": "reply_missing_content",
    "v11_not_action": "forbidden_action",
    "v12_missed_handoff": "missed_handoff",
    "v13_unnecessary_handoff": "unnecessary_handoff",
}


def test_every_failed_turn_gets_its_cause():
    result = _run(FIXTURES / "dialogs_v2.jsonl")
    got = {f["dialog_id"]: f["cause"] for f in result.details["failed_turns"]}
    assert got == EXPECTED_CAUSES
    analysis = result.details["error_analysis"]
    assert analysis["failed_turns"] == 12 and analysis["customer_visible_failed_turns"] == 11
    causes = _causes(result)
    assert set(causes) == set(EXPECTED_CAUSES.values())
    assert all(c["count"] == 1 and c["title"] == CAUSES[k] for k, c in causes.items())
    assert causes["intent_only"]["customer_visible"] is False
    assert causes["wrong_faq"]["examples"] == [{"dialog_id": "v03_faq_ids_wrong", "turn": 1}]
    clarify = next(f for f in result.details["failed_turns"] if f["dialog_id"] == "v04_clarify_right")
    assert clarify["actual"]["candidates"] == ["faq_ship", "faq_ret"]


def test_old_dialogs_causes_and_example_limit():
    result = _run(FIXTURES / "dialogs.jsonl")
    assert {f["dialog_id"]: f["cause"] for f in result.details["failed_turns"]} == {
        "d4_wrong_faq": "wrong_faq", "d5_gibberish_handed_off": "unnecessary_handoff",
        "d6_missed_complaint": "missed_handoff"}
    # The broken model fails 8 turns; no cause lists more than 3 examples, counts stay whole.
    broken = _run(FIXTURES / "dialogs.jsonl", "greeting").details["error_analysis"]
    assert sum(c["count"] for c in broken["causes"]) == 8
    assert all(len(c["examples"]) == min(3, c["count"]) for c in broken["causes"])
    counts = [c["count"] for c in broken["causes"]]
    assert counts == sorted(counts, reverse=True)


def test_classify_turn_rules():
    flows = {"cancel_order", "start_return"}
    base = {"intent": "x", "action": "answer_faq", "faq_id": "a", "candidates": ["a"], "product_ids": [],
            "handoff": False, "internal_error": False}

    def cause(expect, **actual):
        a = {**base, **actual}
        from evaluation.dialog import check_turn
        return classify_turn(expect, a, check_turn(expect, a), flows)

    assert cause({"action": "start_return"}, action="cancel_order") == "wrong_flow"
    assert cause({"faq_id": "a"}, action="start_return") == "flow_instead_of_answer"
    assert cause({"action": "cancel_order"}) == "faq_instead_of_task"
    assert cause({"faq_id": "b"}, action="clarify", candidates=["a", "b"]) == "clarified_right_candidate"
    assert cause({"faq_id": "b"}, internal_error=True, action="fallback") == "internal_error"
    assert cause({"action": "handoff"}, action="fallback") == "missed_handoff"
    assert cause({"handoff": False}, action="handoff", handoff=True) == "unnecessary_handoff"
    assert cause({"action": "small_talk"}) == "wrong_action"


def test_report_shows_the_error_analysis_but_the_model_tab_shows_no_messages(tmp_path):
    import dataclasses

    from core.config import load_config
    from evaluation.report import load_report, update_latest
    from webapp.model_tab import load_latest

    result = _run(FIXTURES / "dialogs_v2.jsonl")
    config = dataclasses.replace(load_config(), artifacts_dir=tmp_path / "artifacts")
    out = config.reports_dir / "run"
    write_report(build_report({"model": "m"}, {"dialog": result}), out)
    report = load_report(out)
    assert report["sections"]["dialog"]["error_analysis"]["causes"]
    md = (out / "report.md").read_text()
    assert "### Error analysis (12 failed turns, 11 customer-visible; 0 dialogs failed a state check)" in md
    assert "| wrong_faq | answered another FAQ | 1 |" in md
    assert '"where is my parcel thingy"' in md           # an example, as written
    assert md.index("### Error analysis") < md.index("### Failed turns")
    update_latest(config.reports_dir, out)
    text, _ = load_latest(config)
    assert "### Error analysis" in text and "| wrong_faq | answered another FAQ | 1 |" in text
    for dialog in load_dialogs(FIXTURES / "dialogs_v2.jsonl"):
        for turn in dialog.turns:
            assert turn.user not in text, f"a held-out message on the public tab: {turn.user!r}"


def test_report_markdown_shows_state_examples(flow_factory):
    result = DialogEvaluator(FIXTURES / "flows.jsonl").run(flow_factory)
    md = render_markdown(build_report({"model": "m"}, {"dialog": result}))
    assert "`f3_cancel_no_state_wrong` (end of dialog)" in md and '"status": "processing"' in md


def test_the_demo_pack_test_knows_the_same_keys():
    from evaluation.dialog import EXPECT_KEYS, STATE_KEYS
    from tests.service import test_demo_pack

    assert test_demo_pack.EXPECT_KEYS == set(EXPECT_KEYS)
    assert test_demo_pack.STATE_KEYS == set(STATE_KEYS)


def test_a_comparison_meets_a_stated_recommend_but_not_the_other_way():
    from evaluation.dialog import check_turn
    shown = {"action": "compare", "product_ids": ["P1", "P2"], "faq_id": None, "handoff": False}
    assert check_turn({"action": "recommend", "product_ids": ["P2"]}, shown) == {"action": True, "product_ids": True}
    assert check_turn({"action": "recommend", "product_ids": ["P9"]}, shown)["product_ids"] is False
    listed = {**shown, "action": "recommend"}
    assert check_turn({"action": "compare"}, listed)["action"] is False
    assert check_turn({"action": "small_talk"}, shown)["action"] is False
