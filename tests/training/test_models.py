"""training.models: the registry, the gate through `promote`, rollback, and the app following live.

A tiny deployment (tests/helpers.py) with a tiny teacher stands in for a build; a "broken" build is
the same teacher with its label map rotated (every intent answered as another), so the gate has a
worse candidate to refuse without training anything.
"""
from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from core.cli import run_cli
from core.config import Config
from tests.helpers import install_teacher, registry_project
from training import models
from training.models import Registry

@pytest.fixture
def project(tmp_path, tiny_encoder_dir) -> Config:
    """A tiny deployment with held-out dialogs, a built teacher and its indexes (nothing registered)."""
    return registry_project(tmp_path / "proj", tiny_encoder_dir)


def cli(config: Config, *args: str) -> int:
    return run_cli(models.main, ["--config", str(config.path), *args])


def test_the_first_build_is_served_and_later_builds_are_candidates(project, tiny_encoder_dir):
    from training.pipeline import run_pipeline

    first = run_pipeline(project, steps="index")          # up to date: only registers
    assert first["version"] == {"name": "v0001", "created": True, "status": "promoted", "served": True}
    registry = Registry(project)
    v1 = registry.get("v0001")
    assert (project.layout.served_pointer.read_text().strip(), registry.store.get_setting("served_version")[0]) \
        == ("v0001", "v0001")
    for part in ("teacher/attendant.json", "indexes/calibration.json", "indexes/oos", "config.yaml", "data/faq.jsonl"):
        assert (v1.path / part).exists(), part
    meta = v1.meta
    assert meta["parent"] is None and meta["data_hash"].startswith("sha256:") and meta["model"]["content_hash"]
    assert set(meta["data_files"]) == {"intents", "faq", "products"}   # never the held-out dialogs
    files_before = sorted((p.relative_to(v1.path), p.stat().st_mtime_ns) for p in v1.path.rglob("*") if p.is_file())

    again = run_pipeline(project, steps="index")          # the same build is not registered twice
    assert again["version"]["name"] == "v0001" and again["version"]["created"] is False

    install_teacher(project, tiny_encoder_dir, note="retrained")   # a new build: a candidate, never served by itself
    second = run_pipeline(project, steps="index")
    assert second["version"] == {"name": "v0002", "created": True, "status": "candidate", "served": False}
    assert registry.served_name() == "v0001" and registry.get("v0002").meta["parent"] == "v0001"
    assert sorted((p.relative_to(v1.path), p.stat().st_mtime_ns) for p in v1.path.rglob("*") if p.is_file()) \
        == files_before                                   # the served version's files were not touched

    # corrections change the data hash: the same model after a correction is another build
    registry.store.add_correction("intent", {"intent": "greeting", "text": "hiya"}, "op", turn_id="t-1")
    assert models.data_fingerprint(project, registry.store)["corrections"] == 1
    assert run_pipeline(project, steps="index")["version"]["name"] == "v0003"

    # the same indexes built again (new timestamps) are the same build; other indexes (a new index kind,
    # a new fusion or calibration) with the same model and data are a new one
    assert run_pipeline(project, steps="index", force=True)["version"] == \
        {"name": "v0003", "created": False, "status": "candidate", "served": False}
    hnsw = project.replace(retrieval=dataclasses.replace(project.retrieval, exact_max=1))
    assert run_pipeline(hnsw, steps="index", force=True)["version"]["name"] == "v0004"
    assert registry.get("v0004").meta["indexes_hash"] != registry.get("v0003").meta["indexes_hash"]


def test_a_worse_candidate_is_refused_and_the_report_is_written(project, tiny_encoder_dir):
    registry = Registry(project)
    registry.register()
    install_teacher(project, tiny_encoder_dir, broken=True)
    candidate, created = registry.register()
    assert created and candidate.status == "candidate"

    assert cli(project, "promote", candidate.name) == 1
    v2 = registry.get(candidate.name)
    assert v2.status == "refused" and registry.served_name() == "v0001"
    assert registry.store.get_setting("served_version")[0] == "v0001"
    gate = json.loads((v2.path / "gate.json").read_text())
    assert gate["passed"] is False and gate["held_out"]["served"]["resolution"] == 1.0
    assert gate["held_out"]["candidate"]["resolution"] < 0.5
    assert any("held-out resolution drops" in r for r in gate["reasons"])
    assert "REFUSED" in (v2.path / "gate.md").read_text()
    assert v2.meta["events"][-1]["event"] == "refused"


def test_a_corrected_turn_that_breaks_blocks_promotion(project, tiny_encoder_dir):
    # no held-out dialogs: only the regression set can refuse the candidate
    project = project.replace(data=dataclasses.replace(project.data, dialogs=None))
    registry = Registry(project)
    registry.register()
    # an operator corrected a turn; the served version gets it right
    registry.store.add_correction("intent", {"intent": "greeting", "text": "hello there"}, "op", turn_id="t-42")
    install_teacher(project, tiny_encoder_dir, broken=True)
    candidate, _ = registry.register()
    result = registry.promote(candidate.name, by="alice")
    assert result["promoted"] is False and registry.served_name() == "v0001"
    reasons = result["gate"]["reasons"]
    assert len(reasons) == 1 and "corrected turn(s) that worked before break" in reasons[0]
    gate = registry.get(candidate.name).gate()
    assert "resolution not compared" in gate["held_out"]["note"]
    [turn] = gate["regression"]["turns"]
    assert (turn["served_ok"], turn["candidate_ok"], turn["breaks"]) == (True, False, True)


