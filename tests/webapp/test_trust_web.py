"""The "Trust" issue, web side: each test replays an attack that worked on the old app and checks that
it fails now. Conversations are keyed by server-issued tokens (an HttpOnly cookie for the page, a
token from `POST /api/v1/conversations` for the REST API), request bodies are capped, clients
rate-limited (in the store, per one-minute window), the operator login backs off, the public API and
the Model tab show no internals, and customer text is shown literally everywhere."""
from __future__ import annotations

import json
import secrets
import sqlite3
import time

import httpx

from core.config import ServerConfig
from service.store import Store
from webapp.security import (
    COOKIE_NAME,
    GuardMiddleware,
    RateLimiter,
    TokenRegistry,
    WebGuard,
)

ORDER, EMAIL = "HC-104251", "maya.okafor@example.com"      # a "processing" order of the demo pack
API = "/api/v1"


# ------------------------------------------------------------------------------------ helpers
def page_cookie(url: str) -> str:
    """Load the page like a browser does; the server sets the conversation cookie."""
    resp = httpx.get(url + "/")
    header = resp.headers.get("set-cookie", "")
    assert "HttpOnly" in header and "SameSite=Strict" in header
    return resp.cookies[COOKIE_NAME]


def call(base: str, api_name: str, data: list, *, cookie: str | None = None, session_hash: str | None = None):
    """A raw Gradio queue call on the Gradio app at `base` (the customer page at the server's root, the
    operator console at `/operator`): what the page does, and what an attacker can do with any
    endpoint, private ones included. Returns ("ok", data), ("error", message) or ("http", status)."""
    deps = httpx.get(base + "/config").json()["dependencies"]
    dep = next(d for d in deps if d.get("api_name") == api_name)
    trigger = (dep.get("targets") or [[None]])[0][0]
    session_hash = session_hash or secrets.token_hex(8)
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {}
    with httpx.Client(headers=headers, timeout=180) as c:
        r = c.post(base + "/gradio_api/queue/join", json={"data": data, "fn_index": dep["id"], "trigger_id": trigger,
                                                          "session_hash": session_hash, "event_data": None})
        if r.status_code != 200:
            return "http", r.status_code
        with c.stream("GET", base + "/gradio_api/queue/data", params={"session_hash": session_hash}) as s:
            if s.status_code != 200:
                return "http", s.status_code
            for line in s.iter_lines():
                if line.startswith("data:"):
                    m = json.loads(line[5:])
                    if m.get("msg") == "process_completed":
                        out = m["output"]
                        return ("ok", out["data"]) if m.get("success") else ("error", out.get("error"))
    raise AssertionError("no result")


def chat(url: str, message: str, cookie: str | None, session_hash: str | None = None):
    kind, data = call(url, "chat", [message, []], cookie=cookie, session_hash=session_hash)
    return kind, (data[1][-1]["content"][0]["text"] if kind == "ok" else data)


