"""The "Trust" issue, web side: each test replays an attack that worked on the old app and checks that
it fails now. Conversations are keyed by server-issued tokens (an HttpOnly cookie for the page, a
token from /start_conversation for the API), request bodies are capped, clients rate-limited, the
operator login backs off, the public API and Model tab show no internals, and customer text is
shown literally everywhere."""
from __future__ import annotations

import json
import secrets

import httpx
import pytest

from webapp.security import (
    COOKIE_NAME,
    GuardMiddleware,
    TokenBucket,
    TokenRegistry,
    WebGuard,
)

ORDER, EMAIL = "HC-104251", "maya.okafor@example.com"      # a "processing" order of the demo pack


# ------------------------------------------------------------------------------------ helpers
def page_cookie(url: str) -> str:
    """Load the page like a browser does; the server sets the conversation cookie."""
    resp = httpx.get(url + "/")
    header = resp.headers.get("set-cookie", "")
    assert "HttpOnly" in header and "SameSite=Strict" in header
    return resp.cookies[COOKIE_NAME]


def call(url: str, api_name: str, data: list, *, cookie: str | None = None, session_hash: str | None = None):
    """A raw Gradio queue call (what the page does, and what an attacker can do with any endpoint,
    hidden ones included): returns ("ok", data), ("error", message) or ("http", status)."""
    deps = httpx.get(url + "/config").json()["dependencies"]
    dep = next(d for d in deps if d.get("api_name") == api_name)
    trigger = (dep.get("targets") or [[None]])[0][0]
    session_hash = session_hash or secrets.token_hex(8)
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {}
    with httpx.Client(headers=headers, timeout=180) as c:
        r = c.post(url + "/gradio_api/queue/join", json={"data": data, "fn_index": dep["id"], "trigger_id": trigger,
                                                         "session_hash": session_hash, "event_data": None})
        if r.status_code != 200:
            return "http", r.status_code
        with c.stream("GET", url + "/gradio_api/queue/data", params={"session_hash": session_hash}) as s:
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


# ------------------------------------------------------------------ 1. conversation hijacking
def test_a_second_client_cannot_take_over_a_verified_conversation(app_server):
    """Old attack: the victim verified an order in the browser; a second client called /respond with
    the victim's id ("cancel order ...", "yes") and the order was cancelled without any email."""
    from gradio_client import Client

    url = app_server["url"]
    victim_cookie, victim_hash = page_cookie(url), secrets.token_hex(8)
    assert chat(url, f"where is my order {ORDER}", victim_cookie, victim_hash)[0] == "ok"
    kind, text = chat(url, EMAIL, victim_cookie, victim_hash)
    assert kind == "ok" and "being prepared" in text                         # verified, in the browser

    attacker = Client(url, verbose=False)
    for guess in (victim_hash, victim_cookie, "client-test", "web-" + victim_hash, ""):
        with pytest.raises(Exception, match="Unknown or expired conversation token"):
            attacker.predict(guess, f"cancel order {ORDER}", api_name="/respond")
    # The page's own endpoint: without the cookie nothing is reachable, not even with the victim's
    # session_hash (it travels in URLs), which is bound to the victim's browser.
    assert chat(url, f"cancel order {ORDER}", None, victim_hash) == ("http", 403)
    assert chat(url, f"cancel order {ORDER}", None)[0] == "error"
    forged = secrets.token_urlsafe(32)
    assert chat(url, f"cancel order {ORDER}", forged)[0] == "error"
    # An attacker's own (valid) conversation starts unverified: the email is asked for again.
    own = attacker.predict(api_name="/start_conversation")["token"]
    attacker.predict(own, f"cancel order {ORDER}", api_name="/respond")
    reply = attacker.predict(own, "yes", api_name="/respond")
    assert "cancelled" not in reply["text"].lower() or "email" in reply["text"].lower()
    kind, text = chat(url, f"where is my order {ORDER}", victim_cookie, victim_hash)
    assert kind == "ok" and "cancelled" not in text.lower()


