"""Typo correction before understanding (service/spelling.py): real symspellpy with its English
dictionary and a pack's own words; what it corrects, what it leaves alone, and that the assistant
understands the corrected message while the transcript keeps what the customer wrote."""
from __future__ import annotations

import sys

import pytest

from service.spelling import SpellingCorrector, corrector_for, pack_vocabulary


@pytest.fixture(scope="module")
def corrector():
    return SpellingCorrector({"cloudbook", "sweepa", "hearth", "restocking"})


@pytest.mark.parametrize("typed,read", [
    ("yo do you hvae corporate amcounts", "yo do you have corporate accounts"),
    ("um forgot to use my copuon ?", "um forgot to use my coupon ?"),
    ("hello, whih ittems can't be retunred ?", "hello, which items can't be returned ?"),
    ("close my account prmanently!", "close my account permanently!"),
])
def test_words_one_edit_from_a_known_word_are_corrected(corrector, typed, read):
    assert corrector.correct(typed) == read


def test_the_packs_own_words_win_and_are_never_changed(corrector):
    assert corrector.correct("my cloudbok won't start") == "my cloudbook won't start"
    assert corrector.correct("is the Sweepa any good, Hearth team?") == "is the Sweepa any good, Hearth team?"
    assert corrector.correct("whats the restockng fee") == "whats the restocking fee"


def test_names_customers_use_stay_as_written(corrector):
    # One edit away from "venom" and "belle", but a payment app a customer asks about.
    assert corrector.correct("venmo accepted?") == "venmo accepted?"
    assert corrector.correct("do you take Zelle or cashapp") == "do you take Zelle or cashapp"


def test_numbers_addresses_and_short_words_stay_as_written(corrector):
    text = "order HC-104266, email ruby.nguyen@example.org, $299.99, R7 or R9, 2x, ok, xq"
    assert corrector.correct(text) == text
    assert corrector.correct("") == "" and corrector.correct("  two  spaces ") == "  two  spaces "


def test_chat_shorthand_is_read_as_its_words(corrector):
    assert corrector.correct("my accnt is locked, pls help!") == "my account is locked, please help!"
    assert corrector.correct("Returned it last WK, thx") == "Returned it last week, thanks"
    assert corrector.correct("can u ship w/ tracking (b4 friday)?") == "can you ship with tracking (before friday)?"
    assert corrector.correct("user@acct.com pwd123 HC-104266") == "user@acct.com pwd123 HC-104266"


def test_stretched_words_are_read_as_meant_and_single_letter_runs_stay(corrector):
    assert corrector.correct("hiii, sooo slow, pleeeease help") == "hi, so slow, please help"
    assert corrector.correct("AAA batteries, zzz") == "AAA batteries, zzz"


def test_one_corrector_per_pack_and_none_without_the_library(tmp_path, monkeypatch):
    pack = tmp_path / "faq.jsonl"
    pack.write_text('{"question": "Is the Zapbook waterproof?"}\n')
    assert "zapbook" in pack_vocabulary([pack])
    first = corrector_for([pack])
    assert first is corrector_for([pack]) and first.correct("is the zapbok waterproof") == "is the zapbook waterproof"
    monkeypatch.setitem(sys.modules, "symspellpy", None)          # not installed
    pack.write_text('{"question": "Is the Zapbook waterproof, really?"}\n')
    assert corrector_for([pack]) is None


def test_the_assistant_understands_the_corrected_message_and_stores_the_typed_one(make_assistant):
    assistant = make_assistant()
    assert assistant.spelling is not None                          # policy.spelling is on for the demo
    reply = assistant.respond("typos", "how lnog dose standrd delivery take")
    assert reply.debug["read_as"] == "how long dose standard delivery take"
    assert reply.action == "answer_faq" and reply.sources[0].faq_id == "faq_ship_02"
    stored = [t for t in assistant.transcripts.transcript("typos") if t["role"] == "user"]
    assert stored[-1]["text"] == "how lnog dose standrd delivery take"
    assistant.spelling = None                                      # switched off: read as typed
    assert "read_as" not in assistant.respond("typos-off", "how lnog dose standrd delivery take").debug
