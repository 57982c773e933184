"""Product recommendations: dense search over the catalogue + filters parsed from the request.

`recommend("a quiet dishwasher under $600", vector)`:

1. `parse_filters` reads the category ("dishwasher" is a product type of *kitchen*), the brand
   and price bounds ("under $600" -> max 600) from the text.
2. The catalogue is ranked by cosine similarity to the request's embedding (products are
   embedded as title + type + category + brand + tags + description + attributes).
3. Filters are applied as hard constraints; a small bonus for tags the request names
   ("quiet", "gamer", "gift") re-ranks the survivors.
4. When the filters leave nothing, they are relaxed in a fixed order (`RELAX_ORDER`): widen the
   price bounds by 25%, drop the brand, drop the price, drop the category; the reason says which.

Each suggestion carries a one-line reason built from the attributes the request asked about
("Quiet at 44 dB, 15 place settings and $749, within your $800 budget").
"""
from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from retrieval.index import BUILD_HINT, VectorIndex

if TYPE_CHECKING:
    from retrieval.embedder import Embedder

logger = logging.getLogger(__name__)

PRODUCT_MAX_TOKENS = 256    # product texts are longer than chat messages
TAG_BONUS = 0.03            # per tag the request names, at most two: nudges, never overrides similarity
AROUND_TOLERANCE = 0.25     # "around $50" = $37.50-$62.50
RELAX_ORDER = ("widen_price", "drop_brand", "drop_price", "drop_category")
_RELAX_TEXT = {
    "widen_price": "widened the price range by 25%",
    "drop_brand": "looked beyond the brand",
    "drop_price": "set the price limit aside",
    "drop_category": "looked in other categories",
}

# Words customers use for a category, keyed by the category names a catalogue is likely to
# use. A key applies to a catalogue category when it equals it or one of its words, so
# "phones" reaches "phones_tablets". Catalogue product types (attributes.type) and category
# names are added automatically.
CATEGORY_SYNONYMS: dict[str, tuple[str, ...]] = {
    "audio": ("headphones", "headphone", "earbuds", "earphones", "earpods", "speaker", "speakers",
              "soundbar", "sound bar", "hifi", "hi-fi", "stereo", "turntable", "record player", "audio"),
    "tv": ("tv", "tvs", "television", "televisions", "telly", "smart tv", "oled", "qled"),
    "laptops": ("laptop", "laptops", "notebook", "ultrabook", "chromebook", "macbook", "computer"),
    "phones": ("phone", "phones", "smartphone", "mobile", "cellphone", "cell phone", "smartwatch", "watch"),
    "tablets": ("tablet", "tablets", "ipad", "e-reader", "ereader", "kindle"),
    "cameras": ("camera", "cameras", "dslr", "mirrorless", "camcorder", "drone", "gopro"),
    "gaming": ("console", "consoles", "video game", "video games", "controller", "gamepad", "joystick"),
    "kitchen": ("kitchen", "cooking", "coffee", "espresso", "cookware", "appliance for the kitchen"),
    "cleaning": ("vacuum", "vacuums", "hoover", "vacuum cleaner", "mop", "cleaning", "cleaner"),
    "smart_home": ("smart home", "home automation", "alexa", "google home", "security", "wifi", "wi-fi"),
    "lighting": ("lamp", "lamps", "light", "lights", "lighting", "bulb", "bulbs"),
    "furniture": ("furniture", "sofa", "couch", "table", "desk", "shelf", "shelves", "bed"),
    "home_decor": ("decor", "decoration", "decorations", "rug", "vase", "cushion", "candle", "wall art"),
}

