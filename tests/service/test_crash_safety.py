"""Crash safety of a confirmed write: a process is killed (SIGKILL) at chosen points of the turn
that says "yes" to a return and of a handoff turn after it, then restarted; the customer says
"yes" again. The order is changed exactly once, the retry does not double it, and every
acknowledged transcript line and ticket is still there.

The worker runs turns the way `Assistant.respond` does (load the session, run the flow, open a
ticket on a handoff, save the session, append the transcript, then answer) over the real
`FlowRunner` and `Store`, without a model: the NLU's verdict is given with each message. It
kills itself with SIGKILL just before the Nth SQL statement it would run. SQLite only: a killed
process is the embedded store's case (PostgreSQL's own crash safety is PostgreSQL's).
"""
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "data" / "demo" / "orders.jsonl"

WORKER = textwrap.dedent('''
    """A driver: for each kill point, a forked child runs the turns and dies (SIGKILL) just before its
    Nth SQL statement; then this process, a different one, opens the store afresh and runs the retry."""
    import datetime as dt, json, os, shutil, signal, sys
    import numpy as np
    from sqlalchemy import event
    from core.config import FlowsConfig
    from service.flows import FlowRunner
    from service.nlu import NLUResult
    from service.pii import redact
    from service.store import Store

    job = json.loads(sys.argv[1])
    seen = []

    class CrashingStore(Store):
        """Every statement the store sends, and every COMMIT/ROLLBACK (the driver's, not SQL), is
        traced through the engine's events; the Nth kills the process just before it runs."""
        kill_at = None
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            event.listen(self.engine, "before_cursor_execute", lambda c, cur, sql, *rest: self._trace(sql))
            event.listen(self.engine, "commit", lambda c: self._trace("COMMIT"))
            event.listen(self.engine, "rollback", lambda c: self._trace("ROLLBACK"))
        def _trace(self, sql):
            if self.kill_at is None:
                return
            seen.append(" ".join(sql.split())[:50])
            if len(seen) == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    def emit(**record):
        sys.stdout.write(json.dumps(record) + "\\n")
        sys.stdout.flush()

    def turns(path, items, kill_at=None, tag=""):
        """Engine turns: load, run the flow, a ticket on a handoff, save, transcript, then the answer."""
        store = CrashingStore(path)
        if store.order_count() == 0:
            store.seed_orders(job["orders"])
        runner = FlowRunner(store, FlowsConfig(reference_date=dt.date(2026, 11, 29)))
        store.kill_at = kill_at
        for sid, text, intent, confidence in items:
            state = store.load(sid)
            if state.handoff:
                reply = f"waiting for a person (ticket {state.ticket_id})"
            else:
                result = runner.handle(state, text, NLUResult(intent, confidence, [], np.zeros(4, np.float32)))
                reply = result.reply.text if result.reply else "(not a flow turn)"
                if result.handoff_reason:
                    transcript = state.history + [{"role": "user", "text": redact(text)}]
                    state.ticket_id = store.open_ticket(sid, result.handoff_reason, transcript)
                    state.handoff, state.flow = True, None
                    reply += f" Your ticket number is {state.ticket_id}."
            user, bot = redact(text), redact(reply)
            state.history += [{"role": "user", "text": user}, {"role": "assistant", "text": bot}]
            store.save(state)
            store.append_transcript(sid, "user", user)
            store.append_transcript(sid, "assistant", bot)
            emit(tag=tag, sid=sid, user=user, bot=bot, ticket=state.ticket_id)
        store.close()

    if job["mode"] == "setup":          # the conversation up to the question, then a trace of the crashing turns
        turns(job["template"], job["setup"], tag="setup")
        trace = job["template"] + ".trace"
        shutil.copy(job["template"], trace)
        turns(trace, job["crashing"], kill_at=0)
        emit(statements=seen)
    else:
        for point in job["points"]:
            db = f"{job['folder']}/crash-{point}.sqlite"
            shutil.copy(job["template"], db)
            child = os.fork()
            if child == 0:
                turns(db, job["crashing"], kill_at=point, tag=f"crash-{point}")
                os._exit(0)
            _, status = os.waitpid(child, 0)
            emit(point=point, killed=os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)
            # Restarted: the customer says "yes" again, and asks again where no answer came.
            retry = [job["crashing"][0]] + job["crashing"][1:]
            turns(db, retry, tag=f"retry-{point}")
''')

SETUP = [["s1", "I'd like to return an item", "return_request", 0.9], ["s1", "HC-104240", "none", 0.0],
         ["s1", "oliver.brandt@example.org", "none", 0.0], ["s1", "it's never been opened", "none", 0.0]]
