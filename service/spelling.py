"""Typo correction before a message is understood: "yo do you hvae corporate amcounts" is read as
"yo do you have corporate accounts".

Customers type fast, and a message with three misspelt words reads to the encoder like something it
has never seen: the out-of-scope detector flags it, or the FAQ search falls short. Each word that is
neither an English word (symspellpy's 82,765-word frequency dictionary) nor a word of the deployment's
own pack (FAQ, intent examples, catalogue: brand and model names, "Cloudbook", "Sweepa") nor a name
customers use that neither holds (`KNOWN_NAMES`: "venmo", "zelle") is replaced by
the most frequent known word one edit away (insert, delete, substitute or swap two letters), the
pack's words first. Chat shorthand ("pls", "acct", "wk") is read as its words first (`SHORTHAND`: one
edit would make "accnt" "accent"). Only plain alphabetic words of three letters or more are corrected:
order numbers, email addresses, prices and anything with digits stay as written. One edit, not two: a second edit
turns too many rare but right words into common wrong ones.

The corrected text is what the NLU, the FAQ and product search, the policy and the flows read; the
transcript keeps what the customer wrote. `policy.spelling: false` switches it off.
"""
from __future__ import annotations

import functools
import importlib.resources
import logging
import re
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z]+")
_TOKEN = re.compile(r"(\s+)")
_PLAIN_WORD = re.compile(r"([^\w]*)([A-Za-z]{3,})([^\w]*)")   # punctuation around one alphabetic word
PACK_BOOST = 10 ** 9     # the pack's own words outrank every English word as a correction
# Chat shorthand, read as the words it stands for before any correction: one edit would make "accnt"
# "accent" and leaves "pls" or "wk" (too short) as they are.
SHORTHAND = {
    "acct": "account", "accnt": "account", "acount": "account", "pls": "please", "plz": "please",
    "thx": "thanks", "thanx": "thanks", "ty": "thank you", "wk": "week", "wks": "weeks", "yr": "year",
    "yrs": "years", "hr": "hour", "hrs": "hours", "min": "minute", "mins": "minutes", "msg": "message",
    "pwd": "password", "pw": "password", "addr": "address", "bc": "because", "cuz": "because",
    "coz": "because", "tmrw": "tomorrow", "tmr": "tomorrow", "ppl": "people", "smth": "something",
    "ur": "your", "u": "you", "b4": "before", "idk": "I don't know", "rn": "right now", "abt": "about",
    "qty": "quantity", "approx": "approximately", "dept": "department", "w/": "with", "w/o": "without",
    "dunno": "don't know", "wanna": "want to", "gonna": "going to", "gotta": "have to", "lemme": "let me",
}
# Names customers use that neither the English dictionary nor a store's pack holds: one edit would make
# "venmo" "venom" and "zelle" "belle". Read as written.
KNOWN_NAMES = frozenset({"venmo", "zelle", "cashapp", "sezzle", "alipay", "wechat", "revolut", "monzo", "paysafecard",
                         "shopify", "doordash", "instacart", "tiktok", "airpods", "chromecast", "roku"})
_STRETCHED = re.compile(r"([a-z])\1{2,}")   # a letter three times or more: "hiii", "sooo"
_SHORT_WORD = re.compile(r"([^\w/]*)([\w/]+)([^\w/]*)")
ENGLISH = "frequency_dictionary_en_82_765.txt"


class SpellingCorrector:
    """Corrects unknown words one edit away from a known one; `vocabulary`: the deployment's own words."""

    def __init__(self, vocabulary: Iterable[str]) -> None:
        from symspellpy import SymSpell

        self._sym = SymSpell(max_dictionary_edit_distance=1, prefix_length=7)
        self._sym.load_dictionary(str(importlib.resources.files("symspellpy") / ENGLISH), term_index=0, count_index=1)
        for word in vocabulary:
            self._sym.create_dictionary_entry(word, PACK_BOOST)
        self._known = frozenset(self._sym.words) | KNOWN_NAMES     # left as written, never a correction

    def correct(self, text: str) -> str:
        from symspellpy import Verbosity

        out = []
        for token in _TOKEN.split(text):
            short = _SHORT_WORD.fullmatch(token)
            if short is not None and short.group(2).lower() in SHORTHAND:
                out.append(short.group(1) + SHORTHAND[short.group(2).lower()] + short.group(3))
                continue
            match = _PLAIN_WORD.fullmatch(token)
            # A word of one repeated letter ("aaa" batteries, "zzz") is as meant.
            if match is not None and match.group(2).lower() not in self._known and len(set(match.group(2).lower())) > 1:
                word = self._unstretched(match.group(2).lower())
                found = [word] if word in self._known else \
                    [f.term for f in self._sym.lookup(word, Verbosity.TOP, max_edit_distance=1)]
                if found:
                    token = match.group(1) + found[0] + match.group(3)
            out.append(token)
        return "".join(out)


    def _unstretched(self, word: str) -> str:
        """"hiii" -> "hi", "pleeeease" -> "please": a letter typed three times or more counts twice, then
        once when that is still no word."""
        if not _STRETCHED.search(word):
            return word
        twice = _STRETCHED.sub(r"\1\1", word)
        return twice if twice in self._known else _STRETCHED.sub(r"\1", word)


def pack_vocabulary(paths: Iterable[Path]) -> set[str]:
    """The lower-case words of the pack's files (their JSON keys too: harmless, and few)."""
    words: set[str] = set()
    for path in paths:
        words.update(_WORD.findall(Path(path).read_text(encoding="utf-8").lower()))
    return words


@functools.lru_cache(maxsize=4)
def _cached(paths: tuple[Path, ...], stamps: tuple[float, ...]) -> SpellingCorrector:
    return SpellingCorrector(pack_vocabulary(paths))


def corrector_for(paths: Iterable[Path]) -> SpellingCorrector | None:
    """One corrector per pack and process (the dictionary takes about a second to load); None, with a
    warning, when symspellpy or its dictionary is missing: messages are then read as written."""
    files = tuple(sorted(Path(p).resolve() for p in paths if p is not None and Path(p).is_file()))
    try:
        return _cached(files, tuple(p.stat().st_mtime for p in files))
    except (ImportError, OSError) as exc:
        log.warning("no typo correction (%s); messages are read as written", exc)
        return None