# Which attributes a request word is asking about (for ranking bonuses and for the reason line).
QUERY_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "quiet": ("noise_db", "anc", "silent"), "silent": ("noise_db", "silent"), "noise": ("noise_db", "anc"),
    "noisy": ("noise_db",), "loud": ("max_db", "wattage"), "battery": ("battery_h", "battery_mah", "runtime_min"),
    "lasting": ("battery_h", "runtime_min"), "light": ("weight_kg", "weight_g"), "lightweight": ("weight_kg", "weight_g"),
    "portable": ("weight_kg", "weight_g", "battery_h"), "travel": ("weight_kg", "battery_h"),
    "big": ("screen_in", "place_settings", "capacity_l", "capacity_qt"), "large": ("screen_in", "capacity_l", "capacity_qt"),
    "small": ("width_in", "screen_in"), "compact": ("width_in",), "screen": ("screen_in",), "fast": ("refresh_hz",),
    "smooth": ("refresh_hz",), "wireless": ("wireless", "cordless"), "bluetooth": ("wireless",),
    "cordless": ("cordless",), "waterproof": ("waterproof", "waterproof_m"), "pet": ("pet_friendly",),
    "dog": ("pet_friendly",), "cat": ("pet_friendly",), "hair": ("pet_friendly",), "4k": ("resolution",),
    "storage": ("storage_gb",), "ram": ("ram_gb",), "memory": ("ram_gb",), "photo": ("camera_mp", "sensor_mp"),
    "espresso": ("pressure_bar", "milk_frother"), "latte": ("milk_frother",), "family": ("place_settings", "capacity_l", "capacity_qt"),
    "cancelling": ("anc",), "canceling": ("anc",), "anc": ("anc",), "bright": ("lumens",), "colour": ("color_changing",),
    "color": ("color_changing",), "allergy": ("hepa",), "allergies": ("hepa",), "flight": ("flight_min",),
}

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

_ATTR_FORMAT: dict[str, str] = {
    "noise_db": "{v} dB", "battery_h": "{v} h battery", "battery_mah": "{v} mAh battery", "screen_in": '{v}" screen',
    "refresh_hz": "{v} Hz", "ram_gb": "{v} GB RAM", "storage_gb": "{v} storage", "weight_kg": "{v} kg",
    "weight_g": "{v} g", "runtime_min": "{v} min runtime", "place_settings": "{v} place settings",
    "wattage": "{v} W", "capacity_l": "{v} L", "capacity_qt": "{v} qt", "capacity_cups": "{v} cups",
    "camera_mp": "{v} MP camera", "sensor_mp": "{v} MP sensor", "video": "{v} video", "lumens": "{v} lumens",
    "dpi": "{v} DPI", "max_fps": "up to {v} fps", "flight_min": "{v} min flight time", "zoom_x": "{v}x zoom",
    "pressure_bar": "{v} bar pump", "width_in": '{v}" wide', "width_cm": "{v} cm wide", "waterproof_m": "waterproof to {v} m",
    "seats": "seats {v}", "max_kg": "holds {v} kg", "output_w": "{v} W output", "capacity_mah": "{v} mAh",
    "coverage_m2": "covers {v} m²", "room_m2": "rooms up to {v} m²", "burn_h": "{v} h burn time", "length_m": "{v} m long",
    "hdmi_ports": "{v} HDMI ports", "channels": "{v} channels", "pack": "pack of {v}", "size": "{v}",
    "resolution": "{v}", "cpu": "{v}", "gpu": "{v}", "panel": "{v} panel", "material": "{v}", "finish": "{v} finish",
    "connectivity": "{v}", "navigation": "{v} navigation", "platform": "{v}", "sensor": "{v} sensor",
}
_BOOL_FORMAT: dict[str, str] = {
    "anc": "noise cancelling", "wireless": "wireless", "cordless": "cordless", "waterproof": "waterproof",
    "pet_friendly": "pet-friendly", "hepa": "HEPA filter", "third_rack": "third rack", "self_empty": "self-emptying",
    "mop": "mops too", "wifi": "Wi-Fi", "5g": "5G", "color_changing": "colour changing", "rgb": "RGB lighting",
    "milk_frother": "milk frother", "dolby_atmos": "Dolby Atmos", "smart": "smart", "touchscreen": "touchscreen",
    "silent": "silent", "rechargeable": "rechargeable", "foldable": "foldable", "programmable": "programmable",
    "adjustable_height": "adjustable height", "blackout": "blackout", "outdoor": "outdoor-rated", "gps": "GPS",
}
_TAG_PHRASE: dict[str, str] = {
    "gamer": "a favourite with gamers", "gift": "an easy gift", "student": "student-friendly",
    "budget": "budget-friendly", "quiet": "quiet", "pet_owner": "made for pet hair", "travel": "travel-friendly",
    "family": "family-sized", "premium": "premium", "small_space": "fits small spaces", "compact": "compact",
    "home_office": "good for a home office", "kids": "kid-friendly", "outdoor": "outdoor-ready",
    "coffee_lover": "for coffee lovers", "streamer": "for streamers", "audiophile": "for audiophiles",
    "photographer": "for photographers", "creator": "for creators", "beginner": "beginner-friendly",
}
_CPU_TIERS = {"entry": "entry-level processor", "mid": "mid-range processor", "high": "fast processor",
              "top": "top-tier processor"}
