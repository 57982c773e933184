"""Operators' corrections: each kind checked against the pack, personal data redacted before it is
stored, who and when kept, later labels superseding earlier ones (both store backends); and the
review queue's ranking by need."""
import pytest

from core.config import PROJECT_ROOT
from service import corrections as corr
from service import review

PACK = corr.Pack.from_files(PROJECT_ROOT / "data" / "demo" / "intents.jsonl", PROJECT_ROOT / "data" / "demo" / "faq.jsonl")


def _turn(store, sid, tid, user, action="answer_faq", confidence=0.9, feedback=None, version="v1"):
    store.append_transcript(sid, "user", user, turn_id=tid)
    store.append_transcript(sid, "assistant", "reply", action, "faq_shipping", confidence, turn_id=tid,
                            model_version=version, latency_ms=5.0,
                            details={"decision": "the only near FAQ answer", "ranking": [["faq_shipping", 0.8]],
                                     "faq": [["faq_ship_01", 0.71], ["faq_ship_02", 0.65]]})
    if feedback:
        store.set_turn_feedback(sid, tid, feedback)


def test_each_kind_is_stored_with_who_and_when(make_store):
    store = make_store()
    _turn(store, "s1", "t-1", "where is my parcel HC-100234")
    ids = [
        corr.apply_correction(store, "intent", {"intent": "order_status"}, "ops", PACK, session_id="s1", turn_id="t-1"),
        corr.apply_correction(store, "faq", {"faq_id": "faq_ship_02"}, "ops", PACK, session_id="s1", turn_id="t-1"),
        corr.apply_correction(store, "paraphrase", {"faq_id": "faq_ship_02", "text": ""}, "ops", PACK,
                              session_id="s1", turn_id="t-1"),
        corr.apply_correction(store, "out_of_scope", {}, "ops", PACK, session_id="s1", turn_id="t-1"),
        corr.apply_correction(store, "new_faq", {"question": "Do you deliver on Sundays?", "answer": "No, Mon-Sat.",
                                                 "paraphrases": "sunday delivery?\nSunday delivery?\n"}, "ops", PACK),
    ]
    rows = store.corrections()
    assert [r["id"] for r in rows] == ids and sorted(r["kind"] for r in rows) == sorted(corr.KINDS)
    assert all(r["author"] == "ops" and r["created_at"] > 0 for r in rows)
    assert rows[0]["payload"] == {"intent": "order_status", "text": "where is my parcel HC-100234"}
    assert rows[0]["turn_id"] == "t-1" and rows[0]["session_id"] == "s1"
    assert rows[1]["payload"] == {"faq_id": "faq_ship_02", "text": "where is my parcel HC-100234"}
    assert rows[2]["payload"]["text"] == "where is my parcel HC-100234"      # empty wording: the customer's
    assert rows[3]["payload"] == {"text": "where is my parcel HC-100234"}
    assert rows[4]["payload"] == {"question": "Do you deliver on Sundays?", "answer": "No, Mon-Sat.",
                                  "paraphrases": ["sunday delivery?"]}    # duplicates (any case) dropped
    assert rows[4]["turn_id"] is None
    # the later label of turn t-1 (out of scope) supersedes the earlier intent and FAQ labels
    active = corr.active_corrections(rows)
    assert [r["kind"] for r in active] == ["paraphrase", "out_of_scope", "new_faq"]
    # a new FAQ entry can be picked like a pack entry; withdrawing a correction deletes it
    cid = corr.apply_correction(store, "faq", {"faq_id": corr.new_faq_id(ids[4])}, "ops", PACK,
                                session_id="s1", turn_id="t-1")
    assert store.delete_correction(cid) and not store.delete_correction(cid)
    assert [r["id"] for r in store.corrections()] == ids


def test_personal_data_is_redacted_before_it_is_stored(make_store):
    store = make_store()
    _turn(store, "s1", "t-1", "hi")
    corr.apply_correction(store, "paraphrase", {"faq_id": "faq_ship_01", "text": "shipping to ann@example.com costs?"},
                          "ops", PACK, session_id="s1", turn_id="t-1")
    corr.apply_correction(store, "new_faq", {"question": "Can I call +1 415 555 0100 about shipping?",
                                             "answer": "Write to bob.smith@example.org instead.",
                                             "paraphrases": ["call 4155550100?"]}, "ops", PACK)
    stored = str(store.corrections())
    for raw in ("ann@example.com", "bob.smith@example.org", "555 0100", "4155550100"):
        assert raw not in stored
    assert "shipping to" in stored and "Write to" in stored


