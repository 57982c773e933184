"""Fixtures for the web app: `python app.py` for real (built once per session), API keys made with
the real CLI, and the operator console switched on."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import PROJECT_ROOT, chromium, running_app, write_demo_config

# Every test process talks from 127.0.0.1: the shared server's per-client and per-conversation limits
# are raised so the tests don't throttle each other; the limits themselves are tested on their own.
RELAXED_LIMITS = ("--set", "server.client_rate_per_minute=100000", "--set", "server.conversation_rate_per_minute=10000")
OPERATOR_TEST_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """`python app.py` for real, on a free port, from a config whose artifacts do not exist yet:
    the first run builds them, then serves. Yields the base URL, the log and the config."""
    folder = tmp_path_factory.mktemp("app")
    # The first run builds only the indexes here: training and distillation on the demo pack take
    # minutes, and tests/training/test_pipeline.py runs those steps end to end on a tiny configuration.
    config = write_demo_config(folder, **{"steps: [train, distill, compress, index, evaluate]": "steps: [index]"})
    log_path = folder / "app.log"
    with running_app(config, log_path, *RELAXED_LIMITS) as url:
        yield {"url": url, "log": log_path, "config": config}


@pytest.fixture(scope="session")
def operator_app_server(app_server):
    """A second `python app.py` on the first one's (already built) config and store, with the operator
    console on (ATTENDANT_OPERATOR_PASSWORD set). Yields the base URL and the password."""
    log_path = app_server["log"].with_name("operator_app.log")
    with running_app(app_server["config"], log_path, "--no-build", *RELAXED_LIMITS,
                     env={"ATTENDANT_OPERATOR_PASSWORD": OPERATOR_TEST_PASSWORD}, timeout=600) as url:
        yield {"url": url, "log": log_path, "config": app_server["config"], "password": OPERATOR_TEST_PASSWORD}


def apikeys_cli(config, *args: str) -> str:
    """`python -m webapp.apikeys --config CONFIG ARGS` for real; its standard output."""
    done = subprocess.run([sys.executable, "-m", "webapp.apikeys", "--config", str(config), *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="session")
def make_api_key(app_server):
    """A factory: a new API key on the shared server's store, `make_api_key("name", origins=[...])`."""

    def make(name: str = "tests", origins: tuple[str, ...] = (), rate_per_minute: int | None = None) -> str:
        args = ["create", name, *(a for o in origins for a in ("--origin", o))]
        if rate_per_minute is not None:
            args += ["--rate-per-minute", str(rate_per_minute)]
        return apikeys_cli(app_server["config"], *args)

    return make


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the module's browser tests (each test opens its own context or page)."""
    with chromium() as launched:
        yield launched
