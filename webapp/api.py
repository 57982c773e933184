"""The REST API, `/api/v1` (OpenAPI schema at `/api/v1/openapi.json`, docs at `/api/v1/docs`).

    POST   /api/v1/conversations                    Authorization: Bearer <API key>  -> 201 {conversation_id, token, expires_in_s}
    POST   /api/v1/conversations/{id}/messages      X-Conversation-Token: <token>, {"text": ...} -> the Reply
    GET    /api/v1/conversations/{id}/messages      X-Conversation-Token -> the (redacted) history
    DELETE /api/v1/conversations/{id}               X-Conversation-Token -> 204; the token ends
    POST   /api/v1/conversations/{id}/turns/{turn_id}/feedback   X-Conversation-Token, {"value": "up"|"down"|"none"}
    POST   /api/v1/conversations/{id}/rating        X-Conversation-Token, {"rating": 1..5, "comment"?: ...} -> 201
    GET    /api/v1/health                           -> {"status": "ok", ...} (for load balancers)

A conversation is started with an API key (webapp/apikeys.py) and then used with the token the
server issued for it; a token works for its own conversation only, and only while its key is live.
Limits (all counted in the store, so they hold across replicas): per client address (middleware),
per API key, per conversation. Every error is JSON: `{"error": {"code": ..., "message": ...}}`.
"""
from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.pii import redact
from service.reply import ProductCard, Source
from webapp.apikeys import check_key, live_key, origin_allowed
from webapp.metrics import record_feedback
from webapp.security import TokenEntry, WebGuard, header, refuse

API_PREFIX = "/api/v1"
CONVERSATION_ID = r"^api-[0-9a-f]{32}$"
TURN_ID = r"^[A-Za-z0-9_-]{1,64}$"
MAX_COMMENT_CHARS = 2000
FEEDBACK_VALUES = {"up": 1, "down": -1, "none": 0}


# --------------------------------------------------------------------------------- schemas
class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class ConversationOut(BaseModel):
    conversation_id: str
    token: str = Field(description="send it as X-Conversation-Token with every call on this conversation")
    expires_in_s: int = Field(description="the token ends after this many seconds without use")


class MessageIn(BaseModel):
    text: str = Field(description="the customer's message")


class ReplyOut(BaseModel):
    text: str
    action: str
    intent: str | None = None
    confidence: float = 0.0
    sources: list[Source] = []          # the Reply's own dataclasses: one definition of each
    products: list[ProductCard] = []
    handoff: bool = False
    suggestions: list[str] = []
    turn_id: str = Field("", description="this turn's id: rate it with POST .../turns/{turn_id}/feedback")
    model_version: str = Field("", description="the model version that produced this reply")


class HistoryMessage(BaseModel):
    role: str
    text: str
    action: str | None = None
    created_at: float


class HistoryOut(BaseModel):
    conversation_id: str
    messages: list[HistoryMessage]


class TurnFeedbackIn(BaseModel):
    value: Literal["up", "down", "none"] = Field(description="thumbs up, thumbs down, or withdraw the thumbs")


class TurnFeedbackOut(BaseModel):
    turn_id: str
    value: Literal["up", "down", "none"]


class RatingIn(BaseModel):
    rating: int = Field(ge=1, le=5, description="how the conversation went, 1 (bad) to 5 (very good)")
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS,
                                description="optional words; personal data is redacted before it is stored")


class RatingOut(BaseModel):
    rating: int
    model_version: str = Field(description="the model version the rating is recorded against")


class HealthOut(BaseModel):
    status: str
    store: str


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


ERRORS = {401: {"model": ErrorOut, "description": "missing, unknown or expired key or token"},
          403: {"model": ErrorOut, "description": "this key may not be used from this web page"},
          404: {"model": ErrorOut, "description": "no such conversation for this token"},
          413: {"model": ErrorOut, "description": "request body too large"},
          422: {"model": ErrorOut, "description": "the request does not match the schema"},
          429: {"model": ErrorOut, "description": "rate limit reached; retry after the Retry-After seconds"}}


def public_reply(reply: Any) -> dict[str, Any]:
    """What crosses the network: the Reply without `debug` (decision, ranking, OOS and FAQ scores)."""
    data = reply.to_dict()
    data.pop("debug", None)
    return data


