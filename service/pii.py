"""Redact personal data before anything is stored or logged.

`redact(text)` replaces what identifies or could harm a customer with a bracketed label:
[EMAIL] (including internationalised addresses), [IBAN], [CARD] (Luhn-checked, any separators),
[NUMBER] (other long digit runs), [CVV] and [EXPIRY] (card security codes and expiry dates after
a cue), [SSN] and [ID] (national ids, passports, licences, tax ids), [TRACKING] (parcel tracking
numbers), [PHONE] (international and national numbers, found with `phonenumbers`), [ADDRESS]
(street addresses), [POSTCODE] and [NAME] (names after "my name is", "I'm", "this is", "name:" ...).

What stays readable on purpose: order numbers (HC-123456: the flows and operators need them, and
alone they identify no one), prices, dates, times, quantities and product model numbers.

Passes run in a fixed order, most specific first, and each later pass sees the labels of the
earlier ones (labels contain no digits, so nothing is redacted twice). Patterns are anchored at
token starts and use possessive or bounded repetition, so the work stays close to linear in the
length of the text; `redact` never raises on any string (tests/service/test_fuzz.py).
"""
from __future__ import annotations

import re
from typing import Callable

import phonenumbers

_Sub = Callable[[str], str]

# --------------------------------------------------------------------------------------- emails
# Unicode word characters on both sides of the @ (jo.doe@exämple.de, 用户@例子.公司), an ASCII or
# Unicode TLD or a punycode one (xn--...), and the common "name [at] domain [dot] com" spelling.
_LOCAL = r"[\w.!#$%&'*+/=?^`{|}~-]"
_EMAIL = re.compile(  # possessive quantifiers and a start-of-token lookbehind keep this linear
    rf"(?<!{_LOCAL}){_LOCAL}++@(?:[\w-]++\.)+(?:xn--[a-z0-9-]+|[^\W\d_]{{2,}})(?![\w-])", re.IGNORECASE)
_EMAIL_SPELLED = re.compile(
    r"(?<![\w.+-])[\w.+-]++\s*(?:[\[(]\s*at\s*[\])]|\s@\s)\s*[\w-]+(?:\s*(?:[\[(]\s*dot\s*[\])]|\.)\s*[\w-]+)+", re.IGNORECASE)

# ----------------------------------------------------------------------------------------- IBAN
# Country code, two check digits, 11-30 alphanumerics in groups; only mod-97-valid ones count.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b", re.IGNORECASE)

# ----------------------------------------------------------------------------- tracking numbers
# The demo carriers (Swiftline SWL + 10 digits, CityHop CHC-8, Meridian Freight MF-8) and common
# real formats (UPS 1Z..., USPS 20-22 digits starting 9x, Royal Mail / international postal
# AA123456789GB), plus anything after a "tracking number" cue.
_TRACKING = re.compile(
    r"\b(?:SWL\d{10}|CHC-?\d{8}|MF-?\d{8}|1Z[0-9A-Z]{16}|9[1-5]\d{18,20}|[A-Z]{2}\d{9}[A-Z]{2})\b", re.IGNORECASE)
_TRACKING_CUE = re.compile(
    r"\b(?P<cue>tracking(?:\s+(?:number|no\.?|code|id|#))?\s*(?:is|:|#)?\s*)(?P<value>(?!HC[\s#-]?\d{6}\b)(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{7,34})\b",
    re.IGNORECASE)

# ------------------------------------------------------------------------- cards, long numbers
# 13-19 digits: contiguous, or in the groupings cards are printed with (4-4-4-4, 4-4-4-1..7,
# 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4) with one separator used throughout (space, dash, dot, slash),
# so that a phone number followed by a card number is not read as one long number.
_CARD = re.compile(r"(?<![\w.,/+-])(?:\d{13,19}|\d{4}([ ./-])\d{4}\1\d{4}\1\d{1,7}(?:\1\d{3})?|\d{4}([ ./-])\d{6}\2\d{4,5})"
                   r"(?![\w]|[.,/-]\d)")
