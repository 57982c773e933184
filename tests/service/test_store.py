"""The SQLite store: schema versioning, WAL, seeding, concurrent sessions, tickets."""
import sqlite3
import threading
from pathlib import Path

import pytest

from core.errors import ArtifactError
from service.sessions import SessionState
from service.store import MIGRATIONS, Store

ORDERS = Path(__file__).resolve().parents[2] / "data" / "demo" / "orders.jsonl"


def test_schema_is_versioned_and_wal(tmp_path):
    s = Store(tmp_path / "a.sqlite")
    assert s.schema_version == len(MIGRATIONS)
    assert s._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    Store(tmp_path / "a.sqlite")  # reopening migrates nothing and keeps the data


def test_seeding_is_idempotent(tmp_path):
    s = Store(tmp_path / "a.sqlite")
    n = s.seed_orders(ORDERS)
    assert n >= 40 and s.seed_orders(ORDERS) == 0 and s.order_count() == n
    order = s.get_order("hc-104233")
    assert order.order_id == "HC-104233" and order.items


def test_corrupt_store_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ArtifactError, match="not a usable SQLite store"):
        Store(bad)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()
    with pytest.raises(ArtifactError, match="newer than this code"):
        Store(path)


def test_concurrent_sessions_do_not_lose_writes(tmp_path):
    s = Store(tmp_path / "c.sqlite")

    def worker(i):
        for j in range(20):
            st = s.load(f"s{i}")
            st.history.append({"role": "user", "text": str(j)})
            s.save(st)
            s.append_transcript(f"s{i}", "user", str(j))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for i in range(6):
        assert len(s.load(f"s{i}").history) == 20 and len(s.transcript(f"s{i}")) == 20


def test_closing_a_ticket_releases_the_session(tmp_path):
    s = Store(tmp_path / "t.sqlite")
    s.save(SessionState("x", handoff=True, ticket_id="T-00001"))
    tid = s.open_ticket("x", "asked for a person", [{"role": "user", "text": "agent"}])
    assert s.tickets("open")[0]["ticket_id"] == tid
    assert s.close_ticket(tid, "done") == "x"
    assert not s.load("x").handoff and s.tickets("open") == []
    assert s.close_ticket(tid) is None