_SKIP_ATTRS = {"tags", "type", "color", "fits_in", "fits_tv_in", "laptop_in", "with_case", "lens_included"}
_STOPWORDS = {"a", "an", "the", "for", "and", "or", "of", "to", "in", "on", "with", "my", "me", "i", "some", "any",
              "need", "want", "looking", "something", "good", "best", "new", "please", "that", "is", "it", "can", "you"}

_CLAUSE_BREAKS = {"for", "with", "that", "which", "who", "to", "at", "under", "below", "over", "above", "around",
                  "about", "between", "from", "has", "have", "having", "is", "are", "does", "can", "so", "where", "when", "like", "in",
                  "on", "by", "than", "because", "but", "and", "or"}
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_UNIT = r"(?:k(?![a-z])|\s*(?:dollars?|bucks|usd|\$))?"
_NUM = r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?"
# A price: "$600", "600 dollars", "1.5k", or a bare number right after a price word. Numbers
# followed by a unit ("32 inch", "42 dB", "1TB", "4K") are not prices.
_NOT_UNIT = r"(?!\s*(?:%|\"|'|-?inch|in\b|cm|mm|m\b|kg|g\b|lbs?|db|gb|tb|mb|hz|w\b|watts?|mah|h\b|hours?|mins?|minutes?|mp|fps|x\b|qt|l\b|cups?|bar|k\b|p\b|people|persons?|seats?|rooms?|years?|days?|ft|feet|m2|sq))"


@dataclass
class Filters:
    category: str | None = None
    brand: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    target_price: float | None = None   # "around $50": min/max hold the ±25% band, this the centre

    def is_empty(self) -> bool:
        return self.category is None and self.brand is None and self.min_price is None and self.max_price is None

    def accepts(self, product: dict) -> bool:
        price = _price(product)
        if self.category is not None and product.get("category") != self.category:
            return False
        if self.brand is not None and _brand(product).lower() != self.brand.lower():
            return False
        if self.min_price is not None and (price is None or price < self.min_price):
            return False
        if self.max_price is not None and (price is None or price > self.max_price):
            return False
        return True


@dataclass
class Suggestion:
    product: dict
    score: float
    reason: str
    relaxed: list[str] = field(default_factory=list)  # filters relaxed to find it, in RELAX_ORDER


# ---- parsing ----------------------------------------------------------------------------------
def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _norm_phrase(text: str) -> str:
    return " ".join(_singular(w) for w in _WORD.findall(text.lower().replace("_", " ")))


@dataclass
class CategoryVocab:
    """Phrase -> (strength, candidate categories).

    Strength: 3 a catalogue product type ("robot vacuum"), 2.5 a curated synonym ("headphones"),
    2 the last word of a product type ("vacuum"), 1 a category name or one of its words ("gaming").
    """
    phrases: dict[str, tuple[float, frozenset[str]]]
    max_words: int

    def match(self, text: str) -> list[tuple[int, float, frozenset[str]]]:
        """(clause number, strength, categories) for each phrase found, longest phrases first.

        Clauses are split at words that start a modifier ("for", "with", "that", "under"...):
        the thing asked for is in the first clause that names one ("TVs for console gaming").
        """
        words = [_singular(w) for w in _WORD.findall(text.lower())]
        found, i, clause = [], 0, 0
        while i < len(words):
            if words[i] in _CLAUSE_BREAKS and i > 0:
                clause += 1
            for n in range(min(self.max_words, len(words) - i), 0, -1):
                entry = self.phrases.get(" ".join(words[i:i + n]))
                if entry:
                    found.append((clause, entry[0], entry[1]))
                    i += n
                    break
            else:
                i += 1
        return found


