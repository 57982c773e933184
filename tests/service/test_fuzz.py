"""Property-based tests (hypothesis) of redaction and the turn pipeline.

Invariants, over arbitrary Unicode, control characters, long inputs and random interleavings of
flow answers ("yes", "no", order numbers, emails, "stop", random text):

- `redact` never raises and leaves no email, phone number or card number it was given;
- `Assistant.respond` never raises and always returns a valid reply;
- the stored record (transcripts and tickets) never holds an email, phone or card number that
  was in the input;
- no order changes unless its own email was given in the conversation (a verified "yes"), and
  no order is ever written twice (at most one return per order).

CI runs few examples (`FUZZ_EXAMPLES`, default 30); `benchmarks/fuzz_bench.py` runs the same
checks (the `check_*` functions and strategies below) for longer and writes a table.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid
from dataclasses import dataclass, field

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import PROJECT_ROOT
from service.pii import redact

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.data_too_large, HealthCheck.large_base_example])

ORDERS = [json.loads(line) for line in (PROJECT_ROOT / "data" / "demo" / "orders.jsonl").read_text().splitlines()]
ORDER_EMAIL = {o["order_id"]: o["email"].lower() for o in ORDERS}

# ------------------------------------------------------------------------------- personal data

_PHONE_REGIONS = ("US", "CA", "GB", "FR", "DE", "ES", "IT", "NL", "BE", "CH", "SE", "PL", "IE", "AU", "NZ",
                  "IN", "JP", "BR", "MX", "ZA", "NG", "SG", "AE", "TR", "PT")
_NATIONAL_OK = ("US", "CA", "GB", "FR", "DE", "ES", "IT", "NL", "IN", "JP", "AU", "BR")


@st.composite
def phone_numbers(draw) -> str:
    """A valid phone number of some country, printed the way people write it."""
    region = draw(st.sampled_from(_PHONE_REGIONS))
    kind = draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]))
    example = phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region)
    national = str(example.national_number)
    tail = draw(st.text("0123456789", min_size=3, max_size=3))
    candidate = phonenumbers.PhoneNumber(country_code=example.country_code,
                                         national_number=int(national[:-3] + tail))
    number = candidate if phonenumbers.is_valid_number(candidate) else example
    styles = [phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164]
    if region in _NATIONAL_OK:
        styles.append(phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, draw(st.sampled_from(styles)))


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


@st.composite
def card_numbers(draw) -> str:
    """A Luhn-valid card number (Visa, Mastercard, Amex, Discover) with any separator."""
    prefix, length = draw(st.sampled_from([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15),
                                           ("37", 15), ("6011", 16), ("4", 13), ("4", 19)]))
    body = prefix + draw(st.text("0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    digits = _luhn_complete(body)
    sep = draw(st.sampled_from(["", " ", "-", ".", "/"]))
    if length == 15:
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i:i + 4] for i in range(0, len(digits), 4)]
        if length == 19 and draw(st.booleans()):
            groups = [digits[:4], digits[4:8], digits[8:12], digits[12:16], digits[16:]]
    return sep.join(groups)


_LOCAL = st.from_regex(r"\A[a-z][a-z0-9._+-]{0,14}[a-z0-9]\Z")
_LABEL = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?\Z")
_IDN_LABEL = st.sampled_from(["exämple", "müller", "例子", "пример", "bücher", "café", "δοκιμή"])


@st.composite
def emails(draw) -> str:
    local = draw(st.one_of(_LOCAL, st.sampled_from(["jö.dœ", "用户", "josé.garcía"])))
    labels = draw(st.lists(st.one_of(_LABEL, _IDN_LABEL), min_size=1, max_size=3))
    tld = draw(st.sampled_from(["com", "org", "de", "co.uk", "fr", "io", "example", "公司", "рф", "xn--p1ai"]))
    return f"{local}@{'.'.join(labels)}.{tld}"


PII = st.one_of(emails().map(lambda v: ("email", v)), phone_numbers().map(lambda v: ("phone", v)),
                card_numbers().map(lambda v: ("card", v)))

# Random text: any Unicode (control characters and surrogates excluded only where Python strings
# cannot carry them), occasionally long.
NOISE = st.one_of(st.text(max_size=40),
                  st.text(st.characters(codec="utf-8"), max_size=80),
                  st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn"]), max_size=20),
                  st.text(max_size=3000).filter(lambda s: len(s) > 200))
SEPARATORS = st.sampled_from([" ", ", ", ": ", " (", ") ", "\n", " - ", "; ", "\t"])


@st.composite
def messages_with_pii(draw) -> tuple[str, list[tuple[str, str]]]:
    """Random text with personal data embedded between separators; returns (message, [(kind, value)])."""
    parts, secrets = [], []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            parts.append(draw(NOISE))
        secret = draw(PII)
        secrets.append(secret)
        parts.append(secret[1])
    parts.append(draw(NOISE))
    out = parts[0]
    for part in parts[1:]:
        out += draw(SEPARATORS) + part
    return out, secrets


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def leaks(stored: str, secrets: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The secrets that can still be read in `stored`: the value as written, or (numbers) its digits
    with the separators taken out."""
    squeezed = re.sub(r"[\s./()+-]", "", stored)
    found = []
    for kind, value in secrets:
        if value in stored or value.lower() in stored.lower():
            found.append((kind, value))
        elif kind in ("card", "phone") and len(_digits(value)) >= 8 and _digits(value) in squeezed:
            found.append((kind, value))
    return found


