"""The embedded demo knowledge pack (data/demo/) loads, meets its floors and agrees with the
domain registry (service/domain.py): its intents, FAQ topics and the actions dialogs expect.

Fast, offline, no models: it only reads the JSON Lines files. Files written by other parts of the
build (products, orders, dialogs, shopping requests) are checked when they exist and skipped
otherwise.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, load_config
from core.errors import ConfigError
from core.jsonl import read_jsonl
from service.domain import default_domain

DEMO_DIR = PROJECT_ROOT / "data" / "demo"
DOMAIN = default_domain()
FAQ_CATEGORIES = DOMAIN.faq_categories
ORDER_ID = re.compile(r"HC-\d{6}")
FAQ_ID = re.compile(r"faq_[a-z]+_\d{2}")
EXPECT_KEYS = {"intent", "action", "faq_id", "faq_ids", "product_ids", "handoff", "not_action", "reply_contains"}
DIALOG_KEYS = {"id", "turns", "expect_state"}
ORDER_STATE_KEYS = {"status", "refund_status", "shipping_address", "return_created", "fee", "refund_amount"}
STATE_KEYS = {"order", "writes"} | ORDER_STATE_KEYS


# ---------------------------------------------------------------- helpers

def _read_jsonl(path: Path) -> list[dict]:
    return read_jsonl(path)   # a bad line fails with file and line (core.jsonl.DataError)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _optional(name: str) -> list[dict]:
    path = DEMO_DIR / name
    if not path.exists():
        pytest.skip(f"data/demo/{name} does not exist yet")
    return _read_jsonl(path)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def paths() -> dict[str, Path]:
    """Pack paths from the demo config; straight from data/demo/ while optional files are missing."""
    names = {"intents": "intents.jsonl", "faq": "faq.jsonl", "faq_heldout": "faq_heldout.jsonl"}
    try:
        data = load_config().data
        found = {key: getattr(data, key) for key in names}
    except ConfigError:  # a listed file (e.g. dialogs.jsonl) is not written yet
        found = {key: DEMO_DIR / name for key, name in names.items()}
    for key, path in found.items():
        assert path is not None and Path(path).exists(), f"demo pack file missing: {key} ({path})"
    return {key: Path(p) for key, p in found.items()}


@pytest.fixture(scope="module")
def intent_names() -> set[str]:
    names = set(DOMAIN.intent_names)
    assert len(names) >= 25, f"the domain registry declares only {sorted(names)}"
    return names


@pytest.fixture(scope="module")
def action_names() -> set[str]:
    names = set(DOMAIN.actions)
    assert "answer_faq" in names and "handoff" in names, f"the domain registry declares only {sorted(names)}"
    return names


@pytest.fixture(scope="module")
def faq(paths) -> list[dict]:
    return _read_jsonl(paths["faq"])


@pytest.fixture(scope="module")
def intents(paths) -> list[dict]:
    return _read_jsonl(paths["intents"])


@pytest.fixture(scope="module")
def heldout(paths) -> list[dict]:
    return _read_jsonl(paths["faq_heldout"])


@pytest.fixture(scope="module")
def training_texts(faq, intents) -> set[str]:
    texts = {_norm(r["text"]) for r in intents}
    for r in faq:
        texts.add(_norm(r["question"]))
        texts.update(_norm(p) for p in r["paraphrases"])
    return texts


@pytest.fixture(scope="module")
def product_ids() -> set[str] | None:
    path = DEMO_DIR / "products.jsonl"
    return {r["id"] for r in _read_jsonl(path)} if path.exists() else None


# ---------------------------------------------------------------- FAQ

def test_faq_entries_are_complete(faq, intent_names):
    assert len(faq) >= 60, f"faq.jsonl has {len(faq)} entries, the floor is 60"
    for r in faq:
        where = f"faq {r.get('id')!r}"
        assert isinstance(r.get("id"), str) and FAQ_ID.fullmatch(r["id"]), f"{where}: id must look like faq_<short>_<nn>"
        assert r.get("category") in FAQ_CATEGORIES, f"{where}: unknown category {r.get('category')!r}"
        assert f"faq_{r['category']}" in intent_names, f"{where}: no intent faq_{r['category']} in service/domain.py"
        for key in ("question", "answer"):
            assert isinstance(r.get(key), str) and r[key].strip(), f"{where}: empty {key}"
        paras = r.get("paraphrases")
        assert isinstance(paras, list) and len(paras) >= 3, f"{where}: needs at least 3 paraphrases"
        assert all(isinstance(p, str) and p.strip() for p in paras), f"{where}: empty paraphrase"


def test_faq_ids_and_texts_are_unique(faq):
    ids = Counter(r["id"] for r in faq)
    assert not [i for i, n in ids.items() if n > 1], f"duplicate FAQ ids: {[i for i, n in ids.items() if n > 1]}"
    texts = Counter(_norm(t) for r in faq for t in [r["question"], *r["paraphrases"]])
    dups = [t for t, n in texts.items() if n > 1]
    assert not dups, f"FAQ questions/paraphrases used twice: {dups[:5]}"


def test_every_faq_category_is_covered(faq):
    counts = Counter(r["category"] for r in faq)
    thin = {c: counts.get(c, 0) for c in FAQ_CATEGORIES if counts.get(c, 0) < 4}
    assert not thin, f"FAQ categories with fewer than 4 entries: {thin}"


# ---------------------------------------------------------------- intents

def test_intents_match_the_contract(intents, intent_names):
    for n, r in enumerate(intents, 1):
        assert isinstance(r.get("text"), str) and r["text"].strip(), f"intents.jsonl:{n}: empty text"
        assert isinstance(r.get("intent"), str), f"intents.jsonl:{n}: missing intent"
    found = {r["intent"] for r in intents}
    assert found == intent_names, (
        f"intents differ from the domain registry: missing {sorted(intent_names - found)}, "
        f"unknown {sorted(found - intent_names)}")
    assert len(found) >= 25


def test_every_intent_has_enough_examples(intents):
    counts = Counter(r["intent"] for r in intents)
    thin = {i: n for i, n in counts.items() if n < 25}
    assert not thin, f"intents with fewer than 25 examples: {thin}"


def test_intent_texts_are_unique(intents):
    texts = Counter(_norm(r["text"]) for r in intents)
    dups = [t for t, n in texts.items() if n > 1]
    assert not dups, f"duplicate intent texts: {dups[:5]}"


# ---------------------------------------------------------------- held-out FAQ paraphrases

def test_heldout_paraphrases_point_at_faq_entries(heldout, faq):
    ids = {r["id"] for r in faq}
    assert len(heldout) >= len(faq), "expected at least one held-out paraphrase per FAQ entry"
    for n, r in enumerate(heldout, 1):
        assert r.get("faq_id") in ids, f"faq_heldout.jsonl:{n}: unknown faq_id {r.get('faq_id')!r}"
        assert isinstance(r.get("text"), str) and r["text"].strip(), f"faq_heldout.jsonl:{n}: empty text"
    missing = ids - {r["faq_id"] for r in heldout}
    assert not missing, f"FAQ entries without a held-out paraphrase: {sorted(missing)}"
    texts = Counter(_norm(r["text"]) for r in heldout)
    assert not [t for t, n in texts.items() if n > 1], "duplicate held-out texts"


def test_heldout_texts_are_not_training_texts(heldout, training_texts):
    leaked = [r["text"] for r in heldout if _norm(r["text"]) in training_texts]
    assert not leaked, f"held-out FAQ texts also used for training: {leaked[:5]}"


# ---------------------------------------------------------------- optional files (other engineers)

def test_products():
    products = _optional("products.jsonl")
    assert len(products) >= 150, f"products.jsonl has {len(products)} products, the floor is 150"
    ids = Counter(p.get("id") for p in products)
    assert not [i for i, n in ids.items() if n > 1], "duplicate product ids"
    for p in products:
        where = f"product {p.get('id')!r}"
        assert isinstance(p.get("id"), str) and p["id"], f"{where}: missing id"
        for key in ("title", "category", "brand", "description"):
            assert isinstance(p.get(key), str) and p[key].strip(), f"{where}: empty {key}"
        price = p.get("price")
        assert isinstance(price, (int, float)) and not isinstance(price, bool) and price > 0, f"{where}: bad price {price!r}"
        assert isinstance(p.get("attributes"), dict), f"{where}: attributes must be an object"
    categories = {p["category"] for p in products}
    assert len(categories) >= 8, f"only {len(categories)} product categories: {sorted(categories)}"


def test_orders(product_ids):
    orders = _optional("orders.jsonl")
    assert len(orders) >= 40, f"orders.jsonl has {len(orders)} orders, the floor is 40"
    ids = Counter(o.get("order_id") for o in orders)
    assert not [i for i, n in ids.items() if n > 1], f"duplicate order ids: {[i for i, n in ids.items() if n > 1]}"
    for o in orders:
        where = f"order {o.get('order_id')!r}"
        assert isinstance(o.get("order_id"), str) and ORDER_ID.fullmatch(o["order_id"]), f"{where}: id must match HC-\\d{{6}}"
        assert isinstance(o.get("email"), str) and "@" in o["email"], f"{where}: bad email"
        assert isinstance(o.get("customer_name"), str) and o["customer_name"].strip(), f"{where}: empty customer_name"
        assert isinstance(o.get("status"), str) and o["status"].strip(), f"{where}: empty status"
        if product_ids is not None:
            for item in o.get("items") or []:
                pid = item.get("product_id")
                assert pid is None or pid in product_ids, f"{where}: unknown product {pid!r}"


def test_shopping_requests(product_ids, training_texts):
    requests = _optional("shopping_requests.jsonl")
    assert len(requests) >= 30, f"shopping_requests.jsonl has {len(requests)} requests, the floor is 30"
    assert product_ids is not None, "shopping_requests.jsonl needs products.jsonl"
    for n, r in enumerate(requests, 1):
        assert isinstance(r.get("text"), str) and r["text"].strip(), f"shopping_requests.jsonl:{n}: empty text"
        rel = r.get("relevant_ids")
        assert isinstance(rel, list) and rel, f"shopping_requests.jsonl:{n}: relevant_ids must be a non-empty list"
        unknown = [i for i in rel if i not in product_ids]
        assert not unknown, f"shopping_requests.jsonl:{n}: unknown product ids {unknown}"
    leaked = [r["text"] for r in requests if _norm(r["text"]) in training_texts]
    assert not leaked, f"held-out shopping requests also used for training: {leaked[:5]}"


def _string_list(value) -> list | None:
    """A string or a non-empty list of non-empty strings, as a list; None when it is neither."""
    items = [value] if isinstance(value, str) else value
    if isinstance(items, list) and items and all(isinstance(i, str) and i.strip() for i in items):
        return items
    return None


def _check_expect_state(state, where: str, orders: dict[str, dict] | None) -> None:
    assert isinstance(state, dict) and state, f"{where}: expect_state must be a non-empty object"
    assert set(state) <= STATE_KEYS, f"{where}: unknown expect_state keys {sorted(set(state) - STATE_KEYS)}"
    if set(state) & ORDER_STATE_KEYS:
        assert "order" in state, f"{where}: expect_state checks an order but names none"
    if "order" in state:
        assert isinstance(state["order"], str) and ORDER_ID.fullmatch(state["order"]), \
            f"{where}: expect_state.order must match HC-\\d{{6}}"
        assert orders is not None, f"{where}: expect_state.order needs orders.jsonl"
        assert state["order"] in orders, f"{where}: unknown order {state['order']!r}"
    for key in ("status", "refund_status", "shipping_address"):
        if key in state:
            assert state[key] is None or (isinstance(state[key], str) and state[key].strip()), \
                f"{where}: expect_state.{key} must be a non-empty string or null"
    if "return_created" in state:
        assert isinstance(state["return_created"], bool), f"{where}: return_created must be true or false"
    for key, top in (("fee", 1), ("refund_amount", None)):
        if key in state:
            v = state[key]
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and (top is None or v <= top), \
                f"{where}: bad expect_state.{key} {v!r}"
    if "refund_amount" in state and orders is not None:
        assert state["refund_amount"] <= orders[state["order"]]["total"], f"{where}: refund above the order total"
    if "writes" in state:
        v = state["writes"]
        assert isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{where}: writes must be a whole number >= 0"


def test_dialogs(faq, intent_names, action_names, product_ids, training_texts):
    dialogs = _optional("dialogs.jsonl")
    orders_path = DEMO_DIR / "orders.jsonl"
    orders = {o["order_id"]: o for o in _read_jsonl(orders_path)} if orders_path.exists() else None
    assert len(dialogs) >= 60, f"dialogs.jsonl has {len(dialogs)} dialogs, the floor is 60"
    faq_ids = {r["id"] for r in faq}
    ids = Counter(d.get("id") for d in dialogs)
    assert not [i for i, n in ids.items() if n > 1], f"duplicate dialog ids: {[i for i, n in ids.items() if n > 1]}"
    leaked = []
    for d in dialogs:
        where = f"dialog {d.get('id')!r}"
        assert isinstance(d.get("id"), str) and d["id"], f"{where}: missing id"
        assert set(d) <= DIALOG_KEYS, f"{where}: unknown dialog keys {sorted(set(d) - DIALOG_KEYS)}"
        if "expect_state" in d:
            _check_expect_state(d["expect_state"], where, orders)
        turns = d.get("turns")
        assert isinstance(turns, list) and turns, f"{where}: needs a non-empty list of turns"
        for t, turn in enumerate(turns, 1):
            at = f"{where} turn {t}"
            assert isinstance(turn.get("user"), str) and turn["user"].strip(), f"{at}: empty user message"
            expect = turn.get("expect")
            assert isinstance(expect, dict) and expect, f"{at}: needs an 'expect' object"
            assert set(expect) <= EXPECT_KEYS, f"{at}: unknown expect keys {sorted(set(expect) - EXPECT_KEYS)}"
            if "intent" in expect:
                assert expect["intent"] in intent_names, f"{at}: unknown intent {expect['intent']!r}"
            if "action" in expect:
                assert expect["action"] in action_names, f"{at}: unknown action {expect['action']!r}"
            if "faq_id" in expect:
                assert expect["faq_id"] in faq_ids, f"{at}: unknown faq_id {expect['faq_id']!r}"
            if "faq_ids" in expect:
                ids_ = expect["faq_ids"]
                assert isinstance(ids_, list) and ids_, f"{at}: faq_ids must be a non-empty list"
                unknown = [i for i in ids_ if i not in faq_ids]
                assert not unknown, f"{at}: unknown faq_ids {unknown}"
            if "not_action" in expect:
                banned = _string_list(expect["not_action"])
                assert banned is not None, f"{at}: not_action must be an action or a non-empty list of actions"
                unknown = [a for a in banned if a not in action_names]
                assert not unknown, f"{at}: unknown not_action {unknown}"
                assert expect.get("action") not in banned, f"{at}: expects action {expect.get('action')!r} and rules it out"
            if "reply_contains" in expect:
                assert _string_list(expect["reply_contains"]) is not None, \
                    f"{at}: reply_contains must be a non-empty string or a non-empty list of them"
            if "product_ids" in expect:
                assert isinstance(expect["product_ids"], list), f"{at}: product_ids must be a list"
                assert product_ids is not None, f"{at}: product_ids need products.jsonl"
                unknown = [i for i in expect["product_ids"] if i not in product_ids]
                assert not unknown, f"{at}: unknown product ids {unknown}"
            if "handoff" in expect:
                assert isinstance(expect["handoff"], bool), f"{at}: handoff must be true or false"
            if _norm(turn["user"]) in training_texts:
                leaked.append(turn["user"])
    assert not leaked, f"held-out dialog messages also used for training: {leaked[:5]}"


def test_dialog_expectations_agree_with_the_registry():
    """A turn that names both a flow intent and a flow's action names the action of that flow, and
    an expected small-talk reply is for an intent that has one."""
    from service.domain import CONTROL, SMALL_TALK

    dialogs = _optional("dialogs.jsonl")
    flow_actions = DOMAIN.flow_actions
    with_reply = DOMAIN.intents_of(SMALL_TALK, CONTROL)
    for d in dialogs:
        for t, turn in enumerate(d["turns"], 1):
            expect, at = turn["expect"], f"dialog {d['id']!r} turn {t}"
            intent, action = expect.get("intent"), expect.get("action")
            if intent in flow_actions and action in flow_actions.values():
                assert action == flow_actions[intent], \
                    f"{at}: intent {intent!r} starts the flow whose action is {flow_actions[intent]!r}, not {action!r}"
            if action == "small_talk" and intent is not None:
                assert intent in with_reply, f"{at}: {intent!r} has no small-talk reply in service/domain.py"


def test_expect_state_checks_reject_bad_specs():
    orders = {"HC-104233": {"order_id": "HC-104233", "total": 249.0}}
    _check_expect_state({"order": "HC-104233", "status": "cancelled", "fee": 0.15, "refund_amount": 211.65,
                         "return_created": True, "writes": 1}, "ok", orders)
    for bad in ({}, {"status": "cancelled"}, {"order": "HC-999999"}, {"order": "HC-104233", "fee": 15},
                {"order": "HC-104233", "refund_amount": 300}, {"writes": -1}, {"writes": True}, {"colour": "red"},
                {"order": "HC-104233", "return_created": "yes"}):
        with pytest.raises(AssertionError):
            _check_expect_state(bad, "bad", orders)
