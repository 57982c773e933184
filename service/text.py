"""Normalise and validate a customer's message before anything else sees it.

Whatever arrives (empty strings, 100,000 characters, control bytes, HTML) becomes either a
clean string the NLU can read or a clear reason why not; nothing here raises.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Control and format characters (C0/C1, zero-width, bidi overrides) carry no meaning for us
# and can hide text from an operator reading the transcript.
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
_WHITESPACE = re.compile(r"\s+")


@dataclass
class CleanMessage:
    text: str               # what the NLU reads ("" when unreadable)
    original_length: int
    truncated: bool = False
    problem: str | None = None   # "empty" | "unreadable" | None


def clean_message(raw: object, max_chars: int = 2000) -> CleanMessage:
    """Return the readable part of a message; `problem` says why there is none."""
    if raw is None:
        raw = ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    text = str(raw)
    original_length = len(text)
    # Look at a bounded prefix only: a 100k-character paste must not cost 100k of work.
    text = text[: max_chars * 4]
    text = unicodedata.normalize("NFKC", text)
    # Binary junk shows up as replacement characters and control bytes: count them as unreadable.
    junk = sum(1 for ch in text if ch == "\ufffd" or (unicodedata.category(ch) in _INVISIBLE_CATEGORIES
                                                     and not ch.isspace()))
    text = "".join(" " if unicodedata.category(ch) in _INVISIBLE_CATEGORIES else ch for ch in text)
    text = text.replace("\ufffd", " ")
    text = _WHITESPACE.sub(" ", text).strip()
    if not text:
        return CleanMessage("", original_length, problem="unreadable" if junk else "empty")
    visible = [ch for ch in text if not ch.isspace()]
    readable = sum(ch.isalnum() for ch in visible)
    if readable == 0 or readable / (len(visible) + junk) < 0.3:
        return CleanMessage("", original_length, problem="unreadable")
    truncated = original_length > max_chars
    if len(text) > max_chars:
        cut = text[:max_chars]
        # End on a word boundary so the NLU does not see half a word.
        text = cut.rsplit(" ", 1)[0] if " " in cut[-50:] else cut
    return CleanMessage(text, original_length, truncated=truncated)