def check_redaction(message: str, secrets: list[tuple[str, str]]) -> None:
    out = redact(message)
    assert isinstance(out, str)
    assert not leaks(out, secrets), (message, out, leaks(out, secrets))
    assert redact(out) == out, "redacting twice changed the text"


# ------------------------------------------------------------------------------ conversations

FLOW_ANSWERS = st.one_of(
    st.sampled_from(["yes", "yes please", "y", "ok", "sure", "no", "nope", "stop", "cancel", "never mind",
                     "where is my order?", "I want to cancel my order", "I'd like to return an item",
                     "change my delivery address", "refund status please", "talk to a human",
                     "it's never been opened", "I opened it", "42 Maple Street, Springfield, IL 62704",
                     "hello", "thanks", ""]),
    st.sampled_from(sorted(ORDER_EMAIL)),                        # real order numbers
    st.sampled_from(sorted(ORDER_EMAIL)).map(lambda o: o[3:]),   # bare six digits
    st.from_regex(r"\AHC-\d{6}\Z"),                              # any order number
    st.sampled_from(sorted(set(ORDER_EMAIL.values()))),          # the right email, for some order
    emails(),                                                    # wrong emails
    st.builds(lambda o, e: f"{o} {e}", st.sampled_from(sorted(ORDER_EMAIL)), emails()),
    NOISE,
)


FLOW_STARTS = (("I want to cancel my order", ("placed", "processing")),
               ("I'd like to return an item", ("delivered",)),
               ("change my delivery address", ("placed", "processing")),
               ("where is my order?", ("shipped", "delivered")),
               ("has my refund been processed?", ("returned", "cancelled")))
CONFIRM_ANSWERS = ("yes", "yes", "yes please", "no", "it's never been opened", "I opened it",
                   "42 Maple Street, Springfield, IL 62704")


