"""Comparisons and superlatives over the catalogue's attributes.

- `find_comparison(text, products)`: "what's the difference between the Arbor 14 and the Arbor Lite 14?",
  "Cirrus vs Cirrus Lite", "compare P1001 and P1003" -> the two (or more) products named, by product id
  or by the words of their titles. Nothing is guessed: a mention that matches no title, or two
  titles equally well, gives no comparison.
- `compare_rows(products)`: the side-by-side table (price and every attribute either product has).
- `find_superlative(text)`: "the cheapest robot vacuum", "the lightest laptop" -> (attribute, direction),
  so the recommender ranks strictly by that attribute instead of nudging by it.
- `superlative_pool(text, products)`: the products a superlative ranks: those that fit what was asked
  ("4k" = resolution 4K, "espresso" = style espresso, the product type named) and no accessories
  (a $34 wall mount is not "the cheapest 4K TV") unless the request names the accessory.
- `refers_to_shown(text)` / `asks_cheaper(text)`: follow-ups over the products just shown
  ("which of those is the cheapest", "anything cheaper?").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from retrieval.filters import product_price
from retrieval.reasons import attr_phrase, money

_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_PRODUCT_ID = re.compile(r"\bP\d{3,6}\b", re.I)
_ARTICLE = r"(?:the\s+|a\s+|an\s+|your\s+|my\s+)?"
_END = r"\s*(?:models?|ones?|versions?)?\s*[?.!]*\s*$"
# The mention spans of a comparison request; each pattern names them a and b.
_PATTERNS = [re.compile(p, re.I) for p in (
    rf"\b(?:difference|differences|differ|different)\s+(?:is\s+there\s+)?between\s+{_ARTICLE}(?P<a>.+?)\s+and\s+{_ARTICLE}(?P<b>.+?){_END}",
    rf"\bcompare\s+{_ARTICLE}(?P<a>.+?)\s+(?:and|with|to|vs\.?|versus)\s+{_ARTICLE}(?P<b>.+?){_END}",
    rf"\bhow\s+(?:does|do|is)\s+{_ARTICLE}(?P<a>.+?)\s+(?:compare|different|differ)\s+(?:to|with|from)\s+{_ARTICLE}(?P<b>.+?){_END}",
    rf"(?:^(?:(?:is|are)\s+)?|\b(?:is|are)\s+){_ARTICLE}(?P<a>[^,;?]+?)\s+(?:vs\.?|versus|or)\s+{_ARTICLE}(?P<b>[^,;?]+?)\s*(?:[,;:-]\s*)?"
    rf"(?:which\s+(?:one\s+)?is\s+(?:better|best)|better)?{_END}",
    rf"\bwhich\s+(?:one\s+)?(?:is\s+better|should\s+i\s+(?:get|buy|choose|pick))\s*[,:]?\s+{_ARTICLE}(?P<a>.+?)\s+or\s+{_ARTICLE}(?P<b>.+?){_END}",
    rf"\bshould\s+i\s+(?:get|buy|choose|pick)\s+{_ARTICLE}(?P<a>.+?)\s+or\s+{_ARTICLE}(?P<b>.+?){_END}",
    rf"^(?P<a>.+?)\s+(?:vs\.?|versus)\s+(?P<b>.+?){_END}",
)]
_SENTENCE_END = re.compile(r"(?<=[?!])\s+|(?<=\.)\s+(?=[A-Z])")
MAX_NAMESAKES = 3    # a mention's words may fit at most this many titles (then the closest fit decides)
_REFERS_TO_SHOWN = re.compile(r"\b(?:them|these|those|the\s+(?:first\s+)?two|both|the\s+top\s+two)\b", re.I)
# A superlative or "cheaper" over what was just shown: "which of those is the cheapest", "the lightest of them".
_POINTS_BACK = re.compile(r"\b(?:of\s+(?:those|these|them|the\s+ones?)|which\s+(?:one|of)|them|these|those|"
                          r"the\s+ones?\s+(?:you|u)\s+(?:just\s+)?(?:showed|show|shown|suggested|listed|mentioned|recommended))\b", re.I)
_CHEAPER = re.compile(r"\b(?:cheaper|less\s+expensive|lower[-\s]priced|more\s+affordable)\b(?!\s+than\s+\$?\s*\d)", re.I)
_COMPARE_CUE = re.compile(r"\b(?:difference|differences|differ|different\s+between|compare|comparison|vs\.?|versus|which\s+(?:one\s+)?is\s+better)\b", re.I)

# "cheapest", "most expensive": a strict order on one attribute (+1 the most, -1 the least first).
SUPERLATIVES: dict[str, tuple[tuple[str, ...], int]] = {
    r"cheapest|least\s+expensive|lowest[-\s]priced|most\s+affordable": (("price",), -1),
    r"most\s+expensive|priciest|highest[-\s]priced|top[-\s]of[-\s]the[-\s]range": (("price",), 1),
    r"biggest|largest": (("screen_in", "capacity_qt", "capacity_l", "capacity_cups"), 1),
    r"smallest|most\s+compact": (("screen_in", "width_in", "capacity_qt", "capacity_l"), -1),
    r"lightest": (("weight_kg", "weight_g"), -1),
    r"quietest": (("noise_db",), -1),
    r"brightest": (("lumens",), 1),
    r"longest\s+battery|best\s+battery": (("battery_h", "battery_mah"), 1),
}
_SUPERLATIVE = [(re.compile(rf"\b(?:{p})\b", re.I), keys, sign) for p, (keys, sign) in SUPERLATIVES.items()]


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace('"', " ").replace("-", " "))


@dataclass(frozen=True)
class TitleMatcher:
    """Resolves a customer's mention ("the Cirrus Lite", "Arbor 14") to one product by title words."""
    titles: dict[str, tuple[str, ...]]       # product id -> title tokens
    having: dict[str, frozenset[str]]        # token -> the ids of the titles that have it

    @classmethod
    def of(cls, products: dict[str, dict]) -> "TitleMatcher":
        titles = {pid: tuple(_tokens(str(p.get("title", "")))) for pid, p in products.items()}
        having: dict[str, set[str]] = {}
        for pid, tokens in titles.items():
            for t in tokens:
                having.setdefault(t, set()).add(pid)
        return cls(titles, {t: frozenset(ids) for t, ids in having.items()})

    def resolve(self, mention: str, exclude: Iterable[str] = ()) -> str | None:
        words = set(_tokens(mention))
        excluded = set(exclude)
        best: list[tuple[float, int, str]] = []
        for pid, title in self.titles.items():
            if pid in excluded:
                continue
            shared = words & set(title)
            # A model name, not just a brand or a kind ("headphones"): words that few titles share.
            if not shared or len(frozenset.intersection(*(self.having[t] for t in shared))) > MAX_NAMESAKES:
                continue
            covered = len(shared) / len(set(title))
            best.append((len(shared) + covered, -len(set(title) - words), pid))
        if not best:
            return None
        best.sort(reverse=True)
        if len(best) > 1 and best[0][:2] == best[1][:2]:
            return None                       # two titles fit equally well: ask rather than guess
        return best[0][2]


