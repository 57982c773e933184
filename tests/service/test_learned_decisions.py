"""Learned cut-offs (training/decisions.py -> indexes/decisions.json -> service.assembly).

The fitter replays recorded turns through `decide` with candidate cut-offs and keeps the values under
which most turns are right; serving reads them with `policy.decisions: learned`, a value set in the
config winning, and falls back to the hand-set ones (logged) when the file is missing or stale. A damaged
file is an error, and the held-out dialogs are never fitted on.
"""
from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from core.config import load_config
from core.errors import ArtifactError, DataError
from evaluation.dialog import Dialog, Turn, check_turn, visibly_right
from retrieval.index import Hit
from service.assembly import DECISIONS_FILE, build_assistant, open_store, policy_thresholds
from service.domain import default_domain
from service.nlu import NLUResult
from service.policy import Signals, Thresholds, decide
from service.sessions import SessionState
from training import decisions as D
from tests.helpers import write_demo_config

FAQ_BASE = 0.6
FINGERPRINT = "fp-synthetic"


def recorded_turn(n: int, scores: tuple[float, float], expect: dict) -> D.RecordedTurn:
    """A turn the NLU is unsure of (so the FAQ scores alone decide), as the hand-set policy saw it."""
    nlu = NLUResult("faq_shipping", 0.3, [("faq_shipping", 0.3)], None)
    hits = [Hit("faq_a", scores[0], {}), Hit("faq_b", scores[1], {})]
    state = SessionState(f"s{n}")
    hand = Thresholds(faq=FAQ_BASE)
    decision = decide("a question", state, nlu, hits, hand, False, Signals(), default_domain())
    turn = D.RecordedTurn(f"d{n}", 1, "a question", state, nlu, None, (False, None), (False, None), hits,
                          Signals(), False, expect, decision)
    return turn


def synthetic_recording() -> D.Recording:
    # Two FAQs 0.04 apart are genuinely ambiguous (the right reply asks which one): answering needs a clarify
    # margin above 0.04. Two FAQs 0.07 apart are not (the top one is right): the margin must stay <= 0.07.
    ambiguous = [recorded_turn(n, (0.80, 0.76), {"action": "clarify"}) for n in range(3)]
    distinct = [recorded_turn(n, (0.80, 0.73), {"action": "answer_faq", "faq_id": "faq_a"}) for n in range(3, 5)]
    rec = D.Recording(ambiguous + distinct, default_domain(), FAQ_BASE, {"faq_a": "A.", "faq_b": "B."}, "a store",
                      "synthetic-encoder", FINGERPRINT)
    for t in rec.turns:   # the hand-set policy's outcome, as the recording would have it
        t.right = visibly_right(check_turn(t.expect, D.predicted_actual(t, t.decision, rec)))
    return rec


def test_the_fitter_finds_the_clarify_margin_the_turns_need():
    rec = synthetic_recording()
    assert [t.decision.action for t in rec.turns] == ["answer_faq"] * 5     # the hand-set 0.03 never asks
    values, stats = D.search(rec)
    assert values == {**D.HAND, "clarify_margin": 0.05}   # the smallest margin that asks, not one that over-asks
    assert (stats["right_before"], stats["right_after"], stats["turns"]) == (2, 5, 5)


def test_a_tie_keeps_the_hand_set_value():
    rec = synthetic_recording()
    rec.turns = rec.turns[3:]                  # only the distinct turns: nothing to gain from any change
    values, stats = D.search(rec)
    assert values == D.HAND and stats["right_before"] == stats["right_after"] == 2


def test_a_decision_that_derails_a_dialog_costs_its_later_turns():
    rec = synthetic_recording()
    # The same dialog continues after an ambiguous turn; its recorded outcome was right under the hand-set
    # policy, but a clarifying question before it changes what it would have seen.
    follow = recorded_turn(9, (0.80, 0.60), {"action": "answer_faq", "faq_id": "faq_a"})
    follow.dialog_id, follow.turn, follow.right = rec.turns[0].dialog_id, 2, True
    rec.turns.insert(1, follow)
    assert D.objective(rec, D.HAND) == 3
    assert D.objective(rec, {**D.HAND, "clarify_margin": 0.05}) == 5   # 3 gained, the derailed follow-up lost


