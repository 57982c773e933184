"""Make sure a config's artifacts exist before serving: build what is missing, with progress.

On a fresh clone nothing has been built; `python app.py` must still just work, so the app calls
`prepare_assistant`, which first runs the pipeline steps the app needs (train -> distil ->
compress -> index, each skipped when up to date; `distill.pipeline.steps` in the config chooses
them), then loads the assistant.
"""
from __future__ import annotations

import logging

from core.config import Config
from core.errors import ArtifactError
from service.assembly import build_assistant, load_nlu
from service.engine import Assistant

log = logging.getLogger(__name__)


def _progress(i: int, n: int, step: str, message: str) -> None:
    log.info("first-run build [%d/%d] %s: %s", i, n, step, message)


def prepare_assistant(config: Config, build_missing: bool = True) -> Assistant:
    """Load the assistant for `config`, first building missing or stale artifacts when allowed."""
    if build_missing:
        from training.pipeline import run_pipeline, serving_steps

        run_pipeline(config, steps=serving_steps(config), on_step=_progress)
    nlu = load_nlu(config)
    try:
        return build_assistant(config, nlu=nlu)
    except ArtifactError as exc:
        if not build_missing:
            raise
        log.warning("%s", exc)
        log.info("building the FAQ and product indexes for %s with %s", config.name, nlu.embedder.name)
    from retrieval.build import build_indexes

    build_indexes(config, embedder=nlu.embedder)
    return build_assistant(config, nlu=nlu)
