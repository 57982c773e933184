"""Retention: the purge deletes old transcripts, closed tickets and idle sessions, and nothing else."""
from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from core.config import PROJECT_ROOT, load_config
from core.errors import ConfigError
from service.retention import DAY, RetentionLimits, main, purge
from service.sessions import SessionState
from tests.helpers import write_demo_config


@pytest.fixture
def config(tmp_path, store_url):
    """The demo config, its store on each backend (no url: the SQLite file in its artifacts folder)."""
    config = load_config(write_demo_config(tmp_path))
    if "://" in store_url:
        config.store.url = store_url
    return config


def _cli(config) -> list[str]:
    """The command-line arguments naming this config (and its store, when that is a URL)."""
    return ["--config", str(config.path)] + (["--set", f"store.url={config.store.url}"] if config.store.url else [])


def _age(store, table: str, column: str, where: str, days: float) -> None:
    """Backdate rows (the test's stand-in for time passing)."""
    store._run(f"UPDATE {table} SET {column} = :t WHERE {where}", {"t": time.time() - days * DAY})


def _populate(store) -> dict[str, str]:
    for session in ("old", "new"):
        store.append_transcript(session, "user", f"{session} hello")
        store.append_transcript(session, "assistant", f"{session} hi", "small_talk", "greeting", 0.9)
        store.save(SessionState(session))
    old_closed = store.open_ticket("old", "asked for a person", [{"role": "user", "text": "help"}])
    store.close_ticket(old_closed, "done")
    new_closed = store.open_ticket("new", "asked for a person", [])
    store.close_ticket(new_closed, "done")
    still_open = store.open_ticket("waiting", "asked for a person", [])
    state = SessionState("waiting")
    state.handoff, state.ticket_id = True, still_open
    store.save(state)
    _age(store, "transcripts", "created_at", "session_id = 'old'", 100)
    _age(store, "sessions", "updated_at", "session_id IN ('old', 'waiting')", 400)
    _age(store, "tickets", "closed_at", f"ticket_id = '{old_closed}'", 400)
    _age(store, "tickets", "created_at", f"ticket_id IN ('{old_closed}', '{still_open}')", 500)
    return {"old_closed": old_closed, "new_closed": new_closed, "open": still_open}


def _session_ids(store) -> set[str]:
    return {r["session_id"] for r in store._all("SELECT session_id FROM sessions")}


def test_purge_deletes_only_what_is_older_than_the_limits(config):
    from service.assembly import open_store

    store = open_store(config)
    tickets = _populate(store)
    orders_before = store.order_count()

    dry = purge(store, RetentionLimits(), dry_run=True)
    assert dry == {"transcripts": 2, "tickets": 1, "sessions": 1}
    assert len(store.transcript("old")) == 2 and len(store.tickets()) == 3   # a dry run changes nothing

    assert purge(store, RetentionLimits()) == dry
    assert store.transcript("old") == [] and len(store.transcript("new")) == 2
    assert {t["ticket_id"] for t in store.tickets()} == {tickets["new_closed"], tickets["open"]}
    # The old session went; the one waiting on an open ticket stays however old it is.
    assert _session_ids(store) == {"new", "waiting"}
    assert store.load("waiting").handoff
    assert store.order_count() == orders_before
    assert purge(store, RetentionLimits()) == {"transcripts": 0, "tickets": 0, "sessions": 0}


def test_limits_of_none_keep_forever_and_zero_purges_everything_closed(config):
    from service.assembly import open_store

    store = open_store(config)
    tickets = _populate(store)
    keep = RetentionLimits(transcripts_days=None, tickets_days=None, sessions_days=None)
    assert purge(store, keep) == {"transcripts": 0, "tickets": 0, "sessions": 0}
    everything = RetentionLimits(0, 0, 0)
    counts = purge(store, everything, now=time.time() + 1)
    assert counts == {"transcripts": 4, "tickets": 2, "sessions": 2}
    assert [t["ticket_id"] for t in store.tickets()] == [tickets["open"]]


@pytest.mark.parametrize("bad", [-1, "ninety", True])
def test_bad_limits_are_config_errors(bad):
    with pytest.raises(ConfigError, match="retention.transcripts_days"):
        RetentionLimits(transcripts_days=bad)


def test_limits_come_from_the_config_section_when_there_is_one():
    section = SimpleNamespace(transcripts_days=7, tickets_days=None, sessions_days=1)
    assert RetentionLimits.from_config(SimpleNamespace(retention=section)) == RetentionLimits(7, None, 1)
    assert RetentionLimits.from_config(SimpleNamespace()) == RetentionLimits()


def test_the_command_prints_counts_and_honours_dry_run(config, capsys):
    from service.assembly import open_store

    store = open_store(config)
    _populate(store)
    store.close()
    assert main(_cli(config) + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete 2 transcript lines" in out and "1 closed tickets" in out and "1 sessions" in out
    assert main(_cli(config) + ["--transcripts-days", "1000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deleted 0 transcript lines (older than 1000 days), 1 closed tickets")
    assert main(_cli(config)) == 0
    assert capsys.readouterr().out.startswith("deleted 2 transcript lines")


def test_python_dash_m_service_retention(config):
    run = subprocess.run([sys.executable, "-m", "service.retention", *_cli(config), "--dry-run"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("would delete 0 transcript lines")
    bad = subprocess.run([sys.executable, "-m", "service.retention", *_cli(config),
                          "--sessions-days", "-3"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "retention.sessions_days" in bad.stderr


def test_cli_deletes_expired_tokens_and_keeps_live_ones(tmp_path, capsys):
    from service.assembly import open_store

    config = load_config(write_demo_config(tmp_path))
    store = open_store(config)
    now = time.time()
    store.create_token("old", "api", "api-1", now - 2 * config.server.token_max_age_s)
    store.create_token("live", "api", "api-2", now)
    assert main(["--config", str(config.path)]) == 0
    assert "deleted 1 expired tokens" in capsys.readouterr().out
    assert store.use_token("live", "api", time.time(), idle_ttl=3600, max_age=3600) is not None
    assert store.use_token("old", "api", time.time(), idle_ttl=1e12, max_age=1e12) is None
