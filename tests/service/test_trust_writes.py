"""Trust, writes: a confirmed change is re-checked inside its transaction, happens at most once
per confirmation and per order, expires with its question, and leaves no raw personal data in
the saved session. Each test replays an attack that succeeded on the old code.

These drive `FlowRunner` directly over a seeded store, SQLite and PostgreSQL (no model needed), the way the
engine does: load the session, handle the message, save it.
"""
import copy
import json
import threading

import pytest
import sqlalchemy as sa

from service.store import WriteConflict
from tests.helpers import FLOW_POLICY as POLICY
from tests.helpers import nlu


def turn(runner, sid, text, intent="none", confidence=0.0, state=None):
    """One engine turn: load (unless a state is given), handle, save. Returns (text, handoff_reason, state)."""
    state = state if state is not None else runner.store.load(sid)
    result = runner.handle(state, text, nlu(intent, confidence))
    runner.store.save(state)
    return (result.reply.text if result.reply else None), result.handoff_reason, state


def to_return_confirmation(runner, sid, order="HC-104240", email="oliver.brandt@example.org"):
    turn(runner, sid, "I'd like to return an item", "return_request", 0.9)
    turn(runner, sid, order)
    turn(runner, sid, email)
    text, _, state = turn(runner, sid, "it's never been opened")
    assert "(yes/no)" in text
    return state


def to_cancel_confirmation(runner, sid, order="HC-104251", email="maya.okafor@example.com"):
    turn(runner, sid, "I want to cancel my order", "cancel_order", 0.9)
    turn(runner, sid, order)
    text, _, state = turn(runner, sid, email)
    assert "(yes/no)" in text
    return state


def open_returns(store, order_id):
    return [r for r in store.returns_for(order_id) if r["status"] in ("requested", "received")]


# -- re-checked at confirmation, at most once ---------------------------------------------------
def test_two_tabs_confirming_the_same_return_create_one(runner, store):
    # Old code: R-00001 and R-00002 for one order.
    to_return_confirmation(runner, "tab1")
    to_return_confirmation(runner, "tab2")
    first, _, _ = turn(runner, "tab1", "yes")
    second, _, _ = turn(runner, "tab2", "yes")
    assert "return R-" in first
    assert "already has a return" in second and "R-" not in second
    assert len(store.returns_for("HC-104240")) == 1