def category_vocabulary(categories: Iterable[str], products: Iterable[dict] = ()) -> CategoryVocab:
    """Build the phrase table for `parse_filters` from the catalogue's categories and product types."""
    categories = sorted(set(categories))
    table: dict[str, tuple[float, set[str]]] = {}

    def put(phrase: str, strength: float, cats: Iterable[str]) -> None:
        phrase = _norm_phrase(phrase)
        if not phrase:
            return
        old = table.get(phrase)
        if old is None or old[0] < strength:
            table[phrase] = (strength, set(cats))
        elif old[0] == strength:
            old[1].update(cats)

    for cat in categories:
        put(cat, 1, [cat])
        for word in _norm_phrase(cat).split():
            if word not in {"home", "smart", "and"}:  # too generic alone ("smart speaker", "home office")
                put(word, 1, [cat])
    for key, words in CATEGORY_SYNONYMS.items():
        nkey = _norm_phrase(key)
        targets = [c for c in categories if _norm_phrase(c) == nkey] or \
                  [c for c in categories if nkey in _norm_phrase(c).split()]
        for w in words:
            if targets:
                put(w, 2.5, targets)
    by_type: dict[str, set[str]] = {}
    by_head: dict[str, set[str]] = {}
    for p in products:
        ptype = (p.get("attributes") or {}).get("type")
        if isinstance(ptype, str) and p.get("category"):
            by_type.setdefault(ptype, set()).add(p["category"])
            by_head.setdefault(ptype.split()[-1], set()).add(p["category"])  # "robot vacuum" is a vacuum
    for head, cats in by_head.items():
        put(head, 2, cats)
    for ptype, cats in by_type.items():
        put(ptype, 3, cats)
    phrases = {k: (st, frozenset(c)) for k, (st, c) in table.items()}
    return CategoryVocab(phrases, max(len(k.split()) for k in phrases) if phrases else 1)


def _to_amount(whole: str, cents: str | None, k: bool) -> float:
    value = float(whole.replace(",", "") + (f".{cents}" if cents else ""))
    return value * 1000 if k else value


_PRICE = rf"\$\s*{_NUM}(k(?![a-z]))?|{_NUM}(k(?![a-z]))?\s*(?:dollars?|bucks|usd)\b"
_PRICE_OR_BARE = rf"(?:{_PRICE}|\$?\s*{_NUM}(k(?![a-z]))?(?!\d|[.,]\d){_NOT_UNIT})"


def _amounts(match: re.Match) -> list[float]:
    """The amounts in a match, in order: every number pattern above has (whole, cents, k) groups."""
    g = match.groups()
    out = []
    for i in range(0, len(g) - 2, 3):
        if g[i] is not None:
            out.append(_to_amount(g[i], g[i + 1], bool(g[i + 2])))
    return out


_P = _PRICE_OR_BARE
_RANGE_RES = [
    re.compile(rf"\bbetween\s+{_P}\s+(?:and|to|-)\s+{_P}"),
    re.compile(rf"\bfrom\s+{_P}\s+(?:to|-|–)\s+{_P}"),
    re.compile(rf"(?:{_PRICE})\s*(?:-|–|to)\s*{_P}"),
    re.compile(rf"\b{_NUM}(k(?![a-z]))?\s*(?:-|–|to)\s*(?:{_PRICE})"),
]
# "nothing over $600", "not above 200": a negated lower bound is an upper bound.
_MAX_RE = re.compile(rf"(?:\b(?:nothing|not|no(?:thing)?|never) (?:over|above|more than|higher than|pricier than)|"
                     rf"\bunder|\bbelow|\bless than|\bcheaper than|\bup to|\bat most|\bno more than|\bnot more than|"
                     rf"\bmax(?:imum)?(?: of)?|\bbudget(?: is| of)?(?: about| around)?|\bwithin|\bsub|<)\s*{_P}")
