"""The generated training conversations (training/dialogs.py): deterministic, a validation split that
is not a copy of training, expectations that name things the pack and the domain have, and nothing
taken from the held-out files (read here only to check that)."""
from __future__ import annotations

import json

import pytest

from core.config import PROJECT_ROOT
from core.jsonl import read_jsonl
from evaluation.dialog import EXPECT_KEYS, load_dialogs
from service.domain import default_domain
from service.reply import ACTIONS
from training.dialogs import LATER_FAMILIES, Pack, generate, main

DEMO = PROJECT_ROOT / "data" / "demo"
CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _later(n: int) -> int:
    """How many dialogs the later families add to a split of n (see training/dialogs.LATER_FAMILIES)."""
    return sum(max(1, round(n * share)) for share, _ in LATER_FAMILIES.values())


@pytest.fixture(scope="module")
def pack():
    return Pack.load(CONFIG)


@pytest.fixture(scope="module")
def splits(pack):
    return generate(pack, n=240, seed=3)


def test_the_generator_is_deterministic_and_the_seed_matters(pack, splits):
    assert generate(pack, n=240, seed=3) == splits
    assert generate(pack, n=240, seed=4) != splits
    # n dialogs from the first families, plus the later families' share on their own random streams.
    assert len(splits["train"]) == 180 + _later(180) and len(splits["val"]) == 60 + _later(60)


def test_the_split_shares_no_dialog_id_and_no_first_message(splits):
    train, val = splits["train"], splits["val"]
    assert not {d["id"] for d in train} & {d["id"] for d in val}
    assert not {_norm(d["turns"][0]["user"]) for d in train} & {_norm(d["turns"][0]["user"]) for d in val}
    # Validation draws on its own FAQ entries for its FAQ turns.
    first_faq = lambda ds: {d["turns"][0]["expect"].get("faq_id") for d in ds} - {None}  # noqa: E731
    assert not first_faq(train) & first_faq(val)


def test_every_expectation_names_something_that_exists(pack, splits):
    domain = default_domain()
    faq_ids = {r["id"] for r in pack.faq}
    product_ids = {p["id"] for p in pack.products}
    orders = {o["order_id"]: o for o in pack.orders}
    for d in splits["train"] + splits["val"]:
        for turn in d["turns"]:
            e = turn["expect"]
            assert set(e) <= set(EXPECT_KEYS) and turn["user"].strip(), d["id"]
            assert e.get("action", "answer_faq") in ACTIONS and e.get("action", "") in ACTIONS + ("",)
            assert all(a in ACTIONS for a in ([e["not_action"]] if isinstance(e.get("not_action"), str)
                                              else e.get("not_action", [])))
            assert e.get("intent") is None or e["intent"] in domain.intent_names, d["id"]
            assert e.get("faq_id") is None or e["faq_id"] in faq_ids, d["id"]
            assert set(e.get("product_ids", [])) <= product_ids, d["id"]
        if "expect_state" in d:
            assert d["expect_state"]["order"] in orders
            # The dialog gives that order's own email (a wrong one only as a deliberate mismatch first).
            texts = " ".join(t["user"] for t in d["turns"])
            assert orders[d["expect_state"]["order"]]["email"] in texts


def test_the_cli_writes_files_the_evaluator_reads(tmp_path):
    out = tmp_path / "train_dialogs.jsonl"
    assert main(["--config", str(CONFIG), "--out", str(out), "--n", "40", "--seed", "1"]) == 0
    train, val = load_dialogs(out), load_dialogs(tmp_path / "val_dialogs.jsonl")
    assert len(train) == 30 + _later(30) and len(val) == 10 + _later(10)


def test_the_committed_files_are_what_the_command_makes(pack):
    committed = {s: [json.loads(line) for line in open(DEMO / f"{s}_dialogs.jsonl", encoding="utf-8")]
                 for s in ("train", "val")}
    assert generate(pack, n=400, seed=0) == committed
    assert len(load_dialogs(DEMO / "train_dialogs.jsonl")) == 300 + _later(300)
    assert len(load_dialogs(DEMO / "val_dialogs.jsonl")) == 100 + _later(100)


def test_no_held_out_text_is_in_the_generated_dialogs():
    """Held-out messages of four words or more never appear in the generated ones, nor the reverse (short
    replies such as "yes", an order number or an email address are shared by nature)."""
    held = {_norm(r["text"]) for r in read_jsonl(DEMO / "faq_heldout.jsonl")}
    held |= {_norm(r["text"]) for r in read_jsonl(DEMO / "shopping_requests.jsonl")}
    held |= {_norm(t["user"]) for r in read_jsonl(DEMO / "dialogs.jsonl") for t in r["turns"]}
    held = {t for t in held if len(t.split()) >= 4}
    for name in ("train_dialogs.jsonl", "val_dialogs.jsonl"):
        generated = {_norm(t["user"]) for r in read_jsonl(DEMO / name) for t in r["turns"]}
        generated = {t for t in generated if len(t.split()) >= 4}
        assert not held & generated, f"{name}: held-out text in generated dialogs"
        assert not any(h in g for h in held for g in generated), f"{name}: a held-out message inside a generated one"