def test_api_tokens_are_server_issued_and_separate_from_page_cookies(app_server):
    from gradio_client import Client

    url = app_server["url"]
    client = Client(url, verbose=False)
    a, b = (client.predict(api_name="/start_conversation")["token"] for _ in range(2))
    assert a != b and len(a) >= 43                                          # token_urlsafe(32)
    client.predict(a, "I want to speak to a real person", api_name="/respond")
    assert client.predict(b, "thanks a lot", api_name="/respond")["action"] == "small_talk"  # b is its own chat
    with pytest.raises(Exception, match="Unknown or expired"):              # a page cookie is no API token
        client.predict(page_cookie(url), "hello", api_name="/respond")
    assert chat(url, "hello", a)[0] == "error"                              # and an API token no cookie


def test_page_chat_with_its_cookie_and_new_conversation(app_server):
    url = app_server["url"]
    cookie = page_cookie(url)
    kind, text = chat(url, "hi there", cookie)
    assert kind == "ok" and "Welcome" in text
    assert call(url, "restart", [], cookie=cookie)[0] == "ok"
    assert call(url, "restart", [])[0] == "error"


def test_registry_never_resolves_forged_or_expired_tokens():
    now = [0.0]
    reg = TokenRegistry("api", idle_ttl=10, max_age=100, capacity=3, clock=lambda: now[0])
    token = reg.issue()
    session = reg.session_id(token)
    assert session.startswith("api-") and token not in session and len(session) == 4 + 32
    for forged in ("", None, 42, "x" * 500, token + "x", secrets.token_urlsafe(32)):
        assert reg.session_id(forged) is None
    assert len(reg) == 1                                                    # lookups create nothing
    now[0] += 11
    assert reg.session_id(token) is None                                    # idle too long
    tokens = [reg.issue() for _ in range(5)]
    assert len(reg) == 3 and reg.session_id(tokens[0]) is None and reg.session_id(tokens[-1])
    renewed_from = reg.session_id(tokens[-1])
    assert reg.renew_session(tokens[-1]) != renewed_from


# -------------------------------------------------------------- 10. request size, rate limits
def test_huge_bodies_are_refused_before_parsing(app_server):
    """Old: a 20 MB message was accepted and parsed."""
    url = app_server["url"]
    big = json.dumps({"data": ["t", "x" * 20_000_000], "fn_index": 0, "session_hash": "h"})
    r = httpx.post(url + "/gradio_api/queue/join", content=big, headers={"content-type": "application/json"},
                   timeout=60)
    assert r.status_code == 413

    def chunks():                                                           # no Content-Length: counted
        for _ in range(200):
            yield b"x" * 100_000
    r = httpx.post(url + "/gradio_api/queue/join", content=chunks(), timeout=60)
    assert r.status_code == 413


def _asgi_app():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def echo(request):
        body = await request.body()
        return PlainTextResponse(f"{len(body)}")

    async def page(request):
        return PlainTextResponse("<html>page</html>", media_type="text/html")

    return Starlette(routes=[Route("/", page), Route("/echo", echo, methods=["POST"])])


def test_middleware_caps_bodies_rate_limits_and_sets_the_cookie():
    from starlette.testclient import TestClient

    now = [0.0]
    guard = WebGuard(max_body_bytes=1000, burst=5, rate=1, clock=lambda: now[0])
    client = TestClient(GuardMiddleware(_asgi_app(), guard))
    assert client.post("/echo", content=b"x" * 1000).text == "1000"
    assert client.post("/echo", content=b"x" * 1001).status_code == 413
    codes = [client.post("/echo", content=b"hi").status_code for _ in range(10)]
    assert codes.count(429) >= 6                                            # burst 5, then refused
    now[0] += 5
    assert client.post("/echo", content=b"hi").status_code == 200           # refilled
    page = client.get("/")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(COOKIE_NAME) and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = page.cookies[COOKIE_NAME]
    assert guard.browsers.session_id(token) and guard.api.session_id(token) is None
    client.cookies.set(COOKIE_NAME, token)
    assert "set-cookie" not in client.get("/").headers                     # kept, not reissued


