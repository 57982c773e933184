"""Trust, verification: every failed order number + email check counts (also one in the message
that starts a flow), failures are counted per order and per session in the database with back-off
and a lock that hands off to a person, and no answer tells whether an order number exists.
Each test replays an attack that succeeded on the old code.
"""
import dataclasses
import json

from service.flows import FlowRunner
from service.flows.base import LOCKED
from tests.helpers import DEMO_ORDERS as ORDERS
from tests.helpers import FLOW_POLICY as POLICY
from tests.helpers import nlu


def turn(runner, sid, text, intent="none", confidence=0.0):
    state = runner.store.load(sid)
    result = runner.handle(state, text, nlu(intent, confidence))
    runner.store.save(state)
    return (result.reply.text if result.reply else ""), result.handoff_reason


def demo_orders():
    return {json.loads(line)["order_id"]: json.loads(line)["email"] for line in ORDERS.read_text().splitlines()
            if line.strip()}


def test_wrong_emails_alternating_with_stop_are_all_counted(runner, store, clock):
    # Old code: 50 wrong emails, each in a new flow after "stop", never handed off; the 51st showed the order.
    texts, handed_off_at = [], None
    for i in range(50):
        clock.now += 60                                          # past every back-off
        turn(runner, "attacker", "where is my order HC-104233", "order_status", 0.9)
        text, handoff = turn(runner, "attacker", f"guess{i}@example.com")
        texts.append(text)
        if handoff:
            handed_off_at = i + 1
            break
        turn(runner, "attacker", "stop")
    assert handed_off_at == POLICY.max_failures_per_session
    assert store.verification_failures("session:attacker") == POLICY.max_failures_per_session
    # Locked: even the right email is refused in this session during the cool-down, and nothing is shown.
    turn(runner, "attacker", "where is my order HC-104233", "order_status", 0.9)
    text, handoff = turn(runner, "attacker", "maya.okafor@example.com")
    assert text == LOCKED and handoff
    assert all("Headphones" not in t and "delivered" not in t for t in texts + [text])


def test_a_wrong_email_in_the_first_message_counts(runner, store):
    # Old code: a slot filled from the flow's first message was never an attempt (and failed silently).
    text, handoff = turn(runner, "s", "where is HC-104233? my email is wrong@example.com", "order_status", 0.9)
    assert "don't match" in text and not handoff
    assert store.verification_failures("session:s") == 1 and store.verification_failures("order:HC-104233") == 1
    text, handoff = turn(runner, "s", "wrong.again@example.com")
    assert handoff                                            # the second failure of the flow hands off


def test_order_numbers_cannot_be_enumerated(runner, store, clock):
    # Old code: an existing order was answered "what's the email...", a missing one "What's your order number?".
    real = demo_orders()
    candidates = [f"HC-{n}" for n in range(104100, 104400)]
    assert len(set(candidates) & set(real)) >= 40
    after_number, after_email = set(), set()
    for i, order_id in enumerate(candidates):
        clock.now += 1
        sid = f"fresh-{i}"
        turn(runner, sid, "where is my order", "order_status", 0.9)
        after_number.add(turn(runner, sid, order_id)[0])
        after_email.add(turn(runner, sid, "nobody@example.com")[0].replace(order_id, "<id>"))
    assert len(after_number) == 1 and len(after_email) == 1, (after_number, after_email)


def test_an_order_locks_after_failures_from_many_sessions_then_unlocks(runner, store, clock):
    limit = POLICY.max_failures_per_order
    for i in range(limit):
        clock.now += 120                                          # past the back-off each time
        text, handoff = turn(runner, f"bot-{i}", "where is HC-104233 x%d@example.com" % i, "order_status", 0.9)
        assert "don't match" in text
        assert bool(handoff) == (i == limit - 1)                  # the limit hands off to a person
    # The owner, from a fresh session with the right email: refused while the order is locked.
    text, handoff = turn(runner, "owner", "where is HC-104233 maya.okafor@example.com", "order_status", 0.9)
    assert text == LOCKED and handoff and "Headphones" not in text
    # ... and an order number that does not exist locks the same way (the lock reveals nothing).
    for i in range(limit):
        clock.now += 120
        turn(runner, f"bot2-{i}", "where is HC-999999 x%d@example.com" % i, "order_status", 0.9)
    assert turn(runner, "other", "where is HC-999999 y@example.com", "order_status", 0.9)[0] == LOCKED
    # After the cool-down the owner gets through.
    clock.now += POLICY.lockout_s + 1
    text, handoff = turn(runner, "owner2", "where is HC-104233 maya.okafor@example.com", "order_status", 0.9)
    assert "delivered" in text and not handoff


def test_back_off_between_failures(runner, store, clock):
    turn(runner, "s", "where is HC-104233 a@example.com", "order_status", 0.9)
    turn(runner, "s", "stop")
    clock.now += 1
    turn(runner, "s", "where is HC-104233 b@example.com", "order_status", 0.9)     # 2nd failure: back-off starts
    turn(runner, "s", "stop")
    text, handoff = turn(runner, "s", "where is HC-104233 c@example.com", "order_status", 0.9)
    assert "wait" in text and not handoff
    assert store.verification_failures("session:s") == 2          # a refused attempt is not checked
    clock.now += POLICY.backoff_s + 0.5
    text, handoff = turn(runner, "s", "maya.okafor@example.com")
    assert "delivered" in text


def test_counters_live_in_the_database(make_store, clock):
    first = make_store()
    first.seed_orders(ORDERS)
    a = FlowRunner(first, POLICY, clock=clock)
    for i in range(2):
        clock.now += 60
        turn(a, f"p1-{i}", "where is HC-104233 z%d@example.com" % i, "order_status", 0.9)
    b = FlowRunner(make_store(), POLICY, clock=clock)           # another process on the same database
    assert b.store.verification_failures("order:HC-104233") == 2
    tight = dataclasses.replace(POLICY, max_failures_per_order=3)
    c = FlowRunner(make_store(), tight, clock=clock)
    clock.now += 60
    assert turn(c, "p3", "where is HC-104233 q@example.com", "order_status", 0.9)[1]   # third one locks


def test_honest_customer_with_one_typo_gets_through(runner):
    turn(runner, "s", "where is my order", "order_status", 0.9)
    turn(runner, "s", "HC-104233")
    text, handoff = turn(runner, "s", "maya.okafr@example.com")
    assert "don't match" in text and not handoff
    text, handoff = turn(runner, "s", "maya.okafor@example.com")
    assert "delivered" in text and not handoff


def test_a_corrected_order_number_replaces_the_first(runner):
    turn(runner, "s", "when is my refund coming", "refund_status", 0.9)
    assert "email" in turn(runner, "s", "HC-203203")[0]
    assert "email" in turn(runner, "s", "HC-104203, sorry")[0]
    text, _ = turn(runner, "s", "noah.petrov@example.org")
    assert "HC-104203" in text