def find_comparison(text: str, products: dict[str, dict], matcher: TitleMatcher | None = None,
                    shown: Iterable[str] = ()) -> list[str]:
    """The ids of the products a comparison request names (at least two, distinct), else []."""
    ids = [m.group(0).upper() for m in _PRODUCT_ID.finditer(text)]
    ids = [i for i in dict.fromkeys(ids) if i in products]
    if len(ids) >= 2 and _COMPARE_CUE.search(text):
        return ids
    matcher = matcher or TitleMatcher.of(products)
    # The request may be one sentence of several ("What's different between A and B? Is it worth $120?").
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    for pattern in _PATTERNS:
        m = next((m for part in dict.fromkeys([text.strip()] + sentences) if (m := pattern.search(part))), None)
        if not m:
            continue
        # The more specific mention first, then the other among the rest: in "Cirrus vs Cirrus Lite"
        # the plain "Cirrus" is the one that is not the Lite.
        spans = sorted(("a", "b"), key=lambda k: -len(_tokens(m.group(k))))
        found: dict[str, str | None] = {}
        for k in spans:
            named = _PRODUCT_ID.search(m.group(k))
            found[k] = named.group(0).upper() if named else matcher.resolve(m.group(k), exclude=found.values())
        first, second = found["a"], found["b"]
        if first and second and first != second and first in products and second in products:
            return [first, second]
    shown = [i for i in shown if i in products]
    if len(shown) >= 2 and _COMPARE_CUE.search(text) and _REFERS_TO_SHOWN.search(text):
        return shown[:2]                      # "what's the difference between the first two?"
    return []


