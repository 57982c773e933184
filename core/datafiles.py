"""Which training files a build step learned from, by content: the pipeline compares them with the
files as they are now, so a changed FAQ, catalogue or training conversation rebuilds what learned
from it instead of calling an old build up to date. Never the held-out files."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

# The data keys (config `data.`) each step reads. The teacher learns intents, FAQ wordings and the
# training dialogs' (their FAQ turns become wordings); the indexes also hold the catalogue.
TEACHER_FILES = ("intents", "faq", "train_dialogs", "written_train_dialogs")
INDEX_FILES = ("intents", "faq", "products", "train_dialogs", "written_train_dialogs")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def training_file_hashes(config: Any, keys: tuple[str, ...] = INDEX_FILES) -> dict[str, str]:
    """{data key: sha256} of the config's training files among `keys` that exist."""
    files = {}
    for name in keys:
        path = getattr(config.data, name, None)
        if path is not None and Path(path).is_file():
            files[name] = file_sha256(Path(path))
    return files


def changed_since(recorded: dict[str, str] | None, config: Any, keys: tuple[str, ...]) -> list[str]:
    """The data keys whose files differ from what a build `recorded` ([] when it recorded nothing: a
    build from before this record is taken as it is)."""
    if not isinstance(recorded, dict):
        return []
    now = training_file_hashes(config, keys)
    return sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