# Longer runs of digits (account numbers, raw ids): never stored.
_LONG_NUMBER = re.compile(r"(?<![\w])\d(?:[ ./-]?\d){19,}+(?!\w)")
_CVV = re.compile(
    r"\b(?P<cue>(?:cvv2?|cvc2?|cid|csc|cvn|security\s+code|card\s+code|verification\s+code|"
    r"card\s+verification(?:\s+(?:value|code))?)\b\W{0,3}(?:(?:is|:|=)\s*)?)(?P<value>\d{3,4})\b", re.IGNORECASE)
_EXPIRY = re.compile(
    r"\b(?P<cue>(?:exp(?:iry|iration|ires)?(?:\s+date)?|valid\s+(?:thru|through|until))\.?\W{0,3}(?:(?:is|:)\s*)?)"
    r"(?P<value>(?:0?[1-9]|1[0-2])\s*[/-]\s*(?:\d{4}|\d{2}))\b", re.IGNORECASE)

# ------------------------------------------------------------------------ national identifiers
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_SSN_CUE = re.compile(
    r"\b(?P<cue>(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\W{0,3}(?:(?:is|:|#)\s*)?)"
    r"(?P<value>\d{3}[ .-]?\d{2}[ .-]?\d{4})\b", re.IGNORECASE)
# UK National Insurance number (AB 12 34 56 C).
_NINO = re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
# Any id after a cue: passport, driver's licence, national/tax/personal id, personnummer, DNI...
_ID_CUE = re.compile(
    r"\b(?P<cue>(?:passport|driver'?s?\s+licen[cs]e|driving\s+licen[cs]e|national\s+(?:id|identity|insurance)|"
    r"id\s+card|identity\s+card|tax\s+(?:id|number|code)|social\s+insurance|nino|personnummer|personal\s+(?:id|number)|"
    r"codice\s+fiscale|dni|nie|steuer-?id)(?:\s+(?:number|no\.?|#|card))?\s*(?:(?:is|:|#)\s*)?)"
    r"(?P<value>(?!HC[\s#-]?\d{6}\b)(?=[A-Z0-9-]*\d)[A-Z0-9](?:[A-Z0-9-]|\s(?=\d)){3,22}[A-Z0-9])\b", re.IGNORECASE)

# ----------------------------------------------------------------------------------- addresses
_STREET_TYPES = (
    "street|st|avenue|ave|av|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|ter|"
    "circle|cir|parkway|pkwy|highway|hwy|square|sq|close|crescent|cres|row|trail|trl|alley|route|rte|"
    "grove|gardens|mews|hill|walk|plaza|loop|pike|path|bend|crossing|ridge|heights|glen|cove|landing|"
    "commons|meadows|hollow")
_STOP = {"a", "an", "the", "on", "in", "at", "to", "for", "of", "and", "or", "but", "my", "your", "our",
         "is", "it", "its", "i", "me", "we", "you", "with", "from", "by", "as", "be", "was", "are", "this",
         "that", "these", "those", "no", "not", "all", "any", "some", "more", "most", "out", "up", "x"}
_US_STATES = (r"(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|PA|RI|S[CD]|"
              r"T[NX]|UT|V[AT]|W[AIVY])")
_ADDRESS_WORD = r"[^\W\d_][\w'’.-]*"
_UNIT = r"(?i:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm|#)\.?\s*#?\s*[A-Za-z0-9-]{1,6}\b"
_STREET = re.compile(
    rf"(?:\b{_UNIT},?\s+)?"                                               # Suite 210, ...
    rf"\b\d{{1,6}}[A-Za-z]?(?:-\d{{1,4}})?,?\s+(?P<name>(?:{_ADDRESS_WORD}\s+){{1,4}})(?:{_STREET_TYPES})\b\.?"
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"                                 # Peachtree Street NE
    rf"(?P<tail>(?:,?\s*{_UNIT})?"
    rf"(?:(?:,\s*[^\W\d_][\w'’.-]*(?:\s[^\W\d_][\w'’.-]*){{0,2}})?,?\s*{_US_STATES}\s+\d{{5}}(?:-\d{{4}})?\b)?)",
    re.IGNORECASE)
# A whole US address line whatever the street type: "811 Willow Bend, Sacramento, CA 95819".
_US_LINE = re.compile(
    rf"(?:\b{_UNIT},?\s+)?\b\d{{1,6}}[A-Za-z]?\s+{_ADDRESS_WORD}(?:\s+{_ADDRESS_WORD}){{0,4}},"
    rf"(?:[^,\n]{{1,40}},){{0,2}}\s*{_US_STATES}\s+\d{{5}}(?:-\d{{4}})?\b")
