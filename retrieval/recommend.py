"""Product recommendations: dense search over the catalogue + filters parsed from the request.

`recommend("a quiet dishwasher under $600", vector)`:

1. `parse_filters` (retrieval.filters) reads the category ("dishwasher" is a product type of
   *kitchen*), the brand and price bounds ("under $600" -> max 600) from the text.
2. The catalogue is ranked by cosine similarity to the request's embedding (products are
   embedded as title + type + category + brand + tags + description + attributes).
3. Filters are applied as hard constraints; a small bonus for tags the request names
   ("quiet", "gamer", "gift") re-ranks the survivors.
4. When the filters leave nothing, they are relaxed in a fixed order (`RELAX_ORDER`): widen the
   price bounds by 25%, drop the brand, drop the price, drop the category; the reason says which.

Each suggestion carries a one-line reason (retrieval.reasons).
"""
from __future__ import annotations

import inspect
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from retrieval.compare import (
    TitleMatcher,
    asks_cheaper,
    attribute_value,
    find_comparison,
    find_superlative,
    is_accessory,
    refers_to_shown,
    superlative_pool,
)
from retrieval.filters import (
    AROUND_TOLERANCE,
    Filters,
    category_vocabulary,
    parse_filters,
    product_brand,
    product_price,
    query_words,
)
from retrieval.index import BUILD_HINT, VectorIndex
from retrieval.reasons import (
    attr_phrase,
    matched_tags,
    recommend_reason,
    similar_reason,
)

if TYPE_CHECKING:
    from runtime.embedder import Embedder

logger = logging.getLogger(__name__)

PRODUCT_MAX_TOKENS = 256    # product texts are longer than chat messages
TAG_BONUS = 0.03            # per tag the request names, at most two: nudges, never overrides similarity
RELAX_ORDER = ("widen_price", "drop_brand", "drop_price", "drop_category")

# Words that ask for more or less of a numeric attribute ("quietest", "ultralight", "cheap"):
# (attribute, +1 more is better / -1 less is better). "price" is the product's price.
PREFERENCES: dict[str, tuple[tuple[str, int], ...]] = {
    "quiet": (("noise_db", -1),), "quieter": (("noise_db", -1),), "quietest": (("noise_db", -1),),
    "silent": (("noise_db", -1),), "light": (("weight_kg", -1), ("weight_g", -1)),
    "lightweight": (("weight_kg", -1), ("weight_g", -1)), "ultralight": (("weight_kg", -1),),
    "lightest": (("weight_kg", -1), ("weight_g", -1)), "battery": (("battery_h", 1), ("battery_mah", 1)),
    "lasting": (("battery_h", 1), ("battery_mah", 1)), "powerful": (("ram_gb", 1), ("wattage", 1)),
    "big": (("screen_in", 1), ("capacity_qt", 1), ("capacity_l", 1)), "biggest": (("screen_in", 1), ("capacity_qt", 1)),
    "large": (("screen_in", 1), ("capacity_qt", 1), ("capacity_l", 1)), "largest": (("screen_in", 1),),
    "small": (("width_in", -1), ("screen_in", -1)), "smallest": (("width_in", -1), ("screen_in", -1)),
    "tiny": (("width_in", -1), ("screen_in", -1)), "compact": (("width_in", -1),), "slim": (("width_in", -1),),
    "bright": (("lumens", 1),), "brightest": (("lumens", 1),), "fast": (("refresh_hz", 1),),
    "cheap": (("price", -1),), "cheapest": (("price", -1),), "affordable": (("price", -1),),
    "inexpensive": (("price", -1),), "budget": (("price", -1),),
}
PREFERENCE_BONUS = 0.06     # the best product on an asked-for attribute gains this much, the worst nothing


@dataclass
class Suggestion:
    product: dict
    score: float
    reason: str
    relaxed: list[str] = field(default_factory=list)  # filters relaxed to find it, in RELAX_ORDER