def compare_rows(products: list[dict]) -> list[tuple[str, list[str]]]:
    """(label, one value per product) for the price and every attribute any of them has, in a stable
    order; a product without the attribute shows "-"."""
    rows = [("Price", [money(p) if (p := product_price(x)) is not None else "-" for x in products])]
    keys: list[str] = []
    for p in products:
        keys += [k for k in (p.get("attributes") or {}) if k not in keys and k != "tags"]
    for key in keys:
        values = []
        for p in products:
            v = (p.get("attributes") or {}).get(key)
            phrase = attr_phrase(key, v) if v is not None else None
            values.append(phrase or ("no" if v is False else "-"))
        if len(set(values)) > 1 or "-" not in values:
            rows.append((key.replace("_", " ").capitalize(), values))
    return rows


def comparison_text(products: list[dict]) -> str:
    """A plain-text side-by-side summary for the chat bubble (the page can draw `compare_rows` as a card)."""
    names = [str(p.get("title", p.get("id"))) for p in products]
    lines = [f"Here is how the {' and the '.join(names)} compare:"]
    for label, values in compare_rows(products):
        if len(set(values)) > 1:              # only what differs; the rest is in the card
            lines.append(f"- {label}: " + " vs ".join(values))
    prices = [product_price(p) for p in products]
    if len(products) == 2 and None not in prices and abs(prices[0] - prices[1]) >= 1:
        cheaper = 0 if prices[0] < prices[1] else 1
        lines.append(f"The {names[cheaper]} costs {money(abs(prices[0] - prices[1]))} less.")
    if len(lines) == 1:
        lines.append("- They are the same on every attribute we list, price included.")
    return "\n".join(lines)


def find_superlative(text: str) -> tuple[tuple[str, ...], int] | None:
    """(attribute keys, +1 most / -1 least) for "the cheapest ...", "the lightest ...", else None."""
    for pattern, keys, sign in _SUPERLATIVE:
        if pattern.search(text):
            return keys, sign
    return None


def attribute_value(product: dict, keys: tuple[str, ...]) -> float | None:
    """The first numeric value of `keys` the product has ("price" is its price)."""
    for key in keys:
        v = product_price(product) if key == "price" else (product.get("attributes") or {}).get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def refers_to_shown(text: str) -> bool:
    """Whether the message points back at the products just shown ("of those", "which one", "them")."""
    return bool(_POINTS_BACK.search(text))


def asks_cheaper(text: str) -> bool:
    """"anything cheaper?", "something less expensive": cheaper than what was shown (not "cheaper than $300",
    a price bound the filters read)."""
    return bool(_CHEAPER.search(text))


# Product types that go with another product rather than being one ("wall mount" for a TV), besides
# products tagged "accessory".
ACCESSORY_TYPES = ("mount", "bracket", "charger", "cable", "adapter", "dock")
# Attribute values too common as plain words to say what was asked ("top of the range" is not cpu "top").
_VAGUE_VALUES = {"top", "high", "mid", "entry", "low", "none", "yes", "no", "standard", "other"}


