"""Make sure a config's artifacts exist before serving: build what is missing, with progress.

On a fresh clone nothing has been built; `python app.py` must still just work, so the app calls
`prepare_assistant`, which builds the missing pieces first (and says so in the log).
"""
from __future__ import annotations

import logging

from service.assembly import build_assistant, load_nlu
from service.config import Config
from service.engine import Assistant
from service.errors import ArtifactError

log = logging.getLogger(__name__)


def prepare_assistant(config: Config, build_missing: bool = True) -> Assistant:
    """Load the assistant for `config`, building missing or mismatched indexes when allowed."""
    nlu = load_nlu(config)
    try:
        return build_assistant(config, nlu=nlu)
    except ArtifactError as exc:
        if not build_missing:
            raise
        log.warning("%s", exc)
        log.info("building the FAQ and product indexes for %s with %s (first run)", config.name, nlu.embedder.name)
    from retrieval.build import build_indexes

    build_indexes(config, embedder=nlu.embedder)
    return build_assistant(config, nlu=nlu)
