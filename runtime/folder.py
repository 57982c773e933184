"""The model folder format, shared by both runtimes (torch and ONNX) and by the tools that write it.

A model folder is a normal Hugging Face encoder folder (`config.json`, weights, tokenizer files)
plus `intent_head.safetensors`, `labels.json` (intent names, index = class id) and
`attendant.json` (runtime, temperature, pooling, max_length, fingerprint, training metadata).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from core.errors import ArtifactError
from core.layout import MODEL_META_FILE

HEAD_FILE = "intent_head.safetensors"
LABELS_FILE = "labels.json"
META_FILE = MODEL_META_FILE
FORMAT_VERSION = 1
VALIDATION_FILE = "validation.jsonl"   # the examples training held out: calibration uses them, never training
TRAIN_COMMAND = "accelerate launch -m training.train --config {config}"


@contextmanager
def quiet_transformers() -> Iterator[None]:
    # A SupportModel folder holds an intent head the bare encoder does not load; the
    # "unused weights" report and the per-load progress bar are noise here.
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def read_model_meta(directory: str | Path, *, config_path: str | Path | None = None) -> dict[str, Any]:
    """attendant.json of a model folder, after checking the folder's files are there."""
    directory = Path(directory)
    fix = TRAIN_COMMAND.format(config=config_path or "configs/demo.yaml")
    if not directory.is_dir():
        raise ArtifactError(f"no trained model at {directory}; train one with `{fix}`")
    missing = [n for n in ("config.json", HEAD_FILE, LABELS_FILE, META_FILE) if not (directory / n).is_file()]
    if missing:
        raise ArtifactError(f"model at {directory} is incomplete (missing {', '.join(missing)}); retrain it with `{fix}`")
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"model at {directory} has a corrupt {META_FILE} ({first_line(exc)}); "
                            f"retrain it with `{fix}`") from None
    return meta



def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_validation_split(directory: str | Path) -> list[dict[str, str]] | None:
    """The `{"text", "intent"}` rows a model's training held out, or None for a folder without them."""
    from core.jsonl import read_jsonl

    path = Path(directory) / VALIDATION_FILE
    if not path.is_file():
        return None
    return [{"text": str(r["text"]), "intent": str(r["intent"])}
            for r in read_jsonl(path, ("text", "intent"), "validation example")]