# Continental styles: "Musterstraße 12", "12 rue de la Paix", "Calle Mayor 5", each with an
# optional postcode and town.
_WORDS_1_5 = r"[^\W\d_][\w'’-]*(?:\s+[^\W\d_][\w'’-]*){0,4}"
_STREET_EU = re.compile(
    r"\b(?:[^\W\d_][\w'’-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|laan|gracht|straat|vägen|gatan|vej)"
    r"\s+\d{1,5}[a-z]?"
    rf"|\d{{1,5}}(?:\s?bis|\s?ter)?,?\s+(?:rue|boulevard|bd|chemin|allée|impasse|quai)\s+{_WORDS_1_5}"
    r"|(?:calle|avenida|via|viale|piazza|rua)\s+(?:[^\W\d_][\w'’-]*\s+){1,4}\d{1,5}[a-z]?)\b"
    r"(?:,?\s*\d{4,5}\s+[^\W\d_][\w'’-]*)?",
    re.IGNORECASE)
# Postcodes: US ZIP after a state abbreviation, UK, Canadian, and any after a "zip/postcode" cue.
_US_ZIP = re.compile(rf"\b(?P<cue>{_US_STATES},?\s+)(?P<value>\d{{5}}(?:-\d{{4}})?)\b")
_UK_POSTCODE = re.compile(r"\b(?:GIR ?0AA|[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2})\b")
_CA_POSTCODE = re.compile(r"\b[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d\b")
_POSTCODE_CUE = re.compile(
    r"\b(?P<cue>(?:zip|zip\s*code|postcode|post\s*code|postal\s*code|plz)\s*(?:(?:is|:)\s*)?)(?P<value>\d{4,5}(?:-\d{3,4})?|(?=[A-Z]{0,2}\d)[A-Z0-9]{2,4}\s?\d[A-Z]{2})\b",
    re.IGNORECASE)
_ADDRESS_CUE = re.compile(  # "my address is ..." up to the end of the sentence
    r"\b(?P<cue>(?:my|home|billing|shipping|delivery|new)\s+address\s*(?:is|:)\s*)(?P<value>(?:(?!HC[\s#-]?\d{6})[^.;!?\n\[]){4,120})",
    re.IGNORECASE)

# --------------------------------------------------------------------------------------- names
# Strong cues take the next one to three words whatever their case; weak cues ("I'm", "this is")
# only capitalised words that are not common English words.
_NAME_WORD = r"[^\W\d_](?:[\w'’-]|\.(?=\w))*"
_NAME_WORDS = rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}}"
_NAME_STRONG = re.compile(
    rf"\b(?P<cue>(?:my\s+(?:full\s+|first\s+|last\s+|sur)?name(?:\s+is|'s|’s)|name\s*:|name\s+is|call\s+me|"
    rf"(?:first|last|full)\s+name\s*(?:is|:))\s*)(?P<value>{_NAME_WORDS})",
    re.IGNORECASE)
_NAME_WEAK = re.compile(
    rf"\b(?P<cue>(?:i\s+am|i'm|i’m|im|this\s+is|signed|regards,?|sincerely,?|thanks,?|cheers,?|yours,?)\s+)(?P<value>{_NAME_WORDS})",
    re.IGNORECASE)
