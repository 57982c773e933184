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

# Which service flow a message that names an order asks for, by lexical cue (intent -> cue). The
# policy reads these only when an order number is in the message and no flow is running, and only
# for flows the domain registry declares; when several match, the NLU ranking picks among them,
# else the first listed wins. Order status is what an order number means without any of these.
FLOW_CUES: dict[str, re.Pattern] = {
    "refund_status": re.compile(r"\b(refund(ed|s)?|money back|reimburse(d|ment)?|credited|credit back)\b", re.I),
    "cancel_order": re.compile(r"\b(cancel+(ing|ed|ation)?|call off|don'?t want (it|this|them|the order) any ?more)\b",
                               re.I),
    "change_address": re.compile(r"\b(change|update|correct|fix|new|wrong)\b[^.?!]{0,30}\b(address|street|zip|"
                                 r"postcode|apartment|apt)\b|\b(ship|send|deliver)\b[^.?!]{0,20}\b(to|at) a "
                                 r"(different|new|another) (address|place)\b|\bmoved house\b", re.I),
    "return_request": re.compile(r"\b(return(ing)?|send(ing)? [\w ]{0,12}?back|ship(ping)? [\w ]{0,12}?back|"
                                 r"take [\w ]{0,12}?back|bring [\w ]{0,12}?back|exchange|give (it|them) back)\b", re.I),
}
# A shopping question: whether the store sells something, or what the customer is after. Counts only
# with a catalogue cue (a category, brand or price bound, see retrieval/filters.py).
SHOPPING_ASK = re.compile(r"\b(do|does|did) (you|u|ya|y'all|the store|your (store|shop))( guys| all)? "
                          r"(sell|carry|stock|have|offer|do|got)\b|\b(i'?m|i am|we'?re|we are|am) "
                          r"(looking|searching|shopping|hunting) for\b|\blooking for an?\b|\b(where|what) can i buy\b|"
                          r"\b(i|we) (want|need|would like|'d like) to (buy|get|order|purchase)\b|"
                          r"\b(any|got any) (recommendations?|suggestions?) for\b|"
                          # "the cheapest robot vacuum": a superlative over the catalogue is a shopping question
                          r"\b(cheapest|priciest|least expensive|most expensive|lowest[- ]priced|highest[- ]priced)\b", re.I)
