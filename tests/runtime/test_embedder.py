"""Embedder: shape, normalisation, order, offline resolution, fingerprints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import ArtifactError
from runtime.embedder import (
    DEFAULT_ENCODER,
    Embedder,
    model_fingerprint,
    resolve_model_path,
)


def test_encode_shape_dtype_and_unit_length(embedder):
    v = embedder.encode(["where is my order?", "hi", "a much longer message about a return " * 5])
    assert v.shape == (3, embedder.dim) and embedder.dim == 384
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_encode_keeps_input_order_despite_length_sorting(embedder):
    texts = ["short", "a somewhat longer sentence about shipping costs", "mid length text"]
    together = embedder.encode(texts)
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_encode_empty_and_single_string(embedder):
    assert embedder.encode([]).shape == (0, embedder.dim)
    assert embedder.encode("hello").shape == (1, embedder.dim)


def test_paraphrases_are_closer_than_unrelated_text(embedder):
    a, b, c = embedder.encode(["how much does shipping cost", "what's the delivery fee", "I love my new sofa"])
    assert a @ b > a @ c + 0.2


def test_default_encoder_resolves_offline():
    path = Path(resolve_model_path(DEFAULT_ENCODER))
    assert (path / "config.json").is_file()


def test_local_folder_is_used_as_is(tiny_encoder_dir):
    assert resolve_model_path(str(tiny_encoder_dir)) == str(tiny_encoder_dir.resolve())


def test_unknown_encoder_is_a_one_line_artifact_error():
    with pytest.raises(ArtifactError) as err:
        resolve_model_path("no-such-org/no-such-model-xyz")
    msg = str(err.value)
    assert "cannot load encoder no-such-org/no-such-model-xyz" in msg and "\n" not in msg


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ArtifactError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_any_hugging_face_encoder_loads(tiny_encoder_dir, embedder):
    tiny = Embedder(tiny_encoder_dir, max_length=32, batch_size=2)
    v = tiny.encode(["one", "two words", "three words here"])
    assert v.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert tiny.fingerprint != embedder.fingerprint


def test_fingerprint_is_stable_and_follows_the_weights(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 4}')
    (tmp_path / "model.safetensors").write_bytes(b"weights-v1")
    first = model_fingerprint(tmp_path)
    assert first == model_fingerprint(tmp_path) and len(first) == 64
    (tmp_path / "model.safetensors").write_bytes(b"weights-v2, retrained")
    assert model_fingerprint(tmp_path) != first


def test_fingerprint_needs_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="no weight files"):
        model_fingerprint(tmp_path)