@pytest.mark.parametrize("kind,payload,message", [
    ("intent", {"intent": "weather"}, "unknown intent 'weather'"),
    ("faq", {"faq_id": "faq_nope"}, "unknown FAQ id 'faq_nope'"),
    ("paraphrase", {"faq_id": "faq_ship_01", "text": "is shipping free?"}, "already a wording of faq_ship_01"),
    ("paraphrase", {"faq_id": "faq_ship_01", "text": "x" * 501}, "keep it under 500"),
    ("new_faq", {"question": " ", "answer": "yes"}, "question is empty"),
    ("new_faq", {"question": "q?", "answer": "a" * 2001}, "keep it under 2,000"),
    ("new_faq", {"question": "q?", "answer": "a", "paraphrases": ["p"] * 21}, "keep it to 20"),
    ("refund", {}, "unknown correction kind 'refund'"),
])
def test_invalid_corrections_are_refused_with_what_to_fix(make_store, kind, payload, message):
    store = make_store()
    _turn(store, "s1", "t-1", "hello")
    turn = {} if kind == "new_faq" else {"session_id": "s1", "turn_id": "t-1"}
    with pytest.raises(corr.CorrectionError, match=message):
        corr.apply_correction(store, kind, payload, "ops", PACK, **turn)
    assert store.corrections() == []


def test_a_turn_correction_needs_a_turn_that_exists(make_store):
    store = make_store()
    _turn(store, "s1", "t-1", "hello")
    with pytest.raises(corr.CorrectionError, match="no turn 't-2'"):
        corr.apply_correction(store, "out_of_scope", {}, "ops", PACK, session_id="s1", turn_id="t-2")
    with pytest.raises(corr.CorrectionError, match="no turn 't-1'"):     # another conversation's turn
        corr.apply_correction(store, "out_of_scope", {}, "ops", PACK, session_id="s2", turn_id="t-1")
    with pytest.raises(corr.CorrectionError, match="pick the turn"):
        corr.apply_correction(store, "intent", {"intent": "greeting"}, "ops", PACK)
    with pytest.raises(corr.CorrectionError, match="author"):
        corr.apply_correction(store, "out_of_scope", {}, " ", PACK, session_id="s1", turn_id="t-1")
    assert store.corrections() == []


def test_review_queue_ranks_conversations_by_need(make_store):
    store = make_store()
    _turn(store, "calm", "t-1", "shipping cost?")
    _turn(store, "thumbs", "t-2", "shipping cost?", feedback=-1)
    _turn(store, "fallback", "t-3", "blorp", action="fallback", confidence=0.2, version="v2")
    _turn(store, "rated", "t-4", "shipping cost?")
    _turn(store, "rated", "t-5", "returns?", action="clarify")
    store.add_feedback("rated", 1)
    ranked = review.rank_conversations(store.turns(), store.ratings())
    # rated: low rating 4 + clarify 2 = 6; thumbs: 5; fallback: fallback 3 + low confidence 1 = 4
    assert [(n.session_id, n.score) for n in ranked] == [("rated", 6), ("thumbs", 5), ("fallback", 4)]
    assert ranked[0].signals == {"low_rating": 1, "clarify": 1} and ranked[0].rating == 1
    assert [t["turn_id"] for t in ranked[0].needy_turns()] == ["t-5"]
    assert [n.session_id for n in review.rank_conversations(store.turns(), action="fallback")] == ["fallback"]
    assert [n.session_id for n in review.rank_conversations(store.turns(), model_version="v2")] == ["fallback"]
    assert "calm" in [n.session_id for n in review.rank_conversations(store.turns(), include_calm=True)]
    # a corrected turn no longer counts: the conversation sinks out of the queue
    corr.apply_correction(store, "faq", {"faq_id": "faq_ship_01"}, "ops", PACK, session_id="thumbs", turn_id="t-2")
    ranked = review.rank_conversations(store.turns(), store.ratings(), corrected=corr.corrected_turn_ids(store.corrections()))
    assert "thumbs" not in [n.session_id for n in ranked]
    lo, hi = review.day_bounds("2026-12-01", "2026-12-01")
    assert hi - lo == 86400
    with pytest.raises(ValueError):
        review.day_bounds("yesterday")


def test_explain_turn_shows_what_and_why():
    turn = {"turn_id": "t-1", "user_text": "shipping?", "text": "It costs $5.99", "action": "answer_faq",
            "intent": "faq_shipping", "confidence": 0.4, "feedback": -1, "model_version": "v1",
            "details": {"decision": "the only near FAQ answer", "ranking": [["faq_shipping", 0.4], ["faq_returns", 0.3]],
                        "faq": [["faq_ship_01", 0.71]], "oos_score": 0.1, "sources": ["faq_ship_01"]}}
    why = review.explain_turn(turn, {"faq_ship_01": "How much does shipping cost?"})
    assert why["reason"] == "the only near FAQ answer" and why["top_intents"][0] == ("faq_shipping", 0.4)
    assert why["faq_candidates"] == [("faq_ship_01", 0.71, "How much does shipping cost?")]
    assert why["signals"] == ["thumbs_down", "low_confidence"]
