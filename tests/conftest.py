"""Shared fixtures. Models and demo indexes are session-scoped: loading the encoder and embedding
the demo pack dominate the suite's run time, so they happen once."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

import core  # noqa: F401  (sets the OpenMP wait policy before torch and faiss load)
from core.config import DEFAULT_ENCODER, load_config
from core.jsonl import read_jsonl
from tests.helpers import write_demo_config


@pytest.fixture(scope="session")
def demo_config():
    """The embedded demo deployment (configs/demo.yaml)."""
    return load_config()


@pytest.fixture(scope="session")
def embedder():
    """The default encoder (all-MiniLM-L6-v2, resolved offline)."""
    from runtime.embedder import Embedder

    return Embedder(DEFAULT_ENCODER)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A second, different Hugging Face encoder (random 2-layer BERT, default tokenizer) saved the
    Hugging Face way: for "any encoder" and encoder-mismatch tests."""
    import torch
    from transformers import BertConfig, BertModel

    from runtime.embedder import resolve_model_path

    src = Path(resolve_model_path(DEFAULT_ENCODER))
    out = tmp_path_factory.mktemp("tiny_encoder")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="session")
def demo_faq_index(demo_config, embedder):
    from retrieval.faq import FaqIndex

    return FaqIndex.build(read_jsonl(demo_config.data.faq), embedder, exact_max=demo_config.retrieval.exact_max)


@pytest.fixture(scope="session")
def demo_recommender(demo_config, embedder):
    from retrieval.recommend import Recommender

    return Recommender.build(read_jsonl(demo_config.data.products), embedder, exact_max=demo_config.retrieval.exact_max)


# ---------------------------------------------------------------------- the conversation engine
# The demo deployment copied to a temporary folder, its indexes built once per session with the real
# default encoder, and a fresh store per test.

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


# ---------------------------------------------------------------------- the store's two backends
# One real PostgreSQL for the session (pgserver: a private server on a Unix socket, ~1 s to start),
# a fresh empty database on it for every test that asks, and `store_url`/`make_store`, parametrised
# over both backends, for the tests of the store and of what runs on it. (The running app's
# fixtures are in tests/webapp/conftest.py.)

@pytest.fixture(scope="session")
def pg_server() -> str:
    """A PostgreSQL server for the session; its URI (postgresql://postgres:@/postgres?host=SOCKET_DIR).
    Its data lives in a folder of its own, not under pytest's basetemp: another pytest session on this
    machine prunes old basetemps, which would pull the data from under a running server."""
    import tempfile
    import warnings

    folder = Path(tempfile.mkdtemp(prefix="attendant-pg-"))
    with warnings.catch_warnings():      # platformdirs: no XDG_RUNTIME_DIR in a bare test environment
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(folder / "data", cleanup_mode="stop")
        uri = server.get_uri()
    yield uri
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def _pg_admin(pg_server):
    import sqlalchemy as sa

    from service.store import store_url

    engine = sa.create_engine(store_url(pg_server), isolation_level="AUTOCOMMIT",
                              poolclass=sa.pool.NullPool)
    with engine.connect() as conn:       # a throwaway server: durability off, every commit and CREATE DATABASE faster
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            conn.exec_driver_sql(f"ALTER SYSTEM SET {setting}")
        conn.exec_driver_sql("SELECT pg_reload_conf()")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_server, _pg_admin) -> str:
    """The URL of a new, empty database on the session's PostgreSQL (dropped after the test)."""
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex}"
    with _pg_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    with _pg_admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """Where a test's store lives: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def make_store(store_url):
    """A factory of `Store`s on this test's backend and database (each call: another "process" on
    the same data); their connections are closed after the test."""
    from service.store import Store

    stores = []

    def make(**kwargs):
        stores.append(Store(store_url, **kwargs))
        return stores[-1]

    yield make
    for s in stores:
        s.close()
