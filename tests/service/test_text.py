"""Message cleaning and PII redaction: bad input never breaks a turn, personal data never lands in a log."""
import random

import pytest

from service.pii import redact
from service.text import clean_message
from webapp.presenters import escape_user_text


@pytest.mark.parametrize("raw", ["", "   ", "\n\t", None])
def test_empty_messages(raw):
    assert clean_message(raw).problem == "empty"


@pytest.mark.parametrize("raw", ["%%%$$$###@@@", "\ufffd\ufffd\ufffd", "\x00\x01\x02", "\u200b\u200b", "💥💥💥💥",
                                 bytes(random.Random(0).randrange(256) for _ in range(300))])
def test_junk_is_unreadable(raw):
    assert clean_message(raw).problem == "unreadable"


def test_control_characters_are_dropped_and_text_kept():
    c = clean_message("where\x00 is\x1b my\u202e order?")
    assert c.problem is None and c.text == "where is my order?"


def test_huge_message_is_bounded_and_flagged():
    c = clean_message("refund " * 20000, max_chars=2000)
    assert c.truncated and c.original_length == 140000 and len(c.text) <= 2000 and c.text.startswith("refund")


def test_bytes_are_decoded():
    assert clean_message("caf\u00e9 hours?".encode()).text == "café hours?"


def test_redaction_of_emails_phones_and_cards():
    out = redact("I'm jo.doe+1@example.com, call +1 (555) 123-4567; card 4111 1111 1111 1111; order HC-104233")
    assert "example.com" not in out and "555" not in out and "4111" not in out
    assert "[EMAIL]" in out and "[PHONE]" in out and "[CARD]" in out
    assert "HC-104233" in out  # operators need order numbers


def test_user_text_is_escaped_for_display():
    shown = escape_user_text('<script>alert("x")</script> ![img](http://evil/x.png) <b>hi</b>')
    assert "<script>" not in shown and "<b>" not in shown and "](" not in shown
    assert "&lt;script&gt;" in shown