def fitted_config(tmp_path, monkeypatch, **policy):
    config = load_config(write_demo_config(tmp_path))
    config = config.replace(policy=dataclasses.replace(config.policy, **policy))
    monkeypatch.setattr(D, "record", lambda *args, **kwargs: synthetic_recording())
    result = D.fit_decisions(config, nlu=object())
    return config, result


def test_fit_writes_decisions_and_serving_reads_them(tmp_path, monkeypatch):
    config, result = fitted_config(tmp_path, monkeypatch, decisions="learned")
    written = json.loads((config.index_dir / DECISIONS_FILE).read_text())
    assert written["encoder_fingerprint"] == FINGERPRINT and written["faq_base"] == FAQ_BASE
    assert written["thresholds"]["clarify_margin"] == 0.05 and written["fitted"] == list(D.FITTED_KEYS)
    assert written["objective"]["before"] == 0.4 and written["objective"]["after"] == 1.0
    assert written["train_dialogs"] == str(config.data.train_dialogs)
    th = policy_thresholds(config, {"faq_threshold": FAQ_BASE}, FINGERPRINT)
    assert th == Thresholds(faq=FAQ_BASE, clarify_margin=0.05, intent=0.5, near_faq=0.08)


def test_values_set_in_the_config_win_over_learned_ones(tmp_path, monkeypatch):
    config, _ = fitted_config(tmp_path, monkeypatch, decisions="learned", clarify_margin=0.02, faq_threshold=0.7)
    th = policy_thresholds(config, {"faq_threshold": FAQ_BASE}, FINGERPRINT)
    assert (th.clarify_margin, th.faq) == (0.02, 0.7)


def test_hand_ignores_the_fitted_file(tmp_path, monkeypatch):
    config, _ = fitted_config(tmp_path, monkeypatch, decisions="hand")
    assert policy_thresholds(config, {"faq_threshold": FAQ_BASE}, FINGERPRINT) == Thresholds(faq=FAQ_BASE)


@pytest.mark.parametrize("fingerprint, faq_base, why", [
    ("fp-another-encoder", FAQ_BASE, "another encoder"),
    (FINGERPRINT, 0.55, "another FAQ threshold"),        # indexes rebuilt since the fit
])
def test_stale_decisions_fall_back_to_hand_set_with_a_warning(tmp_path, monkeypatch, caplog, fingerprint,
                                                              faq_base, why):
    config, _ = fitted_config(tmp_path, monkeypatch, decisions="learned")
    with caplog.at_level(logging.WARNING, logger="service.assembly"):
        th = policy_thresholds(config, {"faq_threshold": faq_base}, fingerprint)
    assert th == Thresholds(faq=faq_base)
    assert why in caplog.text and "training.decisions" in caplog.text


def test_missing_decisions_fall_back_with_a_warning(tmp_path, caplog):
    config = load_config(write_demo_config(tmp_path), ["policy.decisions=learned"])
    with caplog.at_level(logging.WARNING, logger="service.assembly"):
        assert policy_thresholds(config, {"faq_threshold": FAQ_BASE}, FINGERPRINT) == Thresholds(faq=FAQ_BASE)
    assert "missing" in caplog.text


@pytest.mark.parametrize("damage", ["{not json", json.dumps({"thresholds": {"clarify_margin": "wide"}}),
                                    json.dumps({"thresholds": {"clarify_margin": -1, "faq_offset": 0,
                                                               "near_faq": 0.1}, "fitted": ["clarify_margin"]})])
def test_a_damaged_decisions_file_is_a_one_line_error(tmp_path, monkeypatch, damage):
    config, _ = fitted_config(tmp_path, monkeypatch, decisions="learned")
    (config.index_dir / DECISIONS_FILE).write_text(damage)
    with pytest.raises(ArtifactError, match="corrupt.*training.decisions.*policy.decisions: hand") as err:
        policy_thresholds(config, {"faq_threshold": FAQ_BASE}, FINGERPRINT)
    assert "\n" not in str(err.value)


