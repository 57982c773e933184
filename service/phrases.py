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
# "are your people around on Sundays, like if I need to talk to someone?": a question about when a
# person could be reached, not a request for one now.
IF_I_NEED_A_PERSON = re.compile(r"\b(if|when|in case) (i|we) (ever |would )?(need|want|have) to (talk|speak|chat)\b", re.I)


# "wait, am I chatting with an actual person or a program?": a question about the assistant itself.
ASKS_WHAT_YOU_ARE = re.compile(r"\b(am i|are you|is this|is that|is it)\b[^.?!]{0,30}?\b(a|an|real|actual|live)\s+"
                               r"(real |actual |live )?(person|human|bot|robot|program|machine|computer|ai)\b", re.I)


def asks_for_a_person(text: str) -> bool:
    """An explicit request for a person now."""
    return bool(ASKS_HUMAN.search(text)) and not IF_I_NEED_A_PERSON.search(text)


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
# Words that say an item is faulty ("won't turn on", "dead"): the return flow's condition answer and,
# with a wish for the money back, a return rather than a refund's status.
DEFECT = re.compile(r"\b(defective|faulty|broken|damaged|doesn'?t work|does not work|stopped working|dead|"
                    r"cracked|arrived broken|not working|(won'?t|will not|doesn'?t|does not) (even )?"
                    r"(turn|switch|power) on)\b", re.I)
# "I sent the vacuum back", "I returned it": the item already went back.
SENT_BACK = re.compile(r"\b(sent|shipped|mailed|posted|dropped off|brought|took|gave)\b[^.?!]{0,25}?\bback\b|"
                       r"\b(i|we)( have|'ve)?( already)? returned\b|\balready returned\b|"
                       r"\breturned (it|them|my|our|the)\b", re.I)
# "I cancelled it before it shipped", "already cancelled the order": the cancellation was made.
CANCELLED = re.compile(r"\b(i|we)( have|'ve)?( already)? cancell?ed\b|\balready cancell?ed\b|"
                       r"\bcancell?ed (it|them|my|our|the)\b", re.I)
# The service request each past-tense situation has already made: a message that says so asks about
# what follows (the money), not for the request again.
# "Refund finally arrived but it's seven dollars short": the refund came; what is asked is why (the policy).
# ("my refund hasn't arrived", "haven't received my refund", "did my refund come through?" ask for its status).
_ASKING = "".join(f"(?<!{verb} {det} )" for verb in ("did", "has", "is", "was") for det in ("my", "the"))
REFUND_CAME = re.compile(_ASKING + r"\b(refund|money)\b(?:(?!\b(?:not|never|yet|still)\b|n't)[^.?!]){0,30}?"
                         r"\b(arrived|came|landed|showed up|went through)\b|"
                         r"(?<!n't )(?<!not )(?<!never )(?<!yet )\b(got|received|gotten)\b[^.?!]{0,15}?"
                         r"\b(my|the|a) refund\b|"
                         # "why did I only get $254 back when I paid 299?": it came, short
                         r"\b(only|just) (got|get|gotten|received)\b[^.?!]{0,25}?\b(back|refunded)\b", re.I)
ALREADY_DONE: dict[str, re.Pattern] = {"return_request": SENT_BACK, "cancel_order": CANCELLED,
                                       "refund_status": REFUND_CAME}
# Words that change something ("update where my order ships", "I moved", "I misspelled the street"):
# an address message without any is a question about addresses ("do you ship to APO addresses?").
CHANGES_SOMETHING = re.compile(r"\b(chang\w*|updat\w*|correct\w*|fix\w*|edit\w*|switch\w*|redirect\w*|wrong|"
                               r"mov(e|ed|ing)|new|misspel\w*|typo|instead)\b", re.I)
# "if I order it and the colour looks wrong, can I send it back?": a question before buying, about
# the policy, not a request about an order.
BEFORE_BUYING = re.compile(r"\bif (i|we) (order|buy|get|purchase)\b|\bbefore (i|we) (order|buy|purchase)\b|"
                           r"\bbefore (ordering|buying|purchasing)\b|\bthinking (about|of) (buying|ordering)\b", re.I)