_NOT_NAMES = {
    "i", "a", "an", "the", "it", "not", "so", "very", "really", "just", "here", "there", "still", "also",
    "looking", "trying", "interested", "sorry", "happy", "glad", "fine", "good", "great", "ok", "okay",
    "about", "from", "in", "on", "at", "order", "hc", "your", "my", "our", "their", "his", "her", "with",
    "hello", "hi", "hey", "thanks", "thank", "please", "yes", "no", "stop", "cancel", "help", "what",
    "when", "where", "why", "how", "who", "which", "can", "could", "would", "will", "do", "does", "did",
    "is", "are", "was", "were", "be", "been", "being", "have", "has", "had", "and", "or", "but", "for",
    "to", "of", "that", "this", "these", "those", "all", "any", "some", "new", "back", "done", "going",
    "waiting", "calling", "writing", "asking", "wondering", "unable", "able", "confused", "frustrated",
    "upset", "angry", "disappointed", "ready", "sure", "home", "out", "away", "late", "again", "now",
    "today", "tomorrow", "yesterday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
    "sunday", "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december", "customer", "support", "team", "service", "attendant", "assistant",
    "email", "phone", "name", "address", "card", "number", "refund", "return", "returns", "shipping",
    "delivery", "tracking", "product", "products", "item", "items", "still", "too", "because", "if",
    "then", "than", "as", "by", "up", "down", "off", "over", "under", "one", "two", "you", "we", "they",
    "me", "us", "them", "he", "she", "him", "amazon", "ebay", "usa", "us", "uk", "eu", "english",
    # what is said about a name rather than the name: "my surname is spelt wrong on my profile"
    "spelt", "spelled", "misspelt", "misspelled", "wrong", "wrongly", "incorrect", "incorrectly", "missing",
    "different", "changed", "changing", "showing", "shown", "listed", "written", "displayed",
}


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(raw: str) -> bool:
    s = re.sub(r"\s", "", raw).upper()
    if not (15 <= len(s) <= 34) or not s.isascii() or not s.isalnum():
        return False
    rearranged = s[4:] + s[:4]
    try:
        return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1
    except ValueError:
        return False


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _keep_cue(label: str) -> Callable[[re.Match], str]:
    return lambda m: m.group("cue") + label


def _card(m: re.Match) -> str:
    digits = _digits(m.group(0))
    try:
        if _luhn_ok(digits):
            return "[CARD]"
        if digits.startswith("00") and len(digits) <= 17:
            return m.group(0)   # an international call prefix: the phone pass decides
        return "[NUMBER]"
    except ValueError:  # non-ASCII decimal digits that int() still reads are fine; anything else is not a card
        return "[NUMBER]"


def _iban(m: re.Match) -> str:
    return "[IBAN]" if _iban_ok(m.group(0)) else m.group(0)


def _street(m: re.Match) -> str:
    words = m.group("name").split()
    # "3 items on the way" is not an address: every word between the number and the street type
    # must be a name word, not a function word.
    if any(w.lower().strip("'’.-") in _STOP for w in words):
        return m.group(0)
    return "[ADDRESS]"


def _address_cue(m: re.Match) -> str:
    return m.group("cue") + "[ADDRESS]"


def _names(strong: bool) -> Callable[[re.Match], str]:
    def sub(m: re.Match) -> str:
        value = m.group("value")
        end = 0
        for word in re.finditer(r"\S+", value):
            bare = word.group(0).strip("'’.-")
            if not bare or bare.lower() in _NOT_NAMES or any(ch.isdigit() for ch in bare):
                break
            if not strong and (not bare[0].isupper() or (bare.isupper() and len(bare) > 3)):
                break   # weak cues take capitalised words only, and not shouted ones
            end = word.end()
        if end == 0:
            return m.group(0)
        return m.group("cue") + "[NAME]" + value[end:]
    return sub


def _phones(text: str) -> str:
    """International and national phone numbers. `phonenumbers` finds them (any +country, and
    national numbers valid for the US); a regex catches other 9-15 digit numbers it leaves."""
    out, last = [], 0
    if sum(ch.isdigit() for ch in text) < 5:
        return text   # no phone number has fewer digits (the shortest, +683 and 4 digits, has 7); the matcher is slow
    try:
        matches = list(phonenumbers.PhoneNumberMatcher(text, "US", leniency=phonenumbers.Leniency.POSSIBLE,
                                                       max_tries=2000))
    except Exception:   # the library must never break a turn; the regex below still runs
        matches = []
    for m in matches:
        before = text[m.start - 1] if m.start > 0 else " "
        after = text[m.end] if m.end < len(text) else " "
        if before.isalnum() or after.isalnum() or before in "-_" or after in "_":
            continue
        raw = m.raw_string
        if re.match(r"[:.,/]\d", text[m.end:m.end + 2]) or _DATE_START.match(raw):
            continue   # a time ("14:00") or a date, not a phone number; the regex pass decides
        digits = _digits(raw)
        if not (raw.lstrip("(").startswith("+") or len(digits) >= 9 or phonenumbers.is_valid_number(m.number)):
            continue
        out.append(text[last:m.start])
        out.append("[PHONE]")
        last = m.end
    out.append(text[last:])
    return _PHONE.sub(_phone, "".join(out))


