"""Fixtures for the conversation engine: the demo deployment copied to a temporary folder, its
indexes built once per session with the real default encoder, and a fresh store per test."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, load_config


def write_demo_config(folder: Path, **overrides: str) -> Path:
    """configs/demo.yaml with absolute data paths and artifacts under `folder`."""
    text = (PROJECT_ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8")
    text = text.replace("../data/", f"{PROJECT_ROOT}/data/")
    text = text.replace("artifacts_dir: ../artifacts/demo", f"artifacts_dir: {folder / 'artifacts'}")
    for old, new in overrides.items():
        text = text.replace(old, new)
    path = folder / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def service_config(tmp_path_factory):
    return load_config(write_demo_config(tmp_path_factory.mktemp("service")))


@pytest.fixture(scope="session")
def demo_nlu(service_config, embedder):
    from service.nlu import FrozenEncoderNLU

    return FrozenEncoderNLU.from_file(embedder, service_config.data.intents)


@pytest.fixture(scope="session")
def built_indexes(service_config, demo_nlu):
    from retrieval.build import build_indexes

    build_indexes(service_config, embedder=demo_nlu.embedder)
    return service_config.index_dir


@pytest.fixture
def make_assistant(service_config, demo_nlu, built_indexes, tmp_path):
    """A factory: a new Assistant over a store file (fresh per test unless a path is given)."""
    from service.assembly import build_assistant, open_store

    def make(store_path: Path | None = None):
        store = open_store(service_config, store_path or tmp_path / "store.sqlite")
        return build_assistant(service_config, nlu=demo_nlu, store=store)

    return make


@pytest.fixture
def assistant(make_assistant):
    return make_assistant()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """`python app.py` for real, on a free port, from a config whose artifacts do not exist yet:
    the first run builds them, then serves. Yields the base URL."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    folder = tmp_path_factory.mktemp("app")
    # The first run builds only the indexes here: training and distillation on the demo pack take
    # minutes, and tests/test_pipeline.py runs those steps end to end on a tiny configuration.
    config = write_demo_config(folder, **{"steps: [train, distill, compress, index, evaluate]": "steps: [index]"})
    port = _free_port()
    log_path = folder / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--config", str(config), "--port", str(port)],
                                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 900
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"app.py did not start in time:\n{log_path.read_text()[-3000:]}")
            time.sleep(2)
        yield {"url": url, "log": log_path, "config": config}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
