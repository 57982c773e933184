"""evaluation/unanswered.py: planted paraphrases of a question nobody answers end up in one cluster."""
from __future__ import annotations

from evaluation.unanswered import NEW_FAQ, Cluster, cluster_messages, draft_faq, find_unanswered, unanswered_turns

GIFT_WRAP = ["do you offer gift wrapping?", "can you gift wrap my order", "is gift wrapping available",
             "can I get the present wrapped as a gift", "do you wrap gifts for an extra fee?"]
PARKING = ["is there parking at your store", "where can I park when I visit the shop",
           "do you have a car park for customers"]
SINGLES = ["what's the meaning of life", "sing me a song about cheese"]


def turn(i: int, text: str, action: str = "fallback", feedback: int | None = None) -> dict:
    return {"turn_id": f"t-{i:04d}", "user_text": text, "action": action, "feedback": feedback}


def scripted() -> list[dict]:
    turns = [turn(i, t, "fallback" if i % 2 else "out_of_scope") for i, t in enumerate(GIFT_WRAP)]
    turns += [turn(10 + i, t, "clarify") for i, t in enumerate(PARKING)]
    turns += [turn(20 + i, t) for i, t in enumerate(SINGLES)]
    turns += [turn(30, "how long does shipping take", "answer_faq", feedback=-1),     # thumbs down counts
              turn(31, "how long does shipping take", "answer_faq"),                 # answered: not listed
              turn(32, "", "clarify")]                                                 # no message: not listed
    return turns


def test_which_turns_count_as_unanswered():
    picked = unanswered_turns(scripted())
    assert [t["turn_id"] for t in picked][-1] == "t-0030"
    assert len(picked) == len(GIFT_WRAP) + len(PARKING) + len(SINGLES) + 1


def test_planted_paraphrases_cluster_together(embedder):
    clusters = find_unanswered(scripted(), embedder)
    top = clusters[0]
    assert top.size == len(GIFT_WRAP) and set(top.examples) == set(GIFT_WRAP)     # the largest first, all of them
    assert top.question in GIFT_WRAP and top.reasons == {"fallback": 2, "out_of_scope": 3}
    parking = next(c for c in clusters if set(c.examples) & set(PARKING))
    assert set(parking.examples) == set(PARKING)
    for c in clusters:                                     # nothing else got pulled into the planted clusters
        if c is not top and c is not parking:
            assert not set(c.examples) & (set(GIFT_WRAP) | set(PARKING))
    assert sorted((c.size for c in clusters), reverse=True) == [c.size for c in clusters]


def test_single_and_empty_inputs():
    import numpy as np

    assert cluster_messages([], np.zeros((0, 4))) == []
    only = cluster_messages(["hello"], np.ones((1, 4)), turn_ids=["t-1"])
    assert len(only) == 1 and only[0].size == 1 and only[0].turn_ids == ["t-1"]


def test_draft_faq_payload_is_the_agreed_shape():
    payload = draft_faq(Cluster("do you offer gift wrapping?", 3,
                                ["do you offer gift wrapping?", "can you gift wrap my order", "is gift wrapping available"]))
    assert NEW_FAQ == "new_faq"
    assert payload == {"question": "do you offer gift wrapping?", "answer": "",
                       "paraphrases": ["can you gift wrap my order", "is gift wrapping available"]}


def test_a_draft_of_long_messages_stays_within_what_a_correction_accepts():
    from service.corrections import MAX_QUESTION_CHARS, MAX_TEXT_CHARS

    long_question = "why " + "does my parcel never arrive " * 20
    cluster = Cluster(long_question, 3, [long_question, "where is my parcel", "x" * (MAX_TEXT_CHARS + 1)])
    draft = draft_faq(cluster)
    assert len(draft["question"]) <= MAX_QUESTION_CHARS and draft["question"].startswith("why does my parcel")
    assert draft["paraphrases"] == ["where is my parcel"] and draft["answer"] == ""