# ------------------------------------------------------------------------------- the router
def api_router(assistant: Any, guard: WebGuard, store: Any) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, responses=ERRORS)

    def limited(what: str) -> ApiError:
        return ApiError(429, "rate_limited", f"Too many requests for this {what}; slow down.", {"Retry-After": "60"})

    def use_key(record: dict[str, Any], origin: str | None) -> None:
        if not origin_allowed(record, origin):
            raise ApiError(403, "origin_not_allowed", "This API key may not be used from this web page.")
        if not guard.key_limiter.allow(record["key_id"], record.get("rate_per_minute")):
            raise limited("API key")

    def conversation(request: Request,
                     conversation_id: str = Path(..., pattern=CONVERSATION_ID, max_length=40),
                     x_conversation_token: str | None = Header(None, max_length=100)) -> TokenEntry:
        # The token, its key and the key's counter in one transaction: one commit, not three.
        with store.transaction():
            entry = guard.api.entry(x_conversation_token)
            if entry is None:
                raise ApiError(401, "bad_token", "Unknown or expired conversation token; start a new conversation.")
            if not secrets.compare_digest(entry.session_id, conversation_id):
                raise ApiError(404, "not_found", "No such conversation for this token.")
            record = live_key(store, str(entry.data.get("key", "")))
            if record is None:
                raise ApiError(401, "key_revoked", "The API key this conversation was started with is no longer valid.")
            use_key(record, request.headers.get("origin"))
        return entry

    @router.post("/conversations", status_code=201, response_model=ConversationOut,
                 summary="Start a conversation (API key required)")
    def start_conversation(request: Request, authorization: str | None = Header(None, max_length=200)):
        presented = (authorization or "").removeprefix("Bearer ").strip()
        record = check_key(store, presented)
        if record is None:
            raise ApiError(401, "bad_key", "A valid API key is required: Authorization: Bearer att.<id>.<secret>.")
        use_key(record, request.headers.get("origin"))
        token, session_id = guard.api.issue_with_session({"key": record["key_id"]})
        return ConversationOut(conversation_id=session_id, token=token, expires_in_s=int(guard.api.idle_ttl))

    @router.post("/conversations/{conversation_id}/messages", response_model=ReplyOut,
                 summary="Send the customer's message; returns the assistant's reply")
    def send_message(message: MessageIn, entry: TokenEntry = Depends(conversation)):
        if not guard.conversation_limiter.allow(entry.session_id):
            raise limited("conversation")
        return public_reply(assistant.respond(entry.session_id, message.text))

    @router.get("/conversations/{conversation_id}/messages", response_model=HistoryOut,
                summary="The conversation so far (personal data redacted)")
    def history(entry: TokenEntry = Depends(conversation)):
        rows = store.transcript(entry.session_id)
        return HistoryOut(conversation_id=entry.session_id, messages=[
            HistoryMessage(role=r["role"], text=r["text"], action=r["action"], created_at=r["created_at"])
            for r in rows])

    @router.delete("/conversations/{conversation_id}", status_code=204, response_class=Response,
                   summary="Close the conversation; its token stops working")
    def close(entry: TokenEntry = Depends(conversation),
              x_conversation_token: str | None = Header(None, max_length=100)):
        guard.api.revoke(x_conversation_token)
        return Response(status_code=204)

    @router.post("/conversations/{conversation_id}/turns/{turn_id}/feedback", response_model=TurnFeedbackOut,
                 summary="Thumbs up or down on one of the assistant's replies (its `turn_id`)")
    def turn_feedback(feedback: TurnFeedbackIn, entry: TokenEntry = Depends(conversation),
                      turn_id: str = Path(..., pattern=TURN_ID, max_length=64)):
        if not guard.conversation_limiter.allow(entry.session_id):
            raise limited("conversation")
        # Only a turn of this conversation can be rated: the store matches turn and conversation together.
        if not store.set_turn_feedback(entry.session_id, turn_id, FEEDBACK_VALUES[feedback.value]):
            raise ApiError(404, "not_found", "No such reply in this conversation.")
        if FEEDBACK_VALUES[feedback.value]:
            record_feedback("thumb", FEEDBACK_VALUES[feedback.value])
        return TurnFeedbackOut(turn_id=turn_id, value=feedback.value)

    @router.post("/conversations/{conversation_id}/rating", status_code=201, response_model=RatingOut,
                 summary="Rate the conversation from 1 to 5, with an optional comment")
    def rate(rating: RatingIn, entry: TokenEntry = Depends(conversation)):
        if not guard.conversation_limiter.allow(entry.session_id):
            raise limited("conversation")
        version = str(getattr(assistant, "model_version", "") or "")
        store.add_feedback(entry.session_id, rating.rating, redact(rating.comment or ""), model_version=version or None)
        record_feedback("rating", rating.rating)
        return RatingOut(rating=rating.rating, model_version=version)

    @router.get("/health", response_model=HealthOut, summary="Liveness for load balancers")
    def health():
        return HealthOut(status="ok", store=getattr(store, "backend", "sqlite"))

    # Last: anything else under /api/v1 would fall through to the customer page's Gradio app (mounted
    # at "/") and get its `{"detail": ...}` 404; here it gets the API's JSON error, and a known path
    # called with another method 405 with `Allow`.
    endpoints = list(router.routes)

    @router.api_route("/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"],
                      include_in_schema=False)
    def unknown(request: Request):
        allowed = sorted({m for r in endpoints if r.matches(request.scope)[0] == Match.PARTIAL for m in r.methods})
        if allowed:
            raise ApiError(405, "method_not_allowed", "This endpoint does not take this method.",
                           {"Allow": ", ".join(allowed)})
        raise ApiError(404, "not_found", "No such API endpoint; see /api/v1/openapi.json.")

    return router


