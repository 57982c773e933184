"""The service's persistent state in one SQLite file (WAL): customers, orders, returns,
transcripts, tickets, feedback and conversation sessions.

Opened once per process; each thread gets its own connection (WAL lets readers and one writer
work at once), and writes run in short transactions. The schema is versioned with
`PRAGMA user_version` and migrated forward on open.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from core.errors import ArtifactError, DataError
from core.jsonl import read_jsonl
from service.sessions import SessionState

log = logging.getLogger(__name__)

MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE customers (email TEXT PRIMARY KEY, name TEXT NOT NULL);
    CREATE TABLE orders (
        order_id TEXT PRIMARY KEY, email TEXT NOT NULL REFERENCES customers(email),
        status TEXT NOT NULL, placed_at TEXT, shipped_at TEXT, delivered_at TEXT,
        carrier TEXT, tracking TEXT, shipping_address TEXT, total REAL NOT NULL,
        refund_status TEXT, updated_at REAL NOT NULL);
    CREATE TABLE order_items (
        order_id TEXT NOT NULL REFERENCES orders(order_id), product_id TEXT NOT NULL,
        title TEXT NOT NULL, qty INTEGER NOT NULL, price REAL NOT NULL, opened INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE returns (
        return_id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL REFERENCES orders(order_id),
        condition TEXT NOT NULL, restocking_fee REAL NOT NULL, refund_amount REAL NOT NULL,
        status TEXT NOT NULL, created_at REAL NOT NULL);
    CREATE TABLE transcripts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, role TEXT NOT NULL,
        text TEXT NOT NULL, action TEXT, intent TEXT, confidence REAL, created_at REAL NOT NULL);
    CREATE INDEX transcripts_session ON transcripts(session_id, id);
    CREATE TABLE tickets (
        ticket_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, reason TEXT NOT NULL,
        transcript TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, closed_at REAL, note TEXT);
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, rating INTEGER NOT NULL,
        comment TEXT, created_at REAL NOT NULL);
    CREATE TABLE sessions (session_id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at REAL NOT NULL);
    """,
    # version 2: trust. Ticket ids come from the database's own key (COUNT(*)+1 collided after a
    # delete); at most one open return per order; one row per confirmed write (its idempotency key);
    # verification failures per order and per session, kept here so that every process sees them.
    """
    CREATE TABLE tickets_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ticket_id TEXT UNIQUE, session_id TEXT NOT NULL,
        reason TEXT NOT NULL, transcript TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
        closed_at REAL, note TEXT);
    INSERT INTO tickets_v2(id, ticket_id, session_id, reason, transcript, status, created_at, closed_at, note)
        SELECT CASE WHEN ticket_id GLOB 'T-[0-9]*' AND CAST(substr(ticket_id, 3) AS INTEGER) > 0
                    THEN CAST(substr(ticket_id, 3) AS INTEGER) END,
               ticket_id, session_id, reason, transcript, status, created_at, closed_at, note
        FROM tickets ORDER BY created_at;
    DROP TABLE tickets;
    ALTER TABLE tickets_v2 RENAME TO tickets;
    CREATE INDEX tickets_session ON tickets(session_id, status);
    UPDATE returns SET status = 'duplicate' WHERE status IN ('requested', 'received') AND return_id NOT IN
        (SELECT MIN(return_id) FROM returns WHERE status IN ('requested', 'received') GROUP BY order_id);
    CREATE UNIQUE INDEX returns_one_open ON returns(order_id) WHERE status IN ('requested', 'received');
    CREATE TABLE confirmations (
        key TEXT PRIMARY KEY, session_id TEXT NOT NULL, flow TEXT NOT NULL, order_id TEXT,
        result TEXT NOT NULL, created_at REAL NOT NULL);
    CREATE TABLE verification_failures (
        subject TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_failure_at REAL NOT NULL,
        locked_until REAL NOT NULL DEFAULT 0, hard INTEGER NOT NULL DEFAULT 0)
    """,
]

