"""Label-preserving noise for the teacher's training rows: the way people really type.

Customers misspell ("how lnog dose delivery take"), write informally ("can u check my order pls")
and wrap a question in a story ("hi, sorry to bother you, ..."). The pack's examples are clean, so
a model trained on them alone reads a typo-heavy question as something it has never seen (and the
out-of-scope detector agrees). Each augmented copy keeps its example's intent.

Written independently of the generated dialogs' noise (training/dialogs.py), which the validation
dialogs use: the choice of settings is then not rewarded for copying the validation's noise.
"""
from __future__ import annotations

import random
import re
from typing import Sequence

# Neighbouring keys on a QWERTY keyboard: a slipped finger, not a random letter.
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS: dict[str, str] = {}
for r, row in enumerate(_ROWS):
    for c, ch in enumerate(row):
        near = [row[c - 1] if c > 0 else "", row[c + 1] if c + 1 < len(row) else ""]
        for other in (r - 1, r + 1):
            if 0 <= other < len(_ROWS):
                near += [_ROWS[other][k] for k in (c - 1, c, c + 1) if 0 <= k < len(_ROWS[other])]
        NEIGHBOURS[ch] = "".join(n for n in near if n)

INFORMAL = ((r"\byou\b", "ya"), (r"\bare\b", "r"), (r"\bokay\b", "k"), (r"\bto\b", "2"), (r"\bfor\b", "4"),
            (r"\bwant to\b", "wanna"), (r"\bgoing to\b", "gonna"), (r"\bdon't\b", "dont"), (r"\bcan't\b", "cant"),
            (r"\bI'm\b", "Im"), (r"\bdoes\b", "dose"), (r"\bwhere\b", "were"), (r"\bsomething\b", "smth"),
            (r"\btomorrow\b", "tmrw"), (r"\bwith\b", "w/"))
PREFIXES = ("sorry to bother you, ", "hello again, ", "good afternoon! ", "one more thing, ", "question for you: ",
            "ok so ", "excuse me, ", "hey there, I was wondering ", "hi team, ", "just checking, ")


def typo(word: str, rng: random.Random) -> str:
    """One keyboard slip in a word of 4+ letters: a transposition, a dropped, doubled or neighbouring letter."""
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    near = NEIGHBOURS.get(word[i].lower())
    return word[:i] + rng.choice(near) + word[i + 1:] if near else word


def with_typos(text: str, rng: random.Random, rate: float = 0.3) -> str:
    """A slip in about `rate` of the words that can take one, and in at least one of them."""
    words = text.split()
    able = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not able:
        return text
    chosen = {i for i in able if rng.random() < rate} or {rng.choice(able)}
    return " ".join(typo(w, rng) if i in chosen else w for i, w in enumerate(words))


def informal(text: str, rng: random.Random) -> str:
    """Lower case, no final punctuation, and one or two informal spellings where they fit."""
    out = text.lower().rstrip(" ?.!")
    for pattern, repl in rng.sample(INFORMAL, len(INFORMAL)):
        if re.search(pattern, out, flags=re.IGNORECASE):
            out = re.sub(pattern, repl, out, count=1, flags=re.IGNORECASE)
            if rng.random() < 0.5:
                break
    return out


def with_prefix(text: str, rng: random.Random) -> str:
    """A conversational opening before a request (not before "yes", "hi" or "thanks": it would change them)."""
    if len(text.split()) < 3:
        return with_typos(text, rng)
    return rng.choice(PREFIXES) + text[:1].lower() + text[1:]


def augmented_copies(texts: Sequence[str], copies: int, seed: int) -> list[tuple[int, str]]:
    """(index of the source text, its noisy copy) for `copies` copies of each text: typos, informal
    spelling, a conversational prefix, or typos + informal. Copies equal to a source text are skipped."""
    rng = random.Random(seed)
    seen = {t.strip().lower() for t in texts}
    out: list[tuple[int, str]] = []
    makers = (with_typos, informal, with_prefix, lambda t, r: with_typos(informal(t, r), r))
    for _ in range(copies):
        for i, text in enumerate(texts):
            noisy = rng.choice(makers)(text, rng).strip()
            key = noisy.lower()
            if noisy and key not in seen:
                seen.add(key)
                out.append((i, noisy))
    return out
