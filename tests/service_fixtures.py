"""Fixtures for the conversation engine: the demo deployment copied to a temporary folder, its
indexes built once per session with the real default encoder, and a fresh store per test."""
from __future__ import annotations

from pathlib import Path

import pytest

from service.config import PROJECT_ROOT, load_config


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