def test_concurrent_confirmations_from_threads_create_one_return(runner, store):
    for sid in ("t1", "t2", "t3", "t4"):
        to_return_confirmation(runner, sid)
    barrier, texts = threading.Barrier(4), {}

    def confirm(sid):
        barrier.wait()
        texts[sid] = turn(runner, sid, "yes")[0]

    threads = [threading.Thread(target=confirm, args=(sid,)) for sid in ("t1", "t2", "t3", "t4")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum("return R-" in t for t in texts.values()) == 1
    assert len(store.returns_for("HC-104240")) == 1


def test_order_delivered_while_the_question_waited_is_not_cancelled(runner, store):
    # Old code: eligibility was checked at verification only, so "yes" cancelled a delivered order.
    to_cancel_confirmation(runner, "s")
    store.update_order("HC-104251", status="delivered")
    text, handoff, _ = turn(runner, "s", "yes")
    assert "can't be cancelled" in text and handoff
    order = store.get_order("HC-104251")
    assert order.status == "delivered" and order.refund_status is None


def test_address_is_not_changed_after_the_order_shipped(runner, store):
    turn(runner, "s", "I need to change my delivery address", "change_address", 0.9)
    turn(runner, "s", "HC-104261")
    turn(runner, "s", "amara.mensah@example.com")
    assert "(yes/no)" in turn(runner, "s", "42 Elm Street, Springfield, IL 62701")[0]
    before = store.get_order("HC-104261").shipping_address
    store.update_order("HC-104261", status="shipped")
    text, _, _ = turn(runner, "s", "yes")
    assert "can't be changed" in text
    assert store.get_order("HC-104261").shipping_address == before


def test_yes_again_after_a_lost_session_save_does_not_write_twice(runner, store):
    # Old code: the write committed, the session save failed, the customer said "yes" again: a second return.
    state = to_return_confirmation(runner, "s")
    stale = copy.deepcopy(state)               # what the session row held before the write
    first, _, _ = turn(runner, "s", "yes", state=state)
    again, _, _ = turn(runner, "s", "yes", state=stale)    # the write's session save "never happened"
    assert "return R-00001" in first and "return R-00001" in again   # the first result, replayed
    assert len(store.returns_for("HC-104240")) == 1


def test_the_flows_end_is_saved_with_the_write(runner, store):
    state = to_return_confirmation(runner, "s")
    first = runner.handle(state, "yes", nlu()).reply.text   # the engine crashes before it saves the turn
    saved = store.load("s").flow                             # ... but the write's transaction saved the end
    assert saved["stage"] == "done" and saved["slots"] == {}
    assert turn(runner, "s", "yes")[0] == first              # "yes" again: the same answer, nothing new
    assert len(store.returns_for("HC-104240")) == 1 and store.load("s").flow is None


def test_after_a_lost_save_another_message_is_handled_normally(runner, store):
    state = to_return_confirmation(runner, "s")
    runner.handle(state, "yes", nlu())
    text, _, state = turn(runner, "s", "where is my order", "order_status", 0.9)
    assert "order number" in text and state.flow["name"] == "order_status"
    assert len(store.returns_for("HC-104240")) == 1


def test_a_confirmation_key_is_unique_in_the_database(store):
    store.record_confirmation("k1", "s", "cancel_order", "HC-104251", "done")
    with pytest.raises(sa.exc.IntegrityError):
        store.record_confirmation("k1", "s", "cancel_order", "HC-104251", "done again")
    assert store.confirmation_result("k1") == "done"


def test_at_most_one_open_return_per_order_is_a_database_constraint(store):
    store.create_return("HC-104240", "unopened", 0.0, 10.0)
    with pytest.raises(WriteConflict):
        store.create_return("HC-104240", "unopened", 0.0, 10.0)
    with pytest.raises(WriteConflict):       # even when the order's status would allow it
        store.create_return("HC-104240", "unopened", 0.0, 10.0, expect_status=("return_requested",))
    with pytest.raises(sa.exc.IntegrityError):
        store._run("INSERT INTO returns(order_id, condition, restocking_fee, refund_amount, status, "
                   "created_at) VALUES ('HC-104240', 'x', 0, 0, 'requested', 0)")
    assert len(open_returns(store, "HC-104240")) == 1


def test_conditional_update_writes_nothing_when_the_status_moved_on(store):
    with pytest.raises(WriteConflict):
        store.update_order("HC-104302", expect_status=("placed", "processing"), status="cancelled")
    assert store.get_order("HC-104302").status == "shipped"


def test_a_failed_write_inside_a_transaction_leaves_nothing_behind(store):
    with store.transaction():
        with pytest.raises(WriteConflict):
            store.create_return("HC-104302", "unopened", 0.0, 10.0)   # shipped: refused
        store.update_order("HC-104251", status="placed")
    assert store.get_order("HC-104302").status == "shipped" and store.returns_for("HC-104302") == []
    assert store.get_order("HC-104251").status == "placed"


# -- expiry --------------------------------------------------------------------------------------
def test_an_old_confirmation_is_asked_again(runner, store, clock):
    to_cancel_confirmation(runner, "s")
    clock.now += POLICY.confirmation_ttl_s + 1
    text, _, state = turn(runner, "s", "yes")
    assert "expired" in text and "(yes/no)" in text
    assert store.get_order("HC-104251").status == "processing"
    text, _, _ = turn(runner, "s", "yes")
    assert "is cancelled" in text and store.get_order("HC-104251").status == "cancelled"


def test_verification_expires_before_a_write(runner, store, clock):
    to_cancel_confirmation(runner, "s")
    clock.now += POLICY.verification_ttl_s + 1
    text, _, _ = turn(runner, "s", "yes")
    assert "email" in text and store.get_order("HC-104251").status == "processing"
    assert "(yes/no)" in turn(runner, "s", "maya.okafor@example.com")[0]
    assert "is cancelled" in turn(runner, "s", "yes")[0]


def test_a_verified_order_is_not_asked_again_within_the_time(runner, clock):
    turn(runner, "s", "where is my order", "order_status", 0.9)
    turn(runner, "s", "HC-104251")
    turn(runner, "s", "maya.okafor@example.com")
    clock.now += POLICY.verification_ttl_s - 60
    text, _, _ = turn(runner, "s", "cancel order HC-104251", "cancel_order", 0.9)
    assert "(yes/no)" in text
    clock.now += 120
    text, _, _ = turn(runner, "s", "no")
    text, _, _ = turn(runner, "s", "cancel order HC-104251", "cancel_order", 0.9)
    assert "email" in text and "(yes/no)" not in text


# -- no raw personal data in the saved session ---------------------------------------------------
def _saved(store, sid):
    return store._scalar("SELECT state FROM sessions WHERE session_id = :sid", {"sid": sid})


def test_saved_session_holds_no_email_and_no_address_after_the_write(runner, store):
    turn(runner, "s", "I need to change my delivery address", "change_address", 0.9)
    turn(runner, "s", "HC-104261 amara.mensah@example.com")
    assert "amara" not in _saved(store, "s")                       # verified: order id + expiry only
    turn(runner, "s", "42 Elm Street, Springfield, IL 62701")
    pending = json.loads(_saved(store, "s"))
    assert pending["flow"]["stage"] == "confirm" and "amara" not in _saved(store, "s")
    assert set(pending["verified_orders"]) == {"HC-104261"}
    text, _, _ = turn(runner, "s", "yes")
    assert "Springfield" in text                                   # the customer sees it; the engine redacts it
    assert "Elm Street" not in _saved(store, "s") and "amara" not in _saved(store, "s")
    stored = store._all("SELECT result FROM confirmations")
    assert stored and all("Elm Street" not in r["result"] for r in stored)
    assert store.get_order("HC-104261").shipping_address.startswith("42 Elm Street")


def test_a_wrong_email_is_not_kept_either(runner, store):
    turn(runner, "s", "where is my order", "order_status", 0.9)
    turn(runner, "s", "HC-104251")
    turn(runner, "s", "not.maya@example.com")
    assert "not.maya" not in _saved(store, "s")