@st.composite
def conversations(draw) -> tuple[list[str], list[tuple[str, str]]]:
    """A session's messages (flow answers, random text, personal data) and the personal data in them."""
    messages, secrets = [], []
    if draw(st.booleans()):
        # A coherent start (a flow, an order number, its email or a wrong one) so that some
        # conversations reach a confirmation, and random answers ("yes" twice, "no", noise) after it.
        start, statuses = draw(st.sampled_from(FLOW_STARTS))
        order_id = draw(st.sampled_from(sorted(o["order_id"] for o in ORDERS if o["status"] in statuses)))
        messages += [start, order_id, draw(st.one_of(st.just(ORDER_EMAIL[order_id]), emails())),
                     draw(st.sampled_from(CONFIRM_ANSWERS))]
        messages += draw(st.lists(st.one_of(st.sampled_from(CONFIRM_ANSWERS), FLOW_ANSWERS), max_size=4))
    for _ in range(draw(st.integers(0 if messages else 1, 6))):
        if draw(st.integers(0, 4)) == 0:
            message, embedded = draw(messages_with_pii())
            messages.append(message)
            secrets.extend(embedded)
        else:
            messages.append(draw(FLOW_ANSWERS))
    return messages, secrets


def _order_rows(path) -> dict[str, tuple]:
    with sqlite3.connect(path) as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(
            "SELECT order_id, status, shipping_address, refund_status FROM orders")}


def _returns_per_order(path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT order_id, COUNT(*) FROM returns WHERE status != 'duplicate' "
                                 "GROUP BY order_id").fetchall())


def _stored_text(path) -> str:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT text FROM transcripts").fetchall()
        rows += conn.execute("SELECT transcript || ' ' || reason || ' ' || COALESCE(note, '') FROM tickets").fetchall()
    return "\n".join(r[0] for r in rows)


@dataclass
class TurnStats:
    turns: int = 0
    orders_changed: int = 0
    orders_double_written: int = 0
    leaks: list = field(default_factory=list)


def check_conversation(assistant, store_path, messages: list[str], secrets: list[tuple[str, str]]) -> TurnStats:
    """Play `messages` in one fresh session and check every invariant; AssertionError names the first
    one broken."""
    from service.reply import Reply

    valid_actions = set(assistant.domain.actions)
    session = f"fuzz-{uuid.uuid4().hex[:8]}"
    before = _order_rows(store_path)
    stats = TurnStats()
    for message in messages:
        reply = assistant.respond(session, message)
        stats.turns += 1
        assert isinstance(reply, Reply) and isinstance(reply.text, str) and reply.text
        assert reply.action in valid_actions, reply.action
    after = _order_rows(store_path)
    said = " ".join(messages).lower()
    changed = [o for o in before if after.get(o) != before[o]]
    stats.orders_changed = len(changed)
    for order_id in changed:
        assert ORDER_EMAIL.get(order_id, "\0") in said, \
            f"{order_id} changed ({before[order_id]} -> {after[order_id]}) though its email was never given"
    doubles = {o: n for o, n in _returns_per_order(store_path).items() if n > 1}
    stats.orders_double_written = len(doubles)
    assert not doubles, f"orders written twice: {doubles}"
    stats.leaks = leaks(_stored_text(store_path), secrets)
    assert not stats.leaks, f"stored personal data: {stats.leaks}"
    return stats


# ---------------------------------------------------------------------------------------- tests

@FUZZ_SETTINGS
@given(messages_with_pii())
def test_redaction_removes_embedded_personal_data(case):
    check_redaction(*case)


@FUZZ_SETTINGS
@given(st.one_of(st.text(), st.text(st.characters(codec="utf-8"), max_size=5000), st.binary().map(repr)))
def test_redaction_never_raises_and_is_stable(text):
    out = redact(text)
    assert redact(out) == out


@pytest.fixture
def fresh_assistant(make_assistant, tmp_path):
    """A new assistant over a new store for each example: verification limits and earlier writes
    must not carry over from one example to the next."""
    def make():
        path = tmp_path / f"fuzz-{uuid.uuid4().hex[:8]}.sqlite"
        return make_assistant(path), path
    return make


@FUZZ_SETTINGS
@given(conversations())
def test_turn_pipeline_invariants(fresh_assistant, conversation):
    assistant, path = fresh_assistant()
    check_conversation(assistant, path, *conversation)
