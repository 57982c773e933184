"""Comparisons ("A vs B", "difference between A and B") resolve named products by their titles and
never guess; superlatives ("the cheapest robot vacuum") order strictly by the attribute."""
import json
from pathlib import Path

import pytest

from retrieval.compare import (
    TitleMatcher,
    asks_cheaper,
    compare_rows,
    comparison_text,
    find_comparison,
    find_superlative,
    is_accessory,
    named_features,
    named_values,
    refers_to_shown,
    superlative_pool,
)

PRODUCTS = {p["id"]: p for p in map(json.loads, (Path(__file__).resolve().parents[2] / "data" / "demo" /
                                                 "products.jsonl").read_text().splitlines())}
MATCHER = TitleMatcher.of(PRODUCTS)


def titles(text: str, shown=()) -> list[str]:
    return [PRODUCTS[i]["title"] for i in find_comparison(text, PRODUCTS, MATCHER, shown)]


@pytest.mark.parametrize("text, expected", [
    ("what's the difference between the Cirrus and the Cirrus Lite?",
     ["Northbay Cirrus Noise-Cancelling Headphones", "Northbay Cirrus Lite Headphones"]),
    ("Cirrus Lite vs Cirrus", ["Northbay Cirrus Lite Headphones", "Northbay Cirrus Noise-Cancelling Headphones"]),
    ("should I get the Pellix 8 or the Pellix 8 Pro?", ["Pellix 8 Smartphone", "Pellix 8 Pro Smartphone"]),
    ("how does the Pixwell 43 compare to the Vantio 40", ['Pixwell 43" 4K UHD TV', 'Vantio 40" Full HD Smart TV']),
    ("compare P1001 and P1003", ['Lumora 32" HD Smart TV', 'Pixwell 43" 4K UHD TV']),
    # one sentence of several, and "different between"
    ("So what is different between the Northbay Cirrus and the Cirrus Lite? Worth paying more?",
     ["Northbay Cirrus Noise-Cancelling Headphones", "Northbay Cirrus Lite Headphones"]),
    # the opening "is" is not part of the first name
    ("is the cirrus or the cirrus lite better?",
     ["Northbay Cirrus Noise-Cancelling Headphones", "Northbay Cirrus Lite Headphones"]),
])
def test_named_products_are_found(text, expected):
    assert titles(text) == expected


@pytest.mark.parametrize("text", [
    "can you refund me the difference?",                           # a refund question, no products
    "what's the difference between standard and express shipping?",
    "tv or laptop?",                                               # kinds, not products
    "what's the difference between a soundbar and headphones",
    "difference between the Arbor and the Pellix",                 # brands with many products: no guess
    "compare P1001 and P9999",                                     # an unknown id
])
def test_no_comparison_is_guessed(text):
    assert titles(text) == []


def test_the_products_just_shown_can_be_compared():
    assert titles("what's the difference between the first two?", shown=["P1001", "P1003", "P1002"]) == \
        ['Lumora 32" HD Smart TV', 'Pixwell 43" 4K UHD TV']
    assert titles("what's the difference between the first two?") == []


def test_rows_and_text_show_what_differs():
    a, b = PRODUCTS["P1001"], PRODUCTS["P1003"]
    rows = dict(compare_rows([a, b]))
    assert rows["Price"] == ["$179", "$299"] and "720p" in rows["Resolution"][0]
    text = comparison_text([a, b])
    assert "$179 vs $299" in text and "costs $120 less" in text and a["title"] in text


def test_superlatives_name_an_attribute_and_a_direction():
    assert find_superlative("the cheapest robot vacuum") == (("price",), -1)
    assert find_superlative("your most expensive TV?")[1] == 1
    assert find_superlative("a quiet dishwasher") is None          # a preference, not a superlative


def test_cheapest_in_a_category_comes_first(demo_recommender):
    for text, sign in (("what's the cheapest TV you sell?", -1), ("show me your most expensive TV", 1)):
        got = demo_recommender.recommend(text, k=3)
        # A TV, not the $34 wall mount sold in the same category.
        tvs = [p for p in PRODUCTS.values() if p["category"] == "tv" and not is_accessory(p)]
        best = (min if sign < 0 else max)(tvs, key=lambda p: p["price"])
        assert got[0].product["id"] == best["id"], text
        prices = [s.product["price"] for s in got]
        assert prices == sorted(prices, reverse=sign > 0)


def pool_ids(text: str, category: str) -> set[str]:
    return {p["id"] for p in superlative_pool(text, [p for p in PRODUCTS.values() if p["category"] == category])}


def test_superlatives_rank_only_what_fits_the_request():
    tvs = {p["id"] for p in PRODUCTS.values() if p["category"] == "tv"}
    four_k = {i for i in tvs if PRODUCTS[i]["attributes"].get("resolution") == "4K"}
    assert pool_ids("whats the cheapest 4k tv you sell", "tv") == four_k and "P1016" not in four_k
    assert pool_ids("cheapest mini-led tv", "tv") == {"P1012"}                 # not every "LED" panel too
    assert pool_ids("the cheapest OLED TV", "tv") == {"P1009", "P1011"}
    assert pool_ids("what's the cheapest tv", "tv") == tvs - {"P1015", "P1016"}  # no accessories...
    assert pool_ids("your cheapest tv mount", "tv") == {"P1015", "P1016"}      # ...unless asked for
    assert pool_ids("most expensive espresso machine", "kitchen") == {"P1091", "P1092"}
    assert pool_ids("cheapest robot vacuum that mops", "cleaning") == {"P1114", "P1115"}
    assert pool_ids("the priciest dishwasher", "kitchen") == \
        {p["id"] for p in PRODUCTS.values() if p["attributes"].get("type") == "dishwasher"}


def test_named_values_and_features():
    tvs = [p for p in PRODUCTS.values() if p["category"] == "tv"]
    assert named_values("a 4K Mini-LED tv", tvs) == {"resolution": {"4k"}, "panel": {"mini-led"}}
    assert named_values("top of the range tv", tvs) == {}
    vacuums = [p for p in PRODUCTS.values() if p["category"] == "cleaning"]
    assert named_features({"self", "emptying", "robot", "vacuum"}, vacuums) == ["self_empty"]
    assert is_accessory(PRODUCTS["P1016"]) and not is_accessory(PRODUCTS["P1003"])


@pytest.mark.parametrize("text, back", [
    ("which of those is the cheapest", True), ("which one is the lightest?", True),
    ("the cheapest of the ones you showed", True), ("which of them is quietest", True),
    ("what's the cheapest 4k tv you sell", False), ("the cheapest robot vacuum", False),
])
def test_pointing_back_at_the_shown_products(text, back):
    assert refers_to_shown(text) is back


@pytest.mark.parametrize("text, cheaper", [
    ("anything cheaper?", True), ("got something less expensive", True), ("any more affordable ones?", True),
    ("a laptop cheaper than $500", False), ("the cheapest tv", False),
])
def test_asking_for_cheaper(text, cheaper):
    assert asks_cheaper(text) is cheaper
