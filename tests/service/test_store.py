"""The store on both backends (SQLite file, PostgreSQL): schema versioning and migrations, seeding,
concurrent sessions, tickets, and what several processes sharing one database rely on (conditional
writes, turn locks, rate counters)."""
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.errors import ArtifactError
from service.sessions import SessionState
from service.store import (
    MIGRATIONS,
    Store,
    WriteConflict,
    migration_statements,
    store_url,
)

ORDERS = Path(__file__).resolve().parents[2] / "data" / "demo" / "orders.jsonl"


def test_schema_is_versioned(make_store):
    s = make_store()
    assert s.schema_version == len(MIGRATIONS)
    if s.backend == "sqlite":
        assert s._scalar("PRAGMA journal_mode") == "wal"
        assert s._scalar("PRAGMA foreign_keys") == 1 and s._scalar("PRAGMA synchronous") == 1   # NORMAL
    else:
        assert s._all("SELECT version FROM schema_version") == [{"version": len(MIGRATIONS)}]
    s.seed_orders(ORDERS)
    again = make_store()                       # reopening migrates nothing and keeps the data
    assert again.schema_version == len(MIGRATIONS) and again.order_count() == s.order_count()


def test_targets_and_backends(tmp_path, pg_url):
    assert store_url(tmp_path / "a.sqlite").get_backend_name() == "sqlite"
    s = Store(f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert s.backend == "sqlite" and s.path == tmp_path / "b.sqlite" and s.path.is_file()
    assert store_url("postgres://u:secret@db.example/x").drivername == "postgresql+psycopg"
    assert store_url("postgresql://u@db.example/x").drivername == "postgresql+psycopg"
    with pytest.raises(ArtifactError, match="postgresql://"):
        store_url("mysql://u@db.example/x")
    pg = Store(pg_url.replace("postgresql://", "postgres://", 1), pool_size=2)   # the pgserver URI, host=/socket
    assert pg.backend == "postgresql" and pg.path is None and pg.schema_version == len(MIGRATIONS)
    pg.close()


def test_seeding_is_idempotent(make_store):
    s = make_store()
    n = s.seed_orders(ORDERS)
    assert n >= 40 and s.seed_orders(ORDERS) == 0 and s.order_count() == n
    order = s.get_order("hc-104233")
    assert order.order_id == "HC-104233" and order.items


def test_corrupt_store_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ArtifactError, match="not a usable SQLite store"):
        Store(bad)


def test_newer_schema_is_refused(make_store, store_url):
    s = make_store()
    if s.backend == "sqlite":
        s.close()
        conn = sqlite3.connect(s.path)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
        conn.close()
    else:
        s._run("UPDATE schema_version SET version = :v", {"v": len(MIGRATIONS) + 5})
    with pytest.raises(ArtifactError, match="newer than this code"):
        Store(store_url)


def test_concurrent_sessions_do_not_lose_writes(make_store):
    s = make_store()

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


def test_closing_a_ticket_releases_the_session(make_store):
    s = make_store()
    s.save(SessionState("x", handoff=True, ticket_id="T-00001"))
    tid = s.open_ticket("x", "asked for a person", [{"role": "user", "text": "agent"}])
    assert s.tickets("open")[0]["ticket_id"] == tid
    assert s.close_ticket(tid, "done") == "x"
    assert not s.load("x").handoff and s.tickets("open") == []
    assert s.close_ticket(tid) is None


def test_ticket_ids_survive_a_deleted_ticket(make_store):
    # Old code: ids were COUNT(*)+1, so after a delete every later handoff failed with a UNIQUE error.
    s = make_store()
    ids = [s.open_ticket(f"s{i}", "asked for a person", []) for i in range(3)]
    assert ids == ["T-00001", "T-00002", "T-00003"]
    s._run("DELETE FROM tickets WHERE ticket_id = 'T-00002'")
    assert s.open_ticket("s9", "asked for a person", []) == "T-00004"
    s._run("DELETE FROM tickets WHERE ticket_id = 'T-00004'")   # even the newest: never reused
    assert s.open_ticket("s10", "asked for a person", []) == "T-00005"
    assert [t["ticket_id"] for t in s.tickets()] == ["T-00001", "T-00003", "T-00005"]


def test_autoincrement_ids_on_both_backends(make_store):
    s = make_store()
    s.seed_orders(ORDERS)
    first = s.create_return("HC-104240", "unopened", 0.0, 10.0)
    s.update_order("HC-104240", status="delivered")
    s._run("UPDATE returns SET status = 'refunded'")
    assert s.create_return("HC-104240", "unopened", 0.0, 10.0) == first + 1
    s.add_feedback("x", 5, "great")
    s.add_feedback("x", 4)
    assert [r["id"] for r in s._all("SELECT id FROM feedback ORDER BY id")] == [1, 2]
    s.append_transcript("x", "user", "hi")
    assert s._scalar("SELECT MAX(id) FROM transcripts") == 1


