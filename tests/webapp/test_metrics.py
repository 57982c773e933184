"""/metrics (webapp/metrics.py): scraped from the real `python app.py` after scripted REST conversations,
parsed with prometheus_client's parser; the counts match the replies. Who may read it, in process."""
from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import ServerConfig
from service.engine import TurnEvent
from service.reply import Reply
from tests.helpers import api_conversation as conversation
from tests.helpers import api_send as send
from webapp.metrics import TurnMetrics, metrics_allowed


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_turns_of_scripted_conversations(app_server, make_api_key):
    url = app_server["url"]
    key = make_api_key("test_metrics")
    before = scrape(url)
    messages = ["hi there", "how long does shipping take?", "what is the capital of France?",
                "I want to talk to a human", "asdf qwer zxcv", "do you sell running shoes under $100?"]
    replies, new_handoffs = [], 0
    for i in range(2):
        conv, handed_off = conversation(url, key), False
        for text in messages[i::2]:
            r = send(url, conv, text)
            assert r.status_code == 200, r.text
            replies.append(r.json())
            # Later turns of a handed-off conversation say "a person will reply": no new handoff.
            new_handoffs += replies[-1]["handoff"] and not handed_off
            handed_off = handed_off or replies[-1]["handoff"]
    # Feedback is counted where the store accepts it: a thumbs down on a reply of this conversation,
    # and a rating; a thumbs up on another conversation's reply is refused and not counted.
    turn = replies[-1]["turn_id"]
    thumbs = httpx.post(f"{url}/api/v1/conversations/{conv['conversation_id']}/turns/{turn}/feedback",
                        json={"value": "down"}, headers={"X-Conversation-Token": conv["token"]})
    assert thumbs.status_code == 200, thumbs.text
    rating = httpx.post(f"{url}/api/v1/conversations/{conv['conversation_id']}/rating", json={"rating": 4},
                        headers={"X-Conversation-Token": conv["token"]})
    assert rating.status_code == 201, rating.text
    other = conversation(url, key)
    refused = httpx.post(f"{url}/api/v1/conversations/{other['conversation_id']}/turns/{turn}/feedback",
                         json={"value": "up"}, headers={"X-Conversation-Token": other["token"]})
    assert refused.status_code == 404, refused.text
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("attendant_turns_total") == len(replies)
    for action in {r["action"] for r in replies}:
        assert delta("attendant_actions_total", action=action) == sum(r["action"] == action for r in replies)
    for intent in {r["intent"] for r in replies if r["intent"]}:
        assert delta("attendant_intents_total", intent=intent) == sum(r["intent"] == intent for r in replies)
    assert delta("attendant_fallbacks_total") == sum(r["action"] == "fallback" for r in replies)
    assert delta("attendant_out_of_scope_total") == sum(r["action"] == "out_of_scope" for r in replies)
    assert delta("attendant_handoffs_total") == new_handoffs >= 1
    assert delta("attendant_errors_total") == 0
    assert delta("attendant_turn_seconds_count") == len(replies)
    for stage in ("understanding", "retrieval", "policy", "action", "store"):
        assert delta("attendant_turn_stage_seconds_count", stage=stage) >= 1
    assert value(after, "attendant_model_info", version=replies[-1]["model_version"]) == 1.0
    assert delta("attendant_feedback_total", kind="thumb", value="down") == 1
    assert delta("attendant_feedback_total", kind="thumb", value="up") == 0
    assert delta("attendant_feedback_total", kind="rating", value="4") == 1


def test_metrics_are_not_served_through_a_proxy(app_server):
    r = httpx.get(app_server["url"] + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 403 and "attendant_turns_total" not in r.text


@pytest.mark.parametrize("host, headers, server, allowed", [
    ("127.0.0.1", {}, ServerConfig(), True),
    ("::1", {}, ServerConfig(), True),
    ("10.0.0.5", {}, ServerConfig(), False),
    ("10.0.0.5", {}, ServerConfig(metrics_allow="10.0.0.0/24"), True),
    ("10.0.1.5", {}, ServerConfig(metrics_allow="10.0.0.0/24"), False),
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.9"}, ServerConfig(), False),
    ("127.0.0.1", {"forwarded": "for=203.0.113.9"}, ServerConfig(), False),
    ("203.0.113.9", {}, ServerConfig(metrics_public=True), True),
    (None, {}, ServerConfig(), False),
])
def test_who_may_read_metrics(host, headers, server, allowed):
    assert metrics_allowed(host, headers, server) is allowed


def test_observer_counts_in_process():
    m = TurnMetrics(actions=["answer_faq", "fallback", "handoff"], intents=["faq_shipping"], model_version="v1")
    m(TurnEvent("s", Reply("x", action="answer_faq", intent="faq_shipping", model_version="v1"),
                {"understanding": 3.0, "retrieval": 0.5}, 4.0))
    m(TurnEvent("s", Reply("x", action="fallback", intent="made_up_intent", model_version="v2"), {}, 1.0, error=True))
    waiting = Reply("x", action="handoff", handoff=True, debug={"decision": "already with a person"})
    m(TurnEvent("s", waiting, {}, 1.0))
    m.record_feedback("thumb", -1)
    m.record_feedback("rating", 5)
    text = m.exposition().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert value(samples, "attendant_turns_total") == 3
    assert value(samples, "attendant_intents_total", intent="other") == 1          # unknown labels are folded
    assert value(samples, "attendant_handoffs_total") == 0                          # "still waiting" is no new one
    assert value(samples, "attendant_errors_total") == 1
    assert value(samples, "attendant_feedback_total", kind="thumb", value="down") == 1
    assert value(samples, "attendant_feedback_total", kind="rating", value="5") == 1
    assert value(samples, "attendant_model_info", version="v2") == 1
    assert ("attendant_model_info", (("version", "v1"),)) not in samples
    assert value(samples, "attendant_turn_stage_seconds_count", stage="understanding") == 1


def test_record_feedback_counts_on_the_installed_metrics_and_never_raises():
    from webapp import metrics

    fake = SimpleNamespace(observers=[], model_version="v1", domain=None, nlu=None)
    installed = metrics.install_metrics(fake)
    assert fake.observers == [installed] and metrics.active() is installed
    metrics.record_feedback("nonsense", "x")   # logged, not raised
    metrics.record_feedback("thumb", 1)
    assert installed.feedback.labels(kind="thumb", value="up")._value.get() == 1


def test_dashboard_and_scrape_config_name_real_metrics():
    """docs/grafana-dashboard.json queries only series /metrics exposes; docs/prometheus.yml parses."""
    import json
    import re

    import yaml

    from tests.helpers import PROJECT_ROOT

    dashboard = json.loads((PROJECT_ROOT / "docs" / "grafana-dashboard.json").read_text())
    used = {name for p in dashboard["panels"] for t in p["targets"] for name in re.findall(r"attendant_\w+", t["expr"])}
    m = TurnMetrics(model_version="v1")
    m.set_drift({"intents": 0.0}, False)
    m(TurnEvent("s", Reply("x", action="answer_faq", intent="faq_shipping"), {"understanding": 1.0}, 2.0))
    exposed = {s.name for f in text_string_to_metric_families(m.exposition().decode()) for s in f.samples}
    assert used and used <= exposed, used - exposed
    scrape_config = yaml.safe_load((PROJECT_ROOT / "docs" / "prometheus.yml").read_text())
    assert scrape_config["scrape_configs"][0]["metrics_path"] == "/metrics"
