"""The operator console's Monitoring tab in a real headless Chromium: after a few REST conversations, log
in, open the tab, refresh and see a plot; draft and save an FAQ entry from the unanswered questions; ask
for the explanation of one of those turns and see it."""
from __future__ import annotations

import pytest

from tests.helpers import api_conversation as conversation
from tests.helpers import api_send as send
from tests.helpers import operator_login, skip_module_without_chromium

skip_module_without_chromium()

pytestmark = pytest.mark.slow



def test_monitoring_tab_shows_plots_and_explains_a_turn(operator_app_server, make_api_key, browser):
    url = operator_app_server["url"]
    key = make_api_key("test_monitoring_browser")
    conv = conversation(url, key)
    replies = [send(url, conv, text).json() for text in
               ("how long does shipping take?", "can I return shoes I already wore?", "zzkx qwpl vbnm")]
    turn_id = replies[1]["turn_id"]
    assert turn_id.startswith("t-")

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        operator_login(page, url, operator_app_server["password"])
        page.get_by_role("tab", name="Monitoring").wait_for(timeout=60_000)
        page.get_by_role("tab", name="Monitoring").click()
        page.locator("#monitoring-refresh").click()
        # A drawn chart (vega renders to a canvas or an svg) in the conversations-over-time plot.
        page.locator("#monitoring-volume canvas, #monitoring-volume svg").first.wait_for(timeout=90_000)
        page.get_by_text("containment (no handoff)").wait_for(timeout=30_000)

        # Unanswered questions: cluster them, draft an FAQ entry from the largest, write its answer, save it.
        page.get_by_role("button", name="Find unanswered questions").click()
        # As an operator does: draft once the groups are listed (on a busy store the clustering takes a while).
        page.locator("#faq-drafted").get_by_text("group(s) of unanswered questions").wait_for(timeout=120_000)
        page.locator("#draft-faq").click()
        question = page.locator("#faq-question textarea, #faq-question input").first
        page.wait_for_function("el => el.value.length > 0", arg=question.element_handle(), timeout=120_000)
        page.locator("#faq-answer textarea").first.fill("We will look into it and add an answer soon.")
        page.locator("#save-faq").click()
        page.locator("#faq-drafted").get_by_text("Saved new FAQ correction").wait_for(timeout=60_000)

        page.locator("#explain-turn-id textarea, #explain-turn-id input").first.fill(turn_id)
        page.locator("#explain-button").click()
        explanation = page.locator("#explanation")
        explanation.get_by_text("Words that drove").wait_for(timeout=120_000)
        text = explanation.inner_text()
        assert turn_id in text and "Nearest training examples" in text and "Policy rule" in text
    finally:
        page.close()