def _old_store(path: Path, version: int) -> None:
    """An SQLite file as the code of schema `version` left it, with the duplicate open returns and the
    COUNT(*)+1 ticket ids that code could create."""
    conn = sqlite3.connect(path)
    for v in range(1, version + 1):
        conn.executescript(";\n".join(migration_statements(v, "sqlite")))
    conn.execute("INSERT INTO customers VALUES ('a@example.com', 'A')")
    conn.execute("INSERT INTO orders(order_id, email, status, total, updated_at) VALUES ('HC-100001', 'a@example.com', "
                 "'return_requested', 10, 0)")
    for _ in range(2 if version == 1 else 1):
        conn.execute("INSERT INTO returns(order_id, condition, restocking_fee, refund_amount, status, created_at) "
                     "VALUES ('HC-100001', 'unopened', 0, 10, 'requested', 0)")
    for tid in ("T-00001", "T-00003"):
        if version == 1:
            conn.execute("INSERT INTO tickets VALUES (?, 's', 'r', '[]', 'open', 0, NULL, NULL)", (tid,))
        else:
            conn.execute("INSERT INTO tickets(id, ticket_id, session_id, reason, transcript, status, created_at) "
                         "VALUES (?, ?, 's', 'r', '[]', 'open', 0)", (int(tid[2:]), tid))
    conn.execute("INSERT INTO sessions VALUES ('s', '{\"session_id\": \"s\", \"handoff\": true}', 0)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_sqlite_store_is_migrated(tmp_path, version):
    path = tmp_path / f"v{version}.sqlite"
    _old_store(path, version)
    s = Store(path)
    assert s.schema_version == len(MIGRATIONS)
    assert [t["ticket_id"] for t in s.tickets()] == ["T-00001", "T-00003"]
    assert s.open_ticket("s", "r", []) == "T-00004"
    statuses = [r["status"] for r in s.returns_for("HC-100001")]
    assert statuses == (["requested", "duplicate"] if version == 1 else ["requested"])
    assert s.load("s").handoff and s.get_order("HC-100001").customer_name == "A"
    assert s.rate_hit("k", 1, 0.0) and s.api_keys() == []       # the v3 tables are there


def test_a_fresh_postgresql_database_is_migrated_once(pg_url):
    # Several replicas starting together on a fresh database: one migrates, the others wait for it.
    barrier, stores, errors = threading.Barrier(3), [], []

    def open_it():
        barrier.wait()
        try:
            stores.append(Store(pg_url, pool_size=2))
        except Exception as exc:   # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(stores) == 3
    s = stores[0]
    assert s._all("SELECT version FROM schema_version") == [{"version": len(MIGRATIONS)}]
    tables = {r["table_name"] for r in s._all(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"orders", "returns", "tickets", "sessions", "confirmations", "verification_failures", "tokens",
            "rate_counters", "api_keys", "schema_version"} <= tables and "tickets_v2" not in tables
    assert s._scalar("SELECT data_type FROM information_schema.columns WHERE table_name = 'sessions' "
                     "AND column_name = 'updated_at'") == "double precision"
    for other in stores:
        other.close()


def test_closing_a_ticket_during_a_turn_is_not_lost(make_store):
    # Old code: the turn loaded the session in handoff, the operator closed the ticket, the turn saved
    # its copy: the ticket was closed and the customer stuck in handoff for good.
    s = make_store()
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


# -- several processes on one database ---------------------------------------------------------------
def test_two_processes_racing_a_return_create_one(make_store):
    stores = [make_store(), make_store()]     # two "processes" on the same database
    stores[0].seed_orders(ORDERS)
    barrier, outcomes = threading.Barrier(2), []

    def confirm(store):
        barrier.wait()
        try:
            outcomes.append(store.create_return("HC-104240", "unopened", 0.0, 10.0,
                                                expect_status=("delivered", "return_requested")))
        except WriteConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=confirm, args=(s,)) for s in stores]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(outcomes, key=str) == [1, "conflict"]
    assert [r["status"] for r in stores[1].returns_for("HC-104240")] == ["requested"]


def test_a_refused_write_inside_a_transaction_leaves_it_usable(store):
    # PostgreSQL aborts a transaction at its first error; the store's savepoint keeps the rest of it.
    store.create_return("HC-104240", "unopened", 0.0, 10.0)
    with store.transaction():
        with pytest.raises(WriteConflict, match="already has an open return"):
            store.create_return("HC-104240", "unopened", 0.0, 10.0, expect_status=("return_requested",))
        store.append_transcript("s", "assistant", "that order already has a return")
    assert len(store.returns_for("HC-104240")) == 1 and len(store.transcript("s")) == 1


