"""Child processes the tools start (the app under test, a benchmark's replicas, the screenshot server)."""
from __future__ import annotations

import subprocess

STOP_GRACE_S = 30   # time for a clean shutdown (uvicorn finishes its requests) before it is killed


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Ask `proc` to exit; kill it when it has not after `grace_s` seconds; reap it either way."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
