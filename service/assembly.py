"""Build a ready `Assistant` from a config and its artifacts.

Chooses the NLU (the served student when one has been built, else the pretrained encoder),
loads the FAQ and product indexes that were built with that same encoder, and reads the
calibrated thresholds. Missing or mismatched artifacts raise `ArtifactError` naming the
command that builds them; `service.artifacts.ensure_artifacts` builds them for the app.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from service.config import Config
from service.engine import Assistant
from service.flows import DEFAULT_POLICY, ORDER_FLOWS, FlowRunner
from service.errors import ArtifactError, DataError
from service.nlu import NLU, FrozenEncoderNLU, ModelNLU
from service.policy import Thresholds
from service.store import Store

log = logging.getLogger(__name__)

# Model folders in the order the app prefers to serve them.
SERVED_MODEL_DIRS = ("served", "student", "teacher")


def served_model_dir(config: Config) -> Path | None:
    """The trained model the app serves, if any has been built for this config."""
    for name in SERVED_MODEL_DIRS:
        d = config.artifacts_dir / name
        if (d / "attendant.json").is_file():
            return d
    return None


def load_nlu(config: Config) -> NLU:
    model_dir = served_model_dir(config)
    if model_dir is not None:
        from training.model import load_support_model

        log.info("serving the trained model in %s", model_dir)
        return ModelNLU(load_support_model(model_dir))
    from retrieval.embedder import Embedder

    log.info("no trained model for %s yet: pretrained %s + logistic regression", config.name, config.encoder.name)
    embedder = Embedder(config.encoder.name, max_length=config.encoder.max_length,
                        batch_size=config.encoder.batch_size)
    return FrozenEncoderNLU.from_file(embedder, config.data.intents)


def read_faq_records(path: Path) -> dict[str, dict]:
    records = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    records[str(row["id"])] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{path}:{n}: expected a JSON object with 'id', 'question' and 'answer'") from None
    return records


def open_store(config: Config, path: Path | None = None) -> Store:
    """The service's SQLite store, seeded with the config's orders on first open."""
    store = Store(path or config.artifacts_dir / "attendant.sqlite")
    if config.data.orders is not None and store.order_count() == 0:
        store.seed_orders(config.data.orders)
    return store


def build_assistant(config: Config, nlu: NLU | None = None, store: Store | None = None, **kwargs) -> Assistant:
    from retrieval.build import load_indexes

    nlu = nlu or load_nlu(config)
    store = store or open_store(config)
    faq_index, recommender, calibration = load_indexes(config, nlu.embedder)
    faq_threshold = config.policy.faq_threshold
    if faq_threshold is None:
        faq_threshold = calibration.get("faq_threshold")
        if faq_threshold is None:
            raise ArtifactError(f"{config.index_dir / 'calibration.json'} has no faq_threshold; rebuild it with "
                                f"`python -m retrieval.build --config {config.path}`")
    thresholds = Thresholds(faq=float(faq_threshold), clarify_margin=config.policy.clarify_margin,
                            intent=float(config.policy.intent_threshold or calibration.get("intent_threshold") or 0.5))
    log.info("thresholds: %s", thresholds)
    flows = FlowRunner(ORDER_FLOWS, store, policy={**DEFAULT_POLICY, **config.flows},
                       intent_threshold=thresholds.intent)
    return Assistant(nlu=nlu, faq_index=faq_index, recommender=recommender, thresholds=thresholds,
                     store_name=config.store_name, max_message_chars=config.policy.max_message_chars,
                     top_k=config.retrieval.top_k, faq_records=read_faq_records(config.data.faq),
                     sessions=store, desk=store, transcripts=store, flows=flows,
                     support_hours=str(config.flows.get("support_hours", "")), **kwargs)
