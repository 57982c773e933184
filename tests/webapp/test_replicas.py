"""Two replicas of the app on one PostgreSQL store: a conversation alternates between them, and
confirmations fired at both at the same moment write exactly once."""
from __future__ import annotations

import threading
from contextlib import ExitStack

import httpx
import pytest
import sqlalchemy as sa

from tests.webapp.conftest import RELAXED_LIMITS, apikeys_cli

pytestmark = pytest.mark.slow

ORDER, EMAIL = "HC-104251", "maya.okafor@example.com"      # a "processing" order of the demo pack


@pytest.fixture(scope="module")
def replicas(app_server, pg_server, _pg_admin):
    """Two `python app.py` processes (the shared server's built artifacts) on one new PostgreSQL database."""
    from sqlalchemy.engine import make_url

    from tests.helpers import running_app

    with _pg_admin.connect() as conn:
        conn.exec_driver_sql('CREATE DATABASE "replicas"')
    url = make_url(pg_server).set(database="replicas").render_as_string(hide_password=False)
    store = ("--set", f"store.url={url}")
    with ExitStack() as stack:
        urls = [stack.enter_context(running_app(app_server["config"], app_server["log"].with_name(f"replica{i}.log"),
                                                "--no-build", *store, *RELAXED_LIMITS, timeout=600))
                for i in range(2)]
        key = apikeys_cli(app_server["config"], *store, "create", "replica test")
        yield {"urls": urls, "key": key, "store_url": url}


def say(base: str, conversation: dict, text: str) -> dict:
    r = httpx.post(f"{base}/api/v1/conversations/{conversation['conversation_id']}/messages", json={"text": text},
                   headers={"X-Conversation-Token": conversation["token"]}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_conversation_alternates_between_replicas_and_one_confirmation_writes_once(replicas):
    from service.store import Store

    a, b = replicas["urls"]
    r = httpx.post(f"{a}/api/v1/conversations", headers={"Authorization": f"Bearer {replicas['key']}"}, timeout=60)
    assert r.status_code == 201, r.text
    conversation = r.json()
    # Every turn lands on the other replica: the flow's state, the verification and the token live
    # in the database, not in either process.
    assert say(b, conversation, "I want to cancel my order")["action"] == "cancel_order"
    say(a, conversation, ORDER)
    asked = say(b, conversation, EMAIL)
    assert "(yes/no)" in asked["text"]

    replies, barrier = [None, None], threading.Barrier(2)

    def confirm(i: int, base: str) -> None:
        barrier.wait()
        replies[i] = say(base, conversation, "yes")

    threads = [threading.Thread(target=confirm, args=(i, u)) for i, u in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    texts = [r["text"] for r in replies]
    assert sum("is cancelled" in t for t in texts) == 1, texts                # one reply reports the write

    store = Store(replicas["store_url"])
    assert store.get_order(ORDER).status == "cancelled"
    engine = sa.create_engine(replicas["store_url"].replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as c:                                             # one confirmed write, by key
        assert c.execute(sa.text("SELECT COUNT(*) FROM confirmations WHERE order_id = :o"), {"o": ORDER}).scalar() == 1
    engine.dispose()
    # The history is the same whichever replica is asked.
    h = [httpx.get(f"{u}/api/v1/conversations/{conversation['conversation_id']}/messages",
                   headers={"X-Conversation-Token": conversation["token"]}, timeout=60).json() for u in (a, b)]
    assert h[0] == h[1] and len(h[0]["messages"]) == 10


def test_a_token_issued_by_one_replica_is_refused_by_both_once_closed(replicas):
    a, b = replicas["urls"]
    conversation = httpx.post(f"{a}/api/v1/conversations", headers={"Authorization": f"Bearer {replicas['key']}"},
                              timeout=60).json()
    assert say(b, conversation, "hello")["action"] == "small_talk"
    assert httpx.delete(f"{b}/api/v1/conversations/{conversation['conversation_id']}",
                        headers={"X-Conversation-Token": conversation["token"]}, timeout=60).status_code == 204
    for base in (a, b):
        r = httpx.post(f"{base}/api/v1/conversations/{conversation['conversation_id']}/messages", json={"text": "hi"},
                       headers={"X-Conversation-Token": conversation["token"]}, timeout=60)
        assert r.status_code == 401
