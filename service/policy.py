"""Dialogue policy: session state + NLU + retrieval scores -> exactly one action.

Pure decision logic with no I/O, so every branch is easy to test. The engine carries the
decision out (looks up answers, runs flows, writes the transcript). Which intents start a flow,
are small talk or go to a person comes from the domain registry (`service.domain`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from service.domain import (
    CONTROL,
    HANDOFF,
    OUT_OF_SCOPE,
    SEARCH,
    SMALL_TALK,
    Domain,
    default_domain,
    faq_category,
)
from service.nlu import NLUResult
from service.flows.base import answers_pending
from service.phrases import (ABOUT_THAT_SHOP, ALREADY_BOUGHT, ALREADY_DONE, ASKS_A_QUESTION, ASKS_WHAT_YOU_ARE,
                             BEFORE_BUYING, BILLING_DISPUTE, CHANGES_SOMETHING, FED_UP, FLOW_CUES, FORECAST,
                             OTHER_SHOP, PERSONAL_ADVICE, PRICE_MATCH, RESUME, SHOPPING_ASK, SITUATION_CUES,
                             TAX_ADVICE, WEATHER_DELAY)
from service.sessions import SessionState

_ORDINALS = {"1": 0, "first": 0, "one": 0, "top": 0, "2": 1, "second": 1, "two": 1, "3": 2, "third": 2, "three": 2}
_PICK = re.compile(r"^\s*(?:the\s+)?(1|2|3|first|second|third|one|two|three|top)\b(?:\s+one)?[\s.!]*$", re.I)


# The hand-set cut-offs (`policy.decisions: hand`); training/decisions.py fits the learned ones from here.
HAND_CLARIFY_MARGIN, HAND_INTENT, HAND_NEAR_FAQ = 0.03, 0.5, 0.08
CLEAR_LEAD = 0.15   # a best FAQ hit this far ahead of the second is answered from further below the threshold
PLEASANTRIES, MAX_PLEASANTRY_WORDS = frozenset({"greeting", "thanks", "goodbye"}), 6
ABOUT_SHOWN_PRODUCTS = "a follow-up to the products just shown"
ANSWERED_WHILE_WAITING = "a FAQ answered while a person has the conversation"


@dataclass
class Thresholds:
    faq: float                                     # best FAQ score needed to answer (calibrated at index build)
    clarify_margin: float = HAND_CLARIFY_MARGIN    # two different FAQs closer than this: ask which one
    intent: float = HAND_INTENT                    # NLU confidence needed to act on an intent
    near_faq: float = HAND_NEAR_FAQ                # below `faq` by less than this: offer candidates, not a guess


@dataclass
class Signals:
    """Cues the engine reads from the message itself, independent of the NLU."""
    order_ref: bool = False       # an order number (HC-123456) is in the message
    asks_human: bool = False      # explicit words for a person: "agent", "human", "representative"
    shopping: bool = False        # a catalogue category, brand or price bound is named
    out_of_scope: bool = False    # the calibrated OOS detector flags the message (service/oos.py)
    oos_score: float | None = None
    compare: tuple[str, ...] = ()  # the products a comparison request names ("A vs B"), two or more
    follow_up: bool = False       # reads as a follow-up to the FAQ answer just given (service/context.py)
    same_entry: str | None = None  # that follow-up, read with its previous message, asks the same entry again
    same_entry_topic: str | None = None  # that entry's category
    about_products: bool = False  # reads as a follow-up to the products just shown ("one that mops too?")
    points_at_shown: bool = False  # and points at them ("which one lasts longer on battery", "of those")


@dataclass
class Decision:
    action: str
    intent: str | None = None
    faq_ids: list[str] = field(default_factory=list)
    reason: str = ""
    flow: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _picked_candidate(text: str, state: SessionState, faq_hits: list, th: "Thresholds") -> str | None:
    """Resolve the customer's answer to a clarifying question ("the second one", or a close re-ask)."""
    if not state.pending_clarify:
        return None
    m = _PICK.match(text)
    if m:
        i = _ORDINALS[m.group(1).lower()]
        return state.pending_clarify[i] if i < len(state.pending_clarify) else None
    if faq_hits and faq_hits[0].id in state.pending_clarify and faq_hits[0].score >= th.faq - th.near_faq:
        return faq_hits[0].id
    return None


