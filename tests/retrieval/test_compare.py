"""Comparisons ("A vs B", "difference between A and B") resolve named products by their titles and
never guess; superlatives ("the cheapest robot vacuum") order strictly by the attribute."""
import json
from pathlib import Path

import pytest

from retrieval.compare import TitleMatcher, compare_rows, comparison_text, find_comparison, find_superlative

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
        tvs = [p for p in PRODUCTS.values() if p["category"] == "tv"]
        best = (min if sign < 0 else max)(tvs, key=lambda p: p["price"])
        assert got[0].product["id"] == best["id"], text
        prices = [s.product["price"] for s in got]
        assert prices == sorted(prices, reverse=sign > 0)