def api_start(url: str, key: str) -> dict:
    r = httpx.post(url + API + "/conversations", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    return r.json()


def api_send(url: str, conversation_id: str, token: str | None, text: str) -> httpx.Response:
    headers = {"X-Conversation-Token": token} if token is not None else {}
    return httpx.post(f"{url}{API}/conversations/{conversation_id}/messages", headers=headers, json={"text": text},
                      timeout=120)


def operator_login(url: str, password: str, cookie: str, wait_s: float = 120):
    """Log in on the operator console (waiting out a lockout left by the brute-force test)."""
    deadline = time.time() + wait_s
    while True:
        kind, data = call(url + "/operator", "do_login", [password], cookie=cookie)
        assert kind == "ok", data
        if data[0].get("visible") or time.time() > deadline:
            return data
        time.sleep(5)


# ------------------------------------------------------------------ 1. conversation hijacking
def test_a_second_client_cannot_take_over_a_verified_conversation(app_server, make_api_key):
    """Old attack: the victim verified an order in the browser; a second client called /respond with
    the victim's id ("cancel order ...", "yes") and the order was cancelled without any email. Now the
    API wants a server-issued token, and a token works for its own conversation only."""
    url = app_server["url"]
    victim_cookie, victim_hash = page_cookie(url), secrets.token_hex(8)
    assert chat(url, f"where is my order {ORDER}", victim_cookie, victim_hash)[0] == "ok"
    kind, text = chat(url, EMAIL, victim_cookie, victim_hash)
    assert kind == "ok" and "being prepared" in text                         # verified, in the browser

    key = make_api_key("attacker")
    own, other = api_start(url, key), api_start(url, key)
    for guess in (victim_hash, victim_cookie, "client-test", "web-" + victim_hash, secrets.token_urlsafe(32)):
        r = api_send(url, own["conversation_id"], guess, f"cancel order {ORDER}")
        assert r.status_code == 401 and r.json()["error"]["code"] == "bad_token"
    assert api_send(url, own["conversation_id"], None, "yes").status_code == 401
    # Another conversation's (valid) token on this conversation: no such conversation for it.
    r = api_send(url, own["conversation_id"], other["token"], f"cancel order {ORDER}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # Page conversations have no API address at all (their ids are not API ids).
    for conversation_id in ("web-" + victim_hash, victim_hash, "web-" + "0" * 32):
        r = api_send(url, conversation_id, own["token"], f"cancel order {ORDER}")
        assert r.status_code in (401, 404, 422) and "error" in r.json()
    # The page's own endpoint: without the cookie nothing is reachable, not even with the victim's
    # session_hash (it travels in URLs), which is bound to the victim's browser.
    assert chat(url, f"cancel order {ORDER}", None, victim_hash) == ("http", 403)
    assert chat(url, f"cancel order {ORDER}", None)[0] == "error"
    assert chat(url, f"cancel order {ORDER}", secrets.token_urlsafe(32))[0] == "error"
    # The attacker's own (valid) conversation starts unverified: the email is asked for again.
    api_send(url, own["conversation_id"], own["token"], f"cancel order {ORDER}")
    reply = api_send(url, own["conversation_id"], own["token"], "yes").json()
    assert "cancelled" not in reply["text"].lower() or "email" in reply["text"].lower()
    kind, text = chat(url, f"where is my order {ORDER}", victim_cookie, victim_hash)
    assert kind == "ok" and "cancelled" not in text.lower()                 # nothing changed


def test_api_tokens_are_server_issued_and_separate_from_page_cookies(app_server, make_api_key):
    url = app_server["url"]
    key = make_api_key("tokens")
    a, b = api_start(url, key), api_start(url, key)
    assert a["token"] != b["token"] and len(a["token"]) >= 43                # token_urlsafe(32)
    assert a["conversation_id"] != b["conversation_id"] and a["token"] not in a["conversation_id"]
    api_send(url, a["conversation_id"], a["token"], "I want to speak to a real person")
    r = api_send(url, b["conversation_id"], b["token"], "thanks a lot")
    assert r.json()["action"] == "small_talk"                               # b is its own chat
    r = api_send(url, a["conversation_id"], page_cookie(url), "hello")       # a page cookie is no API token
    assert r.status_code == 401
    assert chat(url, "hello", a["token"])[0] == "error"                     # and an API token no cookie


def test_page_chat_with_its_cookie_and_new_conversation(app_server):
    url = app_server["url"]
    cookie = page_cookie(url)
    kind, text = chat(url, "hi there", cookie)
    assert kind == "ok" and "Welcome" in text
    assert call(url, "restart", [], cookie=cookie)[0] == "ok"
    assert call(url, "restart", [])[0] == "error"


def _token_rows(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM tokens").fetchone()[0]


def test_registry_never_resolves_forged_or_expired_tokens(tmp_path):
    now = [1_800_000_000.0]
    store = Store(tmp_path / "store.sqlite")
    reg = TokenRegistry(store, "api", "api", idle_ttl=10, max_age=100, clock=lambda: now[0])
    token = reg.issue()
    session = reg.session_id(token)
    assert session.startswith("api-") and token not in session and len(session) == 4 + 32
    for forged in ("", None, 42, "x" * 500, token + "x", token[:-1], secrets.token_urlsafe(32)):
        assert reg.session_id(forged) is None
    # A token of one kind is no token of another (a page cookie is no API token).
    assert TokenRegistry(store, "web", "web", idle_ttl=10, max_age=100, clock=lambda: now[0]).entry(token) is None
    assert _token_rows(tmp_path / "store.sqlite") == 1                     # lookups create nothing
    with sqlite3.connect(tmp_path / "store.sqlite") as db:                 # digests only, never the token
        assert token not in json.dumps(db.execute("SELECT * FROM tokens").fetchall())
    now[0] += 11
    assert reg.session_id(token) is None                                    # idle too long
    assert _token_rows(tmp_path / "store.sqlite") == 0                     # ... and gone
    busy = reg.issue()
    for _ in range(11):                                                     # used every 9 s: never idle ...
        now[0] += 9
        assert reg.session_id(busy)
    now[0] += 9
    assert reg.session_id(busy) is None                                     # ... but older than max_age
    renewed = reg.issue()
    before = reg.session_id(renewed)
    after = reg.renew_session(renewed)
    assert after and after != before and reg.session_id(renewed) == after    # renew: a new conversation
    assert reg.renew_session(secrets.token_urlsafe(32)) is None
    reg.revoke(renewed)
    assert reg.session_id(renewed) is None
    store.close()


def test_rate_limiter_counts_fixed_windows_in_the_store(tmp_path):
    now = [1_800_000_000.0]                                                 # a window boundary (divisible by 60)
    store = Store(tmp_path / "store.sqlite")
    limiter = RateLimiter(store, "client", 3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")                                               # per key
    assert [limiter.allow("k", 1) for _ in range(2)] == [True, False]       # a key's own limit
    replica = RateLimiter(Store(tmp_path / "store.sqlite"), "client", 3, clock=lambda: now[0])
    assert not replica.allow("a")                                           # another process counts the same
    assert RateLimiter(store, "key", 3, clock=lambda: now[0]).allow("a")    # another prefix: its own count
    now[0] += 59
    assert not limiter.allow("a")                                           # still the same window
    now[0] += 1
    assert limiter.allow("a") and replica.allow("a")                        # the next window allows again
    store.close()
    replica.store.close()


# -------------------------------------------------------------- 10. request size, rate limits
def test_huge_bodies_are_refused_before_parsing(app_server):
    """Old: a 20 MB message was accepted and parsed. Now 413 on every route, the REST API's in JSON."""
    url = app_server["url"]
    big = json.dumps({"data": ["t", "x" * 20_000_000], "fn_index": 0, "session_hash": "h"})
    for path in ("/gradio_api/queue/join", "/operator/gradio_api/queue/join"):
        r = httpx.post(url + path, content=big, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 413, path
    r = httpx.post(url + API + "/conversations/api-" + "0" * 32 + "/messages", timeout=60,
                   content=json.dumps({"text": "x" * 20_000_000}), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

    def chunks():                                                           # no Content-Length: counted
        for _ in range(200):
            yield b"x" * 100_000
    for path in ("/gradio_api/queue/join", API + "/conversations"):
        r = httpx.post(url + path, content=chunks(), timeout=60)
        assert r.status_code == 413, path
    assert r.json()["error"]["code"] == "too_large"


def _asgi_app():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def echo(request):
        body = await request.body()
        return PlainTextResponse(f"{len(body)}")

    async def page(request):
        return PlainTextResponse("<html>page</html>", media_type="text/html")

    return Starlette(routes=[Route("/", page), Route("/echo", echo, methods=["POST"]),
                             Route("/api/v1/echo", echo, methods=["POST"])])


def test_middleware_caps_bodies_rate_limits_and_sets_the_cookie(tmp_path):
    from starlette.testclient import TestClient

    now = [1_800_000_000.0]                                                 # a window boundary
    store = Store(tmp_path / "store.sqlite")
    guard = WebGuard(store, ServerConfig(max_body_bytes=1000, client_rate_per_minute=5), clock=lambda: now[0])
    client = TestClient(GuardMiddleware(_asgi_app(), guard))
    assert client.post("/echo", content=b"x" * 1000).text == "1000"         # 1 of 5 in this minute
    too_big = client.post("/echo", content=b"x" * 1001)
    assert too_big.status_code == 413 and too_big.text == "Request too large."
    api_big = client.post("/api/v1/echo", content=b"x" * 1001)
    assert api_big.status_code == 413 and api_big.json() == {"error": {"code": "too_large",
                                                                       "message": "Request too large."}}
    unlabelled = client.post("/echo", content=(b"x" * 600 for _ in range(2)))  # streamed, no Content-Length:
    assert unlabelled.status_code == 413                                    # counted (and 2 of 5 used)
    codes = [client.post("/echo", content=b"hi").status_code for _ in range(10)]
    assert codes == [200] * 3 + [429] * 7                                   # 5 a minute (2 used), then refused
    limited = client.post("/api/v1/echo", content=b"hi")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert limited.json()["error"]["code"] == "rate_limited"
    now[0] += 60
    assert client.post("/echo", content=b"hi").status_code == 200           # the next window
    page = client.get("/")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(COOKIE_NAME) and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = page.cookies[COOKIE_NAME]
    assert guard.browsers.session_id(token) and guard.api.session_id(token) is None
    client.cookies.set(COOKIE_NAME, token)
    assert "set-cookie" not in client.get("/").headers                     # kept, not reissued
    client.cookies.set(COOKIE_NAME, secrets.token_urlsafe(32))              # a forged cookie is replaced
    assert client.get("/").cookies[COOKIE_NAME] != token
    store.close()


def test_session_hash_is_bound_to_the_browser_that_first_used_it(tmp_path):
    guard = WebGuard(Store(tmp_path / "store.sqlite"))
    assert guard.bind_session_hash("abc", "browser:1") and guard.bind_session_hash("abc", "browser:1")
    assert not guard.bind_session_hash("abc", "addr:10.0.0.1")


# ------------------------------------------------------------------------ 5. operator login
def test_operator_login_brute_force_through_the_hidden_endpoint_is_locked_out(operator_app_server):
    """Old: 100 wrong passwords in 4.8 s through the hidden login endpoint, and logins never ended."""
    url, password = operator_app_server["url"], operator_app_server["password"]
    console = url + "/operator"
    cookie = page_cookie(url)
    messages = []
    while len(messages) < 12 and not (messages and "Too many failed attempts" in messages[-1]):
        messages.append(call(console, "do_login", [f"guess-{len(messages)}"], cookie=cookie)[1][1])
    assert messages[:3] == ["Wrong password."] * 3 and "Too many failed attempts" in messages[-1]
    assert len(messages) <= 6                                               # not 100: locked after a few
    _, data = call(console, "do_login", [password], cookie=cookie)
    assert "Too many failed attempts" in data[1]                             # locked: right password waits
    assert call(console, "do_refresh", [], cookie=cookie)[0] == "error"


def test_operator_session_is_bound_to_the_browser_and_ends_at_logout(operator_app_server):
    url, password = operator_app_server["url"], operator_app_server["password"]
    console = url + "/operator"
    # The lockout above is per client address and for the account: wait for it to end if it ran first.
    cookie = page_cookie(url)
    data = operator_login(url, password, cookie)
    assert data[0]["visible"] is True
    assert call(console, "do_refresh", [], cookie=cookie)[0] == "ok"
    assert call(console, "do_refresh", [])[0] == "error"                     # no cookie: no operator
    assert call(console, "do_refresh", [], cookie=page_cookie(url))[0] == "error"  # another browser: none
    assert call(console, "do_refresh", [], cookie=secrets.token_urlsafe(32))[0] == "error"  # a forged one
    assert call(console, "do_logout", [], cookie=cookie)[0] == "ok"
    assert call(console, "do_refresh", [], cookie=cookie)[0] == "error"


def test_operator_sees_customer_markup_as_text(operator_app_server, make_api_key):
    """Old: the transcript view rendered stored customer text, images and links included."""
    url, password = operator_app_server["url"], operator_app_server["password"]
    conv = api_start(url, make_api_key("markup"))
    api_send(url, conv["conversation_id"], conv["token"],
             "![x](http://evil.example/pixel.png) [click me](http://evil.example) <img src=x>")
    assert api_send(url, conv["conversation_id"], conv["token"], "I want to speak to a real person").json()["handoff"]
    cookie = page_cookie(url)
    data = operator_login(url, password, cookie)
    assert data[0].get("visible"), data
    evil = None
    for row in reversed(data[2]["data"]):
        kind, (transcript,) = call(url + "/operator", "do_show", [row[0]], cookie=cookie)
        assert kind == "ok"
        evil = next((m["content"][0]["text"] for m in transcript if "evil" in m["content"][0]["text"]), None)
        if evil:
            break
    assert evil and "](" not in evil and "<img" not in evil and "\\!\\[x\\]" in evil


# ---------------------------------------------------------------------------- 11. internals
def test_public_api_returns_no_debug(app_server, make_api_key):
    url = app_server["url"]
    conv = api_start(url, make_api_key("debug"))
    for text in ("How long does standard delivery take?", "a cheap laptop for a student", "asdf qwerty zxcv"):
        r = api_send(url, conv["conversation_id"], conv["token"], text)
        assert r.status_code == 200
        reply = r.json()
        assert "debug" not in reply and "ranking" not in r.text and "oos_score" not in r.text


def test_model_tab_shows_no_paths_and_no_customer_messages(service_config, tmp_path):
    from webapp.model_tab import public_report

    report = {"meta": {"model": "/srv/attendant/artifacts/served", "data": {"dialogs": "/home/x/data/dialogs.jsonl"}},
              "sections": {"dialog": {"source": "/home/x/data/dialogs.jsonl", "metrics": {"accuracy": 0.9},
                                      "failed_turns": [{"user": "my card 4111 1111 1111 1111 was charged"}],
                                      "failed_turn_count": 1},
                           "faq_retrieval": {"metrics": {}, "faq_misses": [{"query": "secret customer question"}]}}}
    shown = json.dumps(public_report(report))
    assert "/srv/" not in shown and "/home/" not in shown and "4111" not in shown and "secret customer" not in shown
    assert "1 failed dialog turns" in shown


def test_model_tab_text_has_no_absolute_paths(service_config):
    from core.config import PROJECT_ROOT
    from webapp.model_tab import load_latest

    text, _ = load_latest(service_config)
    assert str(PROJECT_ROOT) not in text and str(service_config.path) not in text


def test_customer_page_has_no_operator_or_model_endpoints(app_server):
    """The customer page's Gradio app offers the chat only: no login, tickets or model report."""
    deps = httpx.get(app_server["url"] + "/config").json()["dependencies"]
    names = {d.get("api_name") for d in deps}
    assert not names & {"do_login", "do_logout", "do_refresh", "do_show", "do_close"}
    assert "chat" in names


# --------------------------------------------------------------- 12. echoed text in replies
def test_address_confirmation_echo_is_shown_literally(assistant):
    """Old: the address confirmation repeated a customer's links and images as Markdown."""
    from webapp.presenters import reply_markdown

    evil = "![x](http://evil.example/p.png) [click](http://evil.example) 12 Main St, Springfield, IL 62701"
    shown = []
    for message in (f"I want to change the delivery address of order {ORDER}", EMAIL, evil):
        shown.append(reply_markdown(assistant.respond("addr-test", message)))
    assert "evil" in assistant.history("addr-test")[-1]["text"]                # the reply repeats the address
    echoed = shown[-1]
    assert "evil" in echoed and "](" not in echoed and "http://" not in echoed and "![" not in echoed

