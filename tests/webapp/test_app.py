"""The web app for real: `python app.py` on a free port, first run included, answering through
gradio_client; plus the command line's help and one-line errors."""
import subprocess
import sys

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


def test_first_run_builds_artifacts_then_answers_through_gradio_client(app_server):
    from gradio_client import Client

    log = app_server["log"].read_text()
    assert "first-run build [1/1] index: running" in log        # the first run built what was missing
    client = Client(app_server["url"], verbose=False)
    token = client.predict(api_name="/start_conversation")["token"]    # the server issues the conversation
    reply = client.predict(token, "How long does standard delivery take?", api_name="/respond")
    assert reply["action"] == "answer_faq" and "business days" in reply["text"]
    assert reply["sources"][0]["faq_id"] == "faq_ship_02"
    assert "debug" not in reply                                    # no scores or decisions for the public
    shop = client.predict(token, "a cheap laptop for a student", api_name="/respond")
    assert shop["action"] == "recommend" and shop["products"]


def test_bad_input_through_the_app(app_server):
    from gradio_client import Client

    client = Client(app_server["url"], verbose=False)
    token = client.predict(api_name="/start_conversation")["token"]
    for junk in ["", "x" * 20_000, "\x00\x01\x02", "<script>alert(1)</script>"]:
        reply = client.predict(token, junk, api_name="/respond")
        assert reply["text"] and "Traceback" not in reply["text"]
    assert client.predict(token, "thanks a lot", api_name="/respond")["action"] == "small_talk"
