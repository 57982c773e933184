"""Short control phrases that steer a conversation regardless of the NLU (yes/no, stop, continue)."""
import re

ABANDON = re.compile(r"^\s*(never\s*mind|nevermind|forget (it|about it)|stop|quit|exit|cancel (that|this|it)|"
                     r"abort|i changed my mind|leave it|no thanks,? (that's|thats) all)\W*$", re.I)
# Searched (not matched) in short messages: "ok, let's continue", "back to changing the address".
RESUME = re.compile(r"\b(continue|continuing|resume|go back to|back to|carry(ing)? on|"
                    r"pick (it|that) (back )?up|where we left off)\b", re.I)
# An explicit request for a person: a verb of asking plus a word for a person, or the bare word.
# "Are you a person?" is a question about the bot, not a request, and must not match.
ASKS_HUMAN = re.compile(
    r"\b(talk|speak|chat|connect|transfer|put|pass|get|give|want|need|let me|escalate|hand)\b[^.?!]{0,30}?"
    r"\b(human|real person|a person|someone|somebody|agent|representative|rep|operator|staff|manager|supervisor|"
    r"customer service)\b|^\W*(agent|human|representative|operator|live agent|real person)\W*$", re.I)
YES = re.compile(r"^\s*(y|yes|yeah|yep|yup|sure|ok(ay)?|correct|confirm(ed)?|please do|go ahead|do it|"
                 r"that'?s right|right|absolutely|yes please)\b", re.I)
NO = re.compile(r"^\s*(n|no|nope|nah|don'?t|do not|not now|wait|hold on)\b", re.I)
