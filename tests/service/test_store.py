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


def test_ticket_ids_survive_a_deleted_ticket(tmp_path):
    # Old code: ids were COUNT(*)+1, so after a delete every later handoff failed with a UNIQUE error.
    s = Store(tmp_path / "t.sqlite")
    ids = [s.open_ticket(f"s{i}", "asked for a person", []) for i in range(3)]
    assert ids == ["T-00001", "T-00002", "T-00003"]
    s._conn().execute("DELETE FROM tickets WHERE ticket_id = 'T-00002'")
    assert s.open_ticket("s9", "asked for a person", []) == "T-00004"
    s._conn().execute("DELETE FROM tickets WHERE ticket_id = 'T-00004'")   # even the newest: never reused
    assert s.open_ticket("s10", "asked for a person", []) == "T-00005"
    assert [t["ticket_id"] for t in s.tickets()] == ["T-00001", "T-00003", "T-00005"]


def test_version_1_store_is_migrated(tmp_path):
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO customers VALUES ('a@example.com', 'A')")
    conn.execute("INSERT INTO orders(order_id, email, status, total, updated_at) VALUES ('HC-100001', 'a@example.com', "
                 "'return_requested', 10, 0)")
    for _ in range(2):   # the duplicate open returns the old code could create
        conn.execute("INSERT INTO returns(order_id, condition, restocking_fee, refund_amount, status, created_at) "
                     "VALUES ('HC-100001', 'unopened', 0, 10, 'requested', 0)")
    for tid in ("T-00001", "T-00003"):
        conn.execute("INSERT INTO tickets VALUES (?, 's', 'r', '[]', 'open', 0, NULL, NULL)", (tid,))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    s = Store(path)
    assert s.schema_version == len(MIGRATIONS)
    assert [t["ticket_id"] for t in s.tickets()] == ["T-00001", "T-00003"]
    assert s.open_ticket("s", "r", []) == "T-00004"
    assert [r["status"] for r in s.returns_for("HC-100001")] == ["requested", "duplicate"]


def test_closing_a_ticket_during_a_turn_is_not_lost(tmp_path):
    # Old code: the turn loaded the session in handoff, the operator closed the ticket, the turn saved
    # its copy: the ticket was closed and the customer stuck in handoff for good.
    s = Store(tmp_path / "t.sqlite")
    tid = s.open_ticket("x", "asked for a person", [])
    s.save(SessionState("x", handoff=True, ticket_id=tid, handoff_reason="asked for a person"))
    during_turn = s.load("x")                      # the turn starts
    assert s.close_ticket(tid, "done") == "x"      # the operator closes it meanwhile
    during_turn.history.append({"role": "user", "text": "hello?"})
    s.save(during_turn)                            # the turn ends, saving its (handoff) copy
    after = s.load("x")
    assert not after.handoff and after.ticket_id is None and after.history[-1]["text"] == "hello?"
    # A newer ticket on the same session keeps it with a person.
    t2 = s.open_ticket("x", "again", [])
    s.save(SessionState("x", handoff=True, ticket_id=t2))
    assert s.load("x").handoff
