"""Follow-ups read with the previous turn (service/context.py) and their wiring in the engine."""
from retrieval.index import Hit
from service.context import follow_up_context, follows_products, merge_hits, same_entry
from service.sessions import SessionState

AFTER_FAQ = [{"role": "user", "text": "how long does delivery take?"},
             {"role": "assistant", "text": "3-5 business days.", "action": "answer_faq", "faq_id": "faq_ship_02"}]


def test_a_short_follow_up_after_a_faq_answer_gets_the_previous_message():
    ctx = follow_up_context(AFTER_FAQ, "and what if I need it faster?")
    assert ctx is not None and ctx.previous_user == "how long does delivery take?" and ctx.faq_id == "faq_ship_02"
    assert follow_up_context(AFTER_FAQ, "does that cost anything") is not None       # points back ("that")


def test_a_bare_question_of_a_few_words_is_a_follow_up():
    assert follow_up_context(AFTER_FAQ, "how much?") is not None
    assert follow_up_context(AFTER_FAQ, "why not") is not None
    assert follow_up_context(AFTER_FAQ, "how much is express shipping to Canada") is None   # a question of its own
    # led by a preposition, or by "ok" before the question word
    assert follow_up_context(AFTER_FAQ, "for how long?") is not None
    assert follow_up_context(AFTER_FAQ, "by when?") is not None
    assert follow_up_context(AFTER_FAQ, "ok how long do i wait before i tell u") is not None
    assert follow_up_context(AFTER_FAQ, "for my nephew, do you have gaming laptops") is None
    # closing with "then"
    assert follow_up_context(AFTER_FAQ, "whats the number to ring on monday then") is not None
    assert follow_up_context(AFTER_FAQ, "then I want to know the number to call") is None


def test_the_same_entry_only_when_the_context_reading_finds_it_first_and_certainly():
    ctx = follow_up_context(AFTER_FAQ, "how much?")
    first = [Hit("faq_ship_02", 0.70, {}), Hit("faq_ship_01", 0.50, {})]
    assert same_entry(ctx, first, threshold=0.6) == "faq_ship_02"
    assert same_entry(ctx, first, threshold=0.75) is None                              # not certain
    assert same_entry(ctx, first[::-1], threshold=0.4) is None                        # another entry first
    assert same_entry(None, first, threshold=0.6) is None and same_entry(ctx, [], threshold=0.6) is None


def test_a_follow_up_right_after_products_were_shown_is_about_them():
    shown = SessionState("s", last_products=["P1114"])
    shown.history = [{"role": "user", "text": "cheapest robot vacuum"},
                     {"role": "assistant", "text": "Here are...", "action": "recommend"}]
    assert follows_products(shown, "one that mops too?")
    assert follows_products(shown, "something lighter I can carry to clients though?")
    assert not follows_products(shown, "something is wrong with my order and I need to know what happened to it")
    assert not follows_products(shown, "How long does standard delivery take for a big parcel like a sofa?")
    later = SessionState("s", last_products=["P1114"], history=shown.history + AFTER_FAQ)
    assert not follows_products(later, "one that mops too?")        # a FAQ answer came in between
    assert not follows_products(SessionState("s", history=shown.history), "one that mops too?")


def test_messages_that_stand_on_their_own_get_no_context():
    assert follow_up_context(AFTER_FAQ, "Where is my order HC-104240?") is None     # no opener, nothing pointed at
    assert follow_up_context(AFTER_FAQ, "and " + "word " * 20) is None               # too long for a follow-up
    assert follow_up_context([], "and what about that?") is None
    after_flow = [AFTER_FAQ[0], {**AFTER_FAQ[1], "action": "order_status", "faq_id": None}]
    assert follow_up_context(after_flow, "and what about that?") is None             # only after an FAQ answer


def test_merged_hits_keep_each_entry_best_score_and_never_repeat_the_answer_from_context():
    own = [Hit("faq_ship_03", 0.55, {}), Hit("faq_ship_02", 0.40, {})]
    with_context = [Hit("faq_ship_02", 0.90, {}), Hit("faq_ship_03", 0.70, {}), Hit("faq_ship_01", 0.60, {})]
    merged = merge_hits(own, with_context, k=3, answered="faq_ship_02")
    assert [(h.id, h.score) for h in merged] == [("faq_ship_03", 0.70), ("faq_ship_01", 0.60), ("faq_ship_02", 0.40)]


def test_the_engine_reads_a_follow_up_together_with_the_message_before(assistant, monkeypatch):
    first = assistant.respond("ctx-1", "How much does shipping cost?")
    assert first.action == "answer_faq"
    parsed: list[str] = []
    parse = assistant.nlu.parse
    monkeypatch.setattr(assistant.nlu, "parse", lambda text: parsed.append(text) or parse(text))
    reply = assistant.respond("ctx-1", "and does that take long?")
    assert parsed == ["and does that take long?", "How much does shipping cost? and does that take long?"]
    assert reply.action in ("answer_faq", "clarify")
    monkeypatch.setattr(assistant, "use_context", False)
    parsed.clear()
    assistant.respond("ctx-1", "and does that take long?")
    assert parsed == ["and does that take long?"]


def test_the_engine_narrows_the_products_just_shown_with_the_request_that_showed_them(assistant, monkeypatch):
    first = assistant.respond("ctx-p", "cheapest robot vacuum you have")
    assert first.action == "recommend" and first.products
    searched: list[str] = []
    recommend = assistant.recommender.recommend
    monkeypatch.setattr(assistant.recommender, "recommend",
                        lambda text, *a, **kw: searched.append(text) or recommend(text, *a, **kw))
    reply = assistant.respond("ctx-p", "one that mops too?")
    assert reply.action == "recommend" and searched == ["cheapest robot vacuum you have one that mops too?"]
    assert reply.products and all(p.category == "cleaning" for p in reply.products)
    searched.clear()
    assistant.respond("ctx-p", "what about laptops?")       # a kind of its own: a new search
    assert searched == ["what about laptops?"]
