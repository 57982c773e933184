"""The operator console: login, review a handed-over conversation, close it, the customer is back."""
import subprocess
import sys

from core.config import PROJECT_ROOT
from service.operator import OperatorConsole


def test_operator_reviews_and_closes_a_ticket(assistant):
    assistant.respond("cust", "my email is jo.doe@example.com")
    assistant.respond("cust", "I want to speak to a real person")
    console = OperatorConsole(assistant.desk, password="s3cret-passphrase")
    assert console.check_password("s3cret-passphrase") and not console.check_password("wrong")
    assert not console.check_password("")
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


# ---- the "Trust" issue: brute force, expiry, logout, minimum length --------------------------------
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


PASSWORD = "correct horse battery staple"


def test_short_password_keeps_the_console_off_with_a_clear_log_line(assistant, caplog):
    console = OperatorConsole(assistant.desk, password="s3cret")          # 6 characters: too short
    assert not console.enabled and not console.login("s3cret").ok and not console.check_password("s3cret")
    assert "shorter than 12 characters" in caplog.text and "shorter than 12" in console.disabled_reason


def test_brute_force_is_locked_out_per_client_and_for_the_account(assistant):
    """Old code: 100 wrong passwords in 4.8 s, each one compared; now a lock stops the run early and
    even the right password waits until the lock ends."""
    clock = FakeClock()
    console = OperatorConsole(assistant.desk, password=PASSWORD, clock=clock)
    compared = []
    real = console.check_password
    console.check_password = lambda attempt: compared.append(attempt) or real(attempt)
    results = [console.login(f"guess-{i}", client="10.0.0.9") for i in range(100)]
    assert len(compared) <= 4                                  # 3 free failures, then locked
    assert all(not r.ok for r in results) and "Too many failed attempts" in results[-1].message
    locked = console.login(PASSWORD, client="10.0.0.9")
    assert not locked.ok and locked.retry_after > 0             # the right password waits too
    # The account is guarded as well: many clients, one account.
    for i in range(20):
        console.login(f"guess-{i}", client=f"10.1.0.{i}")
    assert "Too many failed attempts" in console.login(PASSWORD, client="10.2.0.1").message
    clock.now += 3600                                           # the locks end
    ok = console.login(PASSWORD, client="10.0.0.9")
    assert ok.ok and ok.token and console.session_valid(ok.token)


def test_operator_sessions_expire_and_end_at_logout(assistant):
    clock = FakeClock()
    console = OperatorConsole(assistant.desk, password=PASSWORD, clock=clock, idle_ttl=60, max_age=300)
    token = console.login(PASSWORD).token
    assert console.session_valid(token) and not console.session_valid("forged") and not console.session_valid(None)
    clock.now += 61
    assert not console.session_valid(token)                    # idle too long
    token = console.login(PASSWORD).token
    for _ in range(7):                                          # 350 s, never idle for 60
        clock.now += 50
        console.session_valid(token)
    assert not console.session_valid(token)                    # older than max_age, however busy
    token = console.login(PASSWORD).token
    console.logout(token)
    assert not console.session_valid(token)
