"""The written training dialogs as intent examples (training/dialog_examples.py): which turns name an
intent, that they join the training split only, and that the held-out dialogs are refused."""
from __future__ import annotations

import dataclasses
import json

import datasets
import pytest

from core.config import load_config
from core.errors import DataError
from training.dialog_examples import dialog_intent_rows, with_dialog_rows

FAQ = [{"id": "ship_1", "category": "shipping", "question": "How long is delivery?", "answer": "3-5 days.",
        "paraphrases": ["delivery time"]},
       {"id": "ret_1", "category": "returns", "question": "Can I return it?", "answer": "30 days.",
        "paraphrases": ["send back"]}]
DIALOGS = [
    {"id": "w1", "turns": [
        {"user": "how quick do parcels get to ohio usually", "expect": {"action": "answer_faq", "faq_id": "ship_1"}},
        {"user": "and what about that for returns", "expect": {"faq_id": "ret_1"}},        # a follow-up: no
        {"user": "my blender from HC-123456 is broken, sending it back", "expect": {"action": "start_return"}},
        {"user": "the email is amy@example.com", "expect": {"action": "start_return"}},  # a slot answer: no
        {"user": "cheers mate", "expect": {"action": "small_talk", "intent": "thanks"}}]},
    {"id": "w2", "turns": [
        {"user": "who won the game last night", "expect": {"action": "out_of_scope"}},
        {"user": "get me a person", "expect": {"action": "handoff", "handoff": True}}]},    # no intent named: no
]


@pytest.fixture()
def config(tmp_path):
    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("faq.jsonl", FAQ)
    write("intents.jsonl", [{"text": "where is my order", "intent": "order_status"}])
    write("products.jsonl", [{"id": "p1", "title": "Lamp", "category": "home", "price": 10}])
    write("written.jsonl", DIALOGS)
    (tmp_path / "shop.yaml").write_text(
        "name: shop\ndata:\n  intents: intents.jsonl\n  faq: faq.jsonl\n  products: products.jsonl\n"
        "  written_train_dialogs: written.jsonl\nartifacts_dir: artifacts\ntraining:\n  dialog_examples: true\n")
    return load_config(tmp_path / "shop.yaml")


def test_turns_that_stand_alone_name_their_intent(config):
    assert dialog_intent_rows(config) == [
        {"text": "how quick do parcels get to ohio usually", "intent": "faq_shipping"},
        {"text": "my blender from HC-123456 is broken, sending it back", "intent": "return_request"},
        {"text": "cheers mate", "intent": "thanks"},
        {"text": "who won the game last night", "intent": "out_of_scope"},
    ]


def test_off_unless_switched_on_and_never_the_held_out_dialogs(config):
    off = config.replace(training=dataclasses.replace(config.training, dialog_examples=False))
    assert dialog_intent_rows(off) == []
    held = config.replace(data=dataclasses.replace(config.data, dialogs=config.data.written_train_dialogs))
    with pytest.raises(DataError, match="held-out dialogs"):
        dialog_intent_rows(held)


def test_rows_join_the_training_split_for_the_intents_the_model_has(config):
    train = datasets.Dataset.from_dict({"text": ["where is my order"], "intent": ["order_status"]})
    grown, added = with_dialog_rows(train, config, ["order_status", "faq_shipping", "out_of_scope"])
    assert added == 2 and grown["intent"] == ["order_status", "faq_shipping", "out_of_scope"]
    assert with_dialog_rows(train, config, ["order_status"]) == (train, 0)