def _mass(nlu: NLUResult, intents: frozenset[str] | dict) -> float:
    return sum(p for name, p in nlu.ranking if name in intents)


def _best_flow_intent(nlu: NLUResult, flow_actions: dict[str, str], floor: float = 0.1) -> str | None:
    for name, p in nlu.ranking:
        if name in flow_actions and p >= floor:
            return name
    return None


def _cued_flow_intent(text: str, nlu: NLUResult, flow_actions: dict[str, str]) -> str | None:
    """The flow an order-naming message asks for by its words ("send this back", "cancel", "my refund"),
    among the flows the domain declares; several cues: the one the NLU ranks highest, else the first."""
    for intent, cues in SITUATION_CUES:
        if intent in flow_actions and all(cue.search(text) for cue in cues):
            return intent
    cued = [intent for intent, cue in FLOW_CUES.items() if intent in flow_actions and cue.search(text)]
    if len(cued) > 1:
        ranked = [name for name, _ in nlu.ranking if name in cued]
        return ranked[0] if ranked else cued[0]
    return cued[0] if cued else None


def _answers_running_flow(text: str, state: SessionState, nlu: NLUResult, domain: Domain) -> bool:
    """A running flow is waiting for this message's answer (a slot value, a yes/no)."""
    if not state.flow:
        return False
    flow = next((f for f in domain.flows.values() if f.name == state.flow.get("name")), None)
    return flow is not None and answers_pending(flow, state.flow, text, nlu, state.verified_orders)


def _short_sentences(text: str) -> bool:
    """A few words, or two or three short sentences with no question among them."""
    if len(text.split()) <= MAX_PLEASANTRY_WORDS:
        return True
    sentences = [s for s in re.split(r"[.!]+", text) if s.strip()]
    return "?" not in text and len(sentences) <= 3 and all(len(s.split()) <= MAX_PLEASANTRY_WORDS for s in sentences)


def _far_ahead(faq_hits: list) -> bool:
    """The best FAQ hit stands at least CLEAR_LEAD ahead of the second (or has none)."""
    return len(faq_hits) < 2 or faq_hits[0].score - faq_hits[1].score >= CLEAR_LEAD


def _close_candidates(faq_hits: list, th: "Thresholds") -> list[str]:
    """FAQ ids worth offering in a "Did you mean": the top one and those genuinely close to it (within
    `clarify_margin`), all within the near-FAQ band. A single one is not a question worth asking."""
    if not faq_hits:
        return []
    top = faq_hits[0]
    return [h.id for h in faq_hits[:3]
            if h.score >= th.faq - th.near_faq and top.score - h.score < th.clarify_margin]


