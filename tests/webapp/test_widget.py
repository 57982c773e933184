"""The embeddable widget (webapp/static/widget.js) in real Chromium, pasted into a fictional store's
static page served from ANOTHER origin (its own http.server), so CORS and the key's origins are real."""
from __future__ import annotations

import functools
import http.server
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import chromium, free_port, skip_module_without_chromium

pytestmark = pytest.mark.slow

REPLY_TIMEOUT = 90_000
XSS = "<img src=x onerror=\"document.title='pwned'\"> <b>bold</b>"

skip_module_without_chromium()

STORE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">{head}
<title>Hearthside Outfitters</title>
<style>body {{ font-family: Georgia, serif; color: #c00; margin: 0 auto; max-width: 720px; padding: 16px; }}
button {{ background: hotpink !important; }} div {{ border: 3px dashed lime; }}</style>
</head><body>
<h1>Hearthside Outfitters</h1>
<p id="store-blurb">Kettles, laptops and lamps since 1999.</p>
<script src="{app}/widget.js" data-api-key="{key}" data-title="Chat with us" defer></script>
</body></html>
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def wait_for_cors(api: str, origin: str, timeout: float = 20.0) -> None:
    """ApiCors re-reads the live keys' origins every few seconds: wait until a preflight from `origin` passes."""
    deadline = time.time() + timeout
    while True:
        req = urllib.request.Request(f"{api}/api/v1/conversations", method="OPTIONS", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                if resp.status == 204:
                    return
        except urllib.error.HTTPError:
            pass
        assert time.time() < deadline, f"the API never allowed {origin}"
        time.sleep(1)


@pytest.fixture(scope="module")
def store_site(app_server, make_api_key, tmp_path_factory):
    """The store's static site on its own port (a different origin from the app): index.html with a key
    for this origin, other.html with a key for another origin, limited.html with a key allowed 1 call a
    minute, strict.html: index.html under a strict Content-Security-Policy."""
    folder = tmp_path_factory.mktemp("store_site")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    app = app_server["url"]
    keys = {"index": make_api_key("website widget", origins=(origin,)),
            "other": make_api_key("another store's widget", origins=(f"http://127.0.0.1:{free_port()}",)),
            "limited": make_api_key("tight widget", origins=(origin,), rate_per_minute=1)}
    for name, key in keys.items():
        (folder / f"{name}.html").write_text(STORE_PAGE.format(app=app, key=key, head=""), encoding="utf-8")
    # The strict policy docs/widget.md asks of a store: the support host allowed for scripts and calls only.
    csp = f"default-src 'self'; script-src 'self' {app}; connect-src 'self' {app}; style-src 'self'"
    (folder / "strict.html").write_text(STORE_PAGE.format(
        app=app, key=keys["index"], head=f'\n<meta http-equiv="Content-Security-Policy" content="{csp}">'),
        encoding="utf-8")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                             functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    wait_for_cors(app, origin)
    yield {"url": origin, "app": app}
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(store_site):
    with chromium() as launched:   # after the store's site is up
        yield launched


@pytest.fixture
def open_page(browser):
    """`open_page(url, viewport)`: a fresh context (fresh sessionStorage); fails the test on a page error or dialog."""
    contexts, problems = [], []

    def make(url, width=1280, height=900):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.goto(url, wait_until="domcontentloaded")
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems, problems


def launcher(page):
    return page.get_by_role("button", name="Chat with us")


def send(page, text):
    box = page.get_by_role("textbox", name="Your message")
    box.fill(text)
    box.press("Enter")


def bot_messages(page):
    return page.locator("#attendant-widget .msg.bot")


def wait_for_replies(page, n):
    page.wait_for_function(
        "n => document.querySelector('#attendant-widget').shadowRoot.querySelectorAll('.msg.bot').length >= n"
        " && document.querySelector('#attendant-widget').shadowRoot.querySelector('.typing').hidden",
        arg=n, timeout=REPLY_TIMEOUT)


def active_in_widget(page) -> str:
    return page.evaluate("(document.querySelector('#attendant-widget').shadowRoot.activeElement || {}).className"
                         " || (document.querySelector('#attendant-widget').shadowRoot.activeElement || {}).tagName"
                         " || ''")


def test_widget_on_a_store_page_chats_across_origins(open_page, store_site, tmp_path):
    page = open_page(store_site["url"] + "/index.html")
    # The store's own page is untouched; the widget's panel starts closed.
    assert page.get_by_role("heading", name="Hearthside Outfitters").is_visible()
    assert page.locator("#store-blurb").inner_text().startswith("Kettles")
    launcher(page).wait_for(timeout=30_000)
    assert page.get_by_role("dialog").is_hidden()
    # The store's CSS does not reach into the widget (Shadow DOM).
    assert launcher(page).evaluate("b => getComputedStyle(b).backgroundColor") != "rgb(255, 105, 180)"
    assert page.evaluate("getComputedStyle(document.querySelector('#attendant-widget')).borderTopStyle") == "none"

    # Keyboard: opening moves focus into the panel, Escape closes and gives focus back to the launcher.
    launcher(page).click()
    assert page.get_by_role("dialog").is_visible()
    assert launcher(page).get_attribute("aria-expanded") == "true"
    assert active_in_widget(page) == "TEXTAREA"
    page.keyboard.press("Escape")
    assert page.get_by_role("dialog").is_hidden()
    assert active_in_widget(page) == "launcher"
    page.keyboard.press("Enter")  # the focused launcher opens it again
    assert page.get_by_role("dialog").is_visible()

    log = page.get_by_role("log")
    send(page, "How long does standard delivery take?")
    log.get_by_text("business days").first.wait_for(timeout=REPLY_TIMEOUT)
    assert page.get_by_role("textbox", name="Your message").input_value() == ""

    send(page, "a cheap laptop for a student")
    page.locator("#attendant-widget .card").first.wait_for(timeout=REPLY_TIMEOUT)
    card = page.locator("#attendant-widget .card").first
    assert card.locator(".card-title").inner_text().strip()
    assert "$" in card.locator(".price").inner_text()
    assert card.locator(".reason").inner_text().strip()
    page.screenshot(path=str(tmp_path / "products.png"))

    # Markup typed by the customer is shown as text; nothing runs, no element is made from it.
    wait_for_replies(page, 2)
    send(page, XSS)
    log.get_by_text("<b>bold</b>", exact=False).first.wait_for(timeout=30_000)
    wait_for_replies(page, 3)
    assert page.title() == "Hearthside Outfitters"
    assert page.evaluate("document.querySelector('#attendant-widget').shadowRoot.querySelectorAll('img, b').length"
                         " + document.querySelectorAll('body img, body b').length") == 0

    # A reload continues the conversation (sessionStorage holds only the id and the token).
    stored = page.evaluate("Object.values(sessionStorage).map(v => JSON.parse(v))")
    assert len(stored) == 1 and sorted(stored[0]) == ["id", "token"], stored
    page.reload(wait_until="domcontentloaded")
    launcher(page).click()
    page.get_by_role("log").get_by_text("business days").first.wait_for(timeout=30_000)
    page.get_by_role("log").get_by_text("How long does standard delivery take?").wait_for(timeout=10_000)
    assert bot_messages(page).count() >= 3

    # "New conversation" clears the panel; the next message starts a fresh conversation.
    old = page.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
    page.get_by_role("button", name="New conversation").click()
    assert bot_messages(page).count() == 0
    send(page, "How long does standard delivery take?")
    wait_for_replies(page, 1)
    assert page.evaluate("JSON.stringify(Object.assign({}, sessionStorage))") != old


def test_a_key_made_for_another_origin_cannot_chat(open_page, store_site):
    page = open_page(store_site["url"] + "/other.html")
    launcher(page).click()
    send(page, "How long does standard delivery take?")
    alert = page.get_by_role("alert")
    alert.wait_for(timeout=30_000)
    assert "isn't available" in alert.inner_text()
    assert bot_messages(page).count() == 0
    assert page.locator("#attendant-widget .msg.user").count() == 0
    assert page.get_by_role("textbox", name="Your message").input_value() == "How long does standard delivery take?"


def test_rate_limited_says_wait_and_keeps_the_text(open_page, store_site):
    page = open_page(store_site["url"] + "/limited.html")
    launcher(page).click()
    alert = page.get_by_role("alert")
    # The key allows one call a minute: starting the conversation uses it, so the message gets a 429
    # (its Retry-After readable through CORS). Should a minute boundary fall between the two calls,
    # the next message is the one refused.
    for text in ("How long does standard delivery take?", "And express delivery?"):
        send(page, text)
        page.wait_for_function("document.querySelector('#attendant-widget').shadowRoot.querySelector('.typing').hidden"
                               " && !document.querySelector('#attendant-widget').shadowRoot"
                               ".querySelector('textarea').readOnly", timeout=REPLY_TIMEOUT)
        if alert.is_visible():
            break
    assert "wait 60 seconds" in alert.inner_text()
    assert page.get_by_role("textbox", name="Your message").input_value() == text
    assert page.locator("#attendant-widget .msg.user").count() == bot_messages(page).count()


def test_phone_viewport_full_width_panel_no_horizontal_scroll(open_page, store_site, tmp_path):
    page = open_page(store_site["url"] + "/index.html", width=390, height=844)
    launcher(page).click()
    panel = page.get_by_role("dialog")
    assert panel.is_visible()
    box = panel.bounding_box()
    assert box["x"] == 0 and box["width"] == 390
    assert page.get_by_role("textbox", name="Your message").is_visible()
    assert page.get_by_role("button", name="Send").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "phone.png"))


def test_works_under_the_strict_csp_the_docs_give(open_page, store_site):
    page = open_page(store_site["url"] + "/strict.html")
    launcher(page).click()
    # Styled (a constructed stylesheet is not blocked by style-src 'self'), and it can talk to the API.
    assert launcher(page).evaluate("b => getComputedStyle(b).position") == "fixed"
    assert page.get_by_role("dialog").evaluate("p => getComputedStyle(p).position") == "fixed"
    send(page, "How long does standard delivery take?")
    page.get_by_role("log").get_by_text("business days").first.wait_for(timeout=REPLY_TIMEOUT)
