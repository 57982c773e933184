"""The operator's side: review handed-over conversations and close them.

`python -m service.operator --config PATH tickets | show T-00001 | close T-00001 [--note TEXT]`
does from a terminal what the web app's operator console (/operator) does (login required there: the password
comes from the ATTENDANT_OPERATOR_PASSWORD environment variable).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.cli import add_config_arguments, config_from_args, run_cli
from core.errors import AttendantError

log = logging.getLogger(__name__)

PASSWORD_ENV = "ATTENDANT_OPERATOR_PASSWORD"
MIN_PASSWORD_CHARS = 12
ACCOUNT = "operator"   # the console has one account; lockouts count per client and for it


@dataclass
class LoginResult:
    ok: bool
    message: str
    token: str | None = None       # the operator session, when ok
    retry_after: float = 0.0       # seconds until the next attempt is considered, when locked


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginGuard:
    """Exponential back-off per key (a client address, the account): the first `free` failures cost
    nothing, then each failure locks the key for `base`, 2x, 4x... seconds, up to `max_lock`. A lock is
    checked before the password is; failures are forgotten after `forget` seconds without one,
    and a key's count is cleared by a successful login."""

    def __init__(self, free: int, max_lock: float, *, base: float = 5.0, forget: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.free, self.max_lock, self.base, self.forget, self.clock = free, max_lock, base, forget, clock
        self._state: dict[str, tuple[int, float, float]] = {}   # key -> (failures, locked_until, last_failure)
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        with self._lock:
            failures, until, last = self._state.get(key, (0, 0.0, 0.0))
            now = self.clock()
            if failures and now - last > self.forget:
                del self._state[key]
                return 0.0
            return max(0.0, until - now)

    def failed(self, key: str) -> None:
        with self._lock:
            failures, _, _ = self._state.get(key, (0, 0.0, 0.0))
            failures += 1
            now = self.clock()
            lock = 0.0 if failures <= self.free else min(self.max_lock, self.base * 2.0 ** (failures - self.free - 1))
            self._state[key] = (failures, now + lock, now)
            if len(self._state) > 100_000:   # bounded: drop the oldest failure records
                for k in sorted(self._state, key=lambda k: self._state[k][2])[:10_000]:
                    del self._state[k]

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)


class OperatorConsole:
    """Tickets for the operator, behind a password (at least MIN_PASSWORD_CHARS characters, else
    the console stays off), with back-off and lockout per client and for the account, and operator
    sessions that expire (`idle_ttl` unused, `max_age` in all) or end at logout."""

    def __init__(self, store: Any, password: str | None = None, *, idle_ttl: float = 30 * 60,
                 max_age: float = 8 * 3600, clock: Callable[[], float] = time.time):
        self.store = store
        password = password if password is not None else os.environ.get(PASSWORD_ENV, "")
        self.disabled_reason = ""
        if not password:
            self.disabled_reason = f"{PASSWORD_ENV} is not set"
        elif len(password) < MIN_PASSWORD_CHARS:
            self.disabled_reason = (f"{PASSWORD_ENV} is shorter than {MIN_PASSWORD_CHARS} characters; "
                                    "the operator console stays off until a longer password is set")
            log.error("%s", self.disabled_reason)
            password = ""
        self._digest = hashlib.sha256(password.encode()).digest() if password else b""
        self.idle_ttl, self.max_age, self.clock = idle_ttl, max_age, clock
        self.client_guard = LoginGuard(free=3, max_lock=300.0, clock=clock)
        self.account_guard = LoginGuard(free=10, max_lock=900.0, clock=clock)

    @property
    def enabled(self) -> bool:
        return bool(self._digest)

    def check_password(self, attempt: str) -> bool:
        """Constant-time comparison (of SHA-256 digests, so not even the length leaks); no back-off:
        network logins go through `login`."""
        if not self.enabled:
            return False
        return hmac.compare_digest(hashlib.sha256(str(attempt or "").encode()).digest(), self._digest)

    def login(self, attempt: str, client: str = "local") -> LoginResult:
        if not self.enabled:
            return LoginResult(False, "The operator console is off.")
        wait = max(self.client_guard.retry_after(f"client:{client}"), self.account_guard.retry_after(ACCOUNT))
        if wait > 0:
            return LoginResult(False, f"Too many failed attempts. Try again in {int(wait) + 1} s.", retry_after=wait)
        if not self.check_password(attempt):
            self.client_guard.failed(f"client:{client}")
            self.account_guard.failed(ACCOUNT)
            log.warning("failed operator login from %s", client)
            return LoginResult(False, "Wrong password.")
        self.client_guard.succeeded(f"client:{client}")
        self.account_guard.succeeded(ACCOUNT)
        token = secrets.token_urlsafe(32)
        # Operator sessions live in the store (as digests), so every replica knows them.
        self.store.create_token(_digest(token), "operator", ACCOUNT, self.clock())
        log.info("operator logged in from %s", client)
        return LoginResult(True, "Logged in.", token=token)

    def session_valid(self, token: object) -> bool:
        """True while an operator session is live (each check refreshes its idle timer)."""
        if not isinstance(token, str) or not token or len(token) > 100:
            return False
        return self.store.use_token(_digest(token), "operator", self.clock(), idle_ttl=self.idle_ttl,
                                    max_age=self.max_age) is not None

    def logout(self, token: object) -> None:
        if isinstance(token, str) and token:
            self.store.delete_token(_digest(token))

    def ticket_rows(self, status: str | None = "open") -> list[list[str]]:
        return [[t["ticket_id"], t["status"], dt.datetime.fromtimestamp(t["created_at"]).strftime("%Y-%m-%d %H:%M"),
                 t["reason"], str(len(t["transcript"]))] for t in self.store.tickets(status)]

    def transcript(self, ticket_id: str) -> list[dict[str, str]]:
        for t in self.store.tickets(None):
            if t["ticket_id"] == ticket_id:
                return [{"role": m["role"], "content": m["text"] or " "} for m in t["transcript"]]
        return []

    def close(self, ticket_id: str, note: str = "") -> str:
        session = self.store.close_ticket(ticket_id.strip(), note)
        if session is None:
            return f"No open ticket {ticket_id}."
        return f"Closed {ticket_id}; the customer's chat is back with the assistant."


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.operator", description="Review and close handoff tickets.")
    add_config_arguments(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("tickets", help="list open tickets")
    show = sub.add_parser("show", help="print a ticket's redacted transcript")
    show.add_argument("ticket")
    close = sub.add_parser("close", help="close a ticket and release the conversation")
    close.add_argument("ticket")
    close.add_argument("--note", default="")
    args = p.parse_args(argv)
    from service.assembly import open_store

    console = OperatorConsole(open_store(config_from_args(args)), password="")   # a terminal needs no login
    if args.cmd == "tickets":
        for row in console.ticket_rows():
            print("  ".join(row))
    elif args.cmd == "show":
        lines = console.transcript(args.ticket)
        if not lines:
            raise AttendantError(f"no ticket {args.ticket}; list them with `python -m service.operator tickets`")
        for m in lines:
            print(f"{m['role']:>9}: {m['content']}")
    else:
        print(console.close(args.ticket, args.note))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
