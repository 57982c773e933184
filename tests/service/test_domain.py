"""The domain registry (service/domain.py): one declaration that the policy, the Reply's action
list and the docs derive from, and a new flow that is one new module.

Everything but the last test is fast and model-free; the last one runs a toy flow through the real
Assistant and FlowRunner on the demo deployment (the shared encoder and indexes).
"""
from __future__ import annotations

import dataclasses
import sys
import textwrap

import numpy as np
import pytest

from core.config import PROJECT_ROOT, FlowsConfig
from service.domain import (
    CONTROL,
    FLOW,
    SMALL_TALK,
    Domain,
    DomainError,
    Intent,
    default_domain,
    discover_flows,
    docs_are_current,
    render_domain_markdown,
    replace_marked_block,
)
from service.nlu import NLUResult
from service.policy import Thresholds, decide
from service.sessions import SessionState

INTERFACES = PROJECT_ROOT / "docs" / "interfaces.md"
TH = Thresholds(faq=0.6, clarify_margin=0.03, intent=0.5, near_faq=0.08)

# A whole new flow, as a developer would add it: one module in a flows package declaring `FLOWS`.
TOY_FLOW_MODULE = '''
"""Gift-wrap an order that hasn't shipped: order number, email, the card message, confirm."""
from service.flows.base import Flow, Refusal, Slot
from service.flows.orders import EMAIL_SLOT, NOT_SHIPPED, ORDER_ID_SLOT


def extract_message(text, nlu, ctx):
    text = text.strip()
    return text if text and "@" not in text and "HC-" not in text.upper() else None


def check(ctx):
    if ctx.order.status not in NOT_SHIPPED:
        return Refusal(f"Order {ctx.order.order_id} has already left our warehouse.", handoff=False)
    return None


FLOWS = (
    Flow("gift_wrap", intent="gift_wrap_request", action="add_gift_wrap", title="gift-wrapping your order",
         slots=(ORDER_ID_SLOT, EMAIL_SLOT, Slot("card_message", "What should the card say?", extract_message)),
         check=check,
         confirm=lambda ctx: f"Gift-wrap order {ctx.order.order_id} with the card \\"{ctx.slots['card_message']}\\"? (yes/no)",
         finish=lambda ctx: f"Done: order {ctx.order.order_id} will be gift-wrapped."),
)
'''


@pytest.fixture(scope="module")
def toy_flows(tmp_path_factory):
    """The toy module in a throwaway package, found the way service/flows/ modules are found."""
    root = tmp_path_factory.mktemp("toy_flows")
    package = root / "toyflows"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "gift_wrap.py").write_text(textwrap.dedent(TOY_FLOW_MODULE))
    sys.path.insert(0, str(root))
    try:
        flows = discover_flows("toyflows")
    finally:
        sys.path.remove(str(root))
    assert [f.name for f in flows] == ["gift_wrap"]
    return flows


def nlu(intent: str, conf: float = 0.9) -> NLUResult:
    return NLUResult(intent, conf, [(intent, conf)], np.zeros(4, dtype=np.float32))


# ---------------------------------------------------------------- the registry itself

def test_committed_docs_match_the_registry():
    assert docs_are_current(INTERFACES), \
        "docs/interfaces.md is out of date: run python -m service.domain --write-docs docs/interfaces.md"


def test_every_flow_module_is_registered_with_its_intent_and_action():
    domain = default_domain()
    from service.flows import orders

    assert list(domain.flows.values()) == list(orders.FLOWS)
    for intent, flow in domain.flows.items():
        assert domain.intent(intent).kind == FLOW and flow.intent == intent
        assert flow.action in domain.actions
    assert domain.flow_actions["return_request"] == "start_return"


def test_reply_actions_and_small_talk_come_from_the_registry():
    from service.reply import ACTIONS

    domain = default_domain()
    assert ACTIONS == domain.actions and len(set(ACTIONS)) == len(ACTIONS)
    for name in domain.intents_of(SMALL_TALK, CONTROL):
        assert "{store}" not in domain.small_talk_reply(name, "Hearth")
    assert domain.small_talk_reply("greeting", "Hearth").startswith("Hi! Welcome to Hearth")
    assert domain.small_talk_reply("order_status") is None