def product_text(product: dict) -> str:
    """What a product is embedded as: the words a customer would use first, details after."""
    attrs = dict(product.get("attributes") or {})
    tags = attrs.pop("tags", []) or []
    ptype = attrs.pop("type", None)
    parts = [str(product.get("title", "")), str(ptype or ""), str(product.get("category", "")).replace("_", " "),
             product_brand(product), ", ".join(str(t).replace("_", " ") for t in tags),
             str(product.get("description", ""))]
    details = [s for k, v in attrs.items() if (s := attr_phrase(k, v))]
    parts.append("; ".join(details))
    return ". ".join(p for p in parts if p)


def _relaxed(asked: Filters, steps: Sequence[str]) -> Filters:
    f = replace(asked)
    for step in steps:
        if step == "widen_price":
            if f.min_price is not None:
                f.min_price = f.min_price * (1 - AROUND_TOLERANCE)
            if f.max_price is not None:
                f.max_price = f.max_price * (1 + AROUND_TOLERANCE)
        elif step == "drop_brand":
            f.brand = None
        elif step == "drop_price":
            f.min_price = f.max_price = f.target_price = None
        elif step == "drop_category":
            f.category = None
    return f


class Recommender:
    """Recommendations and "similar items" over a product `VectorIndex` (meta = product record)."""

    def __init__(self, index: VectorIndex, embedder: "Embedder | None" = None) -> None:
        self.index = index
        self.embedder = embedder  # only needed when recommend() is called without a vector
        self.products: dict[str, dict] = {id_: meta for id_, meta in index.items()}
        self.categories = sorted({p["category"] for p in self.products.values() if p.get("category")})
        self.brands = sorted({b for p in self.products.values() if (b := product_brand(p))})
        self.vocab = category_vocabulary(self.categories, self.products.values())
        self.titles = TitleMatcher.of(self.products)

    @classmethod
    def build(cls, products: Sequence[dict], embedder: "Embedder", *, exact_max: int = 50_000,
              kind: str | None = None, show_progress: bool = False) -> "Recommender":
        texts = [product_text(p) for p in products]
        vectors = _encode_documents(embedder, texts, show_progress)
        index = VectorIndex.build([str(p["id"]) for p in products], vectors, list(products),
                                  fingerprint=embedder.fingerprint, exact_max=exact_max, kind=kind,
                                  info={"content": "products", "encoder": embedder.name})
        return cls(index, embedder)

    def save(self, directory: str | Path) -> Path:
        return self.index.save(directory)

    @classmethod
    def load(cls, directory: str | Path, expected_fingerprint: str | None = None, *,
             embedder: "Embedder | None" = None, hint: str = BUILD_HINT) -> "Recommender":
        return cls(VectorIndex.load(directory, expected_fingerprint, hint=hint), embedder)

    def parse(self, text: str) -> Filters:
        return parse_filters(text, self.vocab, self.brands)

    def comparison(self, text: str, shown: Sequence[str] = ()) -> list[dict]:
        """The products a comparison request names ("difference between A and B"), else []; `shown`:
        the products last shown in the conversation ("compare the first two")."""
        return [self.products[i] for i in find_comparison(text, self.products, self.titles, shown)]

    def _ranked(self, vector: np.ndarray) -> list[tuple[str, float]]:
        n = len(self.index)
        # Small catalogues are ranked whole (filters may reject most of them); big ones by their top 2,000.
        hits = self.index.search(vector, n if n <= 20_000 else 2_000)[0]
        return [(h.id, h.score) for h in hits]

    def recommend(self, text: str, vector: Any = None, k: int = 5) -> list[Suggestion]:
        """Up to k products for a free-text request (vector = the request's embedding)."""
        if vector is None:
            if self.embedder is None:
                raise ValueError("recommend() needs the request's vector or a Recommender with an embedder")
            vector = self.embedder.encode([text])[0]
        if not len(self.index):
            return []
        asked = self.parse(text)
        words = query_words(text)
        ranked = self._ranked(np.asarray(vector, dtype=np.float32))
        steps: list[str] = []
        f = asked
        survivors = [(i, s) for i, s in ranked if f.accepts(self.products[i])]
        for step in RELAX_ORDER:
            if survivors:
                break
            if not _relax_applies(asked, step):
                continue
            steps.append(step)
            f = _relaxed(asked, steps)
            survivors = [(i, s) for i, s in ranked if f.accepts(self.products[i])]
        if steps:
            logger.debug("relaxed %s for %r", steps, text)
        prefs = _preference_bonus([self.products[i] for i, _ in survivors], words)
        scored = []
        for (pid, s), pref in zip(survivors, prefs):
            p = self.products[pid]
            bonus = TAG_BONUS * min(2, len(matched_tags(p, words))) + pref
            scored.append((s + bonus, pid))
        scored.sort(key=lambda t: -t[0])
        superlative = find_superlative(text) if f.category is not None else None
        if superlative is not None:
            # "the cheapest robot vacuum": a strict order on the attribute among the matching products
            # that have it (the rest keep their similarity order after them).
            keys, sign = superlative
            # Among the products that fit what was asked: the type it names ("monitor" in a category that
            # also has consoles), the values it names ("4k", "espresso"), no accessories unless named.
            fitting = {str(p["id"]) for p in superlative_pool(text, [self.products[pid] for _, pid in scored])}
            valued = [(v, score, pid) for score, pid in scored if pid in fitting
                      if (v := attribute_value(self.products[pid], keys)) is not None]
            if valued:
                valued.sort(key=lambda t: (-sign * t[0], -t[1]))
                rest = [(score, pid) for score, pid in scored if pid not in {p for _, _, p in valued}]
                scored = [(score, pid) for _, score, pid in valued] + rest
        return [Suggestion(self.products[pid], float(score), recommend_reason(self.products[pid], words, f, asked, steps), list(steps))
                for score, pid in scored[:k]]

    def names_another_kind(self, text: str, shown: Sequence[str]) -> bool:
        """The message names a product category none of the `shown` products is in ("what about laptops?")."""
        return _another_kind(self.parse(text), [self.products[i] for i in shown if i in self.products])

    def follow_up(self, text: str, shown: Sequence[str], k: int = 5,
                  asked_before: str = "") -> tuple[str, list[Suggestion]] | None:
        """A shopping follow-up over the products just shown, else None (then search as usual):

        - ("shown", the shown products ranked) for a superlative that points back at them:
          "which of those is the cheapest" orders what was shown, it does not search again; the ones
          that fit `asked_before` (the request that showed them: "robot vacuums that mop") first;
        - ("cheaper", products of the same kind cheaper than the cheapest shown) for "anything cheaper?",
          those that fit `asked_before` first.
        """
        shown_products = [self.products[i] for i in dict.fromkeys(shown) if i in self.products]
        if not shown_products:
            return None
        asked = self.parse(text)
        if _another_kind(asked, shown_products):
            return None                       # "which one is the cheapest laptop" after TVs: a new search
        words = query_words(text)
        superlative = find_superlative(text)
        if superlative is not None and refers_to_shown(text):
            keys, sign = superlative
            fitting = superlative_pool(asked_before, shown_products) if asked_before else shown_products
            fitting = superlative_pool(text, fitting)
            first = _by_value(fitting, keys, sign)
            ranked = first + _by_value([p for p in shown_products if p not in first], keys, sign)
            return "shown", [Suggestion(p, 1.0, recommend_reason(p, words, Filters(), Filters(), []))
                             for p in ranked[:k]]
        # A bare "anything cheaper?"; one that names what it wants ("cheaper, headphones are fine too")
        # or a budget is a new search.
        if superlative is None and asks_cheaper(text) and asked.is_empty():
            return "cheaper", self._cheaper_than(shown_products, words, k, asked_before)
        return None

    def _cheaper_than(self, shown: list[dict], words: set[str], k: int, asked_before: str) -> list[Suggestion]:
        """Products of the shown ones' category (and type, when most of them share one) under the
        cheapest shown price, the closest in price first; accessories only after accessories."""
        prices = [v for p in shown if (v := product_price(p)) is not None]
        if not prices:
            return []
        category = shown[0].get("category")
        types = Counter((p.get("attributes") or {}).get("type") for p in shown)
        kind, count = types.most_common(1)[0]
        kind = kind if 2 * count > len(shown) else None
        accessories = all(is_accessory(p) for p in shown)
        found = [p for p in self.products.values()
                 if p.get("category") == category and str(p["id"]) not in {str(s["id"]) for s in shown}
                 and (kind is None or (p.get("attributes") or {}).get("type") == kind)
                 and is_accessory(p) == accessories
                 and (v := product_price(p)) is not None and v < min(prices)]
        found.sort(key=lambda p: -product_price(p))
        fitting = superlative_pool(asked_before, found) if asked_before else found
        found = fitting + [p for p in found if p not in fitting]
        return [Suggestion(p, 1.0, recommend_reason(p, words, Filters(), Filters(), [])) for p in found[:k]]

    def similar(self, product_id: str, k: int = 5) -> list[Suggestion]:
        """Nearest products to one product, same category first, never the product itself.

        An unknown id gives an empty list (the id usually comes from a customer's message)."""
        if product_id not in self.products:
            logger.info("similar(): unknown product id %r", product_id)
            return []
        base = self.products[product_id]
        vector = self.index.reconstruct([product_id])[0]
        ranked = [(i, s) for i, s in self._ranked(vector) if i != product_id]
        same = [(i, s) for i, s in ranked if self.products[i].get("category") == base.get("category")]
        other = [(i, s) for i, s in ranked if self.products[i].get("category") != base.get("category")]
        out = []
        for pid, s in (same + other)[:k]:
            out.append(Suggestion(self.products[pid], float(s), similar_reason(base, self.products[pid])))
        return out


