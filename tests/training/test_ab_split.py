"""An A/B split end to end: `training.models split`, the running app's LiveAssistant following it,
each conversation pinned to one version, the per-version comparison, and what ends a split."""
from __future__ import annotations

from core.cli import run_cli
from core.config import Config
from service.ab import SPLIT_SETTING, Split, on_candidate
from tests.helpers import install_teacher, registry_project
from training import models
from training.models import Registry

import pytest


@pytest.fixture
def project(tmp_path, tiny_encoder_dir) -> Config:
    return registry_project(tmp_path / "proj", tiny_encoder_dir)


def cli(config: Config, *args: str) -> int:
    return run_cli(models.main, ["--config", str(config.path), *args])


def test_a_split_pins_each_conversation_and_ends_on_promotion(project, tiny_encoder_dir, capsys):
    from evaluation.monitoring import compare_versions
    from webapp.startup import prepare_assistant
    from webapp.versions_tab import split_view

    assert cli(project, "adopt") == 0
    install_teacher(project, tiny_encoder_dir, note="retrained")
    assert cli(project, "register") == 0
    live = prepare_assistant(project, build_missing=False, watch=False)
    registry = Registry(project)
    capsys.readouterr()

    # refused: the served version itself, a share outside (0, 0.5], no version named
    assert cli(project, "split", "v0001") == 2 and "is the served version" in capsys.readouterr().err
    assert cli(project, "split", "v0002", "--share", "0.7") == 2 and "share" in capsys.readouterr().err
    assert cli(project, "split") == 2 and "--stop" in capsys.readouterr().err

    assert cli(project, "split", "v0002", "--share", "0.5", "--operator", "alice") == 0
    assert "v0002 now answers 50% of conversations" in capsys.readouterr().out
    split = registry.split()
    assert (split.version, split.share, split.by) == ("v0002", 0.5, "alice")
    assert not live.poll() and live.split == split          # the served version did not change; the split is on
    sessions = [f"ab-{i}" for i in range(24)]
    for sid in sessions:
        for text in ("hello there", "where is my order", "thanks"):
            live.respond(sid, text)
    by_session = {sid: {t["model_version"] for t in registry.store.turns(session_id=sid)} for sid in sessions}
    assert all(len(v) == 1 for v in by_session.values())     # a conversation stays with one version
    for sid, (version,) in by_session.items():
        assert version == ("v0002" if on_candidate(sid, split) else "v0001")
    assert {v for (v,) in by_session.values()} == {"v0001", "v0002"}
    assert live.history(sessions[0]) == live.assistant_for(sessions[0]).history(sessions[0])

    assert cli(project, "list") == 0
    assert "A/B split since" in capsys.readouterr().out
    headers, rows = compare_versions(registry.store.turns(), registry.store.ratings(), ["v0001", "v0002"])
    assert headers == ["measure", "v0001", "v0002"]
    conversations = dict((r[0], r[1:]) for r in rows)["conversations"]
    assert sorted(int(c) for c in conversations) == sorted(
        [sum(1 for (v,) in by_session.values() if v == "v0001"), sum(1 for (v,) in by_session.values() if v == "v0002")])
    text, headers, rows = split_view(registry, registry.store)
    assert "v0002" in text and "50%" in text and headers == ["measure", "v0001", "v0002"] and rows

    # stop: everyone back on the served version; the candidate's history says so
    assert cli(project, "split", "--stop") == 0 and "ended" in capsys.readouterr().out
    live.poll()
    assert live.split is None and registry.split() is None
    assert {live.respond(sid, "hello there").model_version for sid in sessions} == {"v0001"}
    assert [e["event"] for e in registry.get("v0002").meta["events"]][-2:] == ["split_started", "split_ended"]
    assert split_view(registry, registry.store)[0] == "No A/B split is running."

    # promoting the candidate ends the split too, and every conversation moves to it
    assert cli(project, "split", "v0002", "--share", "0.2") == 0
    live.poll()
    assert cli(project, "promote", "v0002", "--force") == 0
    assert registry.split() is None
    assert live.poll() and live.split is None
    assert {live.respond(sid, "hello there").model_version for sid in sessions} == {"v0002"}
    live.close()


def test_a_candidate_that_cannot_load_answers_nobody(project, caplog):
    from webapp.startup import prepare_assistant

    assert cli(project, "adopt") == 0
    live = prepare_assistant(project, build_missing=False, watch=False)
    store = Registry(project).store
    store.set_setting(SPLIT_SETTING, Split("v0099", 0.5).to_json())   # a version that is not there
    live.poll()
    assert live.split is None
    assert {live.respond(f"s{i}", "hello there").model_version for i in range(12)} == {"v0001"}
    assert "cannot load version v0099" in caplog.text
    live.close()