def test_contradicting_declarations_are_refused(toy_flows):
    domain = default_domain()
    with pytest.raises(DomainError, match="declared twice"):
        domain.extended(intents=[Intent("greeting", SMALL_TALK, "hi", "Hello!")])
    with pytest.raises(DomainError, match="reply"):
        Domain([Intent("wave", SMALL_TALK, "a wave")])
    with pytest.raises(DomainError, match="already belongs"):
        domain.extended(flows=[dataclasses.replace(toy_flows[0], action="order_status")])
    assert domain.extended(intents=[Intent("greeting", SMALL_TALK, "hello",
                                           domain.intent("greeting").reply)]).intent_names == domain.intent_names


def test_the_docs_block_is_replaced_between_its_markers():
    from service.domain import MARK_BEGIN, MARK_END

    text = f"# Title\n\n{MARK_BEGIN}\nstale\n{MARK_END}\n\n## After\n"
    new = replace_marked_block(text, "fresh\n")
    assert new == f"# Title\n\n{MARK_BEGIN}\nfresh\n{MARK_END}\n\n## After\n"
    with pytest.raises(DomainError):
        replace_marked_block("# no markers\n", "x")


# ---------------------------------------------------------------- adding a flow is one module

def test_a_new_flow_module_reaches_policy_actions_and_docs(toy_flows):
    base = default_domain()
    domain = base.extended(flows=toy_flows)
    assert "add_gift_wrap" in domain.actions and "add_gift_wrap" not in base.actions
    assert domain.flow_actions["gift_wrap_request"] == "add_gift_wrap"
    assert domain.intent("gift_wrap_request").kind == FLOW

    d = decide("please gift wrap it", SessionState("s"), nlu("gift_wrap_request"), [], TH,
               flows_available=True, domain=domain)
    assert d.action == "add_gift_wrap" and d.flow == "add_gift_wrap"
    assert decide("please gift wrap it", SessionState("s"), nlu("gift_wrap_request"), [], TH,
                  flows_available=True).action == "fallback"       # the default domain has no such flow

    docs = render_domain_markdown(domain)
    assert "`gift_wrap_request`" in docs and "`add_gift_wrap`" in docs and "`card_message`" in docs
    assert "gift_wrap" not in render_domain_markdown()


def test_registered_adds_in_place_and_restores(toy_flows):
    import service.reply

    domain = default_domain()
    before = domain.actions
    with domain.registered(flows=toy_flows):
        assert "add_gift_wrap" in service.reply.ACTIONS
        assert "gift_wrap_request" in domain.flows
    assert domain.actions == before and "gift_wrap_request" not in domain.flows


class ToyNLU:
    """The demo NLU, except that messages about gift wrap get the toy flow's intent."""

    def __init__(self, inner):
        self.inner, self.embedder, self.labels = inner, inner.embedder, [*inner.labels, "gift_wrap_request"]

    def parse(self, text: str) -> NLUResult:
        result = self.inner.parse(text)
        if "gift" in text.lower() and "wrap" in text.lower():
            return NLUResult("gift_wrap_request", 0.95, [("gift_wrap_request", 0.95), *result.ranking[:4]],
                             result.embedding)
        return result

    def parse_batch(self, texts):
        return [self.parse(t) for t in texts]


def test_a_new_flow_runs_through_the_real_assistant(toy_flows, make_assistant):
    with default_domain().registered(flows=toy_flows):
        assistant = make_assistant()
        assistant.nlu = ToyNLU(assistant.nlu)
        replies = [assistant.respond("s", m) for m in (
            "could you gift wrap order HC-104251 please", "maya.okafor@example.com", "Happy birthday, Sam!")]
        assert [r.action for r in replies] == ["add_gift_wrap"] * 3
        assert "email" in replies[0].text and "card" in replies[1].text
        assert "Happy birthday, Sam!" in replies[2].text and "(yes/no)" in replies[2].text
        done = assistant.respond("s", "yes")
        assert done.action == "add_gift_wrap" and done.text == "Done: order HC-104251 will be gift-wrapped."
        # The demo flows still work beside it, and the business rules are the typed config's.
        assert assistant.respond("s2", "where is my order HC-104233?").action == "order_status"
        assert isinstance(assistant.flows.policy, FlowsConfig)
    assert "add_gift_wrap" not in default_domain().actions
