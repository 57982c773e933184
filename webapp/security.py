"""What stands between the network and the assistant: server-issued conversation tokens, a browser
cookie, per-client rate limits and a request-size cap.

* Conversations are keyed by random ids the server makes (`secrets`), never by anything a caller
  picks and never by Gradio's `session_hash` (which the client chooses and which travels in URLs).
* The web page gets an HttpOnly cookie, set by `GuardMiddleware` when the page is served; the chat
  callbacks find the conversation through it. API callers call `/start_conversation` for a token
  and pass it to `/respond`; a token the server did not issue is refused and creates nothing.
  Web and API tokens live in separate registries, so one can never be used as the other.
* `GuardMiddleware` (a plain ASGI middleware on Gradio's FastAPI app, installed through
  `launch(app_kwargs=...)`) refuses bodies over `max_body_bytes` with 413 before anything parses
  them, rate-limits each client address (429), and binds each Gradio `session_hash` to the browser
  (or address) that first used it, so a leaked `session_hash` does not let anyone read that page's
  event stream.

Everything is in memory (one process); limits are module defaults, overridable by environment
variables (`ATTENDANT_MAX_BODY_BYTES`, `ATTENDANT_RATE_BURST`, `ATTENDANT_RATE_PER_SECOND`).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

COOKIE_NAME = "attendant_chat"
MAX_BODY_BYTES = 64 * 1024


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        log.warning("%s is not a number; using %s", name, default)
        return default


# ------------------------------------------------------------------------------------ tokens
@dataclass
class _Entry:
    session_id: str
    created: float
    last_used: float
    data: dict[str, Any] = field(default_factory=dict)


class TokenRegistry:
    """Random tokens the server issued -> the conversation (engine session id) behind each.

    `issue()` makes a token (`secrets.token_urlsafe(32)`) and a separate random session id with the
    registry's prefix (`web-` / `api-`), so tokens never reach the store or the transcripts.
    Tokens expire after `idle_ttl` seconds unused or `max_age` in all; at most `capacity` live
    (the least recently used goes first).
    """

    def __init__(self, prefix: str, *, idle_ttl: float = 4 * 3600, max_age: float = 24 * 3600,
                 capacity: int = 50_000, clock: Callable[[], float] = time.monotonic):
        self.prefix, self.idle_ttl, self.max_age, self.capacity, self.clock = prefix, idle_ttl, max_age, capacity, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def new_session_id(self) -> str:
        return f"{self.prefix}-{secrets.token_hex(16)}"

    def issue(self) -> str:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._entries[token] = _Entry(self.new_session_id(), now, now)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return token

    def entry(self, token: object) -> _Entry | None:
        """The live entry of a token (its use refreshes it), or None: unknown, forged or expired."""
        if not isinstance(token, str) or not token or len(token) > 100:
            return None
        now = self.clock()
        with self._lock:
            e = self._entries.get(token)
            if e is None:
                return None
            if now - e.last_used > self.idle_ttl or now - e.created > self.max_age:
                del self._entries[token]
                return None
            e.last_used = now
            self._entries.move_to_end(token)
            return e

    def session_id(self, token: object) -> str | None:
        e = self.entry(token)
        return e.session_id if e else None

    def renew_session(self, token: object) -> str | None:
        """A fresh conversation behind the same token ("New conversation")."""
        e = self.entry(token)
        if e is None:
            return None
        e.session_id = self.new_session_id()
        return e.session_id

    def revoke(self, token: object) -> None:
        with self._lock:
            self._entries.pop(token, None)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._entries)


# ------------------------------------------------------------------------------- rate limits
class TokenBucket:
    """Per-key token buckets: `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, burst: float, rate: float, *, capacity: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self.burst, self.rate, self.capacity, self.clock = burst, rate, capacity, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str, cost: float = 1.0) -> bool:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            ok = tokens >= cost
            self._buckets[key] = (tokens - cost if ok else tokens, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.capacity:
                self._buckets.popitem(last=False)
            return ok


# -------------------------------------------------------------------------------- middleware
def _cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == b"cookie":
            for part in v.decode("latin-1").split(";"):
                key, _, value = part.strip().partition("=")
                if key == name:
                    return value
    return None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


class GuardMiddleware:
    """Pure ASGI middleware (no buffering of responses, so Gradio's event streams pass through).

    `guard` is the app's `WebGuard`: its `browsers` registry issues the page cookie, its `limiter`
    rate-limits POSTs per client address.
    """

    def __init__(self, app, guard: WebGuard):
        self.app, self.guard = app, guard

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        g = self.guard
        headers = scope.get("headers") or []
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        client = (scope.get("client") or ("unknown", 0))[0]

        length = _header(headers, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > g.max_body_bytes):
            return await _plain(send, 413, "Request too large.")
        if method not in ("GET", "HEAD", "OPTIONS") and not g.limiter.allow(client):
            return await _plain(send, 429, "Too many requests; slow down.", [(b"retry-after", b"5")])

        body = b""
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > g.max_body_bytes:
                    return await _plain(send, 413, "Request too large.")
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)

        browser = _cookie(headers, COOKIE_NAME)
        known_browser = g.browsers.entry(browser) is not None
        owner = f"browser:{browser}" if known_browser else f"addr:{client}"
        session_hash = self._session_hash(scope, path, body)
        if session_hash is not None and not g.bind_session_hash(session_hash, owner):
            return await _plain(send, 403, "This page session belongs to another browser; reload the page.")

        new_cookie = None
        if method == "GET" and not known_browser and g.is_page(path):
            if not g.limiter.allow(client):
                return await _plain(send, 429, "Too many requests; slow down.", [(b"retry-after", b"5")])
            new_cookie = g.browsers.issue()

        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send_with_cookie(message):
            if new_cookie and message["type"] == "http.response.start":
                secure = scope.get("scheme") == "https" or \
                    _header(headers, b"x-forwarded-proto") == "https"
                value = (f"{COOKIE_NAME}={new_cookie}; Path=/; HttpOnly; SameSite=Strict; "
                         f"Max-Age={int(g.browsers.max_age)}" + ("; Secure" if secure else ""))
                message = {**message, "headers": list(message.get("headers", [])) + [(b"set-cookie", value.encode())]}
            await send(message)

        return await self.app(scope, replay if method in ("POST", "PUT", "PATCH", "DELETE") else receive,
                              send_with_cookie)

    @staticmethod
    def _session_hash(scope, path: str, body: bytes) -> str | None:
        if "session_hash" in (query := scope.get("query_string", b"").decode("latin-1")):
            values = parse_qs(query).get("session_hash")
            if values:
                return values[0]
        if "/heartbeat/" in path:
            return path.rsplit("/heartbeat/", 1)[1].strip("/") or None
        if body and b"session_hash" in body:
            try:
                data = json.loads(body)
            except ValueError:
                return None
            value = data.get("session_hash") if isinstance(data, dict) else None
            return value if isinstance(value, str) else None
        return None


async def _plain(send, status: int, text: str, extra: list[tuple[bytes, bytes]] = ()) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------------- the guard
class WebGuard:
    """The web app's security state: browser (cookie) and API token registries, rate limits,
    session_hash owners. One per app; `app_kwargs()` goes to `demo.launch(app_kwargs=...)`."""

    def __init__(self, *, max_body_bytes: int | None = None, burst: float | None = None,
                 rate: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.max_body_bytes = int(max_body_bytes or _env_number("ATTENDANT_MAX_BODY_BYTES", MAX_BODY_BYTES))
        burst = burst or _env_number("ATTENDANT_RATE_BURST", 60)
        rate = rate or _env_number("ATTENDANT_RATE_PER_SECOND", 2)
        self.browsers = TokenRegistry("web", clock=clock)
        self.api = TokenRegistry("api", clock=clock)
        self.limiter = TokenBucket(burst, rate, clock=clock)          # per client address, every POST
        self.token_limiter = TokenBucket(burst / 2, rate / 2, clock=clock)  # per API token, /respond
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def is_page(path: str) -> bool:
        """The HTML page (where the cookie is set): `/`, or a root_path prefix ending in `/`."""
        return path == "/" or path == "" or (path.endswith("/") and "/gradio_api" not in path
                                             and "/assets" not in path and "/file" not in path)

    def bind_session_hash(self, session_hash: str, owner: str) -> bool:
        with self._lock:
            current = self._owners.get(session_hash)
            if current is None:
                self._owners[session_hash] = owner
                while len(self._owners) > 100_000:
                    self._owners.popitem(last=False)
                return True
            self._owners.move_to_end(session_hash)
            return secrets.compare_digest(current, owner)

    def browser_token(self, request: Any) -> str | None:
        """The page cookie of a Gradio request, when the server issued it and it is still live."""
        cookies = getattr(request, "cookies", None) or {}
        try:
            token = cookies.get(COOKIE_NAME)
        except AttributeError:
            return None
        return token if self.browsers.entry(token) is not None else None

    def middleware(self) -> list:
        from starlette.middleware import Middleware

        return [Middleware(GuardMiddleware, guard=self)]

    def app_kwargs(self) -> dict[str, Any]:
        return {"middleware": self.middleware()}
