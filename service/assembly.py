"""Build a ready `Assistant` from a config and its artifacts.

Chooses the NLU (the served student when one has been built, else the pretrained encoder),
loads the FAQ and product indexes that were built with that same encoder, and reads the
calibrated thresholds. Missing or mismatched artifacts raise `ArtifactError` naming the
command that builds them; `webapp.startup.ensure_artifacts` builds them for the app.

With a model registry (training/models.py) the app serves a registered version instead: its folder
(`<artifacts>/models/v0003/`) is laid out like the artifacts root, so `version_config` points a copy of
the config at it and everything above loads from there. Which version: the store's setting
`served_version` (shared by every replica) when it names a registered version, else `models/SERVED`;
no registry: the root layout, exactly as before.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
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
from service.policy import HAND_CLARIFY_MARGIN, HAND_INTENT, HAND_NEAR_FAQ, Thresholds
from service.spelling import corrector_for
from service.store import Store

log = logging.getLogger(__name__)

OOS_DIR = "oos"   # under the index folder: calibrated for the encoder the indexes were built with
SERVED_SETTING = "served_version"   # store setting naming the served version (training/models.py writes it)


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


def served_setting(store: Store) -> str | None:
    """The version the store's `served_version` setting names (shared by every replica), or None."""
    value = store.get_setting(SERVED_SETTING)
    return None if value is None else str(value[0]).strip() or None


def served_version_name(config: Config, store: Store | None = None) -> str | None:
    """The registered version to serve: the store's `served_version` setting when it names a version
    of this config's registry, else `models/SERVED`; None without a registry (serve the root layout)."""
    layout = config.layout
    name = served_setting(store) if store is not None else None
    if name is not None:
        if name in layout.versions():
            return name
        log.warning("the store's %s names %r, which is not a version in %s; using %s", SERVED_SETTING,
                    name, layout.models, layout.served_pointer)
    return layout.read_served_pointer()


def version_config(config: Config, version: str) -> Config:
    """`config` pointed at a registered version's folder (its model, indexes, FAQ snapshot). Keep
    opening the store from the original config: the version folder holds no store."""
    folder = config.layout.version_dir(version)
    if not (folder / "version.json").is_file():
        raise ArtifactError(f"no version {version} in {config.layout.models}; list them with "
                            f"`python -m training.models --config {config.path} list`")
    return folder_config(config, folder)


def folder_config(config: Config, folder: Path) -> Config:
    """`config` with its artifacts read from `folder` (a version folder: served/, indexes/, data/faq.jsonl)."""
    data = config.data
    if (folder / "data" / "faq.jsonl").is_file():   # the FAQ its index was built from (answers by id)
        data = dataclasses.replace(data, faq=folder / "data" / "faq.jsonl")
    return config.replace(artifacts_dir=Path(folder), data=data)


def build_version_assistant(config: Config, version: str | None, store: Store, **kwargs) -> Assistant:
    """The assistant of one registered version (None: the root layout), answering as that version."""
    if version is None:
        return build_assistant(config, store=store, **kwargs)
    vconfig = version_config(config, version)
    if vconfig.layout.served_model_dir() is None:
        raise ArtifactError(f"version {version} has no model folder in {vconfig.artifacts_dir}; roll back with "
                            f"`python -m training.models --config {config.path} rollback`")
    kwargs.setdefault("model_version", version)
    return build_assistant(vconfig, store=store, **kwargs)


# ---- the policy's cut-offs ----------------------------------------------------------------------------
DECISIONS_FILE = "decisions.json"   # under the index folder: cut-offs fitted by training/decisions.py
LEARNED_KEYS = ("intent", "faq_offset", "near_faq", "clarify_margin")


def decisions_command(config: Config) -> str:
    return f"python -m training.decisions --config {config.path}"


