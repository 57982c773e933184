"""The served (compressed) student at run time: ONNX Runtime + the Hugging Face fast tokenizer.

A served folder (written by `training.compress`) holds `model.onnx` (encoder + mean pooling +
L2 normalisation + intent head in one graph: `input_ids`, `attention_mask` -> `logits`,
`embeddings`), the tokenizer files, `config.json`, `intent_head.safetensors`, `labels.json` and
`attendant.json` (`"runtime": "onnxruntime"`, the precision, the fingerprint of the folder and
that of the fp32 student it came from). `OnnxSupportModel` gives it the interface of
`runtime.model.SupportModel` that the service uses: `labels`, `predict(texts) -> (probs,
embeddings)`, `encode`, `fingerprint`, `dim`, `name_or_path`. torch is not needed to serve it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.errors import ArtifactError
from runtime.calibration import softmax
from runtime.folder import (
    HEAD_FILE,
    LABELS_FILE,
    first_line,
    quiet_transformers,
    read_model_meta,
)

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
RUNTIME = "onnxruntime"
BUILD_COMMAND = "python -m training.compress --config {config}"
THREADS_ENV = "ATTENDANT_ORT_THREADS"
SPIN_ENV = "ATTENDANT_ORT_SPIN"


class OnnxSupportModel:
    """A compressed SupportModel served by ONNX Runtime on the CPU."""

    def __init__(self, directory: str | Path, *, threads: int | None = None, verify: bool = True,
                 config_path: str | Path | None = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        from runtime.embedder import model_fingerprint

        directory = Path(directory)
        fix = BUILD_COMMAND.format(config=config_path or "configs/demo.yaml")
        meta = read_model_meta(directory, config_path=config_path)
        if meta.get("runtime") != RUNTIME:
            raise ArtifactError(f"model at {directory} is not an ONNX Runtime model (runtime "
                                f"{meta.get('runtime', 'torch')!r}); load it with runtime.model.load_support_model")
        if not (directory / ONNX_FILE).is_file():
            raise ArtifactError(f"model at {directory} is incomplete (missing {ONNX_FILE}); rebuild it with `{fix}`")
        try:
            labels = json.loads((directory / LABELS_FILE).read_text(encoding="utf-8"))
            if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
                raise ValueError("labels.json must be a non-empty list of intent names")
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"model at {directory} is corrupt ({first_line(exc)}); rebuild it with `{fix}`") from None
        if verify and model_fingerprint(directory) != meta.get("fingerprint"):
            raise ArtifactError(f"model at {directory} does not match its fingerprint (files changed or damaged "
                                f"since it was saved); rebuild it with `{fix}`")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads if threads is not None else int(os.environ.get(THREADS_ENV, 0) or 0)
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        # Idle intra-op threads would spin-wait for the next request, burning a core that the web
        # server's other turns need (measured: see README "Load"); ATTENDANT_ORT_SPIN=1 restores it.
        options.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get(SPIN_ENV, "0"))
        try:
            self.session = ort.InferenceSession(str(directory / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own types (InvalidProtobuf, Fail, ...): all mean "unusable file"
            raise ArtifactError(f"model at {directory} is corrupt ({type(exc).__name__}: {first_line(exc)}); "
                                f"rebuild it with `{fix}`") from None
        self._inputs = [i.name for i in self.session.get_inputs()]
        self.labels: list[str] = [str(x) for x in labels]
        self.dim = int(meta.get("dim") or self.session.get_outputs()[1].shape[-1])
        self.max_length = int(meta.get("max_length", 64))
        # Longer inputs (product texts) are cut at the encoder's position table, never past it.
        self.max_positions = _max_positions(directory)
        self.temperature = float(meta.get("temperature", 1.0))
        self.fingerprint = str(meta.get("fingerprint", ""))
        self.name_or_path = str(directory)
        self.base_encoder = str(meta.get("base_encoder", ""))
        self.metadata: dict[str, Any] = meta.get("training") or {}
        self.compression: dict[str, Any] = meta.get("compression") or {}
        self.precision = str(self.compression.get("precision", "fp32"))
        _ = HEAD_FILE  # the folder keeps the head beside the graph, for tools that read it

    def __repr__(self) -> str:
        return f"OnnxSupportModel({self.name_or_path!r}, {self.precision}, {len(self.labels)} intents, dim={self.dim})"

    def _run(self, texts: list[str], max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        limit = min(max_length or self.max_length, self.max_positions)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="np")
        feed = {name: enc[name].astype(np.int64) for name in self._inputs}
        logits, emb = self.session.run(None, feed)
        return logits, emb

    def predict_logits(self, texts: Sequence[str], batch_size: int = 64,
                       max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated logits [n, L] and L2-normalised embeddings [n, d], in input order."""
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        logits = np.zeros((len(texts), len(self.labels)), np.float32)
        embs = np.zeros((len(texts), self.dim), np.float32)
        if len(texts) == 1:  # the chat's case: no sorting, no copies
            lo, em = self._run(texts, max_length)
            return lo.astype(np.float32), em.astype(np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            lo, em = self._run([texts[i] for i in idx], max_length)
            logits[idx], embs[idx] = lo, em
        return logits, embs

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated intent probabilities [n, L] and embeddings [n, d]."""
        logits, embs = self.predict_logits(texts, batch_size)
        return softmax(logits / self.temperature), embs

    def encode(self, texts: Sequence[str], show_progress: bool = False, *, max_length: int | None = None) -> np.ndarray:
        """Embeddings only (the `Embedder.encode` signature, long product texts included)."""
        return self.predict_logits(texts, max_length=max_length)[1]


def _max_positions(directory: Path) -> int:
    try:
        cfg = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        n = int(cfg.get("max_position_embeddings") or 512)
    except (OSError, ValueError, TypeError):
        return 512
    # RoBERTa-style position ids start after the padding index: two fewer usable positions.
    return n - 2 if cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert") else n

