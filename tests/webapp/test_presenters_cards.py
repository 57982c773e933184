"""What the customer's page draws inside the assistant's bubble (webapp/presenters.py): product cards
and the side-by-side comparison card. Text only: every value escaped, no ids or scores."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from retrieval.compare import compare_rows, comparison_text
from service.reply import ProductCard, Reply
from webapp import presenters

DATA = Path(__file__).resolve().parents[2] / "data" / "demo"


class Table(HTMLParser):
    """The cells of an HTML table, row by row, as (tag, attributes, text), and its caption."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[tuple[str, dict, str]]] = []
        self.caption = ""
        self._cell: tuple[str, dict] | None = None
        self._text: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell, self._text = (tag, dict(attrs)), []
        elif tag == "caption":
            self._in_caption = True

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell:
            self.rows[-1].append((*self._cell, "".join(self._text)))
            self._cell = None
        elif tag == "caption":
            self._in_caption = False

    def handle_data(self, data):
        if self._cell:
            self._text.append(data)
        if self._in_caption:
            self.caption += data


def demo_products(*ids: str) -> list[dict]:
    products = {p["id"]: p for p in map(json.loads, (DATA / "products.jsonl").read_text().splitlines()) if p}
    return [products[i] for i in ids]


def comparison_reply(products: list[dict]) -> Reply:
    """What service/engine.py `_compare` returns for these products."""
    cards = [ProductCard(p["id"], p["title"], p.get("category", ""), p.get("brand", ""), float(p["price"]), "", 1.0)
             for p in products]
    reply = Reply(comparison_text(products), action="compare", products=cards, intent="product_search",
                  confidence=0.93, turn_id="t-0123456789abcdef")
    reply.debug["comparison"] = compare_rows(products)
    return reply


def table_of(content: str) -> Table:
    match = re.search(r'<table class="att-compare">.*?</table>', content)
    assert match, content
    table = Table()
    table.feed(match.group(0))
    return table


def test_a_comparison_is_a_table_with_the_products_as_columns():
    products = demo_products("P1036", "P1037")           # Arbor Cloudbook 11 and 14
    content = presenters.reply_content(comparison_reply(products))
    table = table_of(content)
    header, *body = table.rows
    assert [(tag, attrs.get("scope"), text) for tag, attrs, text in header] == \
        [("th", "col", "Feature"), ("th", "col", "Arbor Cloudbook 11"), ("th", "col", "Arbor Cloudbook 14")]
    assert "Arbor Cloudbook 11" in table.caption and "Arbor Cloudbook 14" in table.caption
    assert all(row[0][0] == "th" and row[0][1].get("scope") == "row" and len(row) == 3 for row in body)
    labels = {row[0][2]: [cell[2] for cell in row[1:]] for row in body}
    assert labels["Price"] == ["$229", "$329"]
    assert labels["RAM"] == ["4 GB RAM", "8 GB RAM"]                      # "Ram gb": the unit is in the values
    # The bubble's text around the card: its first line and the closing line, not the "- a vs b" lines.
    assert content.startswith(presenters.escape_text(comparison_text(products).split("\n")[0]))
    assert "costs $100 less" in content.replace("\\", "") and "vs" not in content
    # A single HTML block: a blank line inside it would end the block and show the rest as text.
    assert "\n\n" not in re.search(r"<table.*?</table>", content, re.S).group(0)


def test_the_comparison_card_escapes_every_value_and_shows_nothing_internal():
    products = [{"id": "P9001", "title": "<img src=x onerror=alert(1)> Lamp", "price": 10.0},
                {"id": "P9002", "title": "Plain lamp", "price": 12.5}]
    reply = comparison_reply(products)
    reply.debug["comparison"].append(("Colour", ["<b>red</b> & \"blue\"", "white"]))   # a catalogue's own words
    content = presenters.reply_content(reply)
    assert "<img" not in content and "<b>" not in content
    assert "&lt;img src=x onerror=alert(1)&gt; Lamp" in content
    assert "&lt;b&gt;red&lt;/b&gt; &amp; &quot;blue&quot;" in content
    assert not re.search(r"P900\d|t-0123|0\.93|product_search|confidence|score", content)
    # "Similar to" buttons for each product, worded with its title; the id travels only in the value.
    labels = [o["label"] for o in presenters.quick_replies(comparison_reply(products))]
    assert "Similar to Plain lamp" in labels and not any("P900" in label for label in labels)


def test_a_comparison_without_its_rows_is_shown_as_its_text():
    reply = comparison_reply(demo_products("P1036", "P1037"))
    reply.debug.clear()
    content = presenters.reply_content(reply)
    assert "<table" not in content and "Arbor Cloudbook 11" in content


def test_product_cards_show_name_price_and_reason_and_nothing_internal():
    cards = [ProductCard("P1036", "Arbor <Cloudbook> 11", "laptops", "Arbor", 229.0, "Light & rugged", 0.8123)]
    reply = Reply("Here are some ideas:\n- Arbor Cloudbook 11 ($229.00): Light & rugged", action="recommend",
                  products=cards, confidence=0.77)
    content = presenters.reply_content(reply)
    assert '<span class="att-card-title">Arbor &lt;Cloudbook&gt; 11</span>' in content
    assert '<span class="att-card-price">$229.00</span>' in content
    assert '<span class="att-card-reason">Light &amp; rugged</span>' in content
    assert not re.search(r"P1036|0\.81|0\.77|laptops", content)
