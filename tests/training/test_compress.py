"""training.compress / runtime.onnx_model: the served (compressed) student.

The fp32 model is the tiny teacher of test_distill (random 2-layer BERT + a fitted head): what is
tested here is the compression, not the quality of the model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import run_cli
from core.config import CompressionSettings
from core.errors import ArtifactError, ConfigError
from runtime.loading import is_made_from, load_support_model
from runtime.model import SupportModel
from tests.helpers import DISTILL_INTENTS as INTENTS
from tests.helpers import make_teacher, write_project
from training import compress
from training.compress import compress_model

SAMPLE = [t for ts in INTENTS.values() for t in ts] + ["where is my refund", "hello, is my parcel coming?",
                                                       "money back for the lamp", "good morning, any news"]


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory, tiny_encoder_dir) -> Path:
    return make_teacher(tiny_encoder_dir, tmp_path_factory.mktemp("fp32") / "student")


@pytest.fixture(scope="module")
def served_dir(fp32_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("served") / "served"
    compress_model(fp32_dir, out, CompressionSettings(min_agreement=0.0), SAMPLE)
    return out


def test_int8_agrees_with_its_fp32_self_above_a_floor(fp32_dir, served_dir):
    meta = json.loads((served_dir / "attendant.json").read_text())
    assert meta["runtime"] == "onnxruntime" and meta["compression"]["precision"] == "int8"
    assert meta["compression"]["per_channel"] and meta["compression"]["quantize_embeddings"]
    assert meta["compression"]["excluded_nodes"]              # the intent head stays fp32
    assert meta["source"]["fingerprint"] == json.loads((fp32_dir / "attendant.json").read_text())["fingerprint"]
    fp32 = SupportModel.from_pretrained(fp32_dir)
    served = load_support_model(served_dir)
    p32, e32 = fp32.predict(SAMPLE)
    p8, e8 = served.predict(SAMPLE)
    agreement = float((p32.argmax(1) == p8.argmax(1)).mean())
    cosine = (e32 * e8).sum(1)
    assert agreement >= 0.9, agreement
    assert cosine.min() > 0.99, cosine.min()
    # smaller on disk: the weights are int8, the embedding table included
    assert (served_dir / "model.onnx").stat().st_size < 0.4 * (fp32_dir / "model.safetensors").stat().st_size


def test_served_folder_has_the_support_model_interface(served_dir):
    from service.nlu import ModelNLU

    model = load_support_model(served_dir)
    meta = json.loads((served_dir / "attendant.json").read_text())
    assert model.labels == sorted(INTENTS)
    assert model.dim == 32 and model.fingerprint == meta["fingerprint"] and model.name_or_path == str(served_dir)
    probs, emb = model.predict(["where is my parcel", "hello", "refund"])
    assert probs.shape == (3, 3) and emb.shape == (3, 32)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    # The single-message path gives the same answer, up to int8 noise: dynamic quantisation scales
    # activations per batch, so a message's neighbours in a batch move its numbers slightly.
    one_p, one_e = model.predict(["refund"])
    np.testing.assert_allclose(one_p[0], probs[2], atol=5e-3)
    np.testing.assert_allclose(one_e[0], emb[2], atol=5e-3)
    assert model.encode(["a long product text " * 200], max_length=256).shape == (1, 32)  # capped at 128 positions
    nlu = ModelNLU(model)
    result = nlu.parse("hello there")
    assert result.intent in INTENTS and result.embedding.shape == (32,)
    assert nlu.embedder.fingerprint == model.fingerprint
    # the folder holds the HF fast tokenizer and no torch weights
    assert (served_dir / "tokenizer.json").is_file() and not (served_dir / "model.safetensors").exists()


def test_fingerprint_follows_the_weights_and_tampering_is_caught(fp32_dir, served_dir, tmp_path):
    fp32_served = compress_model(fp32_dir, tmp_path / "fp32", CompressionSettings(format="onnx-fp32"), SAMPLE)
    assert fp32_served["precision"] == "fp32"
    assert fp32_served["checks"]["served"]["intent_agreement"] == 1.0
    assert fp32_served["fingerprint"] != load_support_model(served_dir).fingerprint
    onnx_file = tmp_path / "fp32" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-100] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its fingerprint") as err:
        load_support_model(tmp_path / "fp32")
    assert "\n" not in str(err.value) and "training.compress" in str(err.value)
    (tmp_path / "fp32" / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing model.onnx"):
        load_support_model(tmp_path / "fp32")


def test_rewrite_is_atomic_and_staleness_follows_the_source(fp32_dir, tmp_path):
    out = tmp_path / "served"
    compress_model(fp32_dir, out, CompressionSettings(format="onnx-fp32"), SAMPLE[:5])
    assert is_made_from(out, fp32_dir)
    first = load_support_model(out).fingerprint
    compress_model(fp32_dir, out, CompressionSettings(min_agreement=0.0), SAMPLE[:5])   # replaces it in place
    assert load_support_model(out).fingerprint != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]  # no temporary folders left behind
    retrained = SupportModel.from_pretrained(fp32_dir)
    assert is_made_from(out, retrained.save_pretrained(tmp_path / "same"))   # same weights: same fingerprint
    with torch.no_grad():
        retrained.intent_head.bias.add_(0.1)
    assert not is_made_from(out, retrained.save_pretrained(tmp_path / "other"))      # new weights: compress again
    assert not is_made_from(tmp_path / "missing", fp32_dir)


def test_int8_below_the_agreement_floor_falls_back_to_fp32(fp32_dir, tmp_path, monkeypatch):
    real = compress.agreement

    def poor(reference, other):
        result = real(reference, other)
        return {**result, "intent_agreement": 0.5}

    monkeypatch.setattr(compress, "agreement", poor)
    report = compress_model(fp32_dir, tmp_path / "served", CompressionSettings(min_agreement=0.9), SAMPLE)
    assert report["precision"] == "fp32" and "below min_agreement" in report["reason"]
    assert load_support_model(tmp_path / "served").precision == "fp32"


def test_compress_cli_and_bad_settings_are_one_line(tmp_path, tiny_encoder_dir, capsys):
    config = write_project(tmp_path / "p", tiny_encoder_dir, compression={"format": "onnx-int4"})
    code = run_cli(compress.main, ["--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "compression.format must be one of" in err
    config = write_project(tmp_path / "p", tiny_encoder_dir, compression={"per_chanel": True})
    code = run_cli(compress.main, ["--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown key(s) in 'compression': per_chanel" in err
    config = write_project(tmp_path / "p", tiny_encoder_dir)
    code = run_cli(compress.main, ["--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "no fp32 student at" in err and "training.distill --config" in err
    make_teacher(tiny_encoder_dir, tmp_path / "p" / "artifacts" / "student")
    code = run_cli(compress.main, ["--config", str(config), "--set", "compression.min_agreement=0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "served model:" in captured.out and "int8" in captured.out
    assert load_support_model(tmp_path / "p" / "artifacts" / "served").labels == sorted(INTENTS)
    from core.config import load_config

    with pytest.raises(ConfigError, match="compression.min_agreement must be in"):
        load_config(config, ["compression.min_agreement=2"])


def test_torch_dynamic_int8_keeps_the_interface(fp32_dir):
    fp32 = SupportModel.from_pretrained(fp32_dir)
    q = compress.torch_dynamic_int8(fp32)
    p, e = q.predict(SAMPLE[:4])
    assert p.shape == (4, 3) and e.shape == (4, 32)
    assert compress.agreement(fp32.predict_logits(SAMPLE), q.predict_logits(SAMPLE))["embedding_cosine_min"] > 0.95