_MIN_RE = re.compile(rf"(?:(?<!nothing )(?<!not )(?<!no )\bover|(?<!nothing )(?<!not )(?<!no )\babove|(?<!no )(?<!not )\bmore than|\bat least|\bminimum(?: of)?|\bstarting at|\bfrom|>)\s*{_P}")
_AROUND_RE = re.compile(rf"(?:\baround|\babout|\bapproximately|\bapprox\.?|\broughly|\bclose to|\bnear|~)\s*{_P}")
_ISH_RE = re.compile(rf"(?:{_PRICE}|\$?{_NUM}(k(?![a-z]))?)\s*-?\s*ish\b")
_BARE_PRICE_RE = re.compile(_PRICE)


_UNIT_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
               "sixteen seventeen eighteen nineteen").split()
_TEN_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNIT_WORDS)} | {w: 10 * i for i, w in enumerate(_TEN_WORDS, 2)}
_UNDER_100 = rf"(?:(?:{'|'.join(_TEN_WORDS)})(?:[\s-]+(?:{'|'.join(_UNIT_WORDS[1:10])}))?|{'|'.join(_UNIT_WORDS)})"
_SCALE = r"(?:hundred|thousand|grand)"
# "a hundred", "two hundred and fifty", "one thousand two hundred", "a grand", or just "fifty"
_NUMBER_PHRASE = re.compile(
    rf"\b(?:(?:a|{_UNDER_100})[\s-]+{_SCALE}(?:[\s-]+(?:and[\s-]+)?(?:{_UNDER_100})(?:[\s-]+{_SCALE})?)*"
    rf"|(?:{'|'.join(_TEN_WORDS)})(?:[\s-]+(?:{'|'.join(_UNIT_WORDS[1:10])}))?"
    rf"|(?:{'|'.join(_UNIT_WORDS[1:])})(?=\s+(?:dollars?|bucks|usd)\b))\b")


def _words_to_number(phrase: str) -> int:
    total, current = 0, 0
    for w in re.split(r"[\s-]+", phrase):
        if w == "a":
            current = current or 1
        elif w in _NUMBER_WORDS:
            current += _NUMBER_WORDS[w]
        elif w == "hundred":
            current = (current or 1) * 100
        elif w in ("thousand", "grand"):
            total += (current or 1) * 1000
            current = 0
    return total + current


def _digits_for_words(text: str) -> str:
    """'under a hundred bucks' -> 'under 100 bucks', 'fifty dollars' -> '50 dollars'."""
    return _NUMBER_PHRASE.sub(lambda m: str(_words_to_number(m.group(0))), text)


def _parse_price(text: str, f: Filters) -> None:
    text = _digits_for_words(text)
    for rx in _RANGE_RES:
        m = rx.search(text)
        if m:
            vals = _amounts(m)
            if len(vals) >= 2:
                lo, hi = sorted(vals[:2])
                f.min_price, f.max_price = lo, hi
                return
    m = _AROUND_RE.search(text) or _ISH_RE.search(text)
    if m:
        vals = _amounts(m)
        if vals:
            t = vals[0]
            f.target_price, f.min_price, f.max_price = t, t * (1 - AROUND_TOLERANCE), t * (1 + AROUND_TOLERANCE)
            return
    m = _MAX_RE.search(text)
    if m and _amounts(m):
        f.max_price = _amounts(m)[0]
    m = _MIN_RE.search(text)
    if m and _amounts(m):
        f.min_price = _amounts(m)[0]
    if f.min_price is None and f.max_price is None:
        # "a $600 dishwasher", "headphones for 80 dollars": a price with no qualifier is a target
        m = _BARE_PRICE_RE.search(text)
        if m and _amounts(m):
            t = _amounts(m)[0]
            f.target_price, f.min_price, f.max_price = t, t * (1 - AROUND_TOLERANCE), t * (1 + AROUND_TOLERANCE)
    if f.min_price is not None and f.max_price is not None and f.min_price > f.max_price:
        f.min_price, f.max_price = f.max_price, f.min_price


