"""Operators' corrections of the assistant's turns: what each kind means, its checks, and storing it.

Kinds and their payloads (what `store.corrections()` returns in `payload`):

| kind           | the operator says                                   | payload                                   |
|----------------|-----------------------------------------------------|-------------------------------------------|
| `intent`       | the message meant this intent                       | {intent, text}                            |
| `faq`          | this FAQ entry answers the message                  | {faq_id, text}                            |
| `paraphrase`   | add this wording (default: the customer's) to an FAQ | {faq_id, text}                            |
| `new_faq`      | a new FAQ entry (question, answer, paraphrases)      | {question, answer, paraphrases, text?}    |
| `out_of_scope` | the message is outside what the assistant does       | {text}                                    |

`text` is the corrected turn's customer message as the store holds it (already redacted), copied
into the correction so it survives the transcript's retention purge. Every text an operator types
is redacted (`service.pii.redact`) before it is stored, like everything else the store keeps.

Checks: a known intent (the pack's training intents, else the domain's), a known FAQ id (the pack's
or a stored `new_faq` correction's `new-<id>`), non-empty texts within the limits below, and for a
turn correction a turn that exists. A later `intent`/`faq`/`out_of_scope` correction of the same
turn supersedes the earlier ones (`active_corrections`): an operator who changes their mind does
not leave two labels for one message.

`regression_dialogs(corrections)` makes every corrected turn a one-turn dialog in the evaluator's
format, so a gate can check that what operators fixed stays fixed (it lives here, below both the
training and the evaluation layers, which both use it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

from core.errors import AttendantError
from core.jsonl import read_jsonl
from service import pii
from service.domain import FAQ as FAQ_KIND
from service.domain import HANDOFF, SEARCH, SMALL_TALK, Domain, default_domain
from service.domain import OUT_OF_SCOPE as OUT_OF_SCOPE_KIND

log = logging.getLogger(__name__)

INTENT, FAQ, PARAPHRASE, NEW_FAQ, OUT_OF_SCOPE = "intent", "faq", "paraphrase", "new_faq", "out_of_scope"
KINDS: dict[str, str] = {
    INTENT: "set the right intent",
    FAQ: "pick the right FAQ entry",
    PARAPHRASE: "add the customer's wording to an FAQ entry",
    NEW_FAQ: "write a new FAQ entry",
    OUT_OF_SCOPE: "mark the message out of scope",
}
# One label per message: the latest of these for a turn wins.
LABEL_KINDS = (INTENT, FAQ, OUT_OF_SCOPE)
OUT_OF_SCOPE_INTENT = "out_of_scope"   # the pack's intent for messages outside the assistant's job
NEW_FAQ_PREFIX = "new-"                # a new FAQ entry's id: new-<correction id>
MAX_TEXT_CHARS = 500                   # a message or paraphrase
MAX_QUESTION_CHARS = 300
MAX_ANSWER_CHARS = 2000
MAX_PARAPHRASES = 20


class CorrectionError(AttendantError, ValueError):
    """A correction that cannot be stored: the message says what to fix."""


class CorrectionStore(Protocol):
    def add_correction(self, kind: str, payload: dict[str, Any], author: str, *, turn_id: str | None = None,
                       session_id: str | None = None) -> int: ...

    def corrections(self) -> list[dict[str, Any]]: ...

    def turns(self, *, session_id: str | None = None, turn_id: str | None = None,
              **kwargs: Any) -> list[dict[str, Any]]: ...


@dataclass
class Pack:
    """What corrections are checked against: the intents a model can learn and the FAQ entries
    (id -> record) that can answer."""
    intents: frozenset[str]
    faqs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_files(cls, intents_path: str | Path, faq_path: str | Path) -> "Pack":
        intents = frozenset(str(r["intent"]) for r in read_jsonl(intents_path, ("text", "intent"), "intent example"))
        faqs = {str(r["id"]): dict(r) for r in read_jsonl(faq_path, ("id", "question", "answer"), "FAQ entry")}
        return cls(intents, faqs)

    @classmethod
    def from_config(cls, config: Any) -> "Pack":
        return cls.from_files(config.data.intents, config.data.faq)

    def with_new_faqs(self, corrections: Iterable[dict[str, Any]]) -> "Pack":
        """This pack plus the FAQ entries operators wrote (stored `new_faq` corrections)."""
        faqs = dict(self.faqs)
        for c in corrections:
            if c.get("kind") == NEW_FAQ:
                entry = new_faq_entry(c)
                faqs.setdefault(entry["id"], entry)
        return Pack(self.intents, faqs)


def new_faq_id(correction_id: int | str) -> str:
    return f"{NEW_FAQ_PREFIX}{correction_id}"


def new_faq_entry(correction: dict[str, Any]) -> dict[str, Any]:
    """A stored `new_faq` correction as an FAQ record (the pack's format)."""
    p = correction["payload"]
    return {"id": new_faq_id(correction["id"]), "category": "operator", "question": p["question"],
            "answer": p["answer"], "paraphrases": list(p.get("paraphrases") or [])}


def _clean(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CorrectionError(f"{what} is empty: write it")
    text = " ".join(value.split()) if what != "answer" else value.strip()
    if len(text) > limit:
        raise CorrectionError(f"{what} is {len(text):,} characters long; keep it under {limit:,}")
    return pii.redact(text)


def _paraphrases(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):  # one a line, as a form gives them
        value = [line for line in value.splitlines() if line.strip()]
    if not isinstance(value, list):
        raise CorrectionError("paraphrases must be a list of texts (one a line)")
    if len(value) > MAX_PARAPHRASES:
        raise CorrectionError(f"{len(value)} paraphrases; keep it to {MAX_PARAPHRASES}")
    out: list[str] = []
    for p in value:
        text = _clean(p, "a paraphrase", MAX_TEXT_CHARS)
        if text.lower() not in {o.lower() for o in out}:
            out.append(text)
    return out


def validate(kind: str, payload: dict[str, Any], pack: Pack, *, turn_text: str | None = None) -> dict[str, Any]:
    """The payload to store for a correction of `kind`: checked, trimmed and redacted.

    `turn_text` is the corrected turn's (already redacted) customer message, or None for a correction
    that is not about a turn (only `new_faq` may be). Raises CorrectionError saying what to fix."""
    if kind not in KINDS:
        raise CorrectionError(f"unknown correction kind {kind!r} (known: {', '.join(KINDS)})")
    if not isinstance(payload, dict):
        raise CorrectionError("a correction's payload is an object")
    if turn_text is None and kind != NEW_FAQ:
        raise CorrectionError(f"a '{kind}' correction is about a turn: pick the turn it corrects")
    text = {"text": _clean(turn_text, "the customer's message", MAX_TEXT_CHARS)} if turn_text is not None else {}
    if kind == INTENT:
        intent = str(payload.get("intent") or "").strip()
        if intent not in pack.intents:
            raise CorrectionError(f"unknown intent {intent!r}; pick one of the pack's intents "
                                  f"({', '.join(sorted(pack.intents)[:8])}{' ...' if len(pack.intents) > 8 else ''})")
        return {"intent": intent, **text}
    if kind in (FAQ, PARAPHRASE):
        faq_id = str(payload.get("faq_id") or "").strip()
        if faq_id not in pack.faqs:
            raise CorrectionError(f"unknown FAQ id {faq_id!r}; pick an FAQ entry of the pack")
        if kind == FAQ:
            return {"faq_id": faq_id, **text}
        wording = payload.get("text")
        wording = _clean(wording if isinstance(wording, str) and wording.strip() else turn_text,
                         "the paraphrase", MAX_TEXT_CHARS)
        record = pack.faqs[faq_id]
        known = {str(record.get("question", "")).lower(), *(str(p).lower() for p in record.get("paraphrases") or [])}
        if wording.lower() in known:
            raise CorrectionError(f"'{wording}' is already a wording of {faq_id}")
        return {"faq_id": faq_id, "text": wording, **({"turn_text": text["text"]} if text else {})}
    if kind == NEW_FAQ:
        question = _clean(payload.get("question"), "question", MAX_QUESTION_CHARS)
        answer = _clean(payload.get("answer"), "answer", MAX_ANSWER_CHARS)
        paraphrases = [p for p in _paraphrases(payload.get("paraphrases")) if p.lower() != question.lower()]
        return {"question": question, "answer": answer, "paraphrases": paraphrases, **text}
    return dict(text)   # OUT_OF_SCOPE


def find_turn(store: CorrectionStore, session_id: str, turn_id: str) -> dict[str, Any]:
    """The stored turn (see `Store.turns`) of a conversation; CorrectionError when there is none."""
    found = store.turns(session_id=session_id, turn_id=turn_id)
    if found:
        return found[0]
    raise CorrectionError(f"no turn {turn_id!r} in conversation {session_id!r} (it may have been purged)")


def apply_correction(store: CorrectionStore, kind: str, payload: dict[str, Any], author: str, pack: Pack, *,
                     session_id: str | None = None, turn_id: str | None = None) -> int:
    """Check and store one correction by `author` (the operator); returns its id."""
    if not str(author or "").strip():
        raise CorrectionError("a correction needs its author (the operator's name)")
    turn_text = None
    if turn_id or session_id:
        if not (turn_id and session_id):
            raise CorrectionError("a turn correction needs both the conversation and the turn")
        turn_text = find_turn(store, session_id, turn_id).get("user_text") or ""
    pack = pack.with_new_faqs(store.corrections()) if kind in (FAQ, PARAPHRASE) else pack
    clean = validate(kind, payload, pack, turn_text=turn_text)
    cid = store.add_correction(kind, clean, str(author)[:80], turn_id=turn_id, session_id=session_id)
    log.info("correction %d (%s) of turn %s by %s", cid, kind, turn_id or "-", author)
    return cid


def active_corrections(corrections: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The corrections that count, oldest first: of the label kinds (intent, faq, out_of_scope) only
    the latest per turn; every paraphrase and new FAQ entry."""
    latest_label: dict[str, int] = {}
    for c in corrections:
        if c["kind"] in LABEL_KINDS and c.get("turn_id"):
            latest_label[c["turn_id"]] = c["id"]
    return [c for c in corrections
            if c["kind"] not in LABEL_KINDS or not c.get("turn_id") or latest_label[c["turn_id"]] == c["id"]]


def corrected_turn_ids(corrections: Sequence[dict[str, Any]]) -> set[str]:
    return {c["turn_id"] for c in corrections if c.get("turn_id")}


# ------------------------------------------------------------------ the regression set


def _intent_expectation(intent: str, domain: Domain) -> dict[str, Any]:
    declared = domain.intent(intent)
    expect: dict[str, Any] = {"intent": intent}
    if declared is None:
        return expect
    if intent in domain.flow_actions:
        expect["action"] = domain.flow_actions[intent]
    elif declared.kind == SEARCH:
        expect["action"] = "recommend"
    elif declared.kind == HANDOFF:
        expect.update(action="handoff", handoff=True)
    elif declared.kind == SMALL_TALK:
        expect["action"] = "small_talk"
    elif declared.kind == OUT_OF_SCOPE_KIND:
        expect["action"] = "out_of_scope"
    elif declared.kind == FAQ_KIND:
        expect["not_action"] = ["fallback", "out_of_scope"]   # some answer of the topic, not a shrug
    return expect


def regression_dialogs(corrections: Any, domain: Domain | None = None) -> list[dict[str, Any]]:
    """Every corrected turn as a one-turn dialog `{"id", "turns": [{"user", "expect"}], "correction"}`
    in the evaluator's format (evaluation/dialog.py); superseded corrections are skipped; one dialog a
    turn. `corrections`: rows as `Store.corrections()` returns them, or a store to read them from."""
    if hasattr(corrections, "corrections"):
        corrections = corrections.corrections()
    domain = domain or default_domain()
    dialogs: dict[str, dict[str, Any]] = {}
    for c in active_corrections(list(corrections)):
        p, kind = c.get("payload") or {}, c.get("kind")
        if not c.get("turn_id"):
            continue
        user = p.get("turn_text") or p.get("text") if kind == PARAPHRASE else p.get("text")
        if not user:
            continue
        if kind == INTENT:
            expect = _intent_expectation(p["intent"], domain)
        elif kind == OUT_OF_SCOPE:
            expect = {"action": "out_of_scope"}
        elif kind in (FAQ, PARAPHRASE):
            expect = {"action": "answer_faq", "faq_id": p["faq_id"]}
        elif kind == NEW_FAQ:
            expect = {"action": "answer_faq", "faq_id": new_faq_id(c["id"])}
        else:
            continue
        # A paraphrase of a turn that already has a label adds nothing to check; the label decides.
        if c["turn_id"] in dialogs and kind == PARAPHRASE:
            continue
        dialogs[c["turn_id"]] = {"id": f"correction-{c['id']}", "turns": [{"user": user, "expect": expect}],
                                 "correction": {"id": c["id"], "kind": kind, "turn_id": c["turn_id"]}}
    return list(dialogs.values())
