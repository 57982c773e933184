"""Why this product: the one-line reason each suggestion carries, built from the attributes the
request asked about ("Quiet at 44 dB, 15 place settings and $749, within your $800 budget"), and
the short attribute phrases that products are also embedded with.
"""
from __future__ import annotations

from typing import Any

from retrieval.filters import Filters, product_price, singular

_RELAX_TEXT = {
    "widen_price": "widened the price range by 25%",
    "drop_brand": "looked beyond the brand",
    "drop_price": "set the price limit aside",
    "drop_category": "looked in other categories",
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


def money(value: float) -> str:
    """$749, $1,299, $19.99."""
    return f"${value:,.0f}" if abs(value - round(value)) < 0.005 else f"${value:,.2f}"


def attr_phrase(key: str, v: Any) -> str | None:
    """A short phrase for one product attribute ("44 dB", "noise cancelling"), or None to leave it out."""
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


def matched_tags(product: dict, words: set[str]) -> list[str]:
    """The product's tags that the request's words name ("gamer", "pet_owner" for "pet owner")."""
    tags = (product.get("attributes") or {}).get("tags") or []
    out = []
    for t in tags:
        tw = {singular(x) for x in str(t).split("_")}
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
        s = attr_phrase(k, attrs[k])
        if s:
            if k == "noise_db" and words & {"quiet", "silent", "noise", "noisy"}:
                s = f"quiet at {s}"
            out.append(s)
    for t in matched_tags(product, words):
        if len(out) < limit and t != "quiet" or not out:
            out.append(_TAG_PHRASE.get(t, t.replace("_", " ")))
    if len(out) < limit:
        for k, v in attrs.items():
            if k in _SKIP_ATTRS or k in wanted:
                continue
            s = attr_phrase(k, v)
            if s and s not in out:
                out.append(s)
            if len(out) >= limit:
                break
    return list(dict.fromkeys(out))[:limit]


def _price_phrase(price: float | None, f: Filters) -> str:
    if price is None:
        return "price on request"
    p = money(price)
    if f.target_price is not None:
        return f"{p}, close to your {money(f.target_price)} target"
    if f.min_price is not None and f.max_price is not None:
        inside = f.min_price <= price <= f.max_price
        return f"{p}, {'in' if inside else 'near'} your {money(f.min_price)}–{money(f.max_price)} range"
    if f.max_price is not None:
        return f"{p}, within your {money(f.max_price)} budget" if price <= f.max_price else \
            f"{p}, a little over your {money(f.max_price)} budget"
    if f.min_price is not None:
        return f"{p}, above {money(f.min_price)} as asked" if price >= f.min_price else f"{p}"
    return p


def recommend_reason(product: dict, words: set[str], f: Filters, asked: Filters, relaxed: list[str]) -> str:
    """Why `product` suits the request: `words` its content words, `asked` its filters, `f` the filters
    that found the product after the `relaxed` steps (retrieval.recommend.RELAX_ORDER)."""
    feats = _features(product, words)
    price = _price_phrase(product_price(product), asked if "drop_price" not in relaxed else Filters())
    text = f"{', '.join(feats)} and {price}" if feats else price
    if asked.brand and f.brand:
        text += f", from {asked.brand} as asked"
    if relaxed:
        text += f" (nothing matched every filter, so I {' and '.join(_RELAX_TEXT[r] for r in relaxed)})"
    return text[:1].upper() + text[1:]


def similar_reason(base: dict, other: dict) -> str:
    """Why `other` is shown as similar to `base`: its kind, features and price difference."""
    attrs = other.get("attributes") or {}
    kind = attrs.get("type") or str(other.get("category", "item")).replace("_", " ")
    same_type = kind == (base.get("attributes") or {}).get("type")
    bp, op = product_price(base), product_price(other)
    price = "" if op is None else money(op)
    if bp is not None and op is not None and abs(op - bp) >= 1:
        price += f", {money(abs(op - bp))} {'less' if op < bp else 'more'} than {base.get('title', 'it')}"
    feats = _features(other, set(), limit=2)
    head = f"Another {kind}" if same_type else f"Related: {kind}"
    return f"{head} with {', '.join(feats)} at {price}" if feats else f"{head} at {price}"
