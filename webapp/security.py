"""What stands between the network and the assistant: server-issued tokens, a browser cookie,
rate limits and a request-size cap. Everything that must hold across replicas is in the store.

* Conversations are keyed by random ids the server makes (`secrets`), never by anything a caller
  picks and never by Gradio's `session_hash` (which the client chooses and which travels in URLs).
* The web page gets an HttpOnly cookie, set by `GuardMiddleware` when a page is served; the chat
  and the operator console find their state through it. REST API callers get a conversation token
  from `POST /api/v1/conversations` (webapp/api.py). Tokens are kept in the store as SHA-256 digests
  (a database dump holds no usable token), one kind per registry, so one can never be used as another.
* Rate limits are fixed one-minute windows counted in the store (`Store.rate_hit`), so N replicas
  together allow what one would.
* `GuardMiddleware` (a pure ASGI middleware on the FastAPI app) refuses bodies over `max_body_bytes`
  with 413 before anything parses them, rate-limits each client address (429), sets the page cookie,
  and binds each Gradio `session_hash` to the browser (or address) that first used it, so a leaked
  `session_hash` does not let anyone read that page's event stream. That binding stays in the
  process: Gradio's event stream lives in one process anyway (the balancer keeps a page on one replica).
"""
from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from anyio.to_thread import run_sync

from core.config import ServerConfig

COOKIE_NAME = "attendant_chat"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------------------------ tokens
@dataclass
class TokenEntry:
    session_id: str
    data: dict[str, Any]
    created_at: float


class TokenRegistry:
    """Random tokens the server issued (one `kind`) -> the conversation (engine session id) behind each.

    `issue()` makes a token (`secrets.token_urlsafe(32)`) and a separate random session id with the
    registry's prefix (`web-` / `api-`), so tokens never reach the transcripts. Tokens expire after
    `idle_ttl` seconds unused or `max_age` in all.
    """

    def __init__(self, store: Any, kind: str, prefix: str, *, idle_ttl: float, max_age: float,
                 clock: Callable[[], float] = time.time):
        self.store, self.kind, self.prefix = store, kind, prefix
        self.idle_ttl, self.max_age, self.clock = idle_ttl, max_age, clock

    def new_session_id(self) -> str:
        return f"{self.prefix}-{secrets.token_hex(16)}"

    def issue(self, data: dict[str, Any] | None = None) -> str:
        return self.issue_with_session(data)[0]

    def issue_with_session(self, data: dict[str, Any] | None = None) -> tuple[str, str]:
        """A new token and the new conversation's session id."""
        token, session_id = secrets.token_urlsafe(32), self.new_session_id()
        self.store.create_token(digest(token), self.kind, session_id, self.clock(), data)
        return token, session_id

    def entry(self, token: object) -> TokenEntry | None:
        """The live entry of a token (its use refreshes it), or None: unknown, forged or expired."""
        if not isinstance(token, str) or not token or len(token) > 100:
            return None
        row = self.store.use_token(digest(token), self.kind, self.clock(), idle_ttl=self.idle_ttl,
                                   max_age=self.max_age)
        return None if row is None else TokenEntry(row["session_id"], row["data"], row["created_at"])

    def session_id(self, token: object) -> str | None:
        e = self.entry(token)
        return e.session_id if e else None

    def renew_session(self, token: object) -> str | None:
        """A fresh conversation behind the same token ("New conversation")."""
        if self.entry(token) is None:
            return None
        session_id = self.new_session_id()
        self.store.update_token(digest(str(token)), session_id=session_id)
        return session_id

    def set_data(self, token: str, data: dict[str, Any]) -> None:
        self.store.update_token(digest(token), data=data)

    def revoke(self, token: object) -> None:
        if isinstance(token, str) and token:
            self.store.delete_token(digest(token))


# ------------------------------------------------------------------------------- rate limits
class RateLimiter:
    """`per_minute` requests per key in each one-minute window, counted in the store."""

    def __init__(self, store: Any, prefix: str, per_minute: int, clock: Callable[[], float] = time.time):
        self.store, self.prefix, self.per_minute, self.clock = store, prefix, per_minute, clock

    def allow(self, key: str, limit: int | None = None) -> bool:
        return self.store.rate_hit(f"{self.prefix}:{key}", limit or self.per_minute, self.clock())