# "still haven't seen a cent", "no refund yet", "where's my money": money that was due has not arrived.
NO_MONEY_YET = re.compile(r"\b(haven'?t|have not|hasn'?t|has not|didn'?t|did not|never|still not)\b[^.?!]{0,20}?"
                          r"\b(seen|got|gotten|received|had|get|see|receive)\b[^.?!]{0,15}?\b(a (cent|penny|dime|"
                          r"dollar)|(my|the|any|a) (money|refund|cash)|refund|anything)\b|"
                          r"\bstill (no|waiting (for|on)) (my |the |a |any )?(refund|money)\b|"
                          r"\bno (refund|money) yet\b|"
                          # "where's my money", "when do I get the money back": asks after money due
                          r"\bwhere('?s| is) (my|the) (money|refund|cash)\b|"
                          r"\bwhen (do|will|can|would) (i|we) (get|see|receive)\b[^.?!]{0,25}?\b(money|refund|cash)\b|"
                          # "did the money for the sofa I cancelled ever go back to my card?"
                          r"\b(did|has|have)\b[^.?!]{0,20}?\b(money|refund|cash)\b[^.?!]{0,40}?\b(ever|yet)\b", re.I)
# "I just want my money back", "can I get a refund": asks for money not yet claimed ("my refund" presumes one).
WANTS_MONEY_BACK = re.compile(r"\b(want|need|would like|'d like|demand|give me|get|have)\b[^.?!]{0,20}?"
                              r"\b(my money back|money back|a (full )?refund|refunded)\b", re.I)
# Checked before FLOW_CUES, in order, when a message names an order: situations whose words decide the
# flow whatever the NLU ranks ("sent it back, haven't seen a cent" is a refund's status, not a return;
# "won't turn on, I want my money back" is a return, not the status of a refund that doesn't exist).
SITUATION_CUES: tuple[tuple[str, tuple[re.Pattern, ...]], ...] = (
    ("refund_status", (SENT_BACK, NO_MONEY_YET)),
    ("refund_status", (CANCELLED, NO_MONEY_YET)),
    ("return_request", (DEFECT, WANTS_MONEY_BACK)),
)

# A billing dispute (charged twice, fraud) told with exasperation: a person should take it. Both are
# needed: "am I charged twice if it ships in two boxes?" is an ordinary question the FAQ answers.
BILLING_DISPUTE = re.compile(r"\b(charged|billed|charging|billing) (me )?(twice|two times|double)\b|"
                             r"\bdouble[- ]?(charged|billed|charge)\b|\bduplicate (charge|payment)s?\b|"
                             r"\bfraud(ulent)?\b|\bunauthori[sz]ed (charge|payment|transaction)s?\b|"
                             r"\bcharge ?back\b|\bdisput(e|ing) (the|a|this) (charge|payment)\b", re.I)
FED_UP = re.compile(r"\b(so|totally|absolutely|completely) done with\b|\bi'?m (so )?done\b|\bfed up\b|"
                    r"\bsick (and tired )?of\b|\bhad enough\b|\bunacceptable\b|\bridiculous\b|\bfurious\b|"
                    r"\bscam(med)?\b", re.I)

# Another shop by name, and what only that shop can answer (its hours, its branches, its own products'
# support): "what time does the walmart on 5th street close", "my phone from costco keeps rebooting".
# A price-match question names other shops too ("do you match best buy prices?"): that one is ours.
OTHER_SHOP = re.compile(r"\b(walmart|costco|target|best ?buy|home ?depot|lowe'?s|ikea|kohl'?s|macy'?s|"
                        r"newegg|micro ?center|sam'?s club|aldi|kroger|walgreens|cvs)\b", re.I)
ABOUT_THAT_SHOP = re.compile(r"\b(open|opens|close|closes|closing|hours|near me|on \w+ (street|st|avenue|ave|road|rd)|"
                             r"nearest|location|branch|from (walmart|costco|target|best ?buy|home ?depot|lowe'?s|ikea))\b",
                             re.I)
