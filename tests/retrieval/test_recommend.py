"""Recommendations: filter parsing (pure unit tests) and behaviour on the demo catalogue."""
from __future__ import annotations

import numpy as np
import pytest

from core.jsonl import read_jsonl
from retrieval.filters import Filters, category_vocabulary, parse_filters

CATS = ["audio", "kitchen", "laptops", "tv", "gaming", "furniture", "phones_tablets", "cameras", "smart_home"]
BRANDS = ["Sonvale", "Marlow Lane", "Brightwell"]
PRODUCTS = [
    {"id": "1", "category": "kitchen", "attributes": {"type": "dishwasher"}},
    {"id": "2", "category": "gaming", "attributes": {"type": "chair"}},
    {"id": "3", "category": "furniture", "attributes": {"type": "chair"}},
    {"id": "4", "category": "gaming", "attributes": {"type": "console"}},
    {"id": "5", "category": "cameras", "attributes": {"type": "action camera"}},
    {"id": "6", "category": "smart_home", "attributes": {"type": "security camera"}},
]
VOCAB = category_vocabulary(CATS, PRODUCTS)


def pf(text: str) -> Filters:
    return parse_filters(text, VOCAB, BRANDS)


@pytest.mark.parametrize("text, lo, hi", [
    ("a quiet dishwasher under $600", None, 600),
    ("below 600 dollars", None, 600),
    ("less than 50", None, 50),
    ("no more than $1,200", None, 1200),
    ("under a hundred bucks", None, 100),
    ("between 100 and 200", 100, 200),
    ("$100-$200 headphones", 100, 200),
    ("from $300 to $500", 300, 500),
    ("headphones 100 to 200 dollars", 100, 200),
    ("over 300", 300, None),
    ("at least $80", 80, None),
    ("around 50 dollars", 37.5, 62.5),
    ("gift for a gamer around 50 dollars", 37.5, 62.5),
    ("roughly $1.5k", 1125, 1875),
    ("50ish bucks", 37.5, 62.5),
    ("a $600 dishwasher", 450, 750),
])
def test_price_bounds(text, lo, hi):
    f = pf(text)
    assert (f.min_price, f.max_price) == (pytest.approx(lo) if lo else None, pytest.approx(hi) if hi else None)


@pytest.mark.parametrize("text", ["a 55 inch tv", "laptop under 2 kg", "a 4K tv", "42 dB dishwasher", "1TB console",
                                  "for a family of 4"])
def test_numbers_with_units_are_not_prices(text):
    f = pf(text)
    assert f.min_price is None and f.max_price is None


@pytest.mark.parametrize("text, category", [
    ("headphones", "audio"), ("wireless earbuds", "audio"), ("a new telly", "tv"), ("a quiet dishwasher", "kitchen"),
    ("gaming laptop", "laptops"), ("headphones for gaming", "audio"), ("gaming chair", "gaming"),
    ("which TVs are good for console gaming?", "tv"), ("which phone has the best camera?", "phones_tablets"),
    ("an action camera", "cameras"), ("a camera for my holidays", "cameras"),
    ("a gift for a gamer", None), ("something nice", None), ("a chair", None),
])
def test_category(text, category):
    assert pf(text).category == category


def test_brand_is_matched_whole_and_case_insensitively():
    assert pf("any marlow lane sofas?").brand == "Marlow Lane"
    assert pf("Sonvale headphones under $100") == Filters(category="audio", brand="Sonvale", max_price=100)
    assert pf("sonvaleish").brand is None


def test_plain_category_names_work_without_a_catalogue():
    assert parse_filters("cheap laptops", CATS, []).category == "laptops"
    assert parse_filters("", CATS, []).is_empty()


# ---- demo catalogue ---------------------------------------------------------------------------
def rec(demo_recommender, embedder, text, k=5):
    return demo_recommender.recommend(text, embedder.encode([text])[0], k=k)


def test_quiet_dishwasher_under_600(demo_recommender, embedder):
    out = rec(demo_recommender, embedder, "a quiet dishwasher under $600")
    assert out and all(s.product["category"] == "kitchen" and s.product["price"] <= 600 for s in out)
    assert out[0].product["attributes"]["type"] == "dishwasher"
    assert "within your $600 budget" in out[0].reason and "dB" in out[0].reason


def test_price_range_and_category_are_respected(demo_recommender, embedder):
    out = rec(demo_recommender, embedder, "headphones between 100 and 200 dollars")
    assert out and all(s.product["category"] == "audio" and 100 <= s.product["price"] <= 200 for s in out)
    assert all(not s.relaxed for s in out)


def test_reasons_are_single_readable_lines(demo_recommender, embedder):
    for text in ["gift for a gamer around 50 dollars", "cordless vacuum for pet hair", "4K TV under $500"]:
        for s in rec(demo_recommender, embedder, text):
            assert s.reason and "\n" not in s.reason and len(s.reason) < 200 and "$" in s.reason
            assert not s.reason[0].islower()


