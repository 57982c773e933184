"""Make sure a config's artifacts exist before serving: build what is missing, with progress.

On a fresh clone nothing has been built; `python app.py` must still just work, so the app calls
`prepare_assistant`, which first runs the pipeline steps the app needs (train -> distil ->
compress -> index, each skipped when up to date; `distill.pipeline.steps` in the config chooses
them), then loads the assistant. The first build of a trained model is registered as version v0001
and served (training/pipeline.py); once a version is served the app serves it and builds nothing
(later builds are candidates, promoted with `python -m training.models promote V`).

The app holds a `service.live.LiveAssistant`: the served version's assistant, switched without a
restart when `training.models promote`/`rollback` changes the store's `served_version`.
"""
from __future__ import annotations

import logging

from core.config import Config
from core.errors import ArtifactError
from service.assembly import build_assistant, build_version_assistant, load_nlu, open_store, served_version_name
from service.engine import Assistant
from service.live import LiveAssistant

log = logging.getLogger(__name__)


def _progress(i: int, n: int, step: str, message: str) -> None:
    log.info("first-run build [%d/%d] %s: %s", i, n, step, message)


def _root_assistant(config: Config, store, build_missing: bool) -> Assistant:
    """No served version: the root layout's build (or the pretrained encoder), as before the registry."""
    nlu = load_nlu(config)
    try:
        return build_assistant(config, nlu=nlu, store=store)
    except ArtifactError as exc:
        if not build_missing:
            raise
        log.warning("%s", exc)
        log.info("building the FAQ and product indexes for %s with %s", config.name, nlu.embedder.name)
    from retrieval.build import build_indexes

    build_indexes(config, embedder=nlu.embedder)
    return build_assistant(config, nlu=nlu, store=store)


def prepare_assistant(config: Config, build_missing: bool = True, *, watch: bool = True) -> LiveAssistant:
    """The live assistant for `config`: the served version, else the root build (first building missing
    or stale artifacts when allowed). `watch`: follow promotions and rollbacks (service/live.py)."""
    store = open_store(config)
    version = served_version_name(config, store)
    if version is None and build_missing:
        from training.pipeline import run_pipeline, serving_steps

        run_pipeline(config, steps=serving_steps(config), on_step=_progress, store=store)
        version = served_version_name(config, store)
    if version is not None:
        log.info("serving version %s of %s", version, config.name)
        assistant = build_version_assistant(config, version, store)
    else:
        assistant = _root_assistant(config, store, build_missing)
    return LiveAssistant(assistant, version, lambda v: build_version_assistant(config, v, store), store, watch=watch)