def parse_filters(text: str, categories: Iterable[str] | CategoryVocab, brands: Iterable[str]) -> Filters:
    """Category, brand and price bounds named in a shopping request.

    `categories` is the catalogue's category names, or a `CategoryVocab` built from the
    catalogue (adds product types: "dishwasher" -> kitchen). Unknown words are ignored.
    """
    f = Filters()
    if not text:
        return f
    low = text.lower()
    _parse_price(low, f)
    for brand in sorted(brands, key=len, reverse=True):
        if re.search(rf"(?<![a-z0-9]){re.escape(brand.lower())}(?![a-z0-9])", low):
            f.brand = brand
            break
    vocab = categories if isinstance(categories, CategoryVocab) else category_vocabulary(categories)
    matches = vocab.match(low)
    if matches:
        # The head: the last noun-like match (strength >= 2) of the first clause that has one
        # ("gaming laptop" is a laptop, "headphones for gaming" headphones); category words
        # only count when nothing stronger is named. Other matches may narrow an ambiguous head
        # ("gaming chair": chairs exist in gaming and furniture) but never override it.
        strong = [m for m in matches if m[1] >= 2] or matches
        first_clause = strong[0][0]
        head = [m for m in strong if m[0] == first_clause][-1]
        cands = set(head[2])
        for _, _, cats in matches:
            if len(cands) > 1 and cands & cats and cands & cats != cands:
                cands &= cats
        if cands and len(cands) == 1:
            f.category = next(iter(cands))
    return f


# ---- products ---------------------------------------------------------------------------------
def _price(product: dict) -> float | None:
    try:
        return float(product.get("price"))
    except (TypeError, ValueError):
        return None


def _brand(product: dict) -> str:
    return str(product.get("brand") or (product.get("attributes") or {}).get("brand") or "")


def _money(value: float) -> str:
    return f"${value:,.0f}" if abs(value - round(value)) < 0.005 else f"${value:,.2f}"


def _attr_value(key: str, v: Any) -> str | None:
    if isinstance(v, bool):
        return _BOOL_FORMAT.get(key, key.replace("_", " ")) if v else None
    if isinstance(v, list):
        v = ", ".join(str(x) for x in v[:3])
        if not v:
            return None
    if key == "storage_gb" and isinstance(v, (int, float)):
        return f"{v / 1024 if v % 1024 == 0 else v / 1000:g} TB storage" if v >= 1000 else f"{v:g} GB storage"
    if key == "cpu" and isinstance(v, str):
        return _CPU_TIERS.get(v.lower(), f"{v} processor")
    if key.startswith("capacity_") and v == 1:
        return _ATTR_FORMAT.get(key, "{v}").format(v=1).rstrip("s")
    if isinstance(v, float):
        v = f"{v:g}"
    fmt = _ATTR_FORMAT.get(key)
    return fmt.format(v=v) if fmt else None


def product_text(product: dict) -> str:
    """What a product is embedded as: the words a customer would use first, details after."""
    attrs = dict(product.get("attributes") or {})
    tags = attrs.pop("tags", []) or []
    ptype = attrs.pop("type", None)
    parts = [str(product.get("title", "")), str(ptype or ""), str(product.get("category", "")).replace("_", " "),
             _brand(product), ", ".join(str(t).replace("_", " ") for t in tags), str(product.get("description", ""))]
    details = [s for k, v in attrs.items() if (s := _attr_value(k, v))]
    parts.append("; ".join(details))
    return ". ".join(p for p in parts if p)


def _query_words(text: str) -> set[str]:
    return {_singular(w) for w in _WORD.findall(text.lower())} - _STOPWORDS


def _matched_tags(product: dict, words: set[str]) -> list[str]:
    tags = (product.get("attributes") or {}).get("tags") or []
    out = []
    for t in tags:
        tw = {_singular(x) for x in str(t).split("_")}
        if tw & words and (len(tw) == 1 or tw <= words | {"owner", "lover", "space", "office"}):
            out.append(str(t))
    return out