OPEN_RETURN = ("requested", "received")   # a return in one of these blocks another on the same order


class WriteConflict(Exception):
    """A conditional write found the row no longer in the expected state (nothing was written)."""


@dataclass(frozen=True)
class VerificationLock:
    """Why verification is refused right now: `until` (epoch seconds); `hard` after too many failures
    (a person takes over), else a short back-off between attempts."""
    until: float
    hard: bool


@dataclass
class OrderItem:
    product_id: str
    title: str
    qty: int
    price: float
    opened: bool


@dataclass
class Order:
    order_id: str
    email: str
    customer_name: str
    status: str
    placed_at: str | None
    shipped_at: str | None
    delivered_at: str | None
    carrier: str | None
    tracking: str | None
    shipping_address: str | None
    total: float
    refund_status: str | None
    items: list[OrderItem]


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ArtifactError(f"{self.path}: not a usable SQLite store ({exc}); move it away and restart "
                                "to create a fresh one") from None

    # -- connections --------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: the database's write lock, across processes).
        A nested call on the same thread is a savepoint inside the outer transaction, so
        `transaction()` can make several store calls (a check, a write, the session's state) commit
        or fail together, and a failed inner call leaves nothing of itself behind."""
        conn = self._conn()
        depth = getattr(self._local, "depth", 0)
        if depth:
            name = f"sp{depth}"
            conn.execute(f"SAVEPOINT {name}")
            self._local.depth = depth + 1
            try:
                yield conn
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._local.depth = depth
            conn.execute(f"RELEASE {name}")
            return
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            self._local.depth = 1
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._local.depth = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything the store does on this thread inside the block is one transaction; the
        reads see the state the writes will change (no other writer can come in between)."""
        with self._tx():
            yield

    def _migrate(self) -> None:
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise ArtifactError(f"{self.path}: schema version {version} is newer than this code "
                                    f"({len(MIGRATIONS)}); upgrade Attendant")
            for v in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {v + 1}")

    @property
    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- orders -------------------------------------------------------------------------------
    def order_count(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM orders").fetchone()[0]

    def seed_orders(self, path: Path) -> int:
        """Load demo/operator orders from JSON Lines; existing orders are left as they are."""
        rows = read_jsonl(path, what="order")
        added = 0
        with self._tx() as conn:
            for n, o in enumerate(rows, 1):
                try:
                    conn.execute("INSERT OR IGNORE INTO customers(email, name) VALUES (?, ?)",
                                 (o["email"].lower(), o.get("customer_name") or ""))
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (o["order_id"].upper(), o["email"].lower(), o["status"], o.get("placed_at"),
                         o.get("shipped_at"), o.get("delivered_at"), o.get("carrier"), o.get("tracking"),
                         o.get("shipping_address"), float(o.get("total") or 0), o.get("refund_status"), time.time()))
                    if cur.rowcount:
                        added += 1
                        for it in o.get("items") or []:
                            conn.execute("INSERT INTO order_items VALUES (?,?,?,?,?,?)",
                                         (o["order_id"].upper(), it["product_id"], it.get("title", ""),
                                          int(it.get("qty", 1)), float(it.get("price", 0)), int(bool(it.get("opened")))))
                except (KeyError, TypeError, ValueError) as exc:
                    raise DataError(f"{path}: order on line {n} is missing or has a bad field ({exc})") from None
        log.info("seeded %d orders from %s", added, path)
        return added

    def get_order(self, order_id: str) -> Order | None:
        conn = self._conn()
        row = conn.execute("SELECT o.*, c.name AS customer_name FROM orders o JOIN customers c USING(email) "
                           "WHERE order_id = ?", (order_id.upper(),)).fetchone()
        if row is None:
            return None
        items = [OrderItem(r["product_id"], r["title"], r["qty"], r["price"], bool(r["opened"]))
                 for r in conn.execute("SELECT * FROM order_items WHERE order_id = ?", (row["order_id"],))]
        return Order(row["order_id"], row["email"], row["customer_name"], row["status"], row["placed_at"],
                     row["shipped_at"], row["delivered_at"], row["carrier"], row["tracking"],
                     row["shipping_address"], row["total"], row["refund_status"], items)

    def update_order(self, order_id: str, *, expect_status: Iterable[str] | None = None, **fields: Any) -> None:
        """Change an order. With `expect_status`, only while its status is one of those (checked by the
        UPDATE itself); otherwise nothing is written and `WriteConflict` is raised."""
        allowed = {"status", "shipping_address", "refund_status"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"can only update {sorted(allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        where, args = "order_id = ?", [order_id.upper()]
        if expect_status is not None:
            expected = list(expect_status)
            where += f" AND status IN ({', '.join('?' * len(expected))})"
            args += expected
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE orders SET {sets}, updated_at = ? WHERE {where}",
                               (*fields.values(), time.time(), *args))
            if expect_status is not None and cur.rowcount != 1:
                raise WriteConflict(f"order {order_id} is no longer {'/'.join(expected)}")

    def create_return(self, order_id: str, condition: str, restocking_fee: float, refund_amount: float, *,
                      expect_status: Iterable[str] = ("delivered",)) -> int:
        """Open a return and mark the order; `WriteConflict` (nothing written) when the order is not in
        `expect_status` or already has an open return (a unique index allows one per order)."""
        expected = list(expect_status)
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE orders SET status = 'return_requested', updated_at = ? WHERE order_id = ? "
                f"AND status IN ({', '.join('?' * len(expected))})", (time.time(), order_id.upper(), *expected))
            if cur.rowcount != 1:
                raise WriteConflict(f"order {order_id} is no longer {'/'.join(expected)}")
            try:
                cur = conn.execute("INSERT INTO returns(order_id, condition, restocking_fee, refund_amount, status, "
                                   "created_at) VALUES (?,?,?,?,?,?)", (order_id.upper(), condition, restocking_fee,
                                                                      refund_amount, "requested", time.time()))
            except sqlite3.IntegrityError:
                raise WriteConflict(f"order {order_id} already has an open return") from None
            return int(cur.lastrowid)

    # -- confirmed writes: one result per idempotency key ----------------------------------------
    def confirmation_result(self, key: str) -> str | None:
        row = self._conn().execute("SELECT result FROM confirmations WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def record_confirmation(self, key: str, session_id: str, flow: str, order_id: str | None, result: str) -> None:
        """Remember what a confirmed write answered (call it inside the write's transaction); the key is
        unique, so the same confirmation can never be applied twice."""
        with self._tx() as conn:
            conn.execute("INSERT INTO confirmations(key, session_id, flow, order_id, result, created_at) "
                         "VALUES (?,?,?,?,?,?)", (key, session_id, flow, order_id, result, time.time()))

    # -- verification failures (per order number and per session) ------------------------------
    def verification_lock(self, subjects: Iterable[str], now: float | None = None) -> VerificationLock | None:
        """The lock in force on any of `subjects` (a hard one first), or None when checking is allowed."""
        now = time.time() if now is None else now
        subjects = list(subjects)
        row = self._conn().execute(
            f"SELECT locked_until, hard FROM verification_failures WHERE subject IN "
            f"({', '.join('?' * len(subjects))}) AND locked_until > ? ORDER BY hard DESC, locked_until DESC LIMIT 1",
            (*subjects, now)).fetchone()
        return None if row is None else VerificationLock(float(row["locked_until"]), bool(row["hard"]))

    def record_verification_failure(self, limits: dict[str, int], now: float | None = None, *, lockout_s: float,
                                    backoff_s: float) -> VerificationLock | None:
        """Count one failed check against each subject (`{subject: its limit}`). Failures older than
        `lockout_s` are forgotten, and so are those before a hard lock that has run out. From the
        second failure on, the subject waits `backoff_s * 2^(n-2)` seconds before its next check; at
        its limit it is locked (hard) for `lockout_s`. Returns the lock now in force."""
        now = time.time() if now is None else now
        with self._tx() as conn:
            for subject, limit in limits.items():
                row = conn.execute("SELECT failures, last_failure_at, locked_until, hard FROM verification_failures "
                                   "WHERE subject = ?", (subject,)).fetchone()
                failures = 0
                if row is not None and now - row["last_failure_at"] <= lockout_s \
                        and not (row["hard"] and row["locked_until"] <= now):
                    failures = int(row["failures"])
                failures += 1
                hard = failures >= limit
                if hard:
                    until = now + lockout_s
                elif failures >= 2 and backoff_s > 0:
                    until = now + min(lockout_s, backoff_s * 2 ** (failures - 2))
                else:
                    until = 0.0
                conn.execute("INSERT INTO verification_failures(subject, failures, last_failure_at, locked_until, hard) "
                             "VALUES (?,?,?,?,?) ON CONFLICT(subject) DO UPDATE SET failures = excluded.failures, "
                             "last_failure_at = excluded.last_failure_at, locked_until = excluded.locked_until, "
                             "hard = excluded.hard", (subject, failures, now, until, int(hard)))
            return self.verification_lock(limits, now)

    def verification_failures(self, subject: str) -> int:
        row = self._conn().execute("SELECT failures FROM verification_failures WHERE subject = ?",
                                   (subject,)).fetchone()
        return 0 if row is None else int(row[0])

    def returns_for(self, order_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn().execute("SELECT * FROM returns WHERE order_id = ?", (order_id.upper(),))]

    # -- conversations ------------------------------------------------------------------------
    def append_transcript(self, session_id: str, role: str, text: str, action: str | None = None,
                          intent: str | None = None, confidence: float | None = None) -> None:
        """`text` must already be redacted: the store never sees raw personal data."""
        with self._tx() as conn:
            conn.execute("INSERT INTO transcripts(session_id, role, text, action, intent, confidence, created_at) "
                         "VALUES (?,?,?,?,?,?,?)", (session_id, role, text, action, intent, confidence, time.time()))

    def transcript(self, session_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn().execute(
            "SELECT role, text, action, intent, confidence, created_at FROM transcripts WHERE session_id = ? ORDER BY id",
            (session_id,))]

    def open_ticket(self, session_id: str, reason: str, transcript: list[dict[str, Any]]) -> str:
        """A new open ticket; its id comes from the table's AUTOINCREMENT key, never reused."""
        with self._tx() as conn:
            cur = conn.execute("INSERT INTO tickets(session_id, reason, transcript, status, created_at) "
                               "VALUES (?,?,?,?,?)", (session_id, reason, json.dumps(transcript), "open", time.time()))
            ticket_id = f"T-{int(cur.lastrowid):05d}"
            conn.execute("UPDATE tickets SET ticket_id = ? WHERE id = ?", (ticket_id, cur.lastrowid))
        return ticket_id

    def tickets(self, status: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM tickets", ()
        if status:
            q, args = q + " WHERE status = ?", (status,)
        out = []
        for r in self._conn().execute(q + " ORDER BY id", args):
            d = dict(r)
            d.pop("id", None)
            d["transcript"] = json.loads(d["transcript"])
            out.append(d)
        return out

    def close_ticket(self, ticket_id: str, note: str = "") -> str | None:
        """Close a ticket and release its session from handoff; returns the session id."""
        with self._tx() as conn:
            row = conn.execute("SELECT session_id FROM tickets WHERE ticket_id = ? AND status = 'open'",
                               (ticket_id,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE tickets SET status = 'closed', closed_at = ?, note = ? WHERE ticket_id = ?",
                         (time.time(), note, ticket_id))
            # The session is released here and, whatever a turn running at this moment saves, again
            # when it is next loaded: `load` checks the ticket it waits on (the tickets table decides).
            state = self._read_state(conn, row[0])
            if state is not None and state.handoff and state.ticket_id == ticket_id:
                _release(state)
                conn.execute("UPDATE sessions SET state = ?, updated_at = ? WHERE session_id = ?",
                             (json.dumps(state.to_dict()), time.time(), row[0]))
            return row[0]

    def add_feedback(self, session_id: str, rating: int, comment: str = "") -> None:
        with self._tx() as conn:
            conn.execute("INSERT INTO feedback(session_id, rating, comment, created_at) VALUES (?,?,?,?)",
                         (session_id, int(rating), comment, time.time()))

    # -- sessions (the SessionStore protocol) -------------------------------------------------
    def _read_state(self, conn: sqlite3.Connection, session_id: str) -> SessionState | None:
        row = conn.execute("SELECT state FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            return None
        try:
            state = SessionState.from_dict(json.loads(row[0]))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            log.warning("session %s had unreadable state; starting it afresh", session_id)
            return SessionState(session_id)
        if state.session_id != session_id:
            log.warning("session %s held the state of another session; starting it afresh", session_id)
            return SessionState(session_id)
        return state

    def load(self, session_id: str) -> SessionState:
        conn = self._conn()
        state = self._read_state(conn, session_id)
        if state is None:
            return SessionState(session_id)
        if state.handoff and state.ticket_id:
            row = conn.execute("SELECT status FROM tickets WHERE ticket_id = ?", (state.ticket_id,)).fetchone()
            if row is not None and row[0] != "open":   # closed while a turn was saving: released all the same
                _release(state)
        return state

    def save(self, state: SessionState) -> None:
        state.history = state.history[-200:]
        state.updated_at = time.time()
        with self._tx() as conn:
            conn.execute("INSERT INTO sessions(session_id, state, updated_at) VALUES (?,?,?) "
                         "ON CONFLICT(session_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                         (state.session_id, json.dumps(state.to_dict()), state.updated_at))

    # -- retention (service/retention.py) -----------------------------------------------------
    def purge(self, *, transcripts_before: float | None = None, closed_tickets_before: float | None = None,
              sessions_before: float | None = None, dry_run: bool = False) -> dict[str, int]:
        """Delete transcript lines created, tickets closed and sessions last used before the given
        epoch times (None: keep that kind); open tickets, and the sessions waiting on them, stay.
        Returns how many rows of each kind were (or, with `dry_run`, would be) deleted."""
        checks = {
            "transcripts": ("transcripts", "created_at < ?", transcripts_before),
            "tickets": ("tickets", "status != 'open' AND COALESCE(closed_at, created_at) < ?", closed_tickets_before),
            "sessions": ("sessions", "updated_at < ? AND session_id NOT IN "
                                     "(SELECT session_id FROM tickets WHERE status = 'open')", sessions_before),
        }
        counts = {}
        if not dry_run:
            self._conn().execute("PRAGMA secure_delete = ON")   # deleted text is overwritten in the file
        with self._tx() as conn:
            for kind, (table, where, before) in checks.items():
                if before is None:
                    counts[kind] = 0
                    continue
                verb = "SELECT COUNT(*) FROM" if dry_run else "DELETE FROM"
                cur = conn.execute(f"{verb} {table} WHERE {where}", (float(before),))
                counts[kind] = cur.fetchone()[0] if dry_run else cur.rowcount
        if not dry_run and any(counts.values()) and not self._conn().in_transaction:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")   # no deleted rows left in the WAL
        return counts


def _release(state: SessionState) -> None:
    state.handoff, state.handoff_reason, state.ticket_id, state.failed_turns = False, None, None, 0