def decide(text: str, state: SessionState, nlu: NLUResult, faq_hits: list, th: Thresholds,
           flows_available: bool = False, signals: Signals | None = None, domain: Domain | None = None) -> Decision:
    signals = signals or Signals()
    domain = domain or default_domain()
    flow_actions = domain.flow_actions                 # intent that starts a flow -> its action
    small_talk, control = domain.intents_of(SMALL_TALK), domain.intents_of(CONTROL)
    handoff_intents = domain.intents_of(HANDOFF)
    search, out_of_scope = domain.intents_of(SEARCH), domain.intents_of(OUT_OF_SCOPE)
    intent, conf = nlu.intent, nlu.confidence
    confident = conf >= th.intent
    # "Thank you. And if I'm in a hurry, is there a quicker option?": a greeting or thanks with a longer
    # question after it, one the FAQ nearly answers, is read for the question; the pleasantry's
    # certainty does not decide the turn ("good morning! what can you help me with?" stays small talk).
    top = faq_hits[0] if faq_hits else None
    if intent in PLEASANTRIES and "?" in text and len(text.split()) > MAX_PLEASANTRY_WORDS \
            and top is not None and top.score >= th.faq - th.near_faq:
        confident = False

    if state.handoff:
        # "Is the manufacturer's guarantee still valid, then?" while the ticket waits: a question the FAQ
        # answers with certainty is answered now (the person still has the conversation); the rest waits.
        if confident and faq_category(intent) and top is not None and top.score >= th.faq and not signals.asks_human:
            return Decision("answer_faq", intent, [top.id], reason=ANSWERED_WHILE_WAITING)
        return Decision("handoff", intent, reason="already with a person")

    # "am I chatting with an actual person or a program?" asks what the assistant is, whatever the NLU
    # makes of the word "person"; "are you a bot? get me a human" still asks for one.
    if ASKS_WHAT_YOU_ARE.search(text) and "?" in text and not signals.asks_human and not state.flow \
            and "bot_identity" in small_talk:
        return Decision("small_talk", "bot_identity", reason="asks what the assistant is")
    # Asking for a person is always honoured; frustration and the request often share one message.
    # Frustration in the answer a running flow asked for ("like I said it's dead") is the answer.
    upset = intent in handoff_intents and _mass(nlu, handoff_intents) >= th.intent \
        and not (flows_available and _answers_running_flow(text, state, nlu, domain))
    asks_person = signals.asks_human or (upset and intent == "human_request")
    # "my Visa keeps getting rejected at checkout, what is going on?", "the parcel came smashed up": a
    # problem the FAQ answers with certainty, told without exasperation, gets that answer (the customer
    # can still ask for a person); "I'm so fed up" or a request for a person still goes to one.
    # So does one whose answer stands far ahead of every other just below the threshold ("so annoying, the
    # air purifier I bought 6 days ago is $30 less on your own site today": the price-adjustment entry).
    if upset and not asks_person and not FED_UP.search(text) and top is not None and (
            top.score >= th.faq or (top.score >= th.faq - th.near_faq and _far_ahead(faq_hits))):
        return Decision("answer_faq", intent, [top.id], reason="a problem the FAQ answers, told calmly")
    if asks_person or upset:
        why = "the customer asked for a person" if asks_person else "the customer is frustrated"
        return Decision("handoff", intent, reason=why)
    # "charged twice and my bank says it's on your end, I'm so done": a billing dispute told with
    # exasperation needs a person, whatever the FAQ says about when cards are charged.
    if BILLING_DISPUTE.search(text) and FED_UP.search(text):
        return Decision("handoff", intent, reason="a billing dispute from a frustrated customer")

    picked = _picked_candidate(text, state, faq_hits, th)
    if picked:
        return Decision("answer_faq", intent, [picked], reason="customer picked a clarification candidate")

    # "What's the difference between the Cirrus and the Cirrus Lite?": two catalogue products named
    # with a comparison's words; a running flow keeps the turn (it may be asking for an answer).
    if len(signals.compare) >= 2 and not state.flow:
        return Decision("compare", intent, reason="two products named to be compared",
                        extra={"products": list(signals.compare)})

    # "And if I don't want it anymore, can I cancel?" right after a warranty answer: a follow-up that
    # the FAQ answers on the same topic is answered, not taken for a new service request.
    if signals.follow_up and not signals.order_ref and not state.flow and top is not None and top.score >= th.faq \
            and not signals.asks_human and not (confident and intent in small_talk):
        # Read with the message before, the NLU is sure of the topic ("and how many days until I see it?"
        # after a refund answer is about refunds): the best answer above the threshold within it.
        in_topic = [h for h in faq_hits[:3] if confident and faq_category(intent)
                    and h.meta.get("category") == faq_category(intent) and h.score >= th.faq]
        if in_topic:
            return Decision("answer_faq", intent, [in_topic[0].id], reason="a follow-up the FAQ answers")
        # "for how long?" after the chat-transcripts answer: the best hit lies on another topic, one the
        # NLU does not vouch for, and read with its previous message the follow-up asks that entry again;
        # the answer holds it ("kept 90 days").
        if signals.same_entry and top.meta.get("category") != signals.same_entry_topic \
                and not (confident and faq_category(intent) == top.meta.get("category")):
            return Decision("answer_faq", intent, [signals.same_entry], reason="a follow-up on the answer just given")
        return Decision("answer_faq", intent, [top.id], reason="a follow-up the FAQ answers")

    if flows_available:
        resume = bool(state.suspended_flows) and bool(RESUME.search(text)) and len(text.split()) <= 12
        # "can I send this back? order HC-104240": the order number makes it a service request and the
        # words say which one, whatever the NLU's top intent (order status, a FAQ topic...).
        cued = _cued_flow_intent(text, nlu, flow_actions) \
            if signals.order_ref and state.flow is None and not resume else None
        if cued:
            return Decision(flow_actions[cued], cued, flow=flow_actions[cued],
                            reason="an order number with words for this service request")
        # "if I order it and it looks wrong, can I send it back?" (before buying) and "returned my vacuum
        # last week, how long till I see the money?" or "I cancelled before it shipped, when do I get the
        # money back?" (after the request was made): questions about the policy, not a request to start
        # that flow; so is "can you ship to an APO address?", an address question with no change in it.
        # The FAQ answers them when it nearly can.
        asks_policy = bool(BEFORE_BUYING.search(text)) \
            or bool(intent in ALREADY_DONE and ALREADY_DONE[intent].search(text)) \
            or (intent == "change_address" and not CHANGES_SOMETHING.search(text))
        if asks_policy and not state.flow and not signals.order_ref and not resume \
                and top is not None and top.score >= th.faq - th.near_faq:
            return Decision("answer_faq", intent, [top.id], reason="a question about the policy, not a request")
        # "the tracking link says no information found, did something go wrong?", "i ordered on saturday
        # will it leave today or monday": no order number, and one FAQ entry answers the question (its
        # question mark or its words) with certainty, far ahead of the rest: how orders go, not a lookup.
        if intent == "order_status" and not state.flow and not signals.order_ref and not resume \
                and ASKS_A_QUESTION.search(text) \
                and top is not None and top.score >= th.faq and _far_ahead(faq_hits):
            return Decision("answer_faq", intent, [top.id], reason="a question about how orders go, not a lookup")
        if state.flow or resume or (confident and intent in flow_actions):
            return Decision(flow_actions.get(intent, "flow"), intent, flow=flow_actions.get(intent),
                            reason="service flow")
        # "HC-104233" or "return HC-104233" with no flow running: the order number says it is a service request.
        flow_intent = _best_flow_intent(nlu, flow_actions) if signals.order_ref else None
        if flow_intent:
            return Decision(flow_actions[flow_intent], flow_intent, flow=flow_actions[flow_intent],
                            reason="an order number with a service request")

    # Another shop's hours or branches, or its products' support, and personal tax, medical or legal advice:
    # only that shop or an adviser can answer, whatever our own store-hours or sales-tax FAQ shares in words
    # or the NLU makes of a product named in it ("is an electric blanket safe with a pacemaker?").
    if not signals.order_ref and not state.flow and (
            (OTHER_SHOP.search(text) and ABOUT_THAT_SHOP.search(text) and not PRICE_MATCH.search(text))
            or TAX_ADVICE.search(text) or PERSONAL_ADVICE.search(text)
            or (FORECAST.search(text) and not WEATHER_DELAY.search(text))):
        return Decision("out_of_scope", intent,
                        reason="about another shop, the weather, or advice the store cannot give")
    if confident and intent in small_talk:
        return Decision("small_talk", intent)
    if confident and intent in search:
        return Decision("recommend", intent)

    # "Do you sell a wall mount for a big TV?": a shopping question naming something in the catalogue
    # gets products, unless the NLU vouches for a FAQ topic that the FAQ also matches well.
    if signals.shopping and SHOPPING_ASK.search(text) and \
            not (confident and faq_category(intent) and top is not None and top.score >= th.faq):
        return Decision("recommend", intent, reason="asks whether the store sells a catalogue item")
    # "which one lasts longer on battery" right after products were shown: about them, whatever the NLU
    # makes of a message with no product named in it.
    if signals.about_products and signals.points_at_shown and not signals.order_ref and not state.flow \
            and not (confident and (intent in small_talk or faq_category(intent))):
        return Decision("recommend", intent, reason=ABOUT_SHOWN_PRODUCTS)
    # "How much income tax do I owe on my side business?": the NLU is sure it is outside the shop's
    # job; an FAQ entry that shares a few words (payments) does not make it one.
    if confident and intent in out_of_scope and not signals.order_ref and not signals.shopping:
        return Decision("out_of_scope", intent, reason="the NLU is sure it is out of scope")
    if top is not None and top.score >= th.faq:
        if confident and faq_category(intent):
            # The NLU vouches for the topic: take the best answer within it when it is close to the top.
            in_topic = [h for h in faq_hits[:3]
                        if h.meta.get("category") == faq_category(intent) and top.score - h.score < th.clarify_margin]
            chosen = in_topic[0] if in_topic else top
            return Decision("answer_faq", intent, [chosen.id],
                            reason="the NLU topic broke the tie" if chosen is not top else "")
        close = [h for h in faq_hits[1:3] if h.score >= th.faq and top.score - h.score < th.clarify_margin]
        if close:
            return Decision("clarify", intent, [top.id] + [h.id for h in close], reason="two FAQ answers are close")
        return Decision("answer_faq", intent, [top.id])

    # "do they bring the bracket?" after the TV-mounting answer: nothing else answers it, and read with
    # the previous message it asks that entry again, whose answer holds it ("wall mount not included").
    if signals.same_entry and not signals.order_ref and not state.flow and not (confident and intent in control):
        return Decision("answer_faq", intent, [signals.same_entry], reason="a follow-up on the answer just given")
    # "one that mops too?", "does it need the internet?" right after products were shown: about those
    # products or a narrower search for them, which nothing above answered; not a new, unknown topic
    # (a sure FAQ topic, "can you set it up for me?", goes on to the FAQ's near answers).
    if signals.about_products and not signals.order_ref and not state.flow \
            and not (confident and (intent in small_talk | out_of_scope or faq_category(intent))):
        return Decision("recommend", intent, reason=ABOUT_SHOWN_PRODUCTS)
    if confident and intent in out_of_scope:
        return Decision("out_of_scope", intent)
    # Not a flow turn, no FAQ answer, and unlike anything we were trained on: say so honestly.
    # ... unless one FAQ answer stands far ahead of the rest, nearly certain ("my accnt is blocked after
    # too many pasword tries, how long till I get back in"): typos make a message look unfamiliar.
    clear_lead = top is not None and top.score >= th.faq - th.near_faq and _far_ahead(faq_hits)
    if signals.out_of_scope and not signals.order_ref and not signals.shopping and not clear_lead \
            and not (confident and intent in small_talk | control):
        return Decision("out_of_scope", intent, reason="the out-of-scope detector flagged it")
    # "need a laptop for notes, can't spend more than $500": the NLU is unsure but ranks a product
    # search first or second, and the message names a category, brand or budget (and is not about a
    # purchase already made: "bought a mixer and now it's $50 cheaper" is a price-match question).
    if signals.shopping and not confident and any(name in search for name, _ in nlu.ranking[:2]) \
            and (intent in search or not ALREADY_BOUGHT.search(text)):
        return Decision("recommend", intent, reason="a catalogue category, brand or budget was named")
    if confident and intent in control:
        return Decision("small_talk", intent)
    # "ok thanks anyway", "fair enough, see you", "You have been very kind. Good night.": short pleasantries
    # (a few short sentences, no question) need less certainty.
    if intent in small_talk and _short_sentences(text) and conf >= th.intent / 2 \
            and (top is None or top.score < th.faq):
        return Decision("small_talk", intent, reason="a short pleasantry")
    if top is not None and top.score >= th.faq - th.near_faq and (faq_category(intent) or not confident):
        cands = _close_candidates(faq_hits, th)
        if len(cands) < 2:   # never "Did you mean" with one candidate: the near miss is the answer
            return Decision("answer_faq", intent, [top.id], reason="the only near FAQ answer")
        return Decision("clarify", intent, cands, reason="no FAQ answer was certain enough")
    # One FAQ entry far ahead of every other, a little further below the threshold ("do u guys do that
    # pay over time thing"): with nothing near it, it is the answer rather than "please rephrase".
    # When the NLU is sure of that entry's topic, a little further still ("I've no idea how to get the
    # thermostat and the plugs working, can anyone help?" is the smart-home setup entry, 0.27 ahead).
    reach = 3 * th.near_faq if confident and top is not None and \
        faq_category(intent) == top.meta.get("category") else 2 * th.near_faq
    if top is not None and faq_category(intent) and top.score >= th.faq - reach and _far_ahead(faq_hits):
        return Decision("answer_faq", intent, [top.id], reason="one FAQ answer far ahead of the others")
    if confident and faq_category(intent) and top is not None:
        return Decision("fallback", intent, reason="FAQ topic recognised but no answer matched")
    if not confident and top is not None and top.score < th.faq - th.near_faq and intent in out_of_scope:
        return Decision("out_of_scope", intent)
    if confident and intent in flow_actions:
        return Decision("fallback", intent, reason=f"no flow for {intent} is available")
    return Decision("fallback", intent, reason="nothing matched with confidence")
