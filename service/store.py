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
from typing import Any, Iterator

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
]


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
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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

    def update_order(self, order_id: str, **fields: Any) -> None:
        allowed = {"status", "shipping_address", "refund_status"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"can only update {sorted(allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as conn:
            conn.execute(f"UPDATE orders SET {sets}, updated_at = ? WHERE order_id = ?",
                         (*fields.values(), time.time(), order_id.upper()))

    def create_return(self, order_id: str, condition: str, restocking_fee: float, refund_amount: float) -> int:
        with self._tx() as conn:
            cur = conn.execute("INSERT INTO returns(order_id, condition, restocking_fee, refund_amount, status, created_at) "
                               "VALUES (?,?,?,?,?,?)", (order_id.upper(), condition, restocking_fee, refund_amount,
                                                          "requested", time.time()))
            conn.execute("UPDATE orders SET status = 'return_requested', updated_at = ? WHERE order_id = ?",
                         (time.time(), order_id.upper()))
            return int(cur.lastrowid)

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
        with self._tx() as conn:
            n = conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0] + 1
            ticket_id = f"T-{n:05d}"
            conn.execute("INSERT INTO tickets VALUES (?,?,?,?,?,?,?,?)",
                         (ticket_id, session_id, reason, json.dumps(transcript), "open", time.time(), None, None))
        return ticket_id

    def tickets(self, status: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM tickets", ()
        if status:
            q, args = q + " WHERE status = ?", (status,)
        out = []
        for r in self._conn().execute(q + " ORDER BY created_at", args):
            d = dict(r)
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
            state_row = conn.execute("SELECT state FROM sessions WHERE session_id = ?", (row[0],)).fetchone()
            if state_row:
                state = SessionState.from_dict(json.loads(state_row[0]))
                state.handoff, state.handoff_reason, state.ticket_id, state.failed_turns = False, None, None, 0
                conn.execute("UPDATE sessions SET state = ?, updated_at = ? WHERE session_id = ?",
                             (json.dumps(state.to_dict()), time.time(), row[0]))
            return row[0]

    def add_feedback(self, session_id: str, rating: int, comment: str = "") -> None:
        with self._tx() as conn:
            conn.execute("INSERT INTO feedback(session_id, rating, comment, created_at) VALUES (?,?,?,?)",
                         (session_id, int(rating), comment, time.time()))

    # -- sessions (the SessionStore protocol) -------------------------------------------------
    def load(self, session_id: str) -> SessionState:
        row = self._conn().execute("SELECT state FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            return SessionState(session_id)
        try:
            return SessionState.from_dict(json.loads(row[0]))
        except (json.JSONDecodeError, TypeError):
            log.warning("session %s had unreadable state; starting it afresh", session_id)
            return SessionState(session_id)

    def save(self, state: SessionState) -> None:
        state.history = state.history[-200:]
        state.updated_at = time.time()
        with self._tx() as conn:
            conn.execute("INSERT INTO sessions(session_id, state, updated_at) VALUES (?,?,?) "
                         "ON CONFLICT(session_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                         (state.session_id, json.dumps(state.to_dict()), state.updated_at))