def test_impossible_filters_are_relaxed_and_said(demo_recommender, embedder):
    out = rec(demo_recommender, embedder, "a Lumora TV under $20")
    assert out and out[0].relaxed and out[0].relaxed[0] == "widen_price"
    assert "nothing matched every filter" in out[0].reason


def test_recommend_without_vector_uses_the_embedder(demo_recommender):
    assert demo_recommender.recommend("robot vacuum", k=2)[0].product["category"] == "cleaning"


def test_similar_excludes_itself_and_prefers_the_category(demo_recommender):
    pid = "P1083" if "P1083" in demo_recommender.products else next(iter(demo_recommender.products))
    base = demo_recommender.products[pid]
    out = demo_recommender.similar(pid, k=4)
    assert len(out) == 4 and all(s.product["id"] != pid for s in out)
    assert all(s.product["category"] == base["category"] for s in out)
    assert all(s.reason and "\n" not in s.reason for s in out)
    assert demo_recommender.similar("no-such-product") == []


# Measured on the 53 labelled shopping requests with all-MiniLM-L6-v2: precision@5 0.449
# (dense search alone 0.434; the best possible is 0.532 since most requests have 2-3 relevant
# products). The floor sits a few points below.
PRECISION_AT_5_FLOOR = 0.40


def test_demo_shopping_precision(demo_config, demo_recommender, embedder):
    reqs = read_jsonl(demo_config.data.shopping_requests)
    vecs = embedder.encode([r["text"] for r in reqs])
    p5 = np.mean([len({s.product["id"] for s in demo_recommender.recommend(r["text"], v, 5)} & set(r["relevant_ids"])) / 5
                  for r, v in zip(reqs, vecs)])
    assert p5 >= PRECISION_AT_5_FLOOR, f"precision@5 {p5:.3f}"


@pytest.mark.parametrize("text", ["nothing over $600", "not above 600 dollars", "no more than $600"])
def test_negated_lower_bound_is_an_upper_bound(text):
    f = parse_filters(text, ["kitchen"], [])
    assert f.max_price == 600 and f.min_price is None


@pytest.mark.parametrize("text", ["can't spend more than $500", "I cannot pay over 500 dollars",
                                  "don't want to spend more than $500"])
def test_a_refused_amount_is_an_upper_bound(text):
    f = pf(text)
    assert f.max_price == 500 and f.min_price is None


def test_student_laptop_within_a_refused_ceiling(demo_recommender, embedder):
    out = rec(demo_recommender, embedder, "I'm starting college in january and need a laptop for notes and essays, "
                                          "can't spend more than $500")
    assert out and all(s.product["category"] == "laptops" and s.product["price"] <= 500 for s in out)


@pytest.mark.parametrize("text, first", [
    ("whats the cheapest 4k tv you sell", "P1003"),                  # not the $34 wall mount
    ("most expensive espresso machine you sell?", "P1092"),          # not a dishwasher
    ("cheapest robot vacuum that mops", "P1114"),
    ("your cheapest tv mount", "P1016"),
])
def test_superlative_among_what_was_asked(demo_recommender, text, first):
    assert demo_recommender.recommend(text, k=3)[0].product["id"] == first


SHOWN_VACUUMS = ["P1115", "P1113", "P1112", "P1114", "P1117"]


def test_superlative_over_the_shown_products(demo_recommender):
    kind, out = demo_recommender.follow_up("which of those is the cheapest", SHOWN_VACUUMS)
    assert kind == "shown" and [s.product["id"] for s in out] == ["P1112", "P1113", "P1117", "P1114", "P1115"]
    # "those" are the ones that fit the request that showed them: robot vacuums that mop.
    kind, out = demo_recommender.follow_up("which of those is the cheapest", SHOWN_VACUUMS,
                                           asked_before="do you have any robot vacuums that mop as well?")
    assert [s.product["id"] for s in out][:2] == ["P1114", "P1115"] and len(out) == 5
    assert all(s.reason and "\n" not in s.reason for s in out)
    assert demo_recommender.follow_up("which one is the cheapest laptop", SHOWN_VACUUMS) is None  # a new search
    assert demo_recommender.follow_up("the cheapest robot vacuum", SHOWN_VACUUMS) is None       # not pointing back
    assert demo_recommender.follow_up("which of those is the cheapest", []) is None


def test_anything_cheaper_stays_with_the_kind_shown(demo_recommender):
    kind, out = demo_recommender.follow_up("anything cheaper?", ["P1004", "P1005"], asked_before="4k tvs")
    ids = [s.product["id"] for s in out]
    assert kind == "cheaper" and ids[0] == "P1003"                    # the 4K one first, then closest in price
    products = demo_recommender.products
    assert all(products[i]["category"] == "tv" and products[i]["price"] < 379 for i in ids)
    assert not {"P1015", "P1016"} & set(ids)                          # no wall mounts for a TV
    kind, out = demo_recommender.follow_up("anything cheaper?", ["P1112", "P1113", "P1114"])
    assert kind == "cheaper" and out == []                            # no robot vacuum under $229
    # Naming what else would do is a new search.
    assert demo_recommender.follow_up("anything cheaper? headphones are fine too", ["P1024"]) is None