def test_the_turn_lock_excludes_other_processes_for_that_session_only(make_store):
    a, b = make_store(), make_store()          # two processes (SQLite: one process, the documented case)
    if a.backend == "sqlite":
        b = a
    got = threading.Event()

    def second_turn():
        with b.session_lock("s1"):
            got.set()

    with a.session_lock("s1"):
        t = threading.Thread(target=second_turn)
        t.start()
        assert not got.wait(0.3)               # the same conversation waits...
        with b.session_lock("s2"):             # ...another one does not
            pass
    assert got.wait(5)
    t.join()


def test_the_turn_lock_is_released_on_an_exception(make_store):
    a, b = make_store(), make_store()
    with pytest.raises(RuntimeError):
        with a.session_lock("s1"):
            raise RuntimeError("the turn failed")
    finished = threading.Event()

    def next_turn():
        with b.session_lock("s1"):
            finished.set()

    t = threading.Thread(target=next_turn)
    t.start()
    assert finished.wait(5)
    t.join()


def test_many_turns_at_once_do_not_exhaust_the_pool(make_store):
    s = make_store(pool_size=2)
    s.seed_orders(ORDERS)
    errors = []

    def turn(i):
        try:
            with s.session_lock(f"s{i}"):
                state = s.load(f"s{i}")
                with s.transaction():
                    s.save(state)
                    s.append_transcript(f"s{i}", "user", "hi")
        except Exception as exc:   # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and all(len(s.transcript(f"s{i}")) == 1 for i in range(8))


def test_rate_counts_are_shared_by_processes(make_store):
    a, b = make_store(), make_store()
    now = 600.0 * 1000 + 5
    assert [a.rate_hit("ip:1", 3, now), b.rate_hit("ip:1", 3, now), a.rate_hit("ip:1", 3, now)] == [True] * 3
    assert not b.rate_hit("ip:1", 3, now) and a.rate_hit("ip:2", 3, now)
    assert a.rate_hit("ip:1", 3, now + 60)     # the next window


def test_verification_failures_counted_at_once_are_all_counted(make_store):
    stores = [make_store(), make_store()]
    barrier = threading.Barrier(2)

    def fail(store):
        barrier.wait()
        for _ in range(5):
            store.record_verification_failure({"order:HC-1": 100, "session:x": 100}, time.time(), lockout_s=900,
                                              backoff_s=0)

    threads = [threading.Thread(target=fail, args=(s,)) for s in stores]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert stores[0].verification_failures("order:HC-1") == 10 == stores[1].verification_failures("session:x")


def test_tokens_and_api_keys(make_store):
    s = make_store()
    s.create_token("h1", "chat", "sess", 100.0, {"a": 1})
    assert s.use_token("h1", "chat", 105.0, idle_ttl=60, max_age=3600) == \
        {"session_id": "sess", "data": {"a": 1}, "created_at": 100.0}
    assert s.use_token("h1", "browser", 105.0, idle_ttl=60, max_age=3600) is None
    assert s.update_token("h1", session_id="sess2", data={"b": 2}) and not s.update_token("nope", data={})
    assert s.use_token("h1", "chat", 106.0, idle_ttl=60, max_age=3600)["session_id"] == "sess2"
    assert s.use_token("h1", "chat", 500.0, idle_ttl=60, max_age=3600) is None      # idle: deleted
    s.create_token("h2", "chat", "s", 100.0)
    s.create_token("h3", "chat", "s", 1000.0)
    assert s.purge_tokens(1010.0, idle_ttl=60, max_age=3600) == 1
    s.delete_token("h3")
    assert s._scalar("SELECT COUNT(*) FROM tokens") == 0
    s.create_token("h4", "chat", "s", 1.0)
    with pytest.raises(sa.exc.IntegrityError):
        s.create_token("h4", "chat", "s", 1.0)
    s.add_api_key("k1", "shop", "digest", ["https://shop.example"], 30, 1.0)
    s.add_api_key("k2", "other", "digest2", [], None, 2.0)
    assert s.api_key("k1") == {"key_id": "k1", "name": "shop", "secret_hash": "digest",
                               "origins": ["https://shop.example"], "rate_per_minute": 30, "created_at": 1.0,
                               "revoked_at": None}
    assert [k["key_id"] for k in s.api_keys()] == ["k1", "k2"] and s.api_key("nope") is None
    assert s.revoke_api_key("k1", 3.0) and not s.revoke_api_key("k1", 4.0)
    assert s.api_key("k1")["revoked_at"] == 3.0
