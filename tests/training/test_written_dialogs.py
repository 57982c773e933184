"""The written conversations (data/demo/written_train_dialogs.jsonl, written_val*_dialogs.jsonl): dialogs
written by people in customers' own words, not from templates. The training file is learned from (FAQ
fusion, learned cut-offs), the validation files only score choices. They load, name only what the pack
and the domain have, share no message with each other, the generated dialogs or the pack's own
wordings, and hold nothing from the held-out files (read here only to check that)."""
from __future__ import annotations

import itertools

import pytest

from core.config import PROJECT_ROOT, load_config
from core.jsonl import read_jsonl
from evaluation.dialog import EXPECT_KEYS, load_dialogs
from service.domain import default_domain
from service.reply import ACTIONS

DEMO = PROJECT_ROOT / "data" / "demo"
WRITTEN = {"train": DEMO / "written_train_dialogs.jsonl", "val": DEMO / "written_val_dialogs.jsonl",
           "val2": DEMO / "written_val2_dialogs.jsonl",   # val2: chosen on since it was first scored
           "val3": DEMO / "written_val3_dialogs.jsonl",   # val3: chosen on in the fourth round
           "val4": DEMO / "written_val4_dialogs.jsonl",   # val4: chosen on in the fifth round
           "val5": DEMO / "written_val5_dialogs.jsonl"}   # val5: a fresh set, scored at the end, never chosen on
PREFIX = {"train": "wtrain-", "val": "wval-", "val2": "wval2-", "val3": "wval3-", "val4": "wval4-", "val5": "wval5-"}
VALIDATION = ("val", "val2", "val3", "val4", "val5")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _messages(path) -> set[str]:
    """The file's customer messages of four words or more (short replies such as "yes", an order number
    or an email address are shared by nature)."""
    return {m for r in read_jsonl(path) for t in r["turns"] if len((m := _norm(t["user"])).split()) >= 4}


@pytest.mark.parametrize("split", sorted(WRITTEN))
def test_the_written_dialogs_load_and_name_only_what_exists(split):
    dialogs = load_dialogs(WRITTEN[split])
    assert len(dialogs) >= {"train": 120, "val": 70, "val2": 50, "val3": 50, "val4": 50, "val5": 50}[split]
    domain = default_domain()
    faq_ids = {r["id"] for r in read_jsonl(DEMO / "faq.jsonl")}
    product_ids = {p["id"] for p in read_jsonl(DEMO / "products.jsonl")}
    orders = {o["order_id"]: o for o in read_jsonl(DEMO / "orders.jsonl")}
    for row in read_jsonl(WRITTEN[split]):
        assert row["id"].startswith(PREFIX[split])
        for turn in row["turns"]:
            e = turn["expect"]
            assert set(e) <= set(EXPECT_KEYS) and turn["user"].strip(), row["id"]
            assert e.get("action", "answer_faq") in ACTIONS, row["id"]
            assert e.get("intent") is None or e["intent"] in domain.intent_names, row["id"]
            assert {e.get("faq_id"), *e.get("faq_ids", [])} - {None} <= faq_ids, row["id"]
            assert set(e.get("product_ids", [])) <= product_ids, row["id"]
        if "expect_state" in row:
            order = orders[row["expect_state"]["order"]]
            # the dialog gives the order's own email (a wrong one only as a deliberate mismatch first)
            assert order["email"] in " ".join(t["user"] for t in row["turns"]), row["id"]


def test_the_written_files_share_no_message_with_each_other_the_generated_ones_or_the_pack():
    messages = {split: _messages(path) for split, path in WRITTEN.items()}
    for a, b in itertools.combinations(sorted(messages), 2):
        assert not messages[a] & messages[b], f"{a} and {b} share a message"
    generated = _messages(DEMO / "train_dialogs.jsonl") | _messages(DEMO / "val_dialogs.jsonl")
    pack = {_norm(r["text"]) for r in read_jsonl(DEMO / "intents.jsonl")}
    pack |= {_norm(p) for r in read_jsonl(DEMO / "faq.jsonl") for p in [r["question"], *r["paraphrases"]]}
    assert not set().union(*messages.values()) & (generated | pack)


def test_no_held_out_text_is_in_the_written_dialogs():
    held = {_norm(r["text"]) for r in read_jsonl(DEMO / "faq_heldout.jsonl")}
    held |= {_norm(r["text"]) for r in read_jsonl(DEMO / "shopping_requests.jsonl")}
    held |= {_norm(t["user"]) for r in read_jsonl(DEMO / "dialogs.jsonl") for t in r["turns"]}
    held = {t for t in held if len(t.split()) >= 4}
    for split, path in WRITTEN.items():
        written = _messages(path)
        assert not held & written, f"{split}: held-out text in the written dialogs"
        assert not any(h in w for h in held for w in written), f"{split}: a held-out message inside a written one"


def test_the_demo_config_learns_from_the_written_training_dialogs_never_the_validation_ones():
    config = load_config(PROJECT_ROOT / "configs" / "demo.yaml")
    learned_from = {path.resolve() for _, path in config.data.training_dialogs()}
    assert WRITTEN["train"].resolve() in learned_from
    assert not {WRITTEN[split].resolve() for split in VALIDATION} & learned_from
    assert config.data.dialogs.resolve() not in learned_from