# Fallback: optional +country or 00 prefix, 9-15 digits with common separators. Order ids
# (HC-123456) are six digits with a letter prefix and stay readable.
_PHONE = re.compile(r"(?<![\w-])(?:(?:\+|00)\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]?\d{2,5}){1,4}"
                    r"(?![\w-]|[:.,/]\d)")
_DATE_START = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}(?!\d)|\d{1,2}([-./])\d{1,2}\2\d{4}(?!\d)")
_PRODUCT_CUE = re.compile(r"\b(?:sku|model|part|item|isbn|ean|upc|ref|version|v)\W{0,3}(?:(?:no|number|#)\W{0,3})?$",
                          re.IGNORECASE)


def _phone(m: re.Match) -> str:
    text = m.group(0)
    if _PRODUCT_CUE.search(m.string[max(0, m.start() - 20):m.start()]):
        return text   # "SKU 12-3456-789", "model no. 4410-220-17": product references, not phones
    date = _DATE_START.match(text)
    if date:   # "2026-11-08 10:30": a date (and a time), then perhaps a number
        return text[:date.end()] + _PHONE.sub(_phone, text[date.end():])
    return _phone_text(text)


def _phone_text(text: str) -> str:
    """A run of digit groups: one phone number when it has 9-15 digits; when it has more (a number
    written next to another), the longest leading run of whole groups that is one, then the rest."""
    digits = len(_digits(text))
    if 9 <= digits <= 15:
        return "[PHONE]"
    if digits < 9:
        return text
    parts = re.split(r"(\s+)", text)
    count, best = 0, 0
    for i in range(0, len(parts), 2):
        count += len(_digits(parts[i]))
        if count > 15:
            break
        if count >= 9:
            best = i + 1
    if best:
        return "[PHONE]" + _PHONE.sub(_phone, "".join(parts[best:]))
    if len(parts) > 1:
        return parts[0] + parts[1] + _PHONE.sub(_phone, "".join(parts[2:]))
    return text


def _sub(pattern: re.Pattern, repl) -> _Sub:
    return lambda text: pattern.sub(repl, text)


# The passes, in order.
_PASSES: tuple[_Sub, ...] = (
    _sub(_EMAIL, "[EMAIL]"),
    _sub(_EMAIL_SPELLED, "[EMAIL]"),
    _sub(_IBAN, _iban),
    _sub(_TRACKING, "[TRACKING]"),
    _sub(_TRACKING_CUE, _keep_cue("[TRACKING]")),
    _sub(_SSN_CUE, _keep_cue("[SSN]")),
    _sub(_SSN, "[SSN]"),
    _sub(_NINO, "[ID]"),
    _sub(_ID_CUE, _keep_cue("[ID]")),
    _sub(_CARD, _card),
    _sub(_LONG_NUMBER, "[NUMBER]"),
    _sub(_CVV, _keep_cue("[CVV]")),
    _sub(_EXPIRY, _keep_cue("[EXPIRY]")),
    _sub(_ADDRESS_CUE, _address_cue),
    _sub(_US_LINE, "[ADDRESS]"),
    _sub(_STREET, _street),
    _sub(_STREET_EU, "[ADDRESS]"),
    _sub(_US_ZIP, _keep_cue("[POSTCODE]")),
    _sub(_UK_POSTCODE, "[POSTCODE]"),
    _sub(_CA_POSTCODE, "[POSTCODE]"),
    _sub(_POSTCODE_CUE, _keep_cue("[POSTCODE]")),
    _phones,
    _sub(_NAME_STRONG, _names(strong=True)),
    _sub(_NAME_WEAK, _names(strong=False)),
)

LABELS = ("[EMAIL]", "[IBAN]", "[TRACKING]", "[SSN]", "[ID]", "[CARD]", "[NUMBER]", "[CVV]", "[EXPIRY]",
          "[ADDRESS]", "[POSTCODE]", "[PHONE]", "[NAME]")


def redact(text: str) -> str:
    """`text` with personal data replaced by labels; anything that is not a string is stringified."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    for apply in _PASSES:
        text = apply(text)
    return text