CRASHING = [["s1", "yes", "none", 0.0],                                   # the confirmed write
            ["s2", "cancel my order HC-104302 daniel.reyes@example.org", "cancel_order", 0.9]]   # a ticket


def drive(worker, job):
    out = subprocess.run([sys.executable, str(worker), json.dumps(job)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash")
    worker = folder / "worker.py"
    worker.write_text(WORKER)
    template = folder / "template.sqlite"
    records = drive(worker, {"mode": "setup", "template": str(template), "setup": SETUP, "crashing": CRASHING,
                             "orders": str(ORDERS)})
    acks = [r for r in records if r.get("tag") == "setup"]
    assert "(yes/no)" in acks[-1]["bot"]
    statements = next(r["statements"] for r in records if "statements" in r)
    return worker, folder, template, acks, statements


def kill_points(statements):
    """The statements of the crashing turns worth dying before: the write's transaction from its
    start to just after its commit, the session save and transcript after it, the ticket."""
    write = next(i for i, s in enumerate(statements) if s.startswith("UPDATE orders SET status = 'return_requested'"))
    begin = max(i for i in range(write) if statements[i] == "BEGIN IMMEDIATE")
    commit = next(i for i in range(write, len(statements)) if statements[i] == "COMMIT")
    ticket = next(i for i, s in enumerate(statements) if s.startswith("INSERT INTO tickets"))
    points = {begin, write, write + 1, commit - 1, commit, commit + 1, commit + 3, ticket, ticket + 2,
              len(statements) - 1}
    return sorted(p + 1 for p in points if 0 <= p < len(statements))      # kill_at counts from 1


def test_kill_points_cover_the_write(prepared):
    statements = prepared[-1]
    assert any(s.startswith("INSERT INTO returns") for s in statements)
    assert any(s.startswith("INSERT INTO confirmations") for s in statements)
    assert len(kill_points(statements)) >= 8


def test_killed_and_restarted_the_order_changes_exactly_once(prepared):
    worker, folder, template, setup_acks, statements = prepared
    points = kill_points(statements)
    records = drive(worker, {"mode": "crash", "template": str(template), "folder": str(folder), "points": points,
                             "crashing": CRASHING, "orders": str(ORDERS)})
    outcomes = []
    for point in points:
        assert {"point": point, "killed": True} in records, f"the child was to die before statement {point}"
        acks = [r for r in records if r.get("tag") == f"crash-{point}"]
        retry_acks = [r for r in records if r.get("tag") == f"retry-{point}"]
        conn = sqlite3.connect(folder / f"crash-{point}.sqlite")
        returns = conn.execute("SELECT status FROM returns WHERE order_id = 'HC-104240'").fetchall()
        status = conn.execute("SELECT status FROM orders WHERE order_id = 'HC-104240'").fetchone()[0]
        assert returns == [("requested",)] and status == "return_requested", (point, returns)
        assert conn.execute("SELECT COUNT(*) FROM confirmations").fetchone()[0] == 1
        # Every acknowledged turn's lines are in the transcript, in order, and every acknowledged ticket exists.
        lines = conn.execute("SELECT session_id, role, text FROM transcripts ORDER BY id").fetchall()
        for ack in setup_acks + acks + retry_acks:
            pair = [(ack["sid"], "user", ack["user"]), (ack["sid"], "assistant", ack["bot"])]
            assert any(lines[i:i + 2] == pair for i in range(len(lines) - 1)), (point, ack)
            if ack["ticket"]:
                assert conn.execute("SELECT 1 FROM tickets WHERE ticket_id = ?", (ack["ticket"],)).fetchone()
        # The customer of the handoff is with a person, on a ticket that exists.
        state = json.loads(conn.execute("SELECT state FROM sessions WHERE session_id = 's2'").fetchone()[0])
        assert state["handoff"] and conn.execute("SELECT status FROM tickets WHERE ticket_id = ?",
                                                 (state["ticket_id"],)).fetchone() == ("open",)
        conn.close()
        outcomes.append((point, bool(acks), retry_acks[0]["bot"][:40]))
    # Killed before the commit, the retry wrote; killed after it, before the answer, the retry got
    # the same answer again (the confirmation's first result); after the answer there is nothing to redo.
    assert {o[2] for o in outcomes if not o[1]} == {"Done: return R-00001 is open for order H"}, outcomes
    assert {o[2] for o in outcomes if o[1]} == {"(not a flow turn)"}, outcomes
    write_commit = statements.index("COMMIT", next(i for i, s in enumerate(statements)
                                                   if s.startswith("INSERT INTO confirmations")))
    assert any(not acked and point - 1 > write_commit for point, acked, _ in outcomes), outcomes   # a replay
