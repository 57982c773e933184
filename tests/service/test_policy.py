"""The dialogue policy on hand-made NLU results and FAQ hits: every branch, no models."""
from dataclasses import dataclass, field

import numpy as np
import pytest

from service.nlu import NLUResult
from service.policy import Thresholds, decide
from service.sessions import SessionState

TH = Thresholds(faq=0.6, clarify_margin=0.03, intent=0.5, near_faq=0.08)


@dataclass
class H:
    id: str
    score: float
    meta: dict = field(default_factory=dict)


def nlu(intent: str, conf: float = 0.9) -> NLUResult:
    return NLUResult(intent, conf, [(intent, conf)], np.zeros(4, dtype=np.float32))


def act(intent, hits=(), conf=0.9, state=None, text="hello", flows=False):
    return decide(text, state or SessionState("s"), nlu(intent, conf), list(hits), TH, flows_available=flows)


def test_faq_answer_above_threshold():
    d = act("faq_shipping", [H("faq_ship_01", 0.8, {"category": "shipping"}), H("faq_ret_01", 0.5)])
    assert d.action == "answer_faq" and d.faq_ids == ["faq_ship_01"]


def test_close_faq_candidates_without_topic_ask_which_one():
    d = act("order_status", [H("a", 0.70), H("b", 0.69)], conf=0.3)
    assert d.action == "clarify" and d.faq_ids == ["a", "b"]


def test_nlu_topic_breaks_a_tie_between_close_faqs():
    d = act("faq_returns", [H("a", 0.70, {"category": "shipping"}), H("b", 0.69, {"category": "returns"})])
    assert d.action == "answer_faq" and d.faq_ids == ["b"]


def test_near_miss_offers_candidates_instead_of_guessing():
    d = act("faq_payments", [H("a", 0.55), H("b", 0.53), H("c", 0.40)])
    assert d.action == "clarify" and d.faq_ids == ["a", "b"]


def test_customer_picks_a_clarification_candidate_by_number():
    state = SessionState("s", pending_clarify=["a", "b"])
    d = act("affirm", [H("z", 0.2)], state=state, text="the second one")
    assert d.action == "answer_faq" and d.faq_ids == ["b"]


@pytest.mark.parametrize("intent", ["greeting", "goodbye", "thanks", "bot_identity", "capabilities"])
def test_small_talk(intent):
    assert act(intent, [H("a", 0.3)]).action == "small_talk"


def test_shopping_request_recommends():
    assert act("product_search", [H("a", 0.3)]).action == "recommend"


def test_explicit_human_request_and_frustration_hand_off():
    assert act("human_request").action == "handoff"
    assert act("complaint").action == "handoff"


def test_session_in_handoff_stays_in_handoff():
    assert act("faq_shipping", [H("a", 0.9)], state=SessionState("s", handoff=True)).action == "handoff"


def test_out_of_scope_is_honest():
    assert act("out_of_scope", [H("a", 0.2)]).action == "out_of_scope"


def test_low_confidence_and_no_faq_falls_back():
    assert act("faq_shipping", [H("a", 0.2)], conf=0.2).action == "fallback"


def test_flow_intents_go_to_flows_when_available_and_fall_back_otherwise():
    assert act("order_status", [H("a", 0.2)], flows=True).action == "order_status"
    assert act("cancel_order", [H("a", 0.2)], flows=True).action == "cancel_order"
    assert act("order_status", [H("a", 0.2)], flows=False).action == "fallback"


def test_an_active_flow_keeps_the_turn():
    state = SessionState("s", flow={"name": "order_status", "slots": {}})
    d = act("affirm", [H("a", 0.2)], state=state, flows=True)
    assert d.flow is None and d.action == "flow"


def test_calibrated_oos_flag_gives_an_honest_answer_but_never_inside_a_flow():
    from service.policy import Signals

    flagged = Signals(out_of_scope=True)
    assert decide("will it rain", SessionState("s"), nlu("faq_shipping", 0.3), [H("a", 0.2)], TH,
                  signals=flagged).action == "out_of_scope"
    in_flow = SessionState("s", flow={"name": "order_status", "slots": {}})
    assert decide("jo@example.com", in_flow, nlu("faq_account", 0.3), [H("a", 0.2)], TH, flows_available=True,
                  signals=flagged).action == "flow"
    # A confident FAQ match wins over the flag.
    assert decide("how long is shipping", SessionState("s"), nlu("faq_shipping", 0.9),
                  [H("a", 0.9, {"category": "shipping"})], TH, signals=flagged).action == "answer_faq"
