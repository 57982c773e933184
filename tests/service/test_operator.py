"""The operator console: login, review a handed-over conversation, close it, the customer is back."""
import subprocess
import sys

from core.config import PROJECT_ROOT
from service.operator import OperatorConsole


def test_operator_reviews_and_closes_a_ticket(assistant):
    assistant.respond("cust", "my email is jo.doe@example.com")
    assistant.respond("cust", "I want to speak to a real person")
    console = OperatorConsole(assistant.desk, password="s3cret")
    assert console.check_password("s3cret") and not console.check_password("wrong") and not console.check_password("")
    rows = console.ticket_rows()
    assert len(rows) == 1 and rows[0][3] == "the customer asked for a person"
    transcript = console.transcript(rows[0][0])
    assert any("[EMAIL]" in m["content"] for m in transcript)
    assert "Closed" in console.close(rows[0][0], "called the customer")
    assert console.ticket_rows() == [] and "No open ticket" in console.close(rows[0][0])
    assert assistant.respond("cust", "thanks a lot").action == "small_talk"


def test_console_is_off_without_a_password(assistant, monkeypatch):
    monkeypatch.delenv("ATTENDANT_OPERATOR_PASSWORD", raising=False)
    console = OperatorConsole(assistant.desk)
    assert not console.enabled and not console.check_password("")


def test_cli_lists_and_rejects_unknown_tickets(service_config):
    run = lambda *a: subprocess.run([sys.executable, "-m", "service.operator", "--config", str(service_config.path), *a],
                                    cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert run("tickets").returncode == 0
    out = run("show", "T-99999")
    assert out.returncode == 2 and out.stderr.startswith("error: no ticket T-99999")
