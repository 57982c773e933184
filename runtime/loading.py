"""Load whatever model folder the app serves: a torch SupportModel or a compressed (ONNX) one."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from core.errors import ArtifactError
from runtime.folder import read_model_meta

if TYPE_CHECKING:
    from core.config import Config


def load_support_model(directory: str | Path, *, device: str = "cpu", **kwargs: Any) -> Any:
    """Every runtime exposes labels, predict, encode, fingerprint, dim, name_or_path.

    Compressed (served) folders are written by `training.compress`; their attendant.json says
    `"runtime": "onnxruntime"`.
    """
    meta = read_model_meta(directory)
    runtime = str(meta.get("runtime", "torch"))
    if runtime == "torch":
        from runtime.model import SupportModel

        return SupportModel.from_pretrained(directory, device=device)
    from runtime.onnx_model import RUNTIME, OnnxSupportModel

    if runtime == RUNTIME:
        return OnnxSupportModel(directory, **kwargs)
    raise ArtifactError(f"model at {directory} has an unknown runtime {runtime!r} (this version serves torch and "
                        f"{RUNTIME}); rebuild it with `python -m training.compress --config configs/demo.yaml`")


def is_made_from(served_dir: str | Path, source_dir: str | Path) -> bool:
    """True when the folder at `served_dir` was built from the current model at `source_dir`."""
    try:
        served = read_model_meta(served_dir)
        source = read_model_meta(source_dir)
    except ArtifactError:
        return False
    return (served.get("source") or {}).get("fingerprint") == source.get("fingerprint")


class ModelEmbedder:
    """A trained model's encoder through the `Embedder` interface (name, dim, fingerprint, encode)."""

    def __init__(self, model: Any):
        self._model = model
        self.name = str(getattr(model, "name_or_path", "support-model"))
        self.fingerprint = str(model.fingerprint)
        self.dim = int(model.dim)

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return np.asarray(self._model.predict(list(texts))[1], dtype=np.float32)


def served_embedder(config: "Config", encoder: str | None = None) -> Any:
    """The encoder the app serves for `config` (its trained model's, else the pretrained one),
    or the encoder named by `encoder`."""
    from runtime.embedder import Embedder

    kwargs = dict(max_length=config.encoder.max_length, batch_size=config.encoder.batch_size)
    if encoder:
        return Embedder(encoder, **kwargs)
    model_dir = config.layout.served_model_dir()
    if model_dir is not None:
        return ModelEmbedder(load_support_model(model_dir))
    return Embedder(config.encoder.name, **kwargs)