def _features(product: dict, words: set[str], limit: int = 2) -> list[str]:
    """Up to `limit` short phrases: attributes the request asked about first, then notable ones."""
    attrs = product.get("attributes") or {}
    wanted: list[str] = []
    for w in sorted(words):
        wanted += [k for k in QUERY_ATTRIBUTES.get(w, ()) if k in attrs]
    wanted += [k for k in attrs if k not in _SKIP_ATTRS and set(k.split("_")) & words]
    out: list[str] = []
    for k in dict.fromkeys(wanted):
        s = _attr_value(k, attrs[k])
        if s:
            if k == "noise_db" and words & {"quiet", "silent", "noise", "noisy"}:
                s = f"quiet at {s}"
            out.append(s)
    for t in _matched_tags(product, words):
        if len(out) < limit and t != "quiet" or not out:
            out.append(_TAG_PHRASE.get(t, t.replace("_", " ")))
    if len(out) < limit:
        for k, v in attrs.items():
            if k in _SKIP_ATTRS or k in wanted:
                continue
            s = _attr_value(k, v)
            if s and s not in out:
                out.append(s)
            if len(out) >= limit:
                break
    return list(dict.fromkeys(out))[:limit]


def _price_phrase(price: float | None, f: Filters) -> str:
    if price is None:
        return "price on request"
    p = _money(price)
    if f.target_price is not None:
        return f"{p}, close to your {_money(f.target_price)} target"
    if f.min_price is not None and f.max_price is not None:
        inside = f.min_price <= price <= f.max_price
        return f"{p}, {'in' if inside else 'near'} your {_money(f.min_price)}–{_money(f.max_price)} range"
    if f.max_price is not None:
        return f"{p}, within your {_money(f.max_price)} budget" if price <= f.max_price else \
            f"{p}, a little over your {_money(f.max_price)} budget"
    if f.min_price is not None:
        return f"{p}, above {_money(f.min_price)} as asked" if price >= f.min_price else f"{p}"
    return p


def _reason(product: dict, words: set[str], f: Filters, asked: Filters, relaxed: list[str]) -> str:
    feats = _features(product, words)
    price = _price_phrase(_price(product), asked if "drop_price" not in relaxed else Filters())
    text = f"{', '.join(feats)} and {price}" if feats else price
    if asked.brand and f.brand:
        text += f", from {asked.brand} as asked"
    if relaxed:
        text += f" (nothing matched every filter, so I {' and '.join(_RELAX_TEXT[r] for r in relaxed)})"
    return text[:1].upper() + text[1:]


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
        self.brands = sorted({b for p in self.products.values() if (b := _brand(p))})
        self.vocab = category_vocabulary(self.categories, self.products.values())

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
        words = _query_words(text)
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
            bonus = TAG_BONUS * min(2, len(_matched_tags(p, words))) + pref
            scored.append((s + bonus, pid))
        scored.sort(key=lambda t: -t[0])
        return [Suggestion(self.products[pid], float(score), _reason(self.products[pid], words, f, asked, steps), list(steps))
                for score, pid in scored[:k]]

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
            out.append(Suggestion(self.products[pid], float(s), _similar_reason(base, self.products[pid])))
        return out


def _preference_bonus(products: list[dict], words: set[str]) -> list[float]:
    """Rank-based bonus for requests like "quietest" or "ultralight" among the candidates that
    have the attribute (ranks, not values, so dB and kg weigh the same)."""
    bonus = [0.0] * len(products)
    for w in words & PREFERENCES.keys():
        for key, sign in PREFERENCES[w]:
            vals = [(_price(p) if key == "price" else (p.get("attributes") or {}).get(key)) for p in products]
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


def _similar_reason(base: dict, other: dict) -> str:
    attrs = other.get("attributes") or {}
    kind = attrs.get("type") or str(other.get("category", "item")).replace("_", " ")
    same_type = kind == (base.get("attributes") or {}).get("type")
    bp, op = _price(base), _price(other)
    price = "" if op is None else _money(op)
    if bp is not None and op is not None and abs(op - bp) >= 1:
        price += f", {_money(abs(op - bp))} {'less' if op < bp else 'more'} than {base.get('title', 'it')}"
    feats = _features(other, set(), limit=2)
    head = f"Another {kind}" if same_type else f"Related: {kind}"
    return f"{head} with {', '.join(feats)} at {price}" if feats else f"{head} at {price}"