def _by_value(products: list[dict], keys: tuple[str, ...], sign: int) -> list[dict]:
    """The products with the attribute, the most (+1) or least (-1) first, then those without it."""
    valued = sorted((p for p in products if attribute_value(p, keys) is not None),
                    key=lambda p: -sign * attribute_value(p, keys))
    return valued + [p for p in products if p not in valued]


def _preference_bonus(products: list[dict], words: set[str]) -> list[float]:
    """Rank-based bonus for requests like "quietest" or "ultralight" among the candidates that
    have the attribute (ranks, not values, so dB and kg weigh the same)."""
    bonus = [0.0] * len(products)
    for w in words & PREFERENCES.keys():
        for key, sign in PREFERENCES[w]:
            vals = [(product_price(p) if key == "price" else (p.get("attributes") or {}).get(key)) for p in products]
            idx = [i for i, v in enumerate(vals) if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(idx) < 2:
                continue
            order = sorted(idx, key=lambda i: sign * vals[i])  # worst first
            for rank, i in enumerate(order):
                bonus[i] = max(bonus[i], PREFERENCE_BONUS * rank / (len(order) - 1))
    return bonus


def _encode_documents(embedder: "Embedder", texts: list[str], show_progress: bool) -> np.ndarray:
    """Encode long texts with a longer token limit when the embedder supports one."""
    try:
        params = inspect.signature(embedder.encode).parameters
    except (TypeError, ValueError):
        params = {}
    if "max_length" in params:
        return embedder.encode(texts, show_progress=show_progress, max_length=PRODUCT_MAX_TOKENS)
    return embedder.encode(texts, show_progress=show_progress)


def _relax_applies(f: Filters, step: str) -> bool:
    return {"widen_price": f.min_price is not None or f.max_price is not None,
            "drop_brand": f.brand is not None,
            "drop_price": f.min_price is not None or f.max_price is not None,
            "drop_category": f.category is not None}[step]


def _another_kind(asked: Filters, shown_products: Sequence[dict]) -> bool:
    return asked.category is not None and all(p.get("category") != asked.category for p in shown_products)
