"""Saved session state is checked when it is read back (a bad one never blocks a customer), and
the per-session locks do not grow with the number of sessions ever seen."""
import gc
import json
import logging
import threading

import pytest

from service.sessions import SessionLocks, SessionState


@pytest.mark.parametrize("field,bad", [
    ("history", "not a list"),
    ("history", [{"role": "user"}]),                 # a turn without its text
    ("history", [["user", "hi"]]),
    ("flow", {"name": "cancel_order"}),              # no slots, attempts or stage
    ("flow", {"name": "x", "slots": {"order_id": {"nested": 1}}, "attempts": {}, "stage": "slots"}),
    ("flow", {"name": "x", "slots": {}, "attempts": {}, "stage": "limbo"}),
    ("suspended_flows", [None]),
    ("verified_orders", ["HC-104233"]),             # the old format: no expiry, asked again
    ("failed_turns", "3"),
    ("handoff", "yes"),
    ("pending_clarify", [1, 2]),
])
def test_a_malformed_field_is_reset_with_a_log_line(make_store, caplog, field, bad):
    s = make_store()
    good = SessionState("x", history=[{"role": "user", "text": "hi"}], ticket_id="T-00009")
    data = good.to_dict()
    data[field] = bad
    s._run("INSERT INTO sessions VALUES ('x', :state, 0)", {"state": json.dumps(data)})
    with caplog.at_level(logging.WARNING):
        state = s.load("x")
    assert getattr(state, field) == getattr(SessionState("x"), field)
    assert field in caplog.text
    if field != "history":
        assert state.history == good.history                # the rest is kept


@pytest.mark.parametrize("raw", ["{not json", "[]", '{"history": []}', '{"session_id": "other"}', "null"])
def test_an_unreadable_state_starts_afresh(make_store, caplog, raw):
    s = make_store()
    s._run("INSERT INTO sessions VALUES ('x', :state, 0)", {"state": raw})
    with caplog.at_level(logging.WARNING):
        state = s.load("x")
    assert state.session_id == "x" and state.flow is None and "session x" in caplog.text


def test_an_unknown_flow_is_dropped_by_the_runner(make_store, caplog):
    import numpy as np

    from service.flows import FlowRunner
    from service.nlu import NLUResult

    s = make_store()
    state = SessionState("x", flow={"name": "teleport_order", "slots": {}, "attempts": {}, "stage": "slots"},
                         suspended_flows=[{"name": "gone", "slots": {}, "attempts": {}, "stage": "slots"}])
    s.save(state)
    with caplog.at_level(logging.WARNING):
        state = s.load("x")
        result = FlowRunner(s).handle(state, "hello", NLUResult("greeting", 0.9, [], np.zeros(4, np.float32)))
    assert result.reply is None and state.flow is None and state.suspended_flows == []
    assert "teleport_order" in caplog.text


def test_session_locks_are_pruned():
    locks = SessionLocks()
    for i in range(10_000):
        with locks[f"s{i}"]:
            pass
    gc.collect()
    assert len(locks) == 0


def test_session_lock_is_shared_while_held():
    locks = SessionLocks()
    inside, order = threading.Event(), []

    def second():
        with locks["a"]:
            order.append("second")

    with locks["a"]:
        t = threading.Thread(target=second)
        t.start()
        inside.wait(0.2)
        order.append("first")
    t.join()
    assert order == ["first", "second"]