def test_promote_and_rollback_through_the_cli_and_the_app_follows(project, tiny_encoder_dir, capsys, caplog):
    from webapp.startup import prepare_assistant

    assert cli(project, "adopt") == 0
    assert "v0001 registered (served)" in capsys.readouterr().out
    live = prepare_assistant(project, build_missing=False, watch=False)   # what `python app.py` holds
    assert live.version == "v0001" and live.respond("s1", "hello there").model_version == "v0001"

    install_teacher(project, tiny_encoder_dir, note="retrained")
    assert cli(project, "register") == 0
    assert "v0002 registered (candidate)" in capsys.readouterr().out
    assert cli(project, "promote", "v0002", "--operator", "alice") == 0      # as good: the gate passes
    assert "v0002 promoted (gate passed)" in capsys.readouterr().out
    registry = Registry(project)
    assert registry.served_name() == "v0002" and project.layout.served_pointer.read_text().strip() == "v0002"
    assert registry.get("v0002").gate()["passed"] is True
    assert registry.get("v0002").meta["events"][-1] | {"at": None} == \
        {"at": None, "event": "promoted", "by": "alice", "forced": False, "previous": "v0001"}
    assert live.poll() and live.respond("s2", "hello there").model_version == "v0002"

    assert cli(project, "list") == 0
    out = capsys.readouterr().out
    assert "* v0002    promoted" in out and "  v0001    promoted" in out

    assert cli(project, "rollback", "--operator", "bob") == 0
    assert "rolled back from v0002 to v0001" in capsys.readouterr().out
    assert registry.served_name() == "v0001" and registry.get("v0002").status == "rolled_back"
    assert live.poll() and live.respond("s3", "hello there").model_version == "v0001"
    assert [t["model_version"] for t in registry.store.turns(session_id="s2")] == ["v0002"]

    # nothing left to roll back to: one line, exit code 2
    assert cli(project, "rollback") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing to roll back to" in err

    # --force skips the gate, and says so in the log and in version.json
    install_teacher(project, tiny_encoder_dir, broken=True)
    assert cli(project, "register") == 0
    with caplog.at_level(logging.WARNING, logger="training.models"):
        assert cli(project, "promote", "v0003", "--force", "--operator", "carol") == 0
    assert "promoted by carol with --force" in caplog.text
    v3 = registry.get("v0003")
    assert v3.status == "promoted" and v3.meta["events"][-1]["forced"] is True and v3.gate() is None
    assert registry.rollback_target().name == "v0001"
    live.close()


def test_cli_help_and_one_line_errors(project, capsys):
    with pytest.raises(SystemExit) as exc:
        models.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("list", "show", "promote", "rollback", "register", "adopt"):
        assert command in out
    assert cli(project, "list") == 0
    assert "no versions" in capsys.readouterr().out
    for args, message in ((["show", "v0009"], "no version v0009"), (["promote", "latest"], "not a version name"),
                          (["rollback"], "no version is served")):
        assert cli(project, *args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert cli(project, "adopt") == 0 and cli(project, "show", "v0001") == 0
    shown = capsys.readouterr().out
    assert '"status": "promoted"' in shown and '"served": true' in shown
    assert cli(project, "promote", "v0001") == 2
    assert "already the served version" in capsys.readouterr().err


def test_the_console_versions_tab_lists_gates_and_logs_the_operator(project, tiny_encoder_dir):
    import gradio as gr

    from webapp.versions_tab import build_versions_tab

    registry = Registry(project)
    registry.register()
    install_teacher(project, tiny_encoder_dir, broken=True)
    registry.register()

    class Ctx:   # the ConsoleContext parts the tab uses; `require` refuses a request without a login
        config, store, assistant = project, registry.store, None

        @staticmethod
        def require(request):
            if request is None:
                raise gr.Error("Log in first")
            return "operator"

    with gr.Blocks() as page:
        build_versions_tab(Ctx())
    assert "v0001" not in json.dumps(page.get_config_file(), default=str)   # nothing in the page before login
    fns = {f.fn.__name__: f.fn for f in page.fns.values()}
    with pytest.raises(gr.Error):
        fns["do_refresh"](None)
    logged_in = object()
    served, rows, split_line, _ = fns["do_refresh"](logged_in)
    assert "**v0001**" in served and [r[:3] for r in rows] == [["", "v0002", "candidate"], ["served", "v0001", "promoted"]]
    assert split_line == "No A/B split is running."
    with pytest.raises(gr.Error):
        fns["do_start_split"]("v0002", 0.1, None)
    message, *_ = fns["do_start_split"]("v0001", 0.1, logged_in)
    assert "is the served version" in message
    message, _, _, split_line, split_table = fns["do_start_split"]("v0002", 0.25, logged_in)
    assert "v0002 now answers 25%" in message and "**v0002** answers 25%" in split_line
    assert registry.split().by == "operator (console)"
    message, *_ = fns["do_stop_split"](logged_in)
    assert "ended" in message and registry.split() is None
    with pytest.raises(gr.Error):
        fns["do_promote"]("v0002", None)
    message, report, served, rows, *_ = fns["do_promote"]("v0002", logged_in)
    assert "refused by the gate" in message and "REFUSED" in report and "held-out resolution drops" in report
    assert registry.get("v0002").meta["events"][-1]["by"] == "operator (console)"
    assert [r[2] for r in rows] == ["refused", "promoted"]
    message, served, rows, *_ = fns["do_rollback"](logged_in)
    assert "nothing to roll back to" in message and "**v0001**" in served
    assert "v0001: promoted" in fns["do_show"]("v0001", logged_in)
