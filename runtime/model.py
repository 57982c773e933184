"""`SupportModel`: a Hugging Face encoder + mean pooling + an intent head + a calibration temperature.

A saved model directory is a normal Hugging Face encoder folder (`config.json`, weights, tokenizer
files), so `AutoModel.from_pretrained(dir)` and `retrieval.Embedder(dir)` load it, plus:

- `intent_head.safetensors`: `weight` [n_labels, dim], `bias` [n_labels]; the head reads the
  L2-normalised mean-pooled embedding, so `softmax((W @ embedding + b) / temperature)` computed
  from an `Embedder` gives the same distribution as `predict`;
- `labels.json`: the intent names, index = class id;
- `attendant.json`: temperature, pooling, max_length, base_encoder, fingerprint, training metadata.

Saving is atomic (a temporary folder renamed into place), so a crash never leaves half a model.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from core.atomic import replace_dir, share_like_umask, temp_dir_beside
from core.config import DEFAULT_ENCODER
from core.errors import ArtifactError
from runtime.calibration import softmax
from runtime.embedder import mean_pool, model_fingerprint, resolve_model_path
from runtime.folder import (
    FORMAT_VERSION,
    HEAD_FILE,
    LABELS_FILE,
    META_FILE,
    TRAIN_COMMAND,
    VALIDATION_FILE,
    first_line,
    quiet_transformers,
    read_model_meta,
)

logger = logging.getLogger(__name__)


@dataclass
class SupportOutput:
    logits: torch.Tensor        # [batch, n_labels], before temperature scaling
    embeddings: torch.Tensor    # [batch, dim], L2-normalised mean pooling

    # DDP looks for tensors in a model's output: give it a tuple view.
    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.logits, self.embeddings))


class SupportModel(nn.Module):
    """Encoder + mean pooling + intent head; `predict(texts)` gives calibrated probabilities and embeddings."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, labels: Sequence[str], *, max_length: int = 64,
                 temperature: float = 1.0, base_encoder: str = DEFAULT_ENCODER, name_or_path: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__()
        if len(labels) < 1:
            raise ValueError("a SupportModel needs at least one label")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.labels = [str(x) for x in labels]
        self.max_length = int(max_length)
        self.base_encoder = base_encoder
        self.name_or_path = name_or_path or base_encoder
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.fingerprint = ""   # set by save_pretrained / from_pretrained
        self.intent_head = nn.Linear(self.dim, len(self.labels))
        # Not a parameter: fitted on validation after training, never by the optimizer.
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_encoder(cls, name_or_path: str = DEFAULT_ENCODER, labels: Sequence[str] = (), *,
                     max_length: int = 64) -> "SupportModel":
        """A fresh model: pretrained encoder (resolved offline) and a randomly initialised head."""
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(name_or_path)
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(path)
                encoder = AutoModel.from_pretrained(path)
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"cannot load encoder {name_or_path} from {path}: {first_line(exc)}") from None
        base = str(name_or_path)
        return cls(encoder, tokenizer, labels, max_length=max_length, base_encoder=base, name_or_path=base)

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ forward
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> SupportOutput:
        emb = self.embed(input_ids, attention_mask, token_type_ids)
        return SupportOutput(logits=self.intent_head(emb), embeddings=emb)

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length or self.max_length,
                             return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    @torch.inference_mode()
    def predict_logits(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated logits [n, L] and L2-normalised embeddings [n, d], in input order."""
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        was_training = self.training
        self.eval()
        logits = np.zeros((len(texts), len(self.labels)), np.float32)
        embs = np.zeros((len(texts), self.dim), np.float32)
        # Longest first, so batches hold similar lengths and little padding is computed.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out = self(**self.tokenize([texts[i] for i in idx]))
            logits[idx] = out.logits.float().cpu().numpy()
            embs[idx] = out.embeddings.float().cpu().numpy()
        self.train(was_training)
        return logits, embs

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated intent probabilities [n, L] (softmax(logits / temperature)) and embeddings [n, d]."""
        logits, embs = self.predict_logits(texts, batch_size)
        return softmax(logits / float(self.temperature)), embs

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embeddings only (the `Embedder.encode` signature)."""
        return self.predict_logits(texts)[1]

    # ------------------------------------------------------------------ head initialisation
    def fit_head(self, embeddings: np.ndarray, label_ids: np.ndarray, C: float = 10.0, max_iter: int = 1000) -> float:
        """Initialise the head from a logistic regression on frozen embeddings; returns its train accuracy.

        Fine-tuning then starts from the frozen-embedding baseline instead of a random head, which
        keeps the early, noisy gradients of a random head from damaging the encoder.
        """
        from sklearn.linear_model import LogisticRegression

        n = len(self.labels)
        present = np.unique(label_ids)
        clf = LogisticRegression(C=C, max_iter=max_iter)
        clf.fit(embeddings, label_ids)
        weight = np.zeros((n, embeddings.shape[1]), np.float32)
        # An intent without training rows (possible with tiny data) keeps a very negative bias.
        bias = np.full((n,), -10.0, np.float32)
        if len(present) == 2:  # sklearn keeps one row for a binary problem
            weight[present[1]], bias[present[1]] = clf.coef_[0] / 2, clf.intercept_[0] / 2
            weight[present[0]], bias[present[0]] = -clf.coef_[0] / 2, -clf.intercept_[0] / 2
        else:
            weight[clf.classes_] = clf.coef_
            bias[clf.classes_] = clf.intercept_
        with torch.no_grad():
            self.intent_head.weight.copy_(torch.from_numpy(weight))
            self.intent_head.bias.copy_(torch.from_numpy(bias))
        return float(clf.score(embeddings, label_ids))

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path, *, training: dict[str, Any] | None = None,
                        validation: Sequence[dict[str, str]] | None = None) -> Path:
        """Write the model folder atomically; returns its path. Sets `self.fingerprint`.

        `validation`: the `{"text", "intent"}` rows training held out, saved as validation.jsonl so
        that later calibration (out-of-scope thresholds) uses exactly the examples the model never saw.
        """
        from safetensors.torch import save_file

        directory = Path(directory).resolve()
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(directory)
        try:
            self.encoder.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            head = {"weight": self.intent_head.weight.detach().float().cpu().contiguous(),
                    "bias": self.intent_head.bias.detach().float().cpu().contiguous()}
            save_file(head, str(tmp / HEAD_FILE))
            (tmp / LABELS_FILE).write_text(json.dumps(self.labels, indent=1, ensure_ascii=False), encoding="utf-8")
            if validation is not None:
                (tmp / VALIDATION_FILE).write_text("".join(json.dumps({"text": r["text"], "intent": r["intent"]},
                                                                      ensure_ascii=False) + "\n" for r in validation),
                                                   encoding="utf-8")
            # Fingerprint of the folder as Embedder(dir) computes it (config, tokenizer, all weights).
            fingerprint = model_fingerprint(tmp)
            if training is not None:
                self.metadata = {**self.metadata, **training}
            meta = {
                "format_version": FORMAT_VERSION,
                "runtime": "torch",
                "temperature": float(self.temperature),
                "pooling": "mean",
                "head_input": "l2_normalized_embedding",
                "max_length": self.max_length,
                "base_encoder": self.base_encoder,
                "n_labels": len(self.labels),
                "dim": self.dim,
                "fingerprint": fingerprint,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "training": self.metadata,
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
            share_like_umask(tmp)
            replace_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.fingerprint = fingerprint
        self.name_or_path = str(directory)
        logger.info("saved SupportModel (%d intents, fingerprint %s…) to %s", len(self.labels), fingerprint[:12], directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu", verify: bool = True,
                        config_path: str | Path | None = None) -> "SupportModel":
        """Load a saved model; `ArtifactError` (one line, naming the training command) if missing or corrupt."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        directory = Path(directory)
        fix = TRAIN_COMMAND.format(config=config_path or "configs/demo.yaml")
        meta = read_model_meta(directory, config_path=config_path)
        try:
            labels = json.loads((directory / LABELS_FILE).read_text(encoding="utf-8"))
            if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
                raise ValueError("labels.json must be a non-empty list of intent names")
            head = load_file(str(directory / HEAD_FILE))
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(str(directory))
                encoder = AutoModel.from_pretrained(str(directory))
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"model at {directory} is corrupt ({first_line(exc)}); retrain it with `{fix}`") from None
        weight, bias = head.get("weight"), head.get("bias")
        if weight is None or bias is None or tuple(weight.shape) != (len(labels), encoder.config.hidden_size) \
                or tuple(bias.shape) != (len(labels),):
            raise ArtifactError(f"model at {directory} is corrupt (intent head does not match labels.json and the "
                                f"encoder); retrain it with `{fix}`")
        if verify:
            actual = model_fingerprint(directory)
            if actual != meta.get("fingerprint"):
                raise ArtifactError(f"model at {directory} does not match its fingerprint (files changed or "
                                    f"damaged since it was saved); retrain it with `{fix}`")
        model = cls(encoder, tokenizer, labels, max_length=int(meta.get("max_length", 64)),
                    temperature=float(meta.get("temperature", 1.0)),
                    base_encoder=str(meta.get("base_encoder", DEFAULT_ENCODER)), name_or_path=str(directory),
                    metadata=meta.get("training") or {})
        with torch.no_grad():
            model.intent_head.weight.copy_(weight)
            model.intent_head.bias.copy_(bias)
        model.fingerprint = str(meta.get("fingerprint", ""))
        return model.to(device).eval()
