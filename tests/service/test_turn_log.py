"""Every turn is logged for the operator: one server-made turn id on both transcript lines, the model
version, latency and why it decided (ids and scores, no text); the customer's thumbs only on their own
turns; ratings and corrections; observers see each turn with its stage timings."""
import pytest

from service.engine import STAGES, TurnEvent
from service.store import Store


def test_turns_are_logged_with_version_latency_and_reasons(assistant):
    reply = assistant.respond("s1", "How long does standard delivery take? my email is ann@example.com")
    assert reply.turn_id.startswith("t-") and reply.model_version == assistant.model_version
    (turn,) = assistant.transcripts.turns(session_id="s1")
    assert turn["turn_id"] == reply.turn_id and turn["model_version"] == assistant.model_version
    assert "ann@example.com" not in turn["user_text"] and "delivery" in turn["user_text"]
    assert turn["action"] == reply.action and turn["latency_ms"] > 0 and turn["feedback"] is None
    details = turn["details"]
    assert "decision" in details and details["faq"] and details["ranking"][0][0] == reply.intent
    assert "delivery" not in str(details)                                 # ids and scores, no message text
    assert assistant.history("s1")[-1]["turn_id"] == reply.turn_id       # the page can rebuild thumbs from it


def test_thumbs_apply_only_to_the_customers_own_turns(make_store):
    store = make_store()
    for sid, turn in (("alice", "t-1"), ("bob", "t-2")):
        store.append_transcript(sid, "user", "hi", turn_id=turn)
        store.append_transcript(sid, "assistant", "hello", "small_talk", "greet", 0.9, turn_id=turn,
                                model_version="v1", latency_ms=3.0, details={"decision": "small talk"})
    assert store.set_turn_feedback("alice", "t-1", -1)
    assert not store.set_turn_feedback("alice", "t-2", -1)                # bob's turn: nothing changes
    assert not store.set_turn_feedback("alice", "t-nope", 1)
    with pytest.raises(ValueError):
        store.set_turn_feedback("alice", "t-1", 5)
    by_turn = {t["turn_id"]: t for t in store.turns()}
    assert by_turn["t-1"]["feedback"] == -1 and by_turn["t-2"]["feedback"] is None
    assert by_turn["t-1"]["user_text"] == "hi" and by_turn["t-1"]["details"] == {"decision": "small talk"}
    store.set_turn_feedback("alice", "t-1", 0)                            # withdrawn
    assert store.turns(session_id="alice")[0]["feedback"] is None
    assert [t["turn_id"] for t in store.turns(model_version="v1", since=0)] == ["t-1", "t-2"]
    assert store.turns(model_version="v2") == [] and store.turns(since=1e12) == []
    assert [t["turn_id"] for t in store.turns(turn_id="t-2")] == ["t-2"] and store.turns(turn_id="t-9") == []


def test_ratings_and_corrections_are_kept(make_store):
    store = make_store()
    store.add_feedback("alice", 4, "quick", model_version="v3")
    store.add_feedback("bob", 1)
    assert [(r["rating"], r["model_version"]) for r in store.ratings()] == [(4, "v3"), (1, None)]
    assert [r["session_id"] for r in store.ratings(model_version="v3")] == ["alice"]
    cid = store.add_correction("faq", {"faq_id": "delivery_time"}, "operator", turn_id="t-1", session_id="alice")
    (c,) = store.corrections()
    assert c["id"] == cid and c["payload"] == {"faq_id": "delivery_time"} and c["author"] == "operator"


def test_observers_see_every_turn_with_stage_timings(assistant):
    events: list[TurnEvent] = []
    assistant.observers.append(events.append)
    assistant.observers.append(lambda e: 1 / 0)                           # a broken observer breaks nothing
    reply = assistant.respond("obs", "Where is my order HC-104233?")
    assistant.respond("obs", "")
    assert len(events) == 2 and events[0].reply is reply and not events[0].error
    assert set(events[0].stages_ms) == set(STAGES) and events[0].total_ms >= sum(events[0].stages_ms.values()) * 0.99
    assert "understanding" not in events[1].stages_ms                      # an empty message skips the model


def test_settings_are_shared_and_overwritten(make_store):
    store = make_store()
    assert store.get_setting("served_version") is None
    store.set_setting("served_version", "v0001")
    store.set_setting("served_version", "v0002")
    other = Store(store.engine.url)                                       # another process's view
    value, updated_at = other.get_setting("served_version")
    assert value == "v0002" and updated_at > 0
    other.close()
