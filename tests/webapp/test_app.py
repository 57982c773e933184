"""The web app for real: `python app.py` on a free port, first run included, answering through the
REST API; plus the command line's help and one-line errors."""
import subprocess
import sys

import httpx

from core.config import PROJECT_ROOT


def run_app(*args):
    return subprocess.run([sys.executable, "app.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help():
    out = run_app("--help")
    assert out.returncode == 0
    for flag in ("--config", "--host", "--port"):
        assert flag in out.stdout


def test_missing_config_is_one_line(tmp_path):
    out = run_app("--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("error: config file not found")


def test_broken_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    out = run_app("--config", str(bad))
    assert out.returncode == 2 and "not valid YAML" in out.stderr and "Traceback" not in out.stderr


def test_first_run_builds_artifacts_then_serves_page_console_and_api(app_server, make_api_key):
    url = app_server["url"]
    log = app_server["log"].read_text()
    assert "first-run build [1/1] index: running" in log        # the first run built what was missing
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert httpx.get(url + "/operator/").status_code == 200      # the operator console, on its own path
    assert httpx.get(url + "/operator", follow_redirects=True).url.path == "/operator/"
    assert httpx.get(url + "/api/v1/health").json()["status"] == "ok"
    key = make_api_key("test_app")
    conv = httpx.post(url + "/api/v1/conversations", headers={"Authorization": f"Bearer {key}"}).json()
    reply = say(url, conv, "How long does standard delivery take?")
    assert reply["action"] == "answer_faq" and "business days" in reply["text"]
    assert reply["sources"][0]["faq_id"] == "faq_ship_02"
    assert "debug" not in reply                                    # no scores or decisions for the public
    shop = say(url, conv, "a cheap laptop for a student")
    assert shop["action"] == "recommend" and shop["products"]


def test_bad_input_through_the_app(app_server, make_api_key):
    url = app_server["url"]
    key = make_api_key("test_app junk")
    conv = httpx.post(url + "/api/v1/conversations", headers={"Authorization": f"Bearer {key}"}).json()
    for junk in ["", "x" * 20_000, "\x00\x01\x02", "<script>alert(1)</script>", "\U0001F600" * 50, "\u202e\u200b", "   "]:
        reply = say(url, conv, junk)
        assert reply["text"] and "Traceback" not in reply["text"]
    assert say(url, conv, "thanks a lot")["action"] == "small_talk"


def say(url: str, conv: dict, text: str) -> dict:
    r = httpx.post(f"{url}/api/v1/conversations/{conv['conversation_id']}/messages", json={"text": text},
                   headers={"X-Conversation-Token": conv["token"]}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()
