"""Build a ready `Assistant` from a config and its artifacts.

Chooses the NLU (the served student when one has been built, else the pretrained encoder),
loads the FAQ and product indexes that were built with that same encoder, and reads the
calibrated thresholds. Missing or mismatched artifacts raise `ArtifactError` naming the
command that builds them; `webapp.startup.ensure_artifacts` builds them for the app.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.config import Config
from core.errors import ArtifactError
from core.jsonl import read_jsonl
from runtime.folder import read_validation_split
from service.engine import Assistant
from service.flows import FlowRunner
from service.nlu import NLU, FrozenEncoderNLU, ModelNLU
from service.oos import OOSDetector
from service.policy import Thresholds
from service.store import Store

log = logging.getLogger(__name__)

OOS_DIR = "oos"   # under the index folder: calibrated for the encoder the indexes were built with


def load_nlu(config: Config) -> NLU:
    model_dir = config.layout.served_model_dir()
    if model_dir is not None:
        from runtime.loading import load_support_model

        log.info("serving the trained model in %s", model_dir)
        return ModelNLU(load_support_model(model_dir))
    from runtime.embedder import Embedder

    log.info("no trained model for %s yet: pretrained %s + logistic regression", config.name, config.encoder.name)
    embedder = Embedder(config.encoder.name, max_length=config.encoder.max_length,
                        batch_size=config.encoder.batch_size)
    return FrozenEncoderNLU.from_file(embedder, config.data.intents)


def fit_oos_detector(config: Config, nlu: NLU) -> OOSDetector:
    """Calibrate out-of-scope detection for this NLU on data it was not fitted on.

    The frozen-encoder NLU is fitted on every intent example, so its validation scores are
    out-of-fold; a trained model is calibrated on the validation split its training held out.
    """
    if isinstance(nlu, FrozenEncoderNLU):
        return OOSDetector.fit_cross_validated(nlu.train_embeddings, nlu.train_labels, C=nlu.C, method="combined",
                                               encoder_fingerprint=nlu.embedder.fingerprint)
    validation = read_validation_split(nlu.model.name_or_path) if hasattr(nlu, "model") else None
    if not validation:
        raise ArtifactError(f"the model at {nlu.embedder.name} does not record the examples its training held "
                            f"out (validation.jsonl), so out-of-scope detection cannot be calibrated without using "
                            f"training examples; rebuild it with `python -m training.pipeline --config {config.path} "
                            f"--force`")
    intents_file = Path(str(getattr(nlu.model, "metadata", {}).get("intents_file") or config.data.intents))
    if not intents_file.is_file():
        intents_file = config.data.intents
    held_out = {r["text"] for r in validation}
    train = [r for r in read_jsonl(intents_file, ("text", "intent"), "intent example") if str(r["text"]) not in held_out]
    train_texts, val_texts = [str(r["text"]) for r in train], [r["text"] for r in validation]
    train_intents, val_intents = [str(r["intent"]) for r in train], [r["intent"] for r in validation]
    _, train_emb = nlu.model.predict(train_texts)
    val_probs, val_emb = nlu.model.predict(val_texts)
    return OOSDetector.fit(nlu.labels, np.asarray(train_emb), train_intents, np.asarray(val_probs),
                           np.asarray(val_emb), val_intents, method="combined",
                           encoder_fingerprint=nlu.embedder.fingerprint)


def load_oos_detector(config: Config, nlu: NLU) -> OOSDetector:
    """The detector saved beside the indexes for this encoder; calibrated and saved when missing."""
    directory = config.layout.oos
    try:
        return OOSDetector.load(directory, expected_fingerprint=nlu.embedder.fingerprint)
    except ArtifactError as exc:
        log.info("%s; calibrating out-of-scope detection for %s now", exc, nlu.embedder.name)
    detector = fit_oos_detector(config, nlu)
    detector.save(directory)
    return detector


def model_version_of(nlu: NLU) -> str:
    """The name replies and transcripts record for the model that answered: the encoder's
    fingerprint (a content hash of its weights), shortened."""
    return "fp-" + str(getattr(nlu.embedder, "fingerprint", "") or "unknown")[:12]


def read_faq_records(path: Path) -> dict[str, dict]:
    return {str(row["id"]): row for row in read_jsonl(path, ("id", "question", "answer"), "FAQ entry")}


def open_store(config: Config, path: Path | None = None) -> Store:
    """The service's store, seeded with the config's orders on first open: `path` (an SQLite file)
    when given, else the config's `store.url` (PostgreSQL, shared by replicas) when set, else the
    embedded SQLite file in the artifacts folder."""
    if path is None and config.store.url:
        store = Store(config.store.url, pool_size=config.store.pool_size)
    else:
        store = Store(path or config.layout.store, pool_size=config.store.pool_size)
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
    oos = load_oos_detector(config, nlu)
    flows = FlowRunner(store, config.flows, intent_threshold=thresholds.intent)
    kwargs.setdefault("model_version", model_version_of(nlu))
    return Assistant(nlu=nlu, faq_index=faq_index, recommender=recommender, thresholds=thresholds,
                     store_name=config.store_name, max_message_chars=config.policy.max_message_chars,
                     top_k=config.retrieval.top_k, faq_records=read_faq_records(config.data.faq),
                     sessions=store, desk=store, transcripts=store, flows=flows, oos=oos,
                     support_hours=config.flows.support_hours, **kwargs)
