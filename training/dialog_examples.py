"""The written training dialogs as intent examples (`training.dialog_examples`).

The pack's intent examples were written to be examples; customers write differently (run-on questions,
typos, backstories). The written training dialogs (`data.written_train_dialogs`) hold such messages
with what the assistant should do, and that names an intent whenever the turn stands on its own:

| the turn expects                                   | intent example                       |
|----------------------------------------------------|--------------------------------------|
| an `intent`                                        | that intent                          |
| `answer_faq` with one `faq_id`                     | the entry's topic, `faq_<category>`  |
| `out_of_scope`                                     | `out_of_scope`                       |
| a flow's action, on the turn that starts the flow  | the intent that starts that flow     |

A follow-up right after an FAQ answer ("and how long does that take?") and a flow's later turns (an
email, "yes") name no intent on their own, so they are left out. The rows join the TRAINING split of the
teacher and of the student only: validation stays the pack's own rows, so early stopping and the
temperature are judged as before. The held-out dialogs are refused.
"""
from __future__ import annotations

from typing import Any

import datasets

from core.config import Config
from core.jsonl import read_jsonl
from retrieval.followup import reads_like_follow_up
from service.domain import FAQ_PREFIX, default_domain


def dialog_intent_rows(config: Config) -> list[dict[str, str]]:
    """{"text", "intent"} rows from the written training dialogs (none when unset or switched off)."""
    if not config.training.dialog_examples:
        return []
    paths = [path for key, path in config.data.training_dialogs() if key == "written_train_dialogs"]
    if not paths:
        return []
    domain = default_domain()
    starts = {action: intent for intent, action in domain.flow_actions.items()}
    category = {str(r["id"]): str(r.get("category") or "") for r in read_jsonl(config.data.faq, ("id",), "FAQ entry")}
    rows: list[dict[str, str]] = []
    for dialog in read_jsonl(paths[0], ("id", "turns"), "dialog"):
        before: dict[str, Any] = {}
        for turn in dialog["turns"]:
            text, expect = str(turn.get("user") or "").strip(), turn.get("expect") or {}
            intent = _intent_of(text, expect, before, starts, category)
            if intent in domain.intent_names:
                rows.append({"text": text, "intent": intent})
            before = expect
    return rows


def _intent_of(text: str, expect: dict[str, Any], before: dict[str, Any], starts: dict[str, str],
               category: dict[str, str]) -> str | None:
    if not text:
        return None
    if expect.get("intent"):
        return str(expect["intent"])
    action = expect.get("action")
    if expect.get("faq_id") and action in (None, "answer_faq"):
        after_faq = bool(before.get("faq_id") or before.get("faq_ids"))
        topic = category.get(str(expect["faq_id"]))
        return f"{FAQ_PREFIX}{topic}" if topic and not (after_faq and reads_like_follow_up(text)) else None
    if action == "out_of_scope":
        return "out_of_scope"
    if action in starts and before.get("action") != action:
        return starts[action]
    return None


def with_dialog_rows(train: datasets.Dataset, config: Config, labels: list[str]) -> tuple[datasets.Dataset, int]:
    """`train` plus the dialog rows whose intent the model has (an intent it does not know is skipped)."""
    known = set(labels)
    rows = [r for r in dialog_intent_rows(config) if r["intent"] in known]
    if not rows:
        return train, 0
    more = datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "intent": [r["intent"] for r in rows]})
    return datasets.concatenate_datasets([train.select_columns(["text", "intent"]), more]), len(rows)
