"""Training conversations generated from templates over the knowledge pack, kept apart from the
held-out dialogs.

Whatever learns from conversations (context, decisions, thresholds) trains on these dialogs and
makes its choices on their validation split; `data/demo/dialogs.jsonl` (and the other held-out
files) are never read here. The dialogs use the evaluator's format (`evaluation/dialog.py`):
`{"id", "turns": [{"user", "expect": {...}}], "expect_state"?: {...}}`.

They are built from the pack only: FAQ questions and paraphrases (`faq.jsonl`), the catalogue
(`products.jsonl`), the orders (`orders.jsonl`, with the right email for each) and templates
written here. Families: FAQ questions with follow-ups that need the previous turn, typo'd and
informal rewrites, backstory prefixes, typo-heavy in-domain questions (never out of scope), every
order flow (with the order number in the first message or asked for, a wrong email, "no" at the
confirmation, a question asked at the confirmation), shopping requests ("do you sell X?"), small
talk, handoff requests and near-domain out-of-scope requests.

The validation split does not copy the training split: FAQ entries, orders, product types and
the fixed templates are each divided between the two (`Pools`), and no first message appears in
both.

    python -m training.dialogs --config configs/demo.yaml --out data/demo/train_dialogs.jsonl \\
        [--val-out data/demo/val_dialogs.jsonl] [--n 400] [--val-fraction 0.25] [--seed 0]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from core.cli import run_cli
from core.config import load_config
from core.jsonl import read_jsonl

SPLITS = ("train", "val")
VAL_EVERY = 4          # every 4th FAQ entry, order, product type and fixed template goes to validation

# ---------------------------------------------------------------------------------------- templates
# Follow-ups that need the previous turn: (first FAQ, follow-up wordings, the FAQ the follow-up asks).
FOLLOW_UPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("faq_ship_02", ("and what if I need it faster?", "ok and the faster option, how much is that?"), "faq_ship_03"),
    ("faq_ship_02", ("and does that cost anything?", "is that one free or do I pay for it"), "faq_ship_01"),
    ("faq_ship_03", ("and the normal one, how many days is that?", "what about the regular option, how long?"),
     "faq_ship_02"),
    ("faq_ship_04", ("what about a PO box then?", "ok, and can it go to an APO address?"), "faq_ship_07"),
    ("faq_ship_05", ("and if it says delivered but nothing's here?", "what if the tracking shows delivered but "
                     "I never got it"), "faq_ship_08"),
    ("faq_ret_01", ("and how many days do I get for that?", "how long is the window for it?"), "faq_ret_01"),
    ("faq_ret_01", ("do I pay for sending it back?", "and is the return postage on me?"), "faq_ret_05"),
    ("faq_ret_01", ("and if I already opened the box?", "is there a fee when it's been opened?"), "faq_ret_03"),
    ("faq_ret_04", ("and how long until the money is back?", "how long does the refund take after that?"),
     "faq_ref_01"),
    ("faq_ret_03", ("and is the shipping refunded too?", "do I get the delivery charge back as well?"), "faq_ref_06"),
    ("faq_ref_01", ("and where does it go, my card?", "which account does it land in?"), "faq_ref_02"),
    ("faq_ref_02", ("how long does that usually take?", "and how many days until I see it?"), "faq_ref_01"),
    ("faq_acc_05", ("how long do I have to wait then?", "so how long till I can sign in again?"), "faq_acc_05"),
    ("faq_acc_02", ("and if my account got locked from trying?", "what if it's locked now after too many tries?"),
     "faq_acc_05"),
    ("faq_gc_01", ("do they expire?", "and is there an expiry date on them?"), "faq_gc_03"),
    ("faq_gc_01", ("how do I see how much is left on one?", "and how can I check the balance later?"), "faq_gc_02"),
    ("faq_war_01", ("and what doesn't it cover?", "what's excluded from that?"), "faq_war_04"),
    ("faq_war_01", ("how do I claim on it?", "and how do I actually make a claim?"), "faq_war_03"),
    ("faq_war_02", ("can I cancel it later if I change my mind?", "and if I don't want it anymore, can I cancel?"),
     "faq_war_05"),
    ("faq_inst_01", ("and will you take my old one away?", "can they haul away the old TV too?"), "faq_inst_03"),
    ("faq_inst_02", ("how do I move the appointment?", "and if I need to reschedule it?"), "faq_inst_06"),
    ("faq_pay_01", ("can I combine two of those on one order?", "and can I split it between two of them?"),
     "faq_pay_06"),
    ("faq_pay_02", ("and when is my card actually charged?", "when does the money come off my card?"), "faq_pay_03"),
    ("faq_promo_01", ("can you still put it on my order?", "and if I forgot to use it, can you add it now?"),
     "faq_promo_06"),
    ("faq_stock_01", ("can I pre-order it in the meantime?", "and could I backorder it instead?"), "faq_stock_02"),
    ("faq_priv_02", ("can I get a copy of my data first?", "before that, can I download what you have on me?"),
     "faq_priv_05"),
    ("faq_pol_01", ("and how do I reach them?", "what's the best way to contact them?"), "faq_pol_02"),
    ("faq_promo_02", ("and is there one for students?", "anything for military too?"), "faq_promo_03"),
)

BACKSTORIES = (
    "I bought {a_item} last week and {q}", "So I ordered {a_item} from you guys a few days ago. {Q}",
    "hi, got {a_item} for my {relative}'s birthday, {q}", "My {relative} recommended your shop for {a_item}. {Q}",
    "Quick question before I order {a_item}: {q}", "I've been thinking about getting {a_item} and {q}",
    "we just moved and bought {a_item} from you, {q}", "Long story short, {a_item} I ordered is a gift. {Q}",
)
RELATIVES = ("mum", "dad", "sister", "brother", "partner", "son", "daughter", "friend", "grandma", "roommate")
INFORMAL_OPENERS = ("hey ", "hi, ", "quick q: ", "hello, ", "um ", "so ", "yo ", "hiya, ", "")
SWAPS = ((r"\byou\b", "u"), (r"\byour\b", "ur"), (r"\bplease\b", "pls"), (r"\bwhat is\b", "whats"),
         (r"\bdo you\b", "do u"), (r"\bI am\b", "im"), (r"\bbecause\b", "cuz"), (r"\bthanks\b", "thx"),
         (r"\bthe\b", "teh"))
KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"

SMALL_TALK = {
    "greeting": ("hello, anyone around?", "good afternoon to the Hearth and Circuit team", "hey there assistant",
                 "hiya, hope your day is going well", "morning! got a minute?", "hi hi, first time chatting here",
                 "good evening, hello", "heya bot"),
    "thanks": ("cheers, that sorted it", "thank you so much, very helpful", "brilliant, many thanks",
               "that's great, thank you kindly", "appreciate the help!", "thx a bunch", "lovely, thanks again",
               "perfect, thank you"),
    "goodbye": ("ok that's everything, bye now", "see you later then", "have a good one, bye",
                "alright, signing off", "catch you another time", "that's all from me, goodbye",
                "bye bye for now", "talk soon, take care"),
    "bot_identity": ("wait am I talking to a bot right now?", "is this an automated chat?",
                     "are you an AI or a real employee?", "who exactly am I chatting with?",
                     "are you a program?", "hang on, is this a machine answering?"),
    "capabilities": ("what sort of things can you help me with?", "what are you able to do here?",
                     "which questions can you answer?", "can you tell me what you're for?",
                     "what can I ask you about?", "how can you help me today?"),
}
HANDOFF = ("I'd like to speak with a real person please", "can you connect me to a customer service agent",
           "put me through to a human, this bot isn't helping", "I need to talk to a representative about my order",
           "transfer me to someone on your support team", "get me a manager please",
           "let me chat with a live agent", "is there a human I can talk to? I want one now")
COMPLAINTS = ("this is the third time I'm writing and nobody has fixed anything, absolutely unacceptable",
              "I'm really angry, your service has been terrible and I want this escalated",
              "honestly fed up, every answer is useless and my problem is still not solved",
              "worst experience ever, I've wasted hours on this and I'm furious")
OUT_OF_SCOPE = (
    "what time does the Target on Main Street close tonight?", "is the Walmart near me open on Sundays?",
    "what are Best Buy's opening hours this weekend?", "does the Costco downtown open early on Saturdays?",
    "can you help me fill in my tax return?", "how much income tax do I owe on my side business?",
    "should I claim my home office on my taxes?", "what's the capital gains tax rate this year?",
    "can I sue my landlord for not fixing the heating?", "do I need a lawyer for a divorce?",
    "is it legal to record a phone call without telling the other person?", "how do I write a will?",
    "what dose of ibuprofen is safe for a child?", "is this rash on my arm something serious?",
    "can you recommend a good dentist in Chicago?", "who won the football game last night?",
    "what's the weather forecast for Boston tomorrow?", "can you book me a table at an Italian restaurant?",
    "what's a good recipe for banana bread?", "how do I get from the airport to downtown by train?",
    "translate 'good morning' into Japanese for me", "what's the capital of Australia?",
    "can you write my history essay about the French revolution?", "which stocks should I invest in?",
)
SHOPPING = (
    "do you sell {things}?", "do you have any {things} under ${budget}?", "I'm looking for {a_thing}",
    "do you guys carry {things}", "I need to buy {a_thing} for my {relative}", "looking for {a_thing}, any ideas?",
    "do you stock {things} at the moment?", "I want to buy {a_thing}, what have you got?",
    "what {things} do you have for less than ${budget}?", "any recommendations for {a_thing}?",
    "got any {things}?", "hunting for {a_thing} around ${budget}",
)
CONFIRM_YES = ("yes", "yes please", "yep, go ahead", "sure, do it", "ok", "correct, please do", "yeah")
CONFIRM_NO = ("no", "no, don't", "nope, leave it", "nah, not now", "no thanks")
CONDITIONS = {
    "unopened": ("it hasn't been opened at all", "still sealed in the box", "unopened, in its original packaging",
                 "yes, it's brand new and unused"),
    "opened": ("I opened it and used it a couple of times", "it's been opened, I tried it once",
               "no, I unboxed it and set it up", "opened, used it for a week"),
    "defective": ("it stopped working after two days", "it arrived broken", "it's faulty, won't turn on",
                  "the thing is defective, it doesn't work"),
}
FLOW_STARTS = {
    "order_status": ("where's my order?", "can you check on my order for me", "has my order shipped yet?",
                     "I want to know where my package is", "any update on my delivery?", "track my order please"),
    "return_request": ("I want to return something", "how do I send back an item I bought", "I'd like to start a return",
                       "it's leaking, I want to return it", "I need to return my purchase"),
    "cancel_order": ("I want to cancel my order", "please cancel an order for me", "can I still cancel my order?",
                     "I changed my mind, cancel the order"),
    "change_address": ("I need to change the delivery address on my order", "can I update where my order ships to?",
                       "I moved, please change my shipping address", "wrong address on my order, can you fix it"),
    "refund_status": ("where is my refund?", "what's the status of my refund", "I still haven't got my money back",
                      "has my refund been processed yet?"),
}
# The order number in the first message: the words name the flow ("can I send this back? order HC-...").
FLOW_STARTS_WITH_ORDER = {
    "order_status": ("where is order {oid}?", "status of {oid} please", "{oid} hasn't arrived, where is it",
                     "can you tell me when {oid} will arrive"),
    "return_request": ("can I send this back? order {oid}", "I want to return {oid}", "return order {oid} please",
                       "{oid} isn't what I expected, I'd like to send it back", "how do I return {oid}"),
    "cancel_order": ("cancel {oid}", "please cancel order {oid}", "I need to cancel {oid}, I ordered by mistake",
                     "can you cancel {oid} before it ships?"),
    "change_address": ("change the address on {oid}", "I need {oid} delivered to a new address",
                       "update the shipping address for order {oid}"),
    "refund_status": ("where's my refund for {oid}", "has the refund for {oid} gone through?",
                      "I returned {oid}, when do I get my money back?"),
}
FLOW_ACTIONS = {"order_status": "order_status", "return_request": "start_return", "cancel_order": "cancel_order",
                "change_address": "change_address", "refund_status": "refund_status"}
STREETS = ("Maple", "Cedar", "Harbor", "Willow", "Ridge", "Lakeview", "Orchard", "Sunset", "Birch", "Granite")
CITIES = (("Dayton", "OH", "45402"), ("Madison", "WI", "53703"), ("Tucson", "AZ", "85701"),
          ("Raleigh", "NC", "27601"), ("Boise", "ID", "83702"), ("Albany", "NY", "12207"))


# ---------------------------------------------------------------------------------------- the pack
@dataclass
class Pack:
    faq: list[dict]
    products: list[dict]
    orders: list[dict]
    today: dt.date
    window_days: int
    fee: float

    @classmethod
    def load(cls, config_path: str | Path | None) -> "Pack":
        cfg = load_config(config_path)
        if cfg.data.orders is None:
            raise SystemExit("the config names no orders file (data.orders): the flow dialogs need one")
        today = cfg.flows.reference_date or dt.date.today()
        return cls(read_jsonl(cfg.data.faq), read_jsonl(cfg.data.products), read_jsonl(cfg.data.orders),
                   today, cfg.flows.return_window_days, cfg.flows.restocking_fee)


def _every(items: Sequence[Any], split: str) -> list[Any]:
    """The items of one split: every VAL_EVERY-th (from the second) to validation, the rest to training."""
    return [x for i, x in enumerate(items) if (i % VAL_EVERY == 1) == (split == "val")]


@dataclass
class Pools:
    """What one split may draw from: disjoint FAQ entries, orders, product types and templates."""
    split: str
    faq: list[dict]
    faq_ids: set[str]
    follow_ups: list[tuple[str, tuple[str, ...], str]]
    product_types: list[tuple[str, list[dict]]]
    orders: dict[str, list[dict]]                 # flow intent -> orders that flow can complete
    refused: dict[str, list[dict]]                # flow intent -> orders the policy refuses (with a ticket)
    all_orders: list[dict]
    templates: dict[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, pack: Pack, split: str) -> "Pools":
        by_cat: dict[str, list[dict]] = defaultdict(list)
        for r in sorted(pack.faq, key=lambda r: r["id"]):
            by_cat[r["category"]].append(r)
        faq = [r for cat in sorted(by_cat) for r in _every(by_cat[cat], split)]
        ids = {r["id"] for r in faq}
        follow_ups = [f for f in FOLLOW_UPS if f[0] in ids]
        types: dict[str, list[dict]] = defaultdict(list)
        for p in pack.products:
            types[_product_kind(p)].append(p)
        kinds = sorted(k for k in types if k)
        product_types = [(k, types[k]) for k in _every(kinds, split)]
        orders = _every(sorted(pack.orders, key=lambda o: o["order_id"]), split)
        ok, refused = _orders_by_flow(pack, orders)
        templates = {name: _every(values, split) for name, values in (
            ("handoff", HANDOFF), ("complaint", COMPLAINTS), ("oos", OUT_OF_SCOPE), ("shopping", SHOPPING),
            ("backstory", BACKSTORIES))}
        templates.update({f"small_talk:{k}": _every(v, split) for k, v in SMALL_TALK.items()})
        templates.update({f"start:{k}": _every(v, split) for k, v in FLOW_STARTS.items()})
        templates.update({f"start_order:{k}": _every(v, split) for k, v in FLOW_STARTS_WITH_ORDER.items()})
        return cls(split, faq, ids, follow_ups, product_types, ok, refused, orders, templates)


def _product_kind(p: dict) -> str:
    kind = (p.get("attributes") or {}).get("type")
    if kind:
        return str(kind)
    return {"tv": "TV", "laptops": "laptop"}.get(str(p.get("category")), "")


def _orders_by_flow(pack: Pack, orders: list[dict]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    ok: dict[str, list[dict]] = defaultdict(list)
    refused: dict[str, list[dict]] = defaultdict(list)
    for o in orders:
        status = o["status"]
        ok["order_status"].append(o)
        if status in ("placed", "processing"):
            ok["cancel_order"].append(o)
            ok["change_address"].append(o)
        if status == "shipped":
            refused["cancel_order"].append(o)
        if status == "delivered" and o.get("delivered_at"):
            age = (pack.today - dt.date.fromisoformat(o["delivered_at"][:10])).days
            (ok if age <= pack.window_days else refused)["return_request"].append(o)
        if status in ("returned", "cancelled") and o.get("refund_status"):
            ok["refund_status"].append(o)
    return ok, refused


# ---------------------------------------------------------------------------------------- rewrites
def _a(word: str) -> str:
    if word.endswith("s"):
        return "some " + word
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _plural(word: str) -> str:
    if word == "mouse":
        return "mice"
    if word.endswith("s"):
        return word
    if word.endswith(("x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def typo(text: str, rng: random.Random, rate: float = 0.25) -> str:
    """Keyboard slips in some longer words: a swap, a drop, a double or a neighbouring key."""
    words = text.split(" ")
    out = []
    for w in words:
        if len(w) >= 4 and w.isalpha() and rng.random() < rate:
            i = rng.randrange(1, len(w) - 1)
            op = rng.randrange(4)
            if op == 0:
                w = w[:i] + w[i + 1] + w[i] + w[i + 2:]
            elif op == 1:
                w = w[:i] + w[i + 1:]
            elif op == 2:
                w = w[:i] + w[i] + w[i:]
            else:
                w = w[:i] + rng.choice(KEYBOARD) + w[i + 1:]
        out.append(w)
    return " ".join(out)


def informal(text: str, rng: random.Random) -> str:
    t = text.lower() if rng.random() < 0.7 else text
    for pattern, repl in SWAPS:
        if rng.random() < 0.5:
            t = re.sub(pattern, repl, t, flags=re.I)
    t = t.rstrip("?.! ")
    t = rng.choice(INFORMAL_OPENERS) + t + rng.choice(("", "?", "??", " ?", " pls", "...", "!"))
    return t.strip()


def backstory(text: str, rng: random.Random, pools: Pools, pack: Pack) -> str:
    item = rng.choice(pack.products)
    kind = _product_kind(item) or str(item["title"])
    template = rng.choice(pools.templates["backstory"])
    q = text.strip()
    return template.format(a_item=_a(kind.lower() if kind != "TV" else kind), relative=rng.choice(RELATIVES),
                           q=q[:1].lower() + q[1:], Q=q[:1].upper() + q[1:])


def _faq_text(r: dict, rng: random.Random) -> str:
    return rng.choice([r["question"]] + list(r.get("paraphrases") or []))


# ---------------------------------------------------------------------------------------- families
def _turn(user: str, **expect: Any) -> dict[str, Any]:
    return {"user": user, "expect": {k: v for k, v in expect.items() if v is not None}}


def fam_faq_followup(rng: random.Random, pools: Pools, pack: Pack) -> dict | None:
    if not pools.follow_ups:
        return None
    first, wordings, second = rng.choice(pools.follow_ups)
    record = next(r for r in pack.faq if r["id"] == first)
    opening = _faq_text(record, rng)
    if rng.random() < 0.3:
        opening = backstory(opening, rng, pools, pack)
    turns = [_turn(opening, action="answer_faq", faq_id=first),
             _turn(rng.choice(wordings), action="answer_faq", faq_id=second, not_action="out_of_scope")]
    return {"turns": turns}


def fam_faq_variant(rng: random.Random, pools: Pools, pack: Pack) -> dict:
    r = rng.choice(pools.faq)
    text = _faq_text(r, rng)
    how = rng.randrange(3)
    text = typo(text, rng, 0.2) if how == 0 else informal(text, rng) if how == 1 else backstory(text, rng, pools, pack)
    turns = [_turn(text, action="answer_faq", faq_id=r["id"])]
    if rng.random() < 0.3:
        turns.insert(0, _turn(rng.choice(pools.templates["small_talk:greeting"]), action="small_talk",
                              intent="greeting"))
    if rng.random() < 0.3:
        turns.append(_turn(rng.choice(pools.templates["small_talk:thanks"]), action="small_talk", intent="thanks"))
    return {"turns": turns}


def fam_typo_heavy(rng: random.Random, pools: Pools, pack: Pack) -> dict:
    r = rng.choice(pools.faq)
    text = typo(informal(_faq_text(r, rng), rng), rng, 0.6)
    return {"turns": [_turn(text, faq_id=r["id"], not_action="out_of_scope")]}


def fam_topic_switch(rng: random.Random, pools: Pools, pack: Pack) -> dict:
    a, b = rng.sample(pools.faq, 2)
    return {"turns": [_turn(_faq_text(a, rng), action="answer_faq", faq_id=a["id"]),
                      _turn(rng.choice(("different question: ", "also, ", "another thing, ", "ok, and ", ""))
                            + _faq_text(b, rng), action="answer_faq", faq_id=b["id"])]}


def fam_small_talk(rng: random.Random, pools: Pools, pack: Pack) -> dict:
    kinds = rng.sample(sorted(SMALL_TALK), 2)
    turns = [_turn(rng.choice(pools.templates[f"small_talk:{k}"]), action="small_talk", intent=k) for k in kinds]
    return {"turns": turns}


def fam_handoff(rng: random.Random, pools: Pools, pack: Pack) -> dict:
    turns = []
    if rng.random() < 0.4:
        r = rng.choice(pools.faq)
        turns.append(_turn(_faq_text(r, rng), action="answer_faq", faq_id=r["id"]))
    if rng.random() < 0.3:
        turns.append(_turn(rng.choice(pools.templates["complaint"]), action="handoff", handoff=True))
    else:
        turns.append(_turn(rng.choice(pools.templates["handoff"]), action="handoff", handoff=True,
                           intent="human_request"))
    return {"turns": turns}


def fam_out_of_scope(rng: random.Random, pools: Pools, pack: Pack) -> dict:
    turns = [_turn(rng.choice(pools.templates["oos"]), action="out_of_scope", handoff=False)]
    if rng.random() < 0.4:
        r = rng.choice(pools.faq)
        turns.append(_turn(_faq_text(r, rng), action="answer_faq", faq_id=r["id"]))
    return {"turns": turns}


def fam_shopping(rng: random.Random, pools: Pools, pack: Pack) -> dict | None:
    if not pools.product_types:
        return None
    kind, products = rng.choice(pools.product_types)
    template = rng.choice(pools.templates["shopping"])
    prices = sorted(float(p["price"]) for p in products)
    budget = None
    if "{budget}" in template:
        median = prices[len(prices) // 2]
        if "around" in template:      # "around $X": the recommender's band is X +- 25%
            budget = int(round(median))
            wanted = [p for p in products if 0.75 * budget <= float(p["price"]) <= 1.25 * budget]
        else:
            budget = int(max(median * 1.1, prices[0] + 1))
            wanted = [p for p in products if float(p["price"]) <= budget]
        products = wanted or products
    text = template.format(things=_plural(kind) if kind != "TV" else "TVs", a_thing=_a(kind),
                           budget=budget, relative=rng.choice(RELATIVES))
    return {"turns": [_turn(text, action="recommend", product_ids=sorted(p["id"] for p in products))]}


def _email_variant(email: str, rng: random.Random) -> str:
    local, _, domain = email.partition("@")
    wrong = rng.choice((local + "1", local.replace(".", ""), local[::-1], local + ".shop"))
    return f"{wrong}@{domain}"


def _address(rng: random.Random) -> str:
    city, state, zip_code = rng.choice(CITIES)
    return f"{rng.randrange(10, 9999)} {rng.choice(STREETS)} {rng.choice(('Street', 'Road', 'Avenue', 'Lane'))}, " \
           f"{city}, {state} {zip_code}"


def fam_flow(rng: random.Random, pools: Pools, pack: Pack) -> dict | None:
    intent = rng.choice(sorted(k for k, v in pools.orders.items() if v))
    order = rng.choice(pools.orders[intent])
    action, oid, email = FLOW_ACTIONS[intent], order["order_id"], order["email"]
    turns: list[dict] = []
    style = rng.randrange(3)           # 0: number asked for, 1: number in the first message, 2: number and email
    if style == 0:
        turns.append(_turn(rng.choice(pools.templates[f"start:{intent}"]), action=action))
        turns.append(_turn(rng.choice((oid, f"it's {oid}", f"order number {oid}", oid.lower())), action=action))
    else:
        first = rng.choice(pools.templates[f"start_order:{intent}"]).format(oid=oid)
        if style == 2:
            first += rng.choice((f", my email is {email}", f" ({email})", f" - {email}"))
        turns.append(_turn(first, action=action, not_action="order_status" if intent != "order_status" else None))
    if style != 2:
        if rng.random() < 0.25:
            turns.append(_turn(_email_variant(email, rng), action=action, handoff=False,
                               reply_contains="don't match"))
        turns.append(_turn(rng.choice((email, f"it's {email}", f"the email is {email}")), action=action))
    state: dict[str, Any] = {"order": oid}
    if intent == "order_status":
        turns[-1]["expect"]["reply_contains"] = oid
        state["writes"] = 0
    elif intent == "refund_status":
        turns[-1]["expect"]["reply_contains"] = "has been issued" if order["refund_status"] == "issued" \
            else "being processed"
        state["writes"] = 0
    elif intent == "return_request":
        condition = rng.choice(sorted(CONDITIONS))
        turns.append(_turn(rng.choice(CONDITIONS[condition]), action=action, reply_contains="(yes/no)"))
        fee = pack.fee if condition == "opened" else 0.0
        state.update(fee=fee, refund_amount=round(float(order["total"]) * (1 - fee), 2))
    elif intent == "change_address":
        address = _address(rng)
        turns.append(_turn(rng.choice((address, f"the new address is {address}", f"send it to {address}")),
                           action=action, reply_contains="(yes/no)"))
        state["shipping_address"] = address
    else:
        turns[-1]["expect"]["reply_contains"] = "(yes/no)"
    if intent in ("return_request", "change_address", "cancel_order"):
        ending = rng.random()
        if ending < 0.3 and pools.faq:
            r = rng.choice(pools.faq)
            turns.append(_turn(r["question"], action="answer_faq", faq_id=r["id"], reply_contains="(yes/no)"))
        if ending < 0.85:
            turns.append(_turn(rng.choice(CONFIRM_YES), action=action))
            if intent == "return_request":
                state.update(return_created=True, status="return_requested", writes=1)
            elif intent == "cancel_order":
                state.update(status="cancelled", refund_status="pending", writes=1)
            else:
                state["writes"] = 1
        else:
            turns.append(_turn(rng.choice(CONFIRM_NO), action=action, reply_contains="haven't changed"))
            state = {"order": oid, "writes": 0}
    return {"turns": turns, "expect_state": state}


def fam_flow_refused(rng: random.Random, pools: Pools, pack: Pack) -> dict | None:
    choices = sorted(k for k, v in pools.refused.items() if v)
    if not choices:
        return None
    intent = rng.choice(choices)
    order = rng.choice(pools.refused[intent])
    oid, email = order["order_id"], order["email"]
    first = rng.choice(pools.templates[f"start_order:{intent}"]).format(oid=oid)
    return {"turns": [_turn(first, action=FLOW_ACTIONS[intent]),
                      _turn(email, action="handoff", handoff=True)],
            "expect_state": {"order": oid, "writes": 0}}


COMPARE = ("what's the difference between the {a} and the {b}?", "{a} vs {b}, which is better?",
           "should I get the {a} or the {b}?", "how does the {a} compare to the {b}", "compare the {a} and the {b}",
           "difference between {a} and {b}", "is the {a} or the {b} better for me?", "{a} or {b}?")
SUPERLATIVE = (("what's the cheapest {thing} you sell?", min), ("your most expensive {thing}?", max),
               ("which is the least expensive {thing}", min), ("show me the priciest {thing} you have", max))
SHOW_THEN_COMPARE = ("what's the difference between the first two?", "compare the first two please",
                     "how do those two compare?")


def _mention(p: dict, rng: random.Random) -> str:
    """A product as a customer names it: the full title, or without its kind ("Pellix 8")."""
    title = str(p["title"])
    kind = _product_kind(p)
    short = re.sub(rf"\s+{re.escape(kind)}s?$", "", title, flags=re.I) if kind else title
    return rng.choice((title, short)) if short else title


def fam_compare(rng: random.Random, pools: Pools, pack: Pack) -> dict | None:
    kinds = [(k, ps) for k, ps in pools.product_types if len(ps) >= 2]
    if not kinds:
        return None
    kind, products = rng.choice(kinds)
    roll = rng.random()
    if roll < 0.5:
        a, b = rng.sample(products, 2)
        text = rng.choice(COMPARE).format(a=_mention(a, rng), b=_mention(b, rng))
        return {"turns": [_turn(text, action="compare", product_ids=[a["id"], b["id"]])]}
    if roll < 0.8:
        template, pick = rng.choice(SUPERLATIVE)
        best = pick(products, key=lambda p: float(p["price"]))
        thing = "TV" if kind == "TV" else kind
        return {"turns": [_turn(template.format(thing=thing), action="recommend", product_ids=[best["id"]])]}
    thing = "TVs" if kind == "TV" else _plural(kind)
    return {"turns": [_turn(f"can you show me some {thing}?", action="recommend"),
                      _turn(rng.choice(SHOW_THEN_COMPARE), action="compare")]}


# Families appended after the others with their own random stream, so that adding one leaves the
# dialogs the earlier families generate (and every figure measured on them) unchanged.
LATER_FAMILIES: dict[str, tuple[float, Callable[[random.Random, Pools, Pack], dict | None]]] = {
    "compare": (0.06, fam_compare),
}


FAMILIES: dict[str, tuple[float, Callable[[random.Random, Pools, Pack], dict | None]]] = {
    "faq_followup": (0.16, fam_faq_followup),
    "faq_variant": (0.16, fam_faq_variant),
    "faq_typo_heavy": (0.08, fam_typo_heavy),
    "faq_topic_switch": (0.05, fam_topic_switch),
    "flow": (0.22, fam_flow),
    "flow_refused": (0.04, fam_flow_refused),
    "shopping": (0.1, fam_shopping),
    "small_talk": (0.05, fam_small_talk),
    "handoff": (0.06, fam_handoff),
    "out_of_scope": (0.08, fam_out_of_scope),
}


# ---------------------------------------------------------------------------------------- generate
def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def generate(pack: Pack, n: int = 400, val_fraction: float = 0.25, seed: int = 0) -> dict[str, list[dict]]:
    """{"train": [...], "val": [...]}: n dialogs in all, deterministic for a seed; no dialog id and no first
    message in both splits."""
    counts = {"val": max(1, round(n * val_fraction))}
    counts["train"] = max(1, n - counts["val"])
    names = list(FAMILIES)
    weights = [FAMILIES[k][0] for k in names]
    out: dict[str, list[dict]] = {}
    seen_first: set[str] = set()
    for split in SPLITS:
        rng = random.Random(f"{seed}:{split}")
        pools = Pools.build(pack, split)
        dialogs: list[dict] = []
        per_family: dict[str, int] = defaultdict(int)
        tries = 0
        while len(dialogs) < counts[split] and tries < counts[split] * 50:
            tries += 1
            family = rng.choices(names, weights)[0]
            dialog = FAMILIES[family][1](rng, pools, pack)
            if dialog is None:
                continue
            first = _norm(dialog["turns"][0]["user"])
            if first in seen_first:
                continue
            seen_first.add(first)
            per_family[family] += 1
            dialogs.append({"id": f"{split}-{family}-{per_family[family]:03d}", **dialog})
        for family, (share, make) in LATER_FAMILIES.items():
            later = random.Random(f"{seed}:{split}:{family}")
            wanted, made, tries = max(1, round(counts[split] * share)), 0, 0
            while made < wanted and tries < wanted * 50:
                tries += 1
                dialog = make(later, pools, pack)
                if dialog is None or _norm(dialog["turns"][0]["user"]) in seen_first:
                    continue
                seen_first.add(_norm(dialog["turns"][0]["user"]))
                made += 1
                dialogs.append({"id": f"{split}-{family}-{made:03d}", **dialog})
        out[split] = dialogs
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.dialogs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="the training dialogs (JSON Lines)")
    parser.add_argument("--val-out", type=Path, default=None,
                        help="the validation dialogs (default: beside --out, train_ replaced by val_)")
    parser.add_argument("--n", type=int, default=400, help="dialogs in both splits together")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 2 or not 0 < args.val_fraction < 1:
        parser.error("--n must be at least 2 and --val-fraction between 0 and 1")
    val_out = args.val_out or args.out.with_name(args.out.name.replace("train", "val") if "train" in args.out.name
                                                 else "val_" + args.out.name)
    if val_out.resolve() == args.out.resolve():
        parser.error("--val-out must differ from --out")
    splits = generate(Pack.load(args.config), args.n, args.val_fraction, args.seed)
    write_jsonl(args.out, splits["train"])
    write_jsonl(val_out, splits["val"])
    for split, path in (("train", args.out), ("val", val_out)):
        rows = splits[split]
        print(f"{split}: {len(rows)} dialogs, {sum(len(d['turns']) for d in rows)} turns -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