def test_an_unknown_decision_source_is_a_config_error(tmp_path):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="policy.decisions must be one of hand, learned"):
        load_config(write_demo_config(tmp_path), ["policy.decisions=guess"])


@pytest.mark.parametrize("key", ["dialogs", "faq_heldout", "shopping_requests"])
def test_the_held_out_data_is_refused_as_training_input(tmp_path, key):
    config = load_config(write_demo_config(tmp_path))
    held_out = getattr(config.data, key)
    with pytest.raises(DataError, match=f"held-out data.{key}"):
        D.training_dialogs_path(config, held_out)
    pointed = config.replace(data=dataclasses.replace(config.data, train_dialogs=held_out))
    with pytest.raises(DataError, match="never be fitted on"):
        D.fit_decisions(pointed, nlu=object())


def test_recording_a_real_assistant_replays_its_own_decisions(service_config, demo_nlu, built_indexes, tmp_path):
    dialogs = [Dialog("faq", [Turn("how long does shipping take?", {"action": "answer_faq"}),
                              Turn("and to Canada?", {"action": "answer_faq"})]),
               Dialog("flow", [Turn("where is my order HC-104299", {"action": "order_status"}),
                               Turn("jack.morrison@example.com", {"action": "order_status"})]),
               Dialog("chat", [Turn("hello!", {"action": "small_talk"}), Turn("   ", {})])]
    rec = D.record(service_config, dialogs, demo_nlu, tmp_path)
    assert rec.skipped_turns == 1                                   # the empty message never reaches the policy
    assert [(t.dialog_id, t.turn) for t in rec.turns] == [("faq", 1), ("faq", 2), ("flow", 1), ("flow", 2),
                                                          ("chat", 1)]
    assert rec.turns[3].state.flow is not None                     # the state as the policy saw it, copied
    assert rec.encoder_fingerprint == demo_nlu.embedder.fingerprint
    hand = D.thresholds_of(D.HAND, rec.faq_base)
    for t in rec.turns:                                             # replaying with the same cut-offs: same turns
        assert D._key(D.replay(t, hand, rec.domain)) == D._key(t.decision)
    assert D.objective(rec, D.HAND) == sum(t.right for t in rec.turns)


def test_the_assistant_serves_the_learned_cut_offs(service_config, demo_nlu, built_indexes, tmp_path):
    from retrieval.build import load_indexes

    learned = service_config.replace(policy=dataclasses.replace(service_config.policy, decisions="learned"))
    served_base = load_indexes(learned, demo_nlu.embedder)[2]["faq_threshold"]   # the fused one with fusion on
    path = built_indexes / DECISIONS_FILE
    path.write_text(json.dumps({"thresholds": {**D.HAND, "near_faq": 0.04, "clarify_margin": 0.05},
                                "fitted": ["near_faq", "clarify_margin"], "faq_base": served_base,
                                "encoder_fingerprint": demo_nlu.embedder.fingerprint}))
    try:
        assistant = build_assistant(learned, nlu=demo_nlu, store=open_store(learned, tmp_path / "s.sqlite"))
        assert assistant.thresholds == Thresholds(faq=served_base, clarify_margin=0.05, near_faq=0.04)
        hand = build_assistant(service_config, nlu=demo_nlu, store=open_store(service_config, tmp_path / "h.sqlite"))
        assert hand.thresholds == Thresholds(faq=served_base)
    finally:
        path.unlink()   # the indexes are shared by the session's other tests


def test_the_index_step_knows_when_the_fitted_cut_offs_are_out_of_date(tmp_path, monkeypatch):
    config, _ = fitted_config(tmp_path, monkeypatch, decisions="learned")
    assert D.decisions_status(config, FINGERPRINT)[0]
    assert D.decisions_status(config, "fp-another-encoder") == (False, "the fitted cut-offs (decisions.json) are "
                                                                       "of another encoder")
    (config.index_dir / DECISIONS_FILE).unlink()
    assert not D.decisions_status(config, FINGERPRINT)[0]