def _words(text: str) -> set[str]:
    out = set()
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        out |= {w, w[:-1] if len(w) > 3 and w.endswith("s") else w}
    return out


def is_accessory(product: dict) -> bool:
    attrs = product.get("attributes") or {}
    kind = str(attrs.get("type") or "").lower().split()
    return "accessory" in (attrs.get("tags") or []) or bool(kind and kind[-1] in ACCESSORY_TYPES)


def names_type(product: dict, words: set[str]) -> bool:
    """Whether the words name the product's type ("robot vacuums"); an accessory by its head word too
    ("a tv mount" names the "wall mount")."""
    kind = str((product.get("attributes") or {}).get("type") or "").lower().replace("-", " ").split()
    if not kind:
        return False
    if all(w in words for w in kind):
        return True
    return is_accessory(product) and kind[-1] in words


def _string_values(product: dict) -> Iterable[tuple[str, str]]:
    """(attribute, value lower-cased) for every string value, list items included; tags and the type
    are left to their own rules."""
    for key, v in (product.get("attributes") or {}).items():
        if key in ("tags", "type"):
            continue
        for item in (v if isinstance(v, list) else [v]):
            if isinstance(item, str) and re.search(r"[a-z]", item.lower()):
                yield key, item.lower()


def named_values(text: str, products: Iterable[dict]) -> dict[str, set[str]]:
    """attribute -> the values of it the request names ("4k tv" -> {"resolution": {"4k"}}), matched as
    whole words, case-insensitively, longest first so "mini-led" is not also "led"."""
    by_value: dict[str, set[str]] = {}
    for p in products:
        for key, value in _string_values(p):
            if value not in _VAGUE_VALUES:
                by_value.setdefault(value, set()).add(key)
    rest = text.lower()
    named: dict[str, set[str]] = {}
    for value in sorted(by_value, key=len, reverse=True):
        parts = re.findall(r"[a-z0-9]+", value)
        if not parts:
            continue
        pattern = re.compile(r"(?<![a-z0-9])" + r"[\s-]*".join(map(re.escape, parts)) + r"(?![a-z0-9])")
        if pattern.search(rest):
            rest = pattern.sub(" ", rest)
            for key in by_value[value]:
                named.setdefault(key, set()).add(value)
    return named


def _has_value(product: dict, key: str, values: set[str]) -> bool:
    v = (product.get("attributes") or {}).get(key)
    items = v if isinstance(v, list) else [v]
    return any(isinstance(i, str) and i.lower() in values for i in items)


def superlative_pool(text: str, products: list[dict]) -> list[dict]:
    """The products (in their order) that a superlative in `text` ranks: each narrowing applies only
    when it leaves something, so a request that names nothing specific keeps every product."""
    words = _words(text)
    pool = products
    if not any(is_accessory(p) and names_type(p, words) for p in pool):
        pool = [p for p in pool if not is_accessory(p)] or pool
    typed = [p for p in pool if names_type(p, words)]
    pool = typed or pool
    for key, values in named_values(text, pool).items():
        pool = [p for p in pool if _has_value(p, key, values)] or pool
    for key in named_features(words, pool):
        pool = [p for p in pool if (p.get("attributes") or {}).get(key) is True] or pool
    return pool


def named_features(words: set[str], products: Iterable[dict]) -> list[str]:
    """The yes/no attributes the words name ("robot vacuums that mop" -> mop, "self-emptying" ->
    self_empty), by every word of the attribute's name (a longer word may extend it)."""
    keys = sorted({k for p in products for k, v in (p.get("attributes") or {}).items() if isinstance(v, bool)})
    return [k for k in keys
            if all(any(w == part or (len(part) >= 4 and w.startswith(part)) for w in words) for part in k.split("_"))]