def install_error_handlers(app: FastAPI) -> None:
    """JSON errors with the right status for everything under /api/v1 (validation included)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(422, "invalid_request", f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if not request.url.path.startswith(API_PREFIX):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        if exc.status_code == 400:   # FastAPI: a body it could not decode; like malformed JSON, a 422
            return error_response(422, "invalid_request", f"body: {exc.detail}")
        return error_response(exc.status_code, "http_" + str(exc.status_code), str(exc.detail), exc.headers)


# ------------------------------------------------------------------------------------- CORS
class ApiCors:
    """CORS for /api/v1, from the store's live keys: a web page may call the API only from an origin
    some key lists (each call then checks its own key's origins). Pure ASGI; the list is re-read
    every `refresh_s` seconds, so a new or revoked key is seen on every replica within that time."""

    HEADERS = b"authorization, content-type, x-conversation-token"

    def __init__(self, app, store: Any, refresh_s: float = 5.0):
        self.app, self.store, self.refresh_s = app, store, refresh_s
        self._origins: set[str] = set()
        self._read_at = float("-inf")

    def _read_origins(self) -> set[str]:
        return {o for k in self.store.api_keys() if not k["revoked_at"] for o in k["origins"]}

    async def allowed(self, origin: str) -> bool:
        now = time.monotonic()
        if now - self._read_at > self.refresh_s:
            # Read on a worker thread: the event loop never waits on the database.
            self._origins = await run_sync(self._read_origins)
            self._read_at = now
        return origin in self._origins

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith(API_PREFIX + "/"):
            return await self.app(scope, receive, send)
        origin = header(scope.get("headers") or [], b"origin")
        if origin is None:
            return await self.app(scope, receive, send)
        ok = await self.allowed(origin)
        if scope.get("method") == "OPTIONS":
            if not ok:
                return await refuse(send, 403, "origin_not_allowed", "This origin may not call the API.", True)
            await send({"type": "http.response.start", "status": 204, "headers": [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", b"GET, POST, DELETE"),
                (b"access-control-allow-headers", self.HEADERS),
                (b"access-control-max-age", b"600"), (b"vary", b"Origin"), (b"content-length", b"0")]})
            return await send({"type": "http.response.body", "body": b""})

        async def with_cors(message):
            if ok and message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + [
                    (b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
                    (b"access-control-expose-headers", b"retry-after")]}  # a web page may read a 429's wait
            await send(message)

        return await self.app(scope, receive, with_cors)
