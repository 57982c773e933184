"""training/augment.py: label-preserving noise for the teacher's rows and FAQ pairs."""
from __future__ import annotations

import random

import datasets

from training.augment import NEIGHBOURS, augmented_copies, informal, typo, with_prefix, with_typos
from training.data import FaqRecord, faq_pairs, with_augmented_rows


def test_a_typo_is_one_slip_of_a_finger():
    rng = random.Random(0)
    for _ in range(200):
        out = typo("delivery", rng)
        assert abs(len(out) - len("delivery")) <= 1 and out[0] == "d"
    assert typo("the", rng) == "the" and typo("R2D2", rng) == "R2D2"   # short or not a word: left alone
    assert "s" in NEIGHBOURS["a"] and "q" in NEIGHBOURS["a"] and "p" not in NEIGHBOURS["a"]


def test_noisy_copies_change_the_text_but_not_what_it_asks():
    rng = random.Random(1)
    text = "How long does delivery take to Boston?"
    assert with_typos(text, rng) != text
    casual = informal(text, random.Random(2))
    assert casual == casual.lower() and not casual.endswith("?")
    assert with_prefix("I want to return my kettle", random.Random(3)).endswith("i want to return my kettle")
    short = with_prefix("thank you", random.Random(3))             # too short for an opening: a typo instead
    assert short != "thank you" and len(short.split()) == 2


def test_augmented_copies_are_deterministic_new_and_point_at_their_source():
    texts = ["where is my order please", "how long does delivery take usually", "hi", "cancel my order"]
    a, b = augmented_copies(texts, 2, seed=7), augmented_copies(texts, 2, seed=7)
    assert a == b and a != augmented_copies(texts, 2, seed=8)
    lowered = {t.lower() for t in texts}
    assert all(noisy.lower() not in lowered for _, noisy in a)
    assert len({noisy.lower() for _, noisy in a}) == len(a)        # no copy twice
    assert all(0 <= i < len(texts) for i, _ in a)


def test_augmented_rows_keep_each_rows_intent_and_add_only_copies():
    train = datasets.Dataset.from_dict({"text": ["where is my order please", "I want my money back for the lamp"],
                                        "intent": ["order_status", "refund"]})
    out, n = with_augmented_rows(train, 3, seed=1)
    rows = out.to_list()
    assert n == len(rows) - 2 and n > 0 and rows[:2] == train.to_list()
    for r in rows[2:]:
        source = "where is my order please" if r["intent"] == "order_status" else "i want my money back for the lamp"
        overlap = set(r["text"].lower().split()) & set(source.split())
        assert len(overlap) >= 2, r                                   # a noisy copy of its own row
    assert with_augmented_rows(train, 0, seed=1) == (train, 0)


def test_faq_pairs_gain_noisy_paraphrases_of_their_own_entry():
    records = [FaqRecord("f1", "How long does shipping take?", "3-5 days.", ["shipping time please", "delivery duration"]),
               FaqRecord("f2", "Can I return an item?", "Yes.", ["return policy details", "can i send it back"])]
    plain = faq_pairs(records, seed=0)
    noisy = faq_pairs(records, seed=0, augment_copies=2)
    assert len(noisy) > len(plain)
    extra = [r for r in noisy.to_list() if r not in plain.to_list()]
    assert extra and all(r["anchor"] == records[r["group"]].question for r in extra)
