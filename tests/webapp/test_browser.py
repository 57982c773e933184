"""End to end in a real headless Chromium: the customer page at `/` is the chat and nothing else (type a
question, see the answer and product cards in the conversation); the operator console at `/operator`
is a separate page that starts at its login. The customer page's own behaviour (quick replies,
reload, accessibility, feedback) is tested in test_customer_page.py."""
import re

import pytest

from tests.helpers import skip_module_without_chromium


skip_module_without_chromium()

pytestmark = pytest.mark.slow

# What only the operator console may show: none of it on the customer's page.
OPERATOR_WORDS = re.compile(r"operator|password|log ?in|tickets|\bModel\b|evaluation report", re.IGNORECASE)



@pytest.fixture(scope="module")
def page(app_server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_server["url"], wait_until="domcontentloaded")
    page.locator("#message textarea").wait_for(timeout=60_000)
    yield page
    page.close()


def send(page, text):
    box = page.locator("#message textarea")
    box.wait_for(timeout=60_000)
    box.fill(text)
    box.press("Enter")


def test_customer_page_is_the_chat_without_operator_or_model_controls(page):
    assert page.locator("#chat").count() == 1 and page.locator("#send").count() == 1
    text = page.locator("body").inner_text()
    assert not OPERATOR_WORDS.search(text), OPERATOR_WORDS.search(text)
    assert page.locator("input[type=password]").count() == 0
    assert page.get_by_role("tab").count() == 0                                # no Tickets or Model tab
    assert page.get_by_role("button", name=re.compile("log in|log out|refresh", re.I)).count() == 0


def test_operator_console_is_its_own_page_and_starts_at_the_login(operator_app_server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(operator_app_server["url"] + "/operator/", wait_until="domcontentloaded")
        page.locator("input[type=password]").wait_for(timeout=60_000)
        assert page.get_by_role("button", name="Log in").count() == 1
        assert page.locator("#message textarea").count() == 0                  # no customer chat here
        assert page.get_by_role("tab", name="Tickets").count() == 0            # every view only after login
        page.locator("input[type=password]").fill(operator_app_server["password"])
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("tab", name="Tickets").wait_for(timeout=60_000)
        assert page.get_by_role("tab", name="Model").count() == 1
        page.get_by_role("button", name="Log out").click()
        page.get_by_text("Logged out.").wait_for(timeout=30_000)
        assert page.get_by_role("tab", name="Tickets").is_hidden()
    finally:
        page.close()


def test_question_typed_in_the_page_is_answered(page, tmp_path):
    send(page, "How long does standard delivery take?")
    page.locator("#chat").get_by_text("business days").first.wait_for(timeout=90_000)
    shown = page.locator("#chat").inner_text()
    assert "faq_" not in shown and not re.search(r"\d\.\d{2}", shown)          # no FAQ ids, no scores
    assert page.locator("#sources, #products").count() == 0                   # no side panel of internals
    page.screenshot(path=str(tmp_path / "answer.png"))


def test_product_cards_and_no_html_injection(page):
    send(page, "a cheap laptop for a student")
    cards = page.locator("#chat [data-testid=bot] .att-card")
    cards.first.wait_for(timeout=90_000)
    assert cards.count() >= 1
    send(page, "<img src=x onerror=\"document.title='pwned'\"> <b>bold</b>")
    page.locator("#chat").get_by_text("<b>bold</b>", exact=False).first.wait_for(timeout=90_000)
    assert page.title() != "pwned"
    assert page.locator("#chat img[src='x']").count() == 0
    assert page.locator("#chat b", has_text="bold").count() == 0