def read_decisions(path: Path, fingerprint: str | None, faq_base: float | None,
                   hint: str = "python -m training.decisions --config CONFIG") -> dict[str, float] | None:
    """The learned cut-offs in `path`, or None (logged) when the file is missing or stale: fitted with
    another encoder, or on another FAQ calibration (indexes rebuilt since, or fusion switched). A file
    that is there but unreadable or out of range is an ArtifactError: something damaged it."""
    if not path.is_file():
        log.warning("policy.decisions is learned but %s is missing; using the hand-set cut-offs (fit them with "
                    "`%s`)", path, hint)
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fitted = data.get("fitted", list(LEARNED_KEYS))   # the cut-offs the fitter searched; the rest stay hand-set
        if not isinstance(fitted, list) or not set(fitted) <= set(LEARNED_KEYS):
            raise ValueError(f"'fitted' must list some of {', '.join(LEARNED_KEYS)}")
        values = {k: float(data["thresholds"][k]) for k in fitted}
        if not all(math.isfinite(v) for v in values.values()) or not 0 < values.get("intent", 0.5) <= 1 \
                or values.get("near_faq", 0) < 0 or values.get("clarify_margin", 0) < 0:
            raise ValueError("a cut-off out of range")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is corrupt ({str(exc)[:120] or type(exc).__name__}); refit it with "
                            f"`{hint}`, or serve the hand-set cut-offs with policy.decisions: hand") from None
    if fingerprint is not None and data.get("encoder_fingerprint") != fingerprint:
        log.warning("%s was fitted with another encoder (%s); using the hand-set cut-offs until it is refitted "
                    "with `%s`", path, data.get("encoder"), hint)
        return None
    base = data.get("faq_base")
    if faq_base is not None and (not isinstance(base, (int, float)) or abs(float(base) - faq_base) > 1e-9):
        log.warning("%s was fitted on another FAQ threshold (%s, now %.4f: indexes rebuilt or fusion switched); "
                    "using the hand-set cut-offs until it is refitted with `%s`", path, base, faq_base, hint)
        return None
    return values


def policy_thresholds(config: Config, calibration: dict, fingerprint: str | None) -> Thresholds:
    """The policy's cut-offs. Precedence, per cut-off: a value set in the config's `policy:` section, then
    (`policy.decisions: learned`) the fitted one in decisions.json, then the calibration (FAQ, intent)
    or the hand-set default. A learned FAQ cut-off is an offset on the calibrated threshold."""
    policy = config.policy
    faq_base = calibration.get("faq_threshold")
    if faq_base is None and policy.faq_threshold is None:
        raise ArtifactError(f"{config.index_dir / 'calibration.json'} has no faq_threshold; rebuild it with "
                            f"`python -m retrieval.build --config {config.path}`")
    learned = None
    if policy.decisions == "learned":
        learned = read_decisions(config.index_dir / DECISIONS_FILE, fingerprint,
                                 None if faq_base is None else float(faq_base), decisions_command(config))
    learned = learned or {}

    def pick(explicit: float | None, key: str, default: float) -> float:
        return float(explicit) if explicit is not None else float(learned.get(key, default))

    faq = policy.faq_threshold if policy.faq_threshold is not None else float(faq_base) + learned.get("faq_offset", 0.0)
    return Thresholds(faq=float(faq),
                      clarify_margin=pick(policy.clarify_margin, "clarify_margin", HAND_CLARIFY_MARGIN),
                      intent=pick(policy.intent_threshold, "intent",
                                  float(calibration.get("intent_threshold") or HAND_INTENT)),
                      near_faq=pick(policy.near_faq, "near_faq", HAND_NEAR_FAQ))


def build_assistant(config: Config, nlu: NLU | None = None, store: Store | None = None, **kwargs) -> Assistant:
    from retrieval.build import faq_source, load_indexes

    nlu = nlu or load_nlu(config)
    store = store or open_store(config)
    faq_index, recommender, calibration = load_indexes(config, nlu.embedder)
    thresholds = policy_thresholds(config, calibration, nlu.embedder.fingerprint)
    log.info("thresholds: %s (%s)", thresholds, config.policy.decisions)
    oos = load_oos_detector(config, nlu)
    flows = FlowRunner(store, config.flows, intent_threshold=thresholds.intent)
    kwargs.setdefault("model_version", model_version_of(nlu))
    if config.policy.spelling:   # typos corrected against English and the pack's own words
        kwargs.setdefault("spelling", corrector_for([faq_source(config), config.data.intents, config.data.products]))
    return Assistant(nlu=nlu, faq_index=faq_index, recommender=recommender, thresholds=thresholds,
                     store_name=config.store_name, max_message_chars=config.policy.max_message_chars,
                     top_k=config.retrieval.top_k, faq_records=read_faq_records(faq_source(config)),
                     sessions=store, desk=store, transcripts=store, flows=flows, oos=oos,
                     support_hours=config.flows.support_hours, **kwargs)