# -------------------------------------------------------------------------------- middleware
def _cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == b"cookie":
            for part in v.decode("latin-1").split(";"):
                key, _, value = part.strip().partition("=")
                if key == name:
                    return value
    return None


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
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
        api = path.startswith("/api/")

        length = header(headers, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > g.max_body_bytes):
            return await refuse(send, 413, "too_large", "Request too large.", api)
        # Store calls run on worker threads: the event loop must never wait on a database lock.
        if method not in ("GET", "HEAD", "OPTIONS") and not await run_sync(g.limiter.allow, client):
            return await refuse(send, 429, "rate_limited", "Too many requests; slow down.", api,
                                [(b"retry-after", b"60")])

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
                    return await refuse(send, 413, "too_large", "Request too large.", api)
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)

        new_cookie = None
        if not api:
            browser = _cookie(headers, COOKIE_NAME)
            session_hash = self._session_hash(scope, path, body)
            page = method == "GET" and g.is_page(path)
            # The store is asked about the cookie only where it matters: a Gradio session, or a page.
            known_browser = (session_hash is not None or page) and await run_sync(g.browsers.entry, browser) is not None
            if session_hash is not None:
                owner = f"browser:{browser}" if known_browser else f"addr:{client}"
                if not g.bind_session_hash(session_hash, owner):
                    return await refuse(send, 403, "forbidden",
                                        "This page session belongs to another browser; reload the page.", api)
            if page and not known_browser:
                if not await run_sync(g.limiter.allow, client):
                    return await refuse(send, 429, "rate_limited", "Too many requests; slow down.", api,
                                        [(b"retry-after", b"60")])
                new_cookie = await run_sync(g.browsers.issue)

        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send_with_cookie(message):
            if new_cookie and message["type"] == "http.response.start":
                secure = scope.get("scheme") == "https" or header(headers, b"x-forwarded-proto") == "https"
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


async def refuse(send, status: int, code: str, text: str, as_json: bool,
                 extra: list[tuple[bytes, bytes]] = ()) -> None:
    """A refusal before the app runs: JSON (`{"error": {code, message}}`) for the REST API, else text."""
    if as_json:
        body, kind = json.dumps({"error": {"code": code, "message": text}}).encode(), b"application/json"
    else:
        body, kind = text.encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------------- the guard
class WebGuard:
    """The web app's security state: browser (cookie) and API token registries and the rate limits,
    all in `store`; Gradio session_hash owners (this process). One per app."""

    def __init__(self, store: Any, server: ServerConfig | None = None, *, clock: Callable[[], float] = time.time):
        server = server or ServerConfig()
        self.server = server
        self.max_body_bytes = server.max_body_bytes
        ttl = {"idle_ttl": server.token_idle_ttl_s, "max_age": server.token_max_age_s, "clock": clock}
        self.browsers = TokenRegistry(store, "web", "web", **ttl)
        self.api = TokenRegistry(store, "api", "api", **ttl)
        self.limiter = RateLimiter(store, "client", server.client_rate_per_minute, clock)
        self.conversation_limiter = RateLimiter(store, "conversation", server.conversation_rate_per_minute, clock)
        self.key_limiter = RateLimiter(store, "key", server.key_rate_per_minute, clock)
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def is_page(path: str) -> bool:
        """An HTML page (where the cookie is set): `/`, `/operator/`, or a root_path prefix ending in `/`."""
        return path in ("/", "", "/operator") or (path.endswith("/") and "/gradio_api" not in path
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

    def browser(self, request: Any) -> tuple[str, TokenEntry] | None:
        """The page cookie of a Gradio request and its entry (one lookup), when the server issued it
        and it is still live."""
        cookies = getattr(request, "cookies", None) or {}
        try:
            token = cookies.get(COOKIE_NAME)
        except AttributeError:
            return None
        entry = self.browsers.entry(token)
        return None if entry is None else (token, entry)
