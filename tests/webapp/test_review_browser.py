"""The Review tab in a real headless Chromium: customers talk through the REST API (one presses thumbs
down and rates the conversation 1), the operator logs in at /operator/, opens Review, finds the
conversation in the ranked queue with what the assistant did and why (escaped, redacted), applies a
correction, and it is stored with who made it."""
import re

import httpx
import pytest

from core.config import load_config
from service.store import Store
from tests.helpers import API, operator_login, skip_module_without_chromium

skip_module_without_chromium()

pytestmark = pytest.mark.slow



def _conversation(url: str, key: str, messages: list[str]) -> tuple[str, list[str], str]:
    r = httpx.post(url + API + "/conversations", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert r.status_code == 201, r.text
    conv = r.json()
    headers = {"X-Conversation-Token": conv["token"]}
    turn_ids = []
    for text in messages:
        r = httpx.post(f"{url}{API}/conversations/{conv['conversation_id']}/messages", json={"text": text},
                       headers=headers, timeout=120)
        assert r.status_code == 200, r.text
        turn_ids.append(r.json()["turn_id"])
    return conv["conversation_id"], turn_ids, conv["token"]


def test_review_queue_shows_a_ranked_conversation_and_a_correction_is_stored(operator_app_server, make_api_key,
                                                                                 browser):
    url = operator_app_server["url"]
    key = make_api_key("review-test")
    conv_id, turns, token = _conversation(url, key, [
        "How long does standard delivery take?",
        "my email is jane.doe@example.com <img src=x onerror=alert(1)> can you fix my bike?"])
    headers = {"X-Conversation-Token": token}
    r = httpx.post(f"{url}{API}/conversations/{conv_id}/turns/{turns[1]}/feedback", json={"value": "down"},
                   headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert httpx.post(f"{url}{API}/conversations/{conv_id}/rating", json={"rating": 1}, headers=headers,
                      timeout=60).status_code == 201

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        operator_login(page, url, operator_app_server["password"])
        page.get_by_role("tab", name="Review").click(timeout=60_000)
        page.get_by_role("button", name="Refresh queue").click()
        page.locator("#review-status").get_by_text("need review").wait_for(timeout=60_000)
        queue = page.locator("#review-queue").text_content()
        assert conv_id in queue and "thumbs down" in queue and "low rating" in queue   # ranked in the queue

        box = page.locator("#review-conversation textarea, #review-conversation input").first
        box.fill(conv_id)
        page.get_by_role("button", name="Show conversation").click()
        turns_view = page.locator("#review-turns")
        turns_view.get_by_text("needs review").first.wait_for(timeout=60_000)
        shown = turns_view.inner_text()
        assert "jane.doe@example.com" not in shown                           # stored redacted
        assert "<img src=x onerror=alert(1)>" in shown.replace("\\", "")    # shown as literal text
        assert turns_view.locator("img").count() == 0
        assert re.search(r"Top intents:", shown) and "FAQ candidates:" in shown and "Why:" in shown

        # an intent correction without an intent is refused, with what to fix
        page.get_by_role("button", name="Apply correction").click()
        page.locator("#review-result").get_by_text("Not stored").wait_for(timeout=60_000)
        # the thumbs-down turn is the one picked: mark it out of scope
        page.get_by_label("mark the message out of scope").check()
        page.get_by_role("button", name="Apply correction").click()
        page.locator("#review-result").get_by_text("Stored correction").wait_for(timeout=60_000)
    finally:
        page.close()

    config = load_config(operator_app_server["config"])
    store = Store(config.layout.store)
    try:
        mine = [c for c in store.corrections() if c["session_id"] == conv_id]
    finally:
        store.close()
    assert len(mine) == 1
    (c,) = mine
    assert c["kind"] == "out_of_scope" and c["turn_id"] == turns[1] and c["author"] and c["created_at"] > 0
    assert "can you fix my bike" in c["payload"]["text"] and "jane.doe@example.com" not in c["payload"]["text"]


def test_versions_tab_shows_the_registry_and_the_split_state(operator_app_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        operator_login(page, operator_app_server["url"], operator_app_server["password"])
        page.get_by_role("tab", name="Versions").click(timeout=60_000)
        page.get_by_role("button", name="Refresh").first.click()
        page.locator("#versions-split").get_by_text("No A/B split is running.").wait_for(timeout=60_000)
        assert "Served version" in page.locator("#versions-served").inner_text()
        # a split needs a registered candidate: a name that is none says why, in the message line
        page.locator("#versions-name textarea, #versions-name input").first.fill("no-such-version")
        page.get_by_role("button", name="Start A/B split with the version above").click()
        page.locator("#versions-message").get_by_text("is not a version name").wait_for(timeout=60_000)
    finally:
        page.close()