PRICE_MATCH = re.compile(r"\b(match|matching|beat|cheaper|lower price|price)\b", re.I)
# Personal tax filing and tax advice (the store answers only its own sales tax and exemptions).
TAX_ADVICE = re.compile(r"\b(file|filing|do|doing) (my |our )?tax(es| return)\b|\btax return\b|\birs\b|"
                        r"\btax (advice|bracket|deduction)s?\b|\bdeduct\b[^.?!]{0,30}\btaxes\b|\btax[- ]deductible\b|"
                        r"\b(write|writing) [\w ]{0,20}?off\b[^.?!]{0,60}\btax(es)?\b|\bincome tax(es)?\b|"
                        r"\bclaim\b[^.?!]{0,30}\bon (my|our) tax(es)?\b|"
                        # "do I have to declare it on my taxes if I sell my old TV?"
                        r"\bdeclare\b[^.?!]{0,40}?\btax(es)?\b|\bon (my|our) (income )?tax(es| return)\b", re.I)

# Medical and legal advice ("is that carpal tunnel? should I see a doctor?", "can I sue my landlord?",
# whether something is safe with a health condition).
PERSONAL_ADVICE = re.compile(r"\b(see|visit|call|ask) (a|my|the) (doctor|dr|physician|gp|pharmacist)\b|"
                             r"\b(medical|legal) advice\b|\bdiagnos(e|is|ed)\b|"
                             r"\b(can|could|should) (i|we) (sue|take \w+ to court)\b|\bsue (him|her|them|my)\b|"
                             # "is it safe to sleep on an electric blanket if you have a pacemaker?"
                             r"\b(is it|it'?s|is that|is this|would it be) safe\b[^.?!]{0,60}?\b(pacemaker|pregnan\w*|"
                             r"epilep\w*|seizures?|asthma|heart condition|medications?|medicines?)\b", re.I)
# A weather forecast ("is it going to snow in Denver this weekend?"), even from a customer expecting a
# parcel; whether the weather delays the parcel is a shipping question and stays ours.
FORECAST = re.compile(r"\b(weather forecast|forecast for|going to (snow|rain|storm)|gonna (snow|rain)|"
                      r"will it (snow|rain)|what('?s| is| will) the weather)\b", re.I)
WEATHER_DELAY = re.compile(r"\b(delay\w*|late|affect\w*|hold\w* up|slow\w*)\b", re.I)

# "Bought a stand mixer from you and now it's $50 cheaper": about a purchase made, not a shopping request.
ALREADY_BOUGHT = re.compile(r"\b(bought|purchased)\b|\b(i|we)( just| already)? (ordered|got)\b|"
                            r"\bordered (a|an|the|some|my|two|three|\d)\b", re.I)

# A shopping question: whether the store sells something, or what the customer is after. Counts only
# with a catalogue cue (a category, brand or price bound, see retrieval/filters.py).
SHOPPING_ASK = re.compile(r"\b(do|does|did) (you|u|ya|y'?all|the store|your (store|shop))( guys| all)? "
                          r"(sell|carry|stock|have|offer|do|got)\b|\b(i'?m|i am|we'?re|we are|am) "
                          r"(looking|searching|shopping|hunting) for\b|\blooking for an?\b|\b(where|what) can i buy\b|"
                          r"\b(i|we) (want|need|would like|'d like) to (buy|get|order|purchase)\b|"
                          r"\b(any|got any) (recommendations?|suggestions?) for\b|"
                          # "the cheapest robot vacuum": a superlative over the catalogue is a shopping question
                          r"\b(cheapest|priciest|least expensive|most expensive|lowest[- ]priced|highest[- ]priced)\b", re.I)

# A question, with or without its question mark ("will it leave today or monday", "when does it get here").
ASKS_A_QUESTION = re.compile(r"\?|^\W*(when|why|how|what|where|which|will|would|does|do|did|is|are|can|could)\b|"
                             r"\b(will|would|does|did|is|can) (it|that|this|they|my order)\b", re.I)
