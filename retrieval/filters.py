"""What a shopping request asks for: category, brand and price bounds (`parse_filters`), as `Filters`.

`parse_filters("a quiet dishwasher under $600", vocab, brands)` reads the category ("dishwasher" is
a product type of *kitchen*, via a `CategoryVocab` built from the catalogue), the brand and the
price bounds ("under $600" -> max 600; "around $50" -> $37.50-$62.50; "between 100 and 200";
"a hundred bucks"). Unknown words are ignored. Pure Python: no numpy, torch or faiss.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

AROUND_TOLERANCE = 0.25     # "around $50" = $37.50-$62.50

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

_STOPWORDS = {"a", "an", "the", "for", "and", "or", "of", "to", "in", "on", "with", "my", "me", "i", "some", "any",
              "need", "want", "looking", "something", "good", "best", "new", "please", "that", "is", "it", "can", "you"}

_CLAUSE_BREAKS = {"for", "with", "that", "which", "who", "to", "at", "under", "below", "over", "above", "around",
                  "about", "between", "from", "has", "have", "having", "is", "are", "does", "can", "so", "where", "when", "like", "in",
                  "on", "by", "than", "because", "but", "and", "or"}
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
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
        price = product_price(product)
        if self.category is not None and product.get("category") != self.category:
            return False
        if self.brand is not None and product_brand(product).lower() != self.brand.lower():
            return False
        if self.min_price is not None and (price is None or price < self.min_price):
            return False
        if self.max_price is not None and (price is None or price > self.max_price):
            return False
        return True


# ---- products and requests ------------------------------------------------------------------------
def product_price(product: dict) -> float | None:
    try:
        return float(product.get("price"))
    except (TypeError, ValueError):
        return None


def product_brand(product: dict) -> str:
    return str(product.get("brand") or (product.get("attributes") or {}).get("brand") or "")


def query_words(text: str) -> set[str]:
    """The content words of a request, singular (stop words removed)."""
    return {singular(w) for w in _WORD.findall(text.lower())} - _STOPWORDS


# ---- parsing ------------------------------------------------------------------------------------
def singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _norm_phrase(text: str) -> str:
    return " ".join(singular(w) for w in _WORD.findall(text.lower().replace("_", " ")))


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
        words = [singular(w) for w in _WORD.findall(text.lower())]
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


# "can't spend more than $500", "don't want to pay over 300": a ceiling, said as a refusal.
_REFUSED_MORE = re.compile(r"\b(?:can[’']?t|cannot|can not|won[’']?t|will not|don[’']?t want to|do not want to|"
                           r"(?:don[’']?t|do not) wanna|unable to|not able to|rather not)\s+"
                           r"(?:spend|pay|go|afford)\s+(?:(?:any|much)\s+)?(?:more than|over|above|beyond)\b")


def _parse_price(text: str, f: Filters) -> None:
    text = _REFUSED_MORE.sub("no more than", _digits_for_words(text))
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
