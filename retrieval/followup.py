"""Whether a customer message reads like a follow-up: short, and opening with words that continue the
previous turn ("and", "what about", "so"), pointing back at it ("it", "that", "those") or closing
with "then", or a bare
question of a few words ("how much?").

Shared by the engine, which reads such a message together with the previous one (service/context.py),
and by the index build, which never takes a follow-up from the training dialogs as a paraphrase of its
FAQ entry (its words fit only after its previous answer). Pure Python.
"""
from __future__ import annotations

import re

# Words that open a follow-up, or point back at what was just discussed.
OPENER = re.compile(r"^\s*(?:and|also|plus|so|but|(?:ok(?:ay)?|alright),?\s+(?:and|so|how|what|when|where|why)|"
                    r"what about|how about|same for|anything|any)\b", re.I)
POINTS_BACK = re.compile(r"\b(?:it|that|this|they|them|those|these|there|one|too|either|also)\b", re.I)
# "whats the number to ring on monday then": a closing "then" leans on what was just said.
CLOSES_LIKE_FOLLOW_UP = re.compile(r"\bthen\W*$", re.I)
MAX_FOLLOW_UP_WORDS = 12
# "how much?", "why not", "for how long?", "by when?": a bare question word asks about what was just answered.
BARE_QUESTION = re.compile(r"^\s*(?:(?:for|by|until|till|since|from|in|at)\s+)?(?:how|what|why|when|where|which|who)\b",
                           re.I)
MAX_BARE_QUESTION_WORDS = 3


def reads_like_follow_up(text: str) -> bool:
    """A short message that opens like a continuation or points back at the previous turn."""
    words = len(text.split())
    return (words <= MAX_FOLLOW_UP_WORDS
            and bool(OPENER.search(text) or POINTS_BACK.search(text) or CLOSES_LIKE_FOLLOW_UP.search(text))) \
        or (words <= MAX_BARE_QUESTION_WORDS and bool(BARE_QUESTION.search(text)))