def test_token_bucket_is_per_key():
    now = [0.0]
    bucket = TokenBucket(2, 1, clock=lambda: now[0])
    assert [bucket.allow("a") for _ in range(3)] == [True, True, False]
    assert bucket.allow("b")


def test_session_hash_is_bound_to_the_browser_that_first_used_it():
    guard = WebGuard()
    assert guard.bind_session_hash("abc", "browser:1") and guard.bind_session_hash("abc", "browser:1")
    assert not guard.bind_session_hash("abc", "addr:10.0.0.1")


# ------------------------------------------------------------------------ 5. operator login
def test_operator_login_brute_force_through_the_hidden_endpoint_is_locked_out(operator_app_server):
    """Old: 100 wrong passwords in 4.8 s through the hidden login endpoint, and logins never ended."""
    url, password = operator_app_server["url"], operator_app_server["password"]
    cookie = page_cookie(url)
    messages = []
    while len(messages) < 12 and not (messages and "Too many failed attempts" in messages[-1]):
        messages.append(call(url, "do_login", [f"guess-{len(messages)}"], cookie=cookie)[1][1])
    assert messages[:3] == ["Wrong password."] * 3 and "Too many failed attempts" in messages[-1]
    assert len(messages) <= 6                                               # not 100: locked after a few
    _, data = call(url, "do_login", [password], cookie=cookie)
    assert "Too many failed attempts" in data[1]                             # locked: right password waits
    assert call(url, "do_refresh", [], cookie=cookie)[0] == "error"


def test_operator_session_is_bound_to_the_browser_and_ends_at_logout(operator_app_server):
    url, password = operator_app_server["url"], operator_app_server["password"]
    # The lockout above is per client address and for the account; the fixture server is fresh per
    # run, so wait for the lock to end if the previous test ran first.
    import time

    cookie = page_cookie(url)
    deadline = time.time() + 120
    while True:
        _, data = call(url, "do_login", [password], cookie=cookie)
        if data[0].get("visible") or time.time() > deadline:
            break
        time.sleep(5)
    assert data[0]["visible"] is True
    assert call(url, "do_refresh", [], cookie=cookie)[0] == "ok"
    assert call(url, "do_refresh", [])[0] == "error"                         # no cookie: no operator
    assert call(url, "do_refresh", [], cookie=page_cookie(url))[0] == "error"  # another browser: none
    assert call(url, "do_logout", [], cookie=cookie)[0] == "ok"
    assert call(url, "do_refresh", [], cookie=cookie)[0] == "error"


def test_operator_sees_customer_markup_as_text(operator_app_server):
    """Old: the transcript view rendered stored customer text, images and links included."""
    url, password = operator_app_server["url"], operator_app_server["password"]
    from gradio_client import Client

    client = Client(url, verbose=False)
    token = client.predict(api_name="/start_conversation")["token"]
    client.predict(token, "![x](http://evil.example/pixel.png) [click me](http://evil.example) <img src=x>",
                   api_name="/respond")
    client.predict(token, "I want to speak to a real person", api_name="/respond")
    import time

    cookie = page_cookie(url)
    deadline = time.time() + 120
    while not (data := call(url, "do_login", [password], cookie=cookie)[1])[0].get("visible"):
        assert time.time() < deadline, data
        time.sleep(5)
    evil = None
    for row in reversed(data[2]["data"]):
        kind, (transcript,) = call(url, "do_show", [row[0]], cookie=cookie)
        assert kind == "ok"
        evil = next((m["content"][0]["text"] for m in transcript if "evil" in m["content"][0]["text"]), None)
        if evil:
            break
    assert "](" not in evil and "<img" not in evil and "\\!\\[x\\]" in evil


# ---------------------------------------------------------------------------- 11. internals
def test_public_api_returns_no_debug(app_server):
    from gradio_client import Client

    client = Client(app_server["url"], verbose=False)
    token = client.predict(api_name="/start_conversation")["token"]
    reply = client.predict(token, "How long does standard delivery take?", api_name="/respond")
    assert "debug" not in reply and "ranking" not in json.dumps(reply) and "oos_score" not in json.dumps(reply)


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
