"""evaluation.gate: the rules that let a candidate version replace the served one, on a tiny deployment
(a good tiny teacher and a "broken" one with its label map rotated; tests/helpers.py)."""
from __future__ import annotations

import json

import pytest

from evaluation.dialog import Dialog, Turn
from evaluation.gate import regression_set, run_gate
from tests.helpers import install_teacher, registry_project
from training.models import Registry

HELLO = Dialog("r1", [Turn("hello there", {"intent": "greeting", "action": "small_talk"})])


@pytest.fixture
def versions(tmp_path, tiny_encoder_dir):
    """(config, registry, good version folder, broken version folder); the good one served."""
    project = registry_project(tmp_path / "proj", tiny_encoder_dir)
    registry = Registry(project)
    good, _ = registry.register()
    install_teacher(project, tiny_encoder_dir, broken=True)
    broken, _ = registry.register()
    return project, registry, good.path, broken.path


def test_a_turn_fixed_before_may_not_break_even_when_the_served_version_gets_it_wrong(versions, tmp_path):
    config, registry, good, broken = versions
    # served and candidate both wrong, never fixed: not a regression (resolution is equal too)
    same = run_gate(config, broken, broken, regression=[HELLO], out_dir=tmp_path / "a")
    assert same.passed, same.reasons
    [turn] = same.report["regression"]["turns"]
    assert (turn["served_ok"], turn["candidate_ok"], turn["breaks"]) == (False, False, False)
    # the same turn, fixed by an earlier promotion: now it blocks
    again = run_gate(config, broken, broken, regression=[HELLO], previously_fixed=["r1"], out_dir=tmp_path / "b")
    assert not again.passed and again.report["regression"]["broke"] == ["r1"]
    # a candidate that gets it right fixes it, and says which turns it passed (the registry keeps them)
    fixes = run_gate(config, good, broken, regression=[HELLO], out_dir=tmp_path / "c")
    assert fixes.passed and fixes.report["regression"]["fixed"] == ["r1"] and fixes.candidate_passed_regression == ["r1"]
    assert fixes.report["held_out"]["delta"]["resolution"] == 1.0
    md = (tmp_path / "c" / "gate.md").read_text()
    assert "PASSED" in md and "| resolution | 0.000 | 1.000 | +1.000 |" in md and "hello there" in md
    assert json.loads((tmp_path / "c" / "gate.json").read_text())["passed"] is True


def test_the_tolerance_is_a_drop_in_held_out_resolution(versions, tmp_path):
    config, _, good, broken = versions
    refused = run_gate(config, broken, good, regression=[], out_dir=tmp_path / "a")
    assert not refused.passed and "held-out resolution drops from 1.000 to 0.000" in refused.reasons[0]
    better = run_gate(config, good, broken, regression=[], out_dir=tmp_path / "b")   # an improvement passes
    assert better.passed
    # with nothing served there is nothing to compare resolution with
    first = run_gate(config, broken, None, regression=[], out_dir=tmp_path / "c")
    assert first.passed and first.report["held_out"]["served"] is None


def test_promotion_remembers_the_turns_it_fixed(versions, tiny_encoder_dir):
    config, registry, _, _ = versions
    registry.store.add_correction("intent", {"intent": "greeting", "text": "hello there"}, "op", turn_id="t-1")
    install_teacher(config, tiny_encoder_dir, note="retrained")
    candidate, _ = registry.register()
    result = registry.promote(candidate.name, by="op")
    assert result["promoted"] and result["gate"]["regression"] == {"turns": 1, "broke": 0, "fixed": 0}
    assert registry.previously_fixed() == {"correction-1"}


def test_the_regression_set_comes_from_the_corrections(versions):
    config, registry, _, _ = versions
    assert regression_set(registry.store) == ([], "no corrected turns yet: the regression set is empty")
    registry.store.add_correction("out_of_scope", {"text": "what is the weather"}, "op", turn_id="t-9")
    dialogs, note = regression_set(registry.store)
    assert [(d.id, d.turns[0].user, d.turns[0].expect) for d in dialogs] == \
        [("correction-1", "what is the weather", {"action": "out_of_scope"})]
    assert "1 corrected turn" in note
