"""The REST API (`/api/v1`, webapp/api.py) end to end: `python app.py` for real, keys made with the
real CLI (`python -m webapp.apikeys`), plain HTTP. The per-conversation limit, relaxed on the shared
server, is tested in process at the end."""
from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.helpers import API
from tests.helpers import api_conversation as conversation
from tests.helpers import api_history as history
from tests.helpers import api_send as send
from tests.helpers import api_start as start
from tests.webapp.conftest import apikeys_cli

CONVERSATION_ID = re.compile(r"^api-[0-9a-f]{32}$")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43,}$")
SHOP = "https://shop.example"
# A "placed" order of the demo pack that no other web test touches: it gets cancelled here.
CANCEL_ORDER, CANCEL_EMAIL = "HC-104277", "liam.oconnell@example.com"


# ------------------------------------------------------------------------------------ helpers
def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    """The API's one error shape: `{"error": {"code": ..., "message": ...}}`, as JSON."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def not_at_a_minute_boundary(margin: float = 8.0) -> None:
    """Rate limits count fixed one-minute windows: start a limit test well inside one."""
    into = time.time() % 60
    if into > 60 - margin:
        time.sleep(60 - into + 0.5)


@pytest.fixture(scope="module")
def url(app_server):
    return app_server["url"]


@pytest.fixture(scope="module")
def key(make_api_key):
    return make_api_key("test_api")


# ------------------------------------------------------------------------------ conversations
def test_start_conversation_returns_server_issued_ids(url, key):
    r = start(url, key)
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"conversation_id", "token", "expires_in_s"}
    assert CONVERSATION_ID.match(body["conversation_id"]) and TOKEN.match(body["token"])
    assert body["token"] not in body["conversation_id"] and body["expires_in_s"] == 4 * 3600
    again = conversation(url, key)
    assert again["conversation_id"] != body["conversation_id"] and again["token"] != body["token"]


def test_faq_answer_and_product_recommendation(url, key):
    conv = conversation(url, key)
    r = send(url, conv, "How long does standard delivery take?")
    assert r.status_code == 200
    reply = r.json()
    assert reply["action"] == "answer_faq" and "business days" in reply["text"]
    assert reply["sources"][0]["faq_id"] == "faq_ship_02"
    assert reply["sources"][0]["question"] == "How long does standard delivery take?"
    assert "debug" not in reply and not reply["handoff"]
    shop = send(url, conv, "a cheap laptop for a student").json()
    assert shop["action"] == "recommend" and shop["products"]
    product = shop["products"][0]
    assert set(product) >= {"id", "title", "category", "brand", "price", "reason"} and product["price"] > 0


def test_verified_cancellation_through_the_api(url, key):
    conv = conversation(url, key)
    first = send(url, conv, "I want to cancel my order").json()
    assert first["action"] == "cancel_order" and "order number" in first["text"]
    assert "email" in send(url, conv, CANCEL_ORDER).json()["text"]
    confirm = send(url, conv, CANCEL_EMAIL).json()
    assert "(yes/no)" in confirm["text"]
    done = send(url, conv, "yes please").json()
    assert done["action"] == "cancel_order" and f"Order {CANCEL_ORDER} is cancelled" in done["text"]
    # Another conversation must verify again before it sees anything about the order.
    other = conversation(url, key)
    asked = send(url, other, f"where is my order {CANCEL_ORDER}").json()
    assert "email" in asked["text"] and "cancelled" not in asked["text"]
    assert "cancelled" in send(url, other, CANCEL_EMAIL).json()["text"]


def test_history_is_redacted(url, key):
    conv = conversation(url, key)
    send(url, conv, "hi there")
    send(url, conv, "my phone number is 415-555-0199 and my email is jane.roe@example.com")
    r = history(url, conv)
    assert r.status_code == 200
    body = r.json()
    assert body["conversation_id"] == conv["conversation_id"]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert body["messages"][0]["text"] == "hi there" and body["messages"][1]["action"]
    assert all(isinstance(m["created_at"], float) for m in body["messages"])
    assert "415-555-0199" not in r.text and "jane.roe@example.com" not in r.text
    assert "phone number is" in body["messages"][2]["text"]                   # the rest of the message stays
    assert history(url, conversation(url, key)).json()["messages"] == []      # each conversation its own


def test_close_ends_the_token(url, key):
    conv = conversation(url, key)
    assert send(url, conv, "hello").status_code == 200
    r = httpx.delete(f"{url}{API}/conversations/{conv['conversation_id']}",
                     headers={"X-Conversation-Token": conv["token"]})
    assert r.status_code == 204 and r.content == b""
    assert_error(history(url, conv), 401, "bad_token")
    assert_error(send(url, conv, "hello again"), 401, "bad_token")
    assert_error(httpx.delete(f"{url}{API}/conversations/{conv['conversation_id']}",
                              headers={"X-Conversation-Token": conv["token"]}), 401, "bad_token")


# ------------------------------------------------------------------------------------- keys
def test_revoking_a_key_through_the_cli_ends_its_conversations(app_server, make_api_key):
    url, config = app_server["url"], app_server["config"]
    key = make_api_key("to be revoked")
    key_id = key.split(".")[1]
    conv = conversation(url, key)
    assert send(url, conv, "hello").status_code == 200
    listed = apikeys_cli(config, "list")
    assert key_id in listed and key.split(".")[2] not in listed               # ids, never secrets
    assert apikeys_cli(config, "revoke", key_id) == f"revoked {key_id}"
    assert_error(send(url, conv, "hello"), 401, "key_revoked")
    assert_error(history(url, conv), 401, "key_revoked")
    assert_error(start(url, key), 401, "bad_key")
    assert any(key_id in line and "revoked" in line for line in apikeys_cli(config, "list").splitlines())


def test_bad_keys_are_refused(url, key):
    key_id = key.split(".")[1]
    for presented in ("nonsense", key + "x", f"att.{key_id}.{'A' * 43}", key.replace("att.", "xyz.")):
        assert_error(start(url, presented), 401, "bad_key")
    assert_error(httpx.post(url + API + "/conversations"), 401, "bad_key")     # no Authorization at all
    assert_error(httpx.post(url + API + "/conversations", headers={"Authorization": "Basic dXNlcjpwYXNz"}),
                 401, "bad_key")


def test_a_key_with_origins_is_usable_from_those_pages_only(url, make_api_key):
    key = make_api_key("widget", origins=(SHOP,))
    r = start(url, key, Origin=SHOP)
    assert r.status_code == 201
    conv = r.json()
    assert_error(start(url, key, Origin="https://evil.example"), 403, "origin_not_allowed")
    assert_error(send(url, conv, "hello", Origin="https://evil.example"), 403, "origin_not_allowed")
    assert send(url, conv, "hello", Origin=SHOP).status_code == 200
    # CORS: the allowed origin is answered (the server re-reads the keys' origins every few seconds).
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    deadline = time.time() + 15
    while (ok := httpx.options(url + API + "/conversations", headers={"Origin": SHOP, **preflight})).status_code != 204:
        assert time.time() < deadline, ok.text
        time.sleep(1)
    assert ok.headers["access-control-allow-origin"] == SHOP
    assert "x-conversation-token" in ok.headers["access-control-allow-headers"]
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert start(url, key, Origin=SHOP).headers.get("access-control-allow-origin") == SHOP
    evil = httpx.options(url + API + "/conversations", headers={"Origin": "https://evil.example", **preflight})
    assert_error(evil, 403, "origin_not_allowed")
    assert "access-control-allow-origin" not in evil.headers
    refused = start(url, key, Origin="https://evil.example")
    assert "access-control-allow-origin" not in refused.headers


def test_a_key_without_origins_refuses_any_origin(url, key):
    for origin in (SHOP, "https://evil.example", "null", "http://127.0.0.1"):
        assert_error(start(url, key, Origin=origin), 403, "origin_not_allowed")
    assert start(url, key).status_code == 201                                  # server to server: fine


def test_per_key_rate_limit(url, make_api_key):
    key = make_api_key("slow", rate_per_minute=3)
    not_at_a_minute_boundary()
    conv = conversation(url, key)                                              # 1
    assert send(url, conv, "hello").status_code == 200                         # 2
    assert history(url, conv).status_code == 200                               # 3
    r = send(url, conv, "hello again")                                         # 4: over
    assert_error(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "60"
    assert_error(start(url, key), 429, "rate_limited")
    assert conversation(url, make_api_key("fast")) is not None                 # other keys unaffected


# ------------------------------------------------------------------------------- errors, schema
def test_errors_are_json(url, key):
    conv, other = conversation(url, key), conversation(url, key)
    assert_error(httpx.get(f"{url}{API}/conversations/{conv['conversation_id']}/messages"), 401, "bad_token")
    wrong = httpx.get(f"{url}{API}/conversations/{conv['conversation_id']}/messages",
                      headers={"X-Conversation-Token": other["token"]})
    assert_error(wrong, 404, "not_found")
    assert_error(httpx.post(f"{url}{API}/conversations/{conv['conversation_id']}/messages", timeout=60,
                            headers={"X-Conversation-Token": conv["token"], "Content-Type": "application/json"},
                            content=b'{"text": "' + b"x" * 200_000 + b'"}'), 413, "too_large")
    for body in ({}, {"text": 5}, {"text": None}, [], "text"):
        r = httpx.post(f"{url}{API}/conversations/{conv['conversation_id']}/messages", json=body,
                       headers={"X-Conversation-Token": conv["token"]})
        assert_error(r, 422, "invalid_request")
    for raw in (b"{not json", b"\x16\xff\x0e\xfe;"):                       # (the second was a 400: fuzzing)
        r = httpx.post(f"{url}{API}/conversations/{conv['conversation_id']}/messages", content=raw,
                       headers={"X-Conversation-Token": conv["token"], "Content-Type": "application/json"})
        assert_error(r, 422, "invalid_request")
    message = assert_error(httpx.get(f"{url}{API}/conversations/web-123/messages",
                                     headers={"X-Conversation-Token": conv["token"]}), 422, "invalid_request")
    assert "conversation_id" in message["message"]
    assert_error(httpx.get(f"{url}{API}/no-such-endpoint"), 404, "not_found")
    r = httpx.put(f"{url}{API}/conversations")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    # The conversation still works after all that.
    assert send(url, conv, "thanks a lot").json()["action"] == "small_talk"


def test_openapi_schema_and_health(url):
    r = httpx.get(url + API + "/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    paths = schema["paths"]
    assert set(paths) == {API + "/conversations", API + "/conversations/{conversation_id}/messages",
                          API + "/conversations/{conversation_id}", API + "/health",
                          API + "/conversations/{conversation_id}/turns/{turn_id}/feedback",
                          API + "/conversations/{conversation_id}/rating"}
    assert set(paths[API + "/conversations/{conversation_id}/messages"]) == {"get", "post"}
    assert "delete" in paths[API + "/conversations/{conversation_id}"]
    post = paths[API + "/conversations"]["post"]
    assert "201" in post["responses"] and "429" in post["responses"]
    assert {"ErrorOut", "ReplyOut", "ConversationOut"} <= set(schema["components"]["schemas"])
    assert "debug" not in schema["components"]["schemas"]["ReplyOut"]["properties"]
    assert httpx.get(url + API + "/docs").status_code == 200
    assert httpx.get(url + API + "/health").json() == {"status": "ok", "store": "sqlite"}


# ------------------------------------------------------------------------ customer feedback
def feedback(url: str, conv: dict, turn_id: str, body: object, token: str | None = None) -> httpx.Response:
    return httpx.post(f"{url}{API}/conversations/{conv['conversation_id']}/turns/{turn_id}/feedback", json=body,
                      headers={"X-Conversation-Token": token or conv["token"]})


def rating(url: str, conv: dict, body: object, token: str | None = None) -> httpx.Response:
    return httpx.post(f"{url}{API}/conversations/{conv['conversation_id']}/rating", json=body,
                      headers={"X-Conversation-Token": token or conv["token"]})


@pytest.fixture(scope="module")
def app_store(app_server):
    from core.config import load_config
    from service.assembly import open_store

    return open_store(load_config(app_server["config"]))


def test_thumbs_on_a_turn_are_stored_with_it(url, key, app_store):
    conv = conversation(url, key)
    first = send(url, conv, "How long does standard delivery take?").json()
    second = send(url, conv, "thanks a lot").json()
    assert re.fullmatch(r"t-[0-9a-f]{16}", first["turn_id"]) and first["model_version"]

    def stored() -> list:
        return [t["feedback"] for t in app_store.turns(session_id=conv["conversation_id"])]

    r = feedback(url, conv, first["turn_id"], {"value": "up"})
    assert r.status_code == 200 and r.json() == {"turn_id": first["turn_id"], "value": "up"}
    assert feedback(url, conv, second["turn_id"], {"value": "down"}).status_code == 200
    assert stored() == [1, -1]
    assert feedback(url, conv, second["turn_id"], {"value": "none"}).status_code == 200   # withdrawn
    assert stored() == [1, None]
    turns = app_store.turns(session_id=conv["conversation_id"])
    assert turns[0]["model_version"] == first["model_version"]                  # stored with its version


def test_thumbs_only_on_the_conversations_own_turns(url, key, app_store):
    conv, other = conversation(url, key), conversation(url, key)
    mine = send(url, conv, "hello").json()["turn_id"]
    theirs = send(url, other, "hello").json()["turn_id"]
    assert_error(feedback(url, conv, theirs, {"value": "down"}), 404, "not_found")     # another conversation's
    assert_error(feedback(url, conv, "t-0000000000000000", {"value": "up"}), 404, "not_found")
    assert_error(feedback(url, conv, mine, {"value": "up"}, token=other["token"]), 404, "not_found")
    assert_error(feedback(url, conv, mine, {"value": "up"}, token="not-a-token"), 401, "bad_token")
    assert_error(feedback(url, conv, mine, {"value": "sideways"}), 422, "invalid_request")
    assert_error(feedback(url, conv, mine, {}), 422, "invalid_request")
    assert_error(feedback(url, conv, "bad id!", {"value": "up"}), 422)
    assert [t["feedback"] for t in app_store.turns(session_id=other["conversation_id"])] == [None]


def test_rating_a_conversation(url, key, app_store):
    conv = conversation(url, key)
    send(url, conv, "I want to talk to a person")
    since = time.time() - 1
    r = rating(url, conv, {"rating": 2, "comment": "Slow. Call me on 415-555-0199 or jane.roe@example.com"})
    assert r.status_code == 201 and r.json()["rating"] == 2 and r.json()["model_version"]
    assert rating(url, conv, {"rating": 5}).status_code == 201                   # the comment is optional
    stored = [x for x in app_store.ratings(since=since) if x["session_id"] == conv["conversation_id"]]
    assert [x["rating"] for x in stored] == [2, 5]
    assert "Slow." in stored[0]["comment"] and "415-555-0199" not in stored[0]["comment"]
    assert "jane.roe@example.com" not in stored[0]["comment"] and stored[0]["model_version"] == r.json()["model_version"]
    for bad in ({"rating": 0}, {"rating": 6}, {"rating": "five"}, {}, {"rating": 3, "comment": "x" * 2001}):
        assert_error(rating(url, conv, bad), 422, "invalid_request")
    assert_error(rating(url, conv, {"rating": 3}, token="not-a-token"), 401, "bad_token")


# ------------------------------------------------------- the per-conversation limit, in process
def test_per_conversation_rate_limit(assistant):
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from core.config import ServerConfig
    from webapp.api import api_router, install_error_handlers
    from webapp.apikeys import create_key
    from webapp.security import WebGuard

    now = [1_800_000_000.0]                                                    # a window boundary
    store = assistant.sessions
    guard = WebGuard(store, ServerConfig(conversation_rate_per_minute=2), clock=lambda: now[0])
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(assistant, guard, store))
    client = TestClient(app)
    key = create_key(store, "in process")

    def begin() -> dict:
        r = client.post(API + "/conversations", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201
        return r.json()

    def say(conv: dict, text: str = "hello"):
        return client.post(f"{API}/conversations/{conv['conversation_id']}/messages", json={"text": text},
                           headers={"X-Conversation-Token": conv["token"]})

    conv = begin()
    assert [say(conv).status_code for _ in range(2)] == [200, 200]
    r = say(conv)
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    assert r.json()["error"]["code"] == "rate_limited" and "conversation" in r.json()["error"]["message"]
    assert client.get(f"{API}/conversations/{conv['conversation_id']}/messages",
                      headers={"X-Conversation-Token": conv["token"]}).status_code == 200  # reading is not talking
    assert say(begin()).status_code == 200                                     # another conversation: its own
    now[0] += 60
    assert say(conv).status_code == 200                                        # the next minute
