"""The service's persistent state: customers, orders, returns, transcripts, tickets, feedback,
conversation sessions, tokens, rate-limit counters and API keys.

Two backends behind the same SQL (SQLAlchemy Core, `text()` statements with named parameters):

- SQLite, the embedded default: one file (WAL), serving one process. Writes take the database's
  write lock up front (BEGIN IMMEDIATE); turn locks are process-local.
- PostgreSQL (psycopg 3), which several replicas can share. Conditional writes are checked by the
  statements themselves (UPDATE ... WHERE status IN ...; row locks; unique indexes), and a turn
  lock is a PostgreSQL advisory lock, so it excludes the other processes too.

The schema is one ordered list of migrations with small per-dialect substitutions; the version
applied is kept in `PRAGMA user_version` (SQLite, as the files made before PostgreSQL support
have it) or in a `schema_version` table (PostgreSQL), and the store is migrated forward on open.
See docs/store.md.
"""
from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, RowMapping, make_url

from core.errors import ArtifactError, DataError
from core.jsonl import read_jsonl
from service.sessions import SessionLocks, SessionState

log = logging.getLogger(__name__)

# Written once for both dialects: {id} an autoincrement integer key, {real} a double-precision
# float (PostgreSQL's REAL is single precision, too coarse for epoch seconds); the v2 ticket copy
# has its own per-dialect expression (SQLite's GLOB) and, on PostgreSQL, moves the identity on
# past the ids it copied.
MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE customers (email TEXT PRIMARY KEY, name TEXT NOT NULL);
    CREATE TABLE orders (
        order_id TEXT PRIMARY KEY, email TEXT NOT NULL REFERENCES customers(email),
        status TEXT NOT NULL, placed_at TEXT, shipped_at TEXT, delivered_at TEXT,
        carrier TEXT, tracking TEXT, shipping_address TEXT, total {real} NOT NULL,
        refund_status TEXT, updated_at {real} NOT NULL);
    CREATE TABLE order_items (
        order_id TEXT NOT NULL REFERENCES orders(order_id), product_id TEXT NOT NULL,
        title TEXT NOT NULL, qty INTEGER NOT NULL, price {real} NOT NULL, opened INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE returns (
        return_id {id}, order_id TEXT NOT NULL REFERENCES orders(order_id),
        condition TEXT NOT NULL, restocking_fee {real} NOT NULL, refund_amount {real} NOT NULL,
        status TEXT NOT NULL, created_at {real} NOT NULL);
    CREATE TABLE transcripts (
        id {id}, session_id TEXT NOT NULL, role TEXT NOT NULL,
        text TEXT NOT NULL, action TEXT, intent TEXT, confidence {real}, created_at {real} NOT NULL);
    CREATE INDEX transcripts_session ON transcripts(session_id, id);
    CREATE TABLE tickets (
        ticket_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, reason TEXT NOT NULL,
        transcript TEXT NOT NULL, status TEXT NOT NULL, created_at {real} NOT NULL, closed_at {real}, note TEXT);
    CREATE TABLE feedback (
        id {id}, session_id TEXT NOT NULL, rating INTEGER NOT NULL,
        comment TEXT, created_at {real} NOT NULL);
    CREATE TABLE sessions (session_id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at {real} NOT NULL);
    """,
    # version 2: trust. Ticket ids come from the database's own key (COUNT(*)+1 collided after a
    # delete); at most one open return per order; one row per confirmed write (its idempotency key);
    # verification failures per order and per session, kept here so that every process sees them.
    """
    CREATE TABLE tickets_v2 (
        id {id}, ticket_id TEXT UNIQUE, session_id TEXT NOT NULL,
        reason TEXT NOT NULL, transcript TEXT NOT NULL, status TEXT NOT NULL, created_at {real} NOT NULL,
        closed_at {real}, note TEXT);
    INSERT INTO tickets_v2(id, ticket_id, session_id, reason, transcript, status, created_at, closed_at, note)
        SELECT {ticket_number}, ticket_id, session_id, reason, transcript, status, created_at, closed_at, note
        FROM tickets ORDER BY created_at;
    {tickets_v2_identity};
    DROP TABLE tickets;
    ALTER TABLE tickets_v2 RENAME TO tickets;
    CREATE INDEX tickets_session ON tickets(session_id, status);
    UPDATE returns SET status = 'duplicate' WHERE status IN ('requested', 'received') AND return_id NOT IN
        (SELECT MIN(return_id) FROM returns WHERE status IN ('requested', 'received') GROUP BY order_id);
    CREATE UNIQUE INDEX returns_one_open ON returns(order_id) WHERE status IN ('requested', 'received');
    CREATE TABLE confirmations (
        key TEXT PRIMARY KEY, session_id TEXT NOT NULL, flow TEXT NOT NULL, order_id TEXT,
        result TEXT NOT NULL, created_at {real} NOT NULL);
    CREATE TABLE verification_failures (
        subject TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_failure_at {real} NOT NULL,
        locked_until {real} NOT NULL DEFAULT 0, hard INTEGER NOT NULL DEFAULT 0)
    """,
    # version 3: deployment. What the web layer used to keep in one process's memory, so that several
    # replicas share it: conversation/browser/operator tokens (stored as SHA-256 digests, never the
    # token), fixed-window rate-limit counters, and the REST API's keys (secret digests too).
    """
    CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, session_id TEXT NOT NULL, data TEXT NOT NULL,
        created_at {real} NOT NULL, last_used_at {real} NOT NULL);
    CREATE INDEX tokens_last_used ON tokens(last_used_at);
    CREATE TABLE rate_counters (
        key TEXT NOT NULL, window_start BIGINT NOT NULL, hits INTEGER NOT NULL, PRIMARY KEY (key, window_start));
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash TEXT NOT NULL, origins TEXT NOT NULL,
        rate_per_minute INTEGER, created_at {real} NOT NULL, revoked_at {real})
    """,
    # version 4: operators see inside and improve. Every turn's two transcript lines share a server-made
    # turn id; the assistant's line records the model version that answered, the turn's latency, why
    # it decided (ids and scores only, never message text) and the customer's thumbs (+1/-1). Ratings
    # record the version too; operators' corrections are kept with who made them and when; `settings`
    # holds what every replica must agree on (e.g. which model version is served).
    """
    ALTER TABLE transcripts ADD COLUMN turn_id TEXT;
    ALTER TABLE transcripts ADD COLUMN model_version TEXT;
    ALTER TABLE transcripts ADD COLUMN latency_ms {real};
    ALTER TABLE transcripts ADD COLUMN details TEXT;
    ALTER TABLE transcripts ADD COLUMN feedback INTEGER;
    CREATE UNIQUE INDEX transcripts_turn ON transcripts(turn_id, role);
    CREATE INDEX transcripts_created ON transcripts(created_at);
    ALTER TABLE feedback ADD COLUMN model_version TEXT;
    CREATE INDEX feedback_created ON feedback(created_at);
    CREATE TABLE corrections (
        id {id}, turn_id TEXT, session_id TEXT, kind TEXT NOT NULL, payload TEXT NOT NULL,
        author TEXT NOT NULL, created_at {real} NOT NULL);
    CREATE INDEX corrections_turn ON corrections(turn_id);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at {real} NOT NULL)
    """,
]

DIALECT_SQL: dict[str, dict[str, str]] = {
    "sqlite": {
        "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "real": "REAL",
        "ticket_number": "CASE WHEN ticket_id GLOB 'T-[0-9]*' AND CAST(substr(ticket_id, 3) AS INTEGER) > 0 "
                         "THEN CAST(substr(ticket_id, 3) AS INTEGER) END",
        "tickets_v2_identity": "",          # AUTOINCREMENT follows explicit ids by itself
    },
    "postgresql": {
        "id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "real": "DOUBLE PRECISION",
        "ticket_number": "NULLIF(CAST(substring(ticket_id FROM '^T-([0-9]{1,18})') AS BIGINT), 0)",
        "tickets_v2_identity": "SELECT setval(pg_get_serial_sequence('tickets_v2', 'id'), "
                               "COALESCE(MAX(id), 0) + 1, false) FROM tickets_v2",
    },
}

MIGRATION_LOCK = 0x417474656E64   # pg_advisory_xact_lock key: one process migrates at a time ("Attend")

OPEN_RETURN = ("requested", "received")   # a return in one of these blocks another on the same order


def migration_statements(version: int, dialect: str) -> list[str]:
    """The statements that take a store from `version` - 1 to `version` on `dialect`."""
    sql = MIGRATIONS[version - 1].format(**DIALECT_SQL[dialect])
    return [s.strip() for s in sql.split(";") if s.strip()]


@functools.lru_cache(maxsize=512)
def _sql(statement: str, *expanding: str) -> sa.TextClause:
    """A compiled-once `text()` statement; `expanding` names list parameters (`IN :names`)."""
    clause = sa.text(statement)
    return clause.bindparams(*(sa.bindparam(name, expanding=True) for name in expanding)) if expanding else clause


def store_url(target: str | Path) -> URL:
    """The SQLAlchemy URL of a store: a path (an SQLite file), `sqlite:///PATH`, or a
    `postgresql://`/`postgres://` URL (driven by psycopg 3)."""
    if isinstance(target, Path) or "://" not in str(target):
        return URL.create("sqlite", database=str(Path(target)))
    url = make_url(str(target))
    backend = url.drivername.split("+")[0]
    if backend in ("postgres", "postgresql"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        return url.set(drivername="sqlite")
    raise ArtifactError(f"{url.render_as_string(hide_password=True)}: the store is an SQLite file "
                        f"(a path or sqlite:///PATH) or a postgresql:// URL")


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
    """`target`: a path (an SQLite file, created when missing), `sqlite:///PATH`, or a PostgreSQL
    URL (`postgresql://...` or `postgres://...`). `pool_size`: connections kept per process; as
    many again may be opened under load, and at most `pool_size` of them hold turn locks
    (PostgreSQL), so a turn that holds its lock always finds a connection for its work."""

    def __init__(self, target: str | Path, *, pool_size: int = 20):
        url = store_url(target)
        self.backend: str = "sqlite" if url.get_backend_name() == "sqlite" else "postgresql"
        self.path: Path | None = Path(url.database) if self.backend == "sqlite" else None
        self.location = str(self.path) if self.path is not None else url.render_as_string(hide_password=True)
        self._local = threading.local()
        self._session_locks = SessionLocks()
        self._lock_slots = threading.BoundedSemaphore(pool_size)
        if self.backend == "sqlite":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One writer at a time in this process queues here rather than in SQLite's busy loop.
            self._write_lock: Any = threading.Lock()
            self.engine = sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size,
                                           connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self._write_lock = nullcontext()
            self.engine = sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self._for_update = " FOR UPDATE" if self.backend == "postgresql" else ""   # SQLite: BEGIN IMMEDIATE
        try:
            self._migrate()
        except (sa.exc.DBAPIError, sqlite3.DatabaseError) as exc:
            self.engine.dispose()
            reason = getattr(exc, "orig", None) or exc
            if self.backend == "sqlite":
                raise ArtifactError(f"{self.path}: not a usable SQLite store ({reason}); move it away and restart "
                                    "to create a fresh one") from None
            raise ArtifactError(f"{self.location}: not a usable PostgreSQL store "
                                f"({str(reason).strip().splitlines()[0]})") from None

    # -- connections and transactions ------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """The connection of this thread's transaction, or a pooled one for this read."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as conn:
            yield conn

    def _all(self, statement: str, params: dict[str, Any] | None = None, *expanding: str) -> list[RowMapping]:
        with self._reading() as conn:
            return list(conn.execute(_sql(statement, *expanding), params or {}).mappings())

    def _first(self, statement: str, params: dict[str, Any] | None = None, *expanding: str) -> RowMapping | None:
        with self._reading() as conn:
            return conn.execute(_sql(statement, *expanding), params or {}).mappings().first()

    def _scalar(self, statement: str, params: dict[str, Any] | None = None) -> Any:
        with self._reading() as conn:
            return conn.execute(_sql(statement), params or {}).scalar()

    def _run(self, statement: str, params: dict[str, Any] | None = None, *expanding: str) -> int:
        """One write in its own transaction (or this thread's); returns the rows it changed."""
        with self._tx() as conn:
            return conn.execute(_sql(statement, *expanding), params or {}).rowcount

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE, the database's write lock, across processes).
        A nested call on the same thread is a savepoint inside the outer transaction, so
        `transaction()` can make several store calls (a check, a write, the session's state) commit
        or fail together, and a failed inner call leaves nothing of itself behind."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with conn.begin_nested():
                yield conn
            return
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            self._local.conn = conn
            try:
                with conn.begin():
                    yield conn
            finally:
                self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything the store does on this thread inside the block is one transaction; the
        reads see the state the writes will change (no other writer can come in between on
        SQLite; on PostgreSQL the conditional writes and row locks check it)."""
        with self._tx():
            yield

    def _migrate(self) -> None:
        latest = len(MIGRATIONS)
        with self._tx() as conn:
            if self.backend == "postgresql":
                # Two processes opening a fresh database at once: the second waits, then finds it migrated.
                conn.execute(_sql("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = self._version(conn)
            if version > latest:
                raise ArtifactError(f"{self.location}: schema version {version} is newer than this code "
                                    f"({latest}); upgrade Attendant")
            for v in range(version + 1, latest + 1):
                for statement in migration_statements(v, self.backend):
                    conn.exec_driver_sql(statement)
            if version < latest:
                if self.backend == "sqlite":
                    conn.exec_driver_sql(f"PRAGMA user_version = {latest}")
                else:
                    conn.exec_driver_sql("DELETE FROM schema_version")
                    conn.execute(_sql("INSERT INTO schema_version(version) VALUES (:v)"), {"v": latest})
                log.info("store %s migrated from schema version %d to %d", self.location, version, latest)

    def _version(self, conn: Connection) -> int:
        if self.backend == "sqlite":
            return int(conn.exec_driver_sql("PRAGMA user_version").scalar())
        return int(conn.exec_driver_sql("SELECT COALESCE(MAX(version), 0) FROM schema_version").scalar())

    @property
    def schema_version(self) -> int:
        with self._reading() as conn:
            return self._version(conn)

    def close(self) -> None:
        """Close the pooled connections (SQLite: the last one checkpoints the WAL into the file).
        The store stays usable: a later call opens new ones."""
        self.engine.dispose()

    # -- orders -------------------------------------------------------------------------------
    def order_count(self) -> int:
        return int(self._scalar("SELECT COUNT(*) FROM orders"))

    def seed_orders(self, path: Path) -> int:
        """Load demo/operator orders from JSON Lines; existing orders are left as they are."""
        rows = read_jsonl(path, what="order")
        added = 0
        with self._tx() as conn:
            for n, o in enumerate(rows, 1):
                try:
                    conn.execute(_sql("INSERT INTO customers(email, name) VALUES (:email, :name) "
                                      "ON CONFLICT DO NOTHING"),
                                 {"email": o["email"].lower(), "name": o.get("customer_name") or ""})
                    order = {"order_id": o["order_id"].upper(), "email": o["email"].lower(), "status": o["status"],
                             "placed_at": o.get("placed_at"), "shipped_at": o.get("shipped_at"),
                             "delivered_at": o.get("delivered_at"), "carrier": o.get("carrier"),
                             "tracking": o.get("tracking"), "shipping_address": o.get("shipping_address"),
                             "total": float(o.get("total") or 0), "refund_status": o.get("refund_status"),
                             "updated_at": time.time()}
                    items = [{"order_id": order["order_id"], "product_id": it["product_id"],
                              "title": it.get("title", ""), "qty": int(it.get("qty", 1)),
                              "price": float(it.get("price", 0)), "opened": int(bool(it.get("opened")))}
                             for it in o.get("items") or []]
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise DataError(f"{path}: order on line {n} is missing or has a bad field ({exc})") from None
                cur = conn.execute(_sql(
                    "INSERT INTO orders(order_id, email, status, placed_at, shipped_at, delivered_at, carrier, "
                    "tracking, shipping_address, total, refund_status, updated_at) VALUES (:order_id, :email, "
                    ":status, :placed_at, :shipped_at, :delivered_at, :carrier, :tracking, :shipping_address, "
                    ":total, :refund_status, :updated_at) ON CONFLICT DO NOTHING"), order)
                if cur.rowcount:
                    added += 1
                    if items:
                        conn.execute(_sql("INSERT INTO order_items(order_id, product_id, title, qty, price, opened) "
                                          "VALUES (:order_id, :product_id, :title, :qty, :price, :opened)"), items)
        log.info("seeded %d orders from %s", added, path)
        return added

    def get_order(self, order_id: str) -> Order | None:
        with self._reading() as conn:
            row = conn.execute(_sql("SELECT o.*, c.name AS customer_name FROM orders o JOIN customers c USING(email) "
                                    "WHERE order_id = :id"), {"id": order_id.upper()}).mappings().first()
            if row is None:
                return None
            items = [OrderItem(r["product_id"], r["title"], r["qty"], r["price"], bool(r["opened"]))
                     for r in conn.execute(_sql("SELECT * FROM order_items WHERE order_id = :id"),
                                           {"id": row["order_id"]}).mappings()]
        return Order(row["order_id"], row["email"], row["customer_name"], row["status"], row["placed_at"],
                     row["shipped_at"], row["delivered_at"], row["carrier"], row["tracking"],
                     row["shipping_address"], row["total"], row["refund_status"], items)

    def update_order(self, order_id: str, *, expect_status: Iterable[str] | None = None, **fields: Any) -> None:
        """Change an order. With `expect_status`, only while its status is one of those (checked by the
        UPDATE itself); otherwise nothing is written and `WriteConflict` is raised."""
        allowed = {"status", "shipping_address", "refund_status"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"can only update {sorted(allowed)}")
        sets = ", ".join(f"{k} = :set_{k}" for k in sorted(fields))
        params: dict[str, Any] = {f"set_{k}": v for k, v in fields.items()}
        params.update(id=order_id.upper(), now=time.time())
        where, expanding = "order_id = :id", ()
        if expect_status is not None:
            expected = params["expected"] = list(expect_status)
            where, expanding = where + " AND status IN :expected", ("expected",)
        changed = self._run(f"UPDATE orders SET {sets}, updated_at = :now WHERE {where}", params, *expanding)
        if expect_status is not None and changed != 1:
            raise WriteConflict(f"order {order_id} is no longer {'/'.join(expected)}")

    def create_return(self, order_id: str, condition: str, restocking_fee: float, refund_amount: float, *,
                      expect_status: Iterable[str] = ("delivered",)) -> int:
        """Open a return and mark the order; `WriteConflict` (nothing written) when the order is not in
        `expect_status` or already has an open return (a unique index allows one per order)."""
        expected = list(expect_status)
        with self._tx() as conn:
            cur = conn.execute(_sql("UPDATE orders SET status = 'return_requested', updated_at = :now "
                                    "WHERE order_id = :id AND status IN :expected", "expected"),
                               {"now": time.time(), "id": order_id.upper(), "expected": expected})
            if cur.rowcount != 1:
                raise WriteConflict(f"order {order_id} is no longer {'/'.join(expected)}")
            try:
                return int(conn.execute(_sql(
                    "INSERT INTO returns(order_id, condition, restocking_fee, refund_amount, status, created_at) "
                    "VALUES (:id, :condition, :fee, :refund, 'requested', :now) RETURNING return_id"),
                    {"id": order_id.upper(), "condition": condition, "fee": restocking_fee, "refund": refund_amount,
                     "now": time.time()}).scalar_one())
            except sa.exc.IntegrityError:
                raise WriteConflict(f"order {order_id} already has an open return") from None

    # -- confirmed writes: one result per idempotency key ----------------------------------------
    def confirmation_result(self, key: str) -> str | None:
        return self._scalar("SELECT result FROM confirmations WHERE key = :key", {"key": key})

    def record_confirmation(self, key: str, session_id: str, flow: str, order_id: str | None, result: str) -> None:
        """Remember what a confirmed write answered (call it inside the write's transaction); the key is
        unique, so the same confirmation can never be applied twice (`sqlalchemy.exc.IntegrityError`)."""
        self._run("INSERT INTO confirmations(key, session_id, flow, order_id, result, created_at) "
                  "VALUES (:key, :sid, :flow, :order_id, :result, :now)",
                  {"key": key, "sid": session_id, "flow": flow, "order_id": order_id, "result": result,
                   "now": time.time()})

    # -- verification failures (per order number and per session) ------------------------------
    def verification_lock(self, subjects: Iterable[str], now: float | None = None) -> VerificationLock | None:
        """The lock in force on any of `subjects` (a hard one first), or None when checking is allowed."""
        now = time.time() if now is None else now
        row = self._first("SELECT locked_until, hard FROM verification_failures WHERE subject IN :subjects "
                          "AND locked_until > :now ORDER BY hard DESC, locked_until DESC LIMIT 1",
                          {"subjects": list(subjects), "now": now}, "subjects")
        return None if row is None else VerificationLock(float(row["locked_until"]), bool(row["hard"]))

    def record_verification_failure(self, limits: dict[str, int], now: float | None = None, *, lockout_s: float,
                                    backoff_s: float) -> VerificationLock | None:
        """Count one failed check against each subject (`{subject: its limit}`). Failures older than
        `lockout_s` are forgotten, and so are those before a hard lock that has run out. From the
        second failure on, the subject waits `backoff_s * 2^(n-2)` seconds before its next check; at
        its limit it is locked (hard) for `lockout_s`. Returns the lock now in force.
        Each subject's row is locked while it is counted (SQLite: the write lock; PostgreSQL: the row,
        created first if new), so two processes counting at once both count."""
        now = time.time() if now is None else now
        with self._tx() as conn:
            for subject, limit in sorted(limits.items()):   # one order of row locks: no deadlock
                conn.execute(_sql("INSERT INTO verification_failures(subject, failures, last_failure_at, "
                                  "locked_until, hard) VALUES (:subject, 0, 0, 0, 0) ON CONFLICT DO NOTHING"),
                             {"subject": subject})
                row = conn.execute(_sql("SELECT failures, last_failure_at, locked_until, hard FROM "
                                        "verification_failures WHERE subject = :subject" + self._for_update),
                                   {"subject": subject}).mappings().one()
                failures = 0
                if now - row["last_failure_at"] <= lockout_s and not (row["hard"] and row["locked_until"] <= now):
                    failures = int(row["failures"])
                failures += 1
                hard = failures >= limit
                if hard:
                    until = now + lockout_s
                elif failures >= 2 and backoff_s > 0:
                    until = now + min(lockout_s, backoff_s * 2 ** (failures - 2))
                else:
                    until = 0.0
                conn.execute(_sql("UPDATE verification_failures SET failures = :failures, last_failure_at = :now, "
                                  "locked_until = :until, hard = :hard WHERE subject = :subject"),
                             {"subject": subject, "failures": failures, "now": now, "until": until,
                              "hard": int(hard)})
            return self.verification_lock(limits, now)

    def verification_failures(self, subject: str) -> int:
        value = self._scalar("SELECT failures FROM verification_failures WHERE subject = :subject",
                             {"subject": subject})
        return 0 if value is None else int(value)

    def returns_for(self, order_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._all("SELECT * FROM returns WHERE order_id = :id ORDER BY return_id",
                                           {"id": order_id.upper()})]

    # -- conversations ------------------------------------------------------------------------
    def append_transcript(self, session_id: str, role: str, text: str, action: str | None = None,
                          intent: str | None = None, confidence: float | None = None, *,
                          turn_id: str | None = None, model_version: str | None = None,
                          latency_ms: float | None = None, details: dict[str, Any] | None = None) -> None:
        """`text` must already be redacted: the store never sees raw personal data; `details` holds
        ids and scores only (why the assistant decided), never message text."""
        self._run("INSERT INTO transcripts(session_id, role, text, action, intent, confidence, created_at, turn_id, "
                  "model_version, latency_ms, details) VALUES (:sid, :role, :text, :action, :intent, :confidence, "
                  ":now, :turn_id, :version, :latency, :details)",
                  {"sid": session_id, "role": role, "text": text, "action": action, "intent": intent,
                   "confidence": confidence, "now": time.time(), "turn_id": turn_id, "version": model_version,
                   "latency": latency_ms, "details": None if details is None else json.dumps(details)})

    def transcript(self, session_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._all(
            "SELECT role, text, action, intent, confidence, created_at, turn_id, feedback FROM transcripts "
            "WHERE session_id = :sid ORDER BY id", {"sid": session_id})]

    def set_turn_feedback(self, session_id: str, turn_id: str, value: int) -> bool:
        """The customer's thumbs (+1 up, -1 down, 0 withdrawn) on one of the assistant's turns in *their
        own* conversation: a turn id from another conversation changes nothing (returns False)."""
        if value not in (-1, 0, 1):
            raise ValueError("feedback is +1, -1 or 0")
        return self._run("UPDATE transcripts SET feedback = :value WHERE turn_id = :turn AND session_id = :sid "
                         "AND role = 'assistant'", {"value": value or None, "turn": str(turn_id)[:64],
                                                    "sid": session_id}) == 1

    def turns(self, *, since: float | None = None, until: float | None = None, model_version: str | None = None,
              session_id: str | None = None, turn_id: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
        """Assistant turns, oldest first, each with the customer's (redacted) message that started it:
        {turn_id, session_id, created_at, user_text, text, action, intent, confidence, model_version,
        latency_ms, details (dict), feedback}. Turns recorded before schema version 4 have no turn id
        and are not listed."""
        where, params = ["a.role = 'assistant'", "a.turn_id IS NOT NULL"], {}
        for column, op, name, value in (("a.created_at", ">=", "since", since), ("a.created_at", "<", "until", until),
                                         ("a.model_version", "=", "version", model_version),
                                         ("a.session_id", "=", "sid", session_id),
                                         ("a.turn_id", "=", "turn", turn_id)):
            if value is not None:
                where.append(f"{column} {op} :{name}")
                params[name] = value
        sql = ("SELECT a.turn_id, a.session_id, a.created_at, u.text AS user_text, a.text, a.action, a.intent, "
               "a.confidence, a.model_version, a.latency_ms, a.details, a.feedback FROM transcripts a "
               "LEFT JOIN transcripts u ON u.turn_id = a.turn_id AND u.role = 'user' "
               f"WHERE {' AND '.join(where)} ORDER BY a.created_at, a.id")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        out = []
        for r in self._all(sql, params):
            d = dict(r)
            d["details"] = json.loads(d["details"]) if d["details"] else {}
            out.append(d)
        return out

    def open_ticket(self, session_id: str, reason: str, transcript: list[dict[str, Any]]) -> str:
        """A new open ticket; its id comes from the table's autoincrement key, never reused."""
        with self._tx() as conn:
            row_id = conn.execute(_sql("INSERT INTO tickets(session_id, reason, transcript, status, created_at) "
                                       "VALUES (:sid, :reason, :transcript, 'open', :now) RETURNING id"),
                                  {"sid": session_id, "reason": reason, "transcript": json.dumps(transcript),
                                   "now": time.time()}).scalar_one()
            ticket_id = f"T-{int(row_id):05d}"
            conn.execute(_sql("UPDATE tickets SET ticket_id = :tid WHERE id = :id"), {"tid": ticket_id, "id": row_id})
        return ticket_id

    def tickets(self, status: str | None = None) -> list[dict[str, Any]]:
        where = " WHERE status = :status" if status else ""
        out = []
        for r in self._all(f"SELECT * FROM tickets{where} ORDER BY id", {"status": status} if status else {}):
            d = dict(r)
            d.pop("id", None)
            d["transcript"] = json.loads(d["transcript"])
            out.append(d)
        return out

    def close_ticket(self, ticket_id: str, note: str = "") -> str | None:
        """Close a ticket and release its session from handoff; returns the session id."""
        with self._tx() as conn:
            session_id = conn.execute(_sql("UPDATE tickets SET status = 'closed', closed_at = :now, note = :note "
                                           "WHERE ticket_id = :tid AND status = 'open' RETURNING session_id"),
                                      {"now": time.time(), "note": note, "tid": ticket_id}).scalar()
            if session_id is None:
                return None
            # The session is released here and, whatever a turn running at this moment saves, again
            # when it is next loaded: `load` checks the ticket it waits on (the tickets table decides).
            state = self._read_state(conn, session_id, lock=True)
            if state is not None and state.handoff and state.ticket_id == ticket_id:
                _release(state)
                conn.execute(_sql("UPDATE sessions SET state = :state, updated_at = :now WHERE session_id = :sid"),
                             {"state": json.dumps(state.to_dict()), "now": time.time(), "sid": session_id})
            return session_id

    def add_feedback(self, session_id: str, rating: int, comment: str = "", model_version: str | None = None) -> None:
        """A 1-5 rating of a conversation; `comment` must already be redacted."""
        self._run("INSERT INTO feedback(session_id, rating, comment, created_at, model_version) "
                  "VALUES (:sid, :rating, :comment, :now, :version)",
                  {"sid": session_id, "rating": int(rating), "comment": comment, "now": time.time(),
                   "version": model_version})

    def ratings(self, *, since: float | None = None, until: float | None = None,
                model_version: str | None = None) -> list[dict[str, Any]]:
        where, params = ["1 = 1"], {}
        for column, op, name, value in (("created_at", ">=", "since", since), ("created_at", "<", "until", until),
                                         ("model_version", "=", "version", model_version)):
            if value is not None:
                where.append(f"{column} {op} :{name}")
                params[name] = value
        return [dict(r) for r in self._all("SELECT session_id, rating, comment, created_at, model_version FROM feedback "
                                           f"WHERE {' AND '.join(where)} ORDER BY id", params)]

    # -- shared settings (what every replica reads) --------------------------------------------
    def get_setting(self, key: str) -> tuple[str, float] | None:
        """(value, updated_at) of a shared setting, or None when unset."""
        row = self._first("SELECT value, updated_at FROM settings WHERE key = :key", {"key": key})
        return None if row is None else (row["value"], float(row["updated_at"]))

    def set_setting(self, key: str, value: str) -> None:
        self._run("INSERT INTO settings(key, value, updated_at) VALUES (:key, :value, :now) "
                  "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                  {"key": key, "value": value, "now": time.time()})

    # -- operators' corrections ---------------------------------------------------------------
    def add_correction(self, kind: str, payload: dict[str, Any], author: str, *, turn_id: str | None = None,
                       session_id: str | None = None) -> int:
        """One operator correction (`payload` already redacted); returns its id."""
        with self._tx() as conn:
            return int(conn.execute(_sql(
                "INSERT INTO corrections(turn_id, session_id, kind, payload, author, created_at) "
                "VALUES (:turn, :sid, :kind, :payload, :author, :now) RETURNING id"),
                {"turn": turn_id, "sid": session_id, "kind": kind, "payload": json.dumps(payload), "author": author,
                 "now": time.time()}).scalar_one())

    def corrections(self) -> list[dict[str, Any]]:
        out = []
        for r in self._all("SELECT id, turn_id, session_id, kind, payload, author, created_at FROM corrections ORDER BY id"):
            d = dict(r)
            d["payload"] = json.loads(d["payload"])
            out.append(d)
        return out

    def delete_correction(self, correction_id: int) -> bool:
        """Withdraw one correction (an operator's mistake); True when it existed."""
        return self._run("DELETE FROM corrections WHERE id = :id", {"id": int(correction_id)}) == 1

    # -- sessions (the SessionStore protocol) -------------------------------------------------
    def _read_state(self, conn: Connection, session_id: str, *, lock: bool = False) -> SessionState | None:
        raw = conn.execute(_sql("SELECT state FROM sessions WHERE session_id = :sid" + (self._for_update if lock else "")),
                           {"sid": session_id}).scalar()
        if raw is None:
            return None
        try:
            state = SessionState.from_dict(json.loads(raw))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            log.warning("session %s had unreadable state; starting it afresh", session_id)
            return SessionState(session_id)
        if state.session_id != session_id:
            log.warning("session %s held the state of another session; starting it afresh", session_id)
            return SessionState(session_id)
        return state

    def load(self, session_id: str) -> SessionState:
        with self._reading() as conn:
            state = self._read_state(conn, session_id)
            if state is None:
                return SessionState(session_id)
            if state.handoff and state.ticket_id:
                status = conn.execute(_sql("SELECT status FROM tickets WHERE ticket_id = :tid"),
                                      {"tid": state.ticket_id}).scalar()
                if status is not None and status != "open":   # closed while a turn was saving: released all the same
                    _release(state)
        return state

    def save(self, state: SessionState) -> None:
        state.history = state.history[-200:]
        state.updated_at = time.time()
        self._run("INSERT INTO sessions(session_id, state, updated_at) VALUES (:sid, :state, :now) "
                  "ON CONFLICT(session_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                  {"sid": state.session_id, "state": json.dumps(state.to_dict()), "now": state.updated_at})

    # -- turn locks: one turn per conversation at a time --------------------------------------
    @contextmanager
    def session_lock(self, session_id: str) -> Iterator[None]:
        """Held for a whole turn. SQLite serves one process, so a process-local lock is enough there.
        PostgreSQL: also a session-level advisory lock on the session id, held on a pooled connection
        of its own for the block, so a turn of the same conversation in another process waits too."""
        with self._session_locks[session_id]:       # threads of this process queue here, holding no connection
            if self.backend == "sqlite":
                yield
                return
            with self._lock_slots, self.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")   # no transaction left open while held
                key = {"sid": session_id}
                try:
                    conn.execute(_sql("SELECT pg_advisory_lock(hashtextextended(:sid, 0))"), key)
                except BaseException:
                    conn.invalidate()                # interrupted while waiting: end that database session
                    raise
                try:
                    yield
                finally:
                    try:
                        conn.execute(_sql("SELECT pg_advisory_unlock(hashtextextended(:sid, 0))"), key)
                    except Exception:                # the connection is gone: so is its lock
                        log.warning("could not release the turn lock of session %s; dropping its connection",
                                    session_id, exc_info=True)
                        conn.invalidate()

    # -- tokens (webapp/security.py): server-issued, stored as digests --------------------------
    def create_token(self, token_hash: str, kind: str, session_id: str, now: float,
                     data: dict[str, Any] | None = None) -> None:
        self._run("INSERT INTO tokens(token_hash, kind, session_id, data, created_at, last_used_at) "
                  "VALUES (:hash, :kind, :sid, :data, :now, :now)",
                  {"hash": token_hash, "kind": kind, "sid": session_id, "data": json.dumps(data or {}), "now": now})

    def use_token(self, token_hash: str, kind: str, now: float, *, idle_ttl: float, max_age: float) -> dict[str, Any] | None:
        """The live token of that kind ({session_id, data, created_at}), its idle timer refreshed; an
        expired one is deleted. None when unknown, of another kind or expired."""
        with self._tx() as conn:
            row = conn.execute(_sql("SELECT session_id, data, created_at, last_used_at FROM tokens "
                                    "WHERE token_hash = :hash AND kind = :kind"),
                               {"hash": token_hash, "kind": kind}).mappings().first()
            if row is None:
                return None
            if now - row["last_used_at"] > idle_ttl or now - row["created_at"] > max_age:
                conn.execute(_sql("DELETE FROM tokens WHERE token_hash = :hash"), {"hash": token_hash})
                return None
            if now - row["last_used_at"] > 1.0:   # refresh at most once a second: fewer writes
                conn.execute(_sql("UPDATE tokens SET last_used_at = :now WHERE token_hash = :hash"),
                             {"now": now, "hash": token_hash})
            return {"session_id": row["session_id"], "data": json.loads(row["data"]), "created_at": row["created_at"]}

    def update_token(self, token_hash: str, *, session_id: str | None = None,
                     data: dict[str, Any] | None = None) -> bool:
        sets, params = [], {"hash": token_hash}
        if session_id is not None:
            sets.append("session_id = :sid")
            params["sid"] = session_id
        if data is not None:
            sets.append("data = :data")
            params["data"] = json.dumps(data)
        if not sets:
            return False
        return self._run(f"UPDATE tokens SET {', '.join(sets)} WHERE token_hash = :hash", params) == 1

    def delete_token(self, token_hash: str) -> None:
        self._run("DELETE FROM tokens WHERE token_hash = :hash", {"hash": token_hash})

    def purge_tokens(self, now: float, *, idle_ttl: float, max_age: float) -> int:
        return self._run("DELETE FROM tokens WHERE last_used_at < :idle OR created_at < :old",
                         {"idle": now - idle_ttl, "old": now - max_age})

    # -- rate limits: fixed one-minute windows, counted in the database --------------------------
    def rate_hit(self, key: str, limit: int, now: float, window_s: int = 60) -> bool:
        """Count one request for `key`; False when it is over `limit` in the current window."""
        window = int(now // window_s) * window_s
        with self._tx() as conn:
            hits = conn.execute(_sql("INSERT INTO rate_counters(key, window_start, hits) VALUES (:key, :window, 1) "
                                     "ON CONFLICT(key, window_start) DO UPDATE SET hits = rate_counters.hits + 1 "
                                     "RETURNING hits"), {"key": key, "window": window}).scalar_one()
            if hits == 1 and window % (10 * window_s) == 0:   # now and then: forget old windows
                conn.execute(_sql("DELETE FROM rate_counters WHERE window_start < :before"),
                             {"before": window - window_s})
        return hits <= limit

    # -- API keys (webapp/apikeys.py) -------------------------------------------------------------
    def add_api_key(self, key_id: str, name: str, secret_hash: str, origins: list[str],
                    rate_per_minute: int | None, now: float) -> None:
        self._run("INSERT INTO api_keys(key_id, name, secret_hash, origins, rate_per_minute, created_at) "
                  "VALUES (:key_id, :name, :secret_hash, :origins, :rate, :now)",
                  {"key_id": key_id, "name": name, "secret_hash": secret_hash, "origins": json.dumps(origins),
                   "rate": rate_per_minute, "now": now})

    def api_key(self, key_id: str) -> dict[str, Any] | None:
        row = self._first("SELECT * FROM api_keys WHERE key_id = :key_id", {"key_id": key_id})
        return None if row is None else _key_row(row)

    def api_keys(self) -> list[dict[str, Any]]:
        return [_key_row(r) for r in self._all("SELECT * FROM api_keys ORDER BY created_at, key_id")]

    def revoke_api_key(self, key_id: str, now: float) -> bool:
        return self._run("UPDATE api_keys SET revoked_at = :now WHERE key_id = :key_id AND revoked_at IS NULL",
                         {"now": now, "key_id": key_id}) == 1

    # -- retention (service/retention.py) -----------------------------------------------------
    def purge(self, *, transcripts_before: float | None = None, closed_tickets_before: float | None = None,
              sessions_before: float | None = None, dry_run: bool = False) -> dict[str, int]:
        """Delete transcript lines created, tickets closed and sessions last used before the given
        epoch times (None: keep that kind); open tickets, and the sessions waiting on them, stay.
        Returns how many rows of each kind were (or, with `dry_run`, would be) deleted."""
        checks = {
            "transcripts": ("transcripts", "created_at < :before", transcripts_before),
            "tickets": ("tickets", "status != 'open' AND COALESCE(closed_at, created_at) < :before",
                        closed_tickets_before),
            "sessions": ("sessions", "updated_at < :before AND session_id NOT IN "
                                     "(SELECT session_id FROM tickets WHERE status = 'open')", sessions_before),
        }
        counts = {}
        outermost = getattr(self._local, "conn", None) is None
        with self._tx() as conn:
            if not dry_run and self.backend == "sqlite":
                conn.exec_driver_sql("PRAGMA secure_delete = ON")   # deleted text is overwritten in the file
            for kind, (table, where, before) in checks.items():
                if before is None:
                    counts[kind] = 0
                    continue
                verb = "SELECT COUNT(*) FROM" if dry_run else "DELETE FROM"
                cur = conn.execute(_sql(f"{verb} {table} WHERE {where}"), {"before": float(before)})
                counts[kind] = int(cur.scalar()) if dry_run else cur.rowcount
        if not dry_run and any(counts.values()) and outermost and self.backend == "sqlite":
            with self.engine.connect() as conn:
                conn.execution_options(sqlite_begin=None)          # outside any transaction
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")   # no deleted rows left in the WAL
        return counts


def _sqlite_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None          # the driver begins nothing itself: `_sqlite_begin` does
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE for the store's writes (the write lock up front: no upgrade deadlock between
    two writers that both read first), a plain BEGIN for reads (WAL: readers never wait)."""
    statement = conn.get_execution_options().get("sqlite_begin", "BEGIN")
    if statement:
        conn.exec_driver_sql(statement)


def _key_row(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["origins"] = json.loads(d["origins"])
    return d


def _release(state: SessionState) -> None:
    state.handoff, state.handoff_reason, state.ticket_id, state.failed_turns = False, None, None, 0
