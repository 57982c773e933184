"""training.train / runtime.model in one process: one-line errors, save/load, resume, calibration.

A tiny randomly initialised BERT (the shared `tiny_encoder_dir` fixture) keeps these fast; the
real two-process launch is in test_train_multiprocess.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import run_cli
from core.errors import ArtifactError, ConfigError
from runtime.calibration import fit_temperature
from runtime.loading import load_support_model
from runtime.model import SupportModel
from tests.helpers import TRAIN_INTENTS as INTENTS
from tests.helpers import make_project
from training import loop, train


@pytest.fixture()
def project(tmp_path, tiny_encoder_dir) -> Path:
    return make_project(tmp_path / "proj", tiny_encoder_dir)


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = run_cli(train.main, argv)
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------- one-line errors

def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--max-steps" in out and "--resume" in out and "--output-dir" in out


@pytest.mark.parametrize("training, message", [
    ("  learning_rte: 1.0e-4\n", "unknown key(s) in 'training': learning_rte"),
    ("  epochs: -1\n", "training.epochs must be positive"),
    ("  batch_size: many\n", "training.batch_size must be an integer"),
    ("  head_init: zeros\n", "training.head_init must be one of logreg, random"),
    ("  label_smoothing: 1.5\n", "training.label_smoothing must be in [0, 1)"),
])
def test_bad_training_config_is_one_line(tmp_path, tiny_encoder_dir, capsys, training, message):
    config = make_project(tmp_path / "p", tiny_encoder_dir, training)
    code, err = run(["--config", str(config)], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err


def test_bad_override_and_missing_config(project, capsys):
    code, err = run(["--config", str(project), "--set", "learning_rate"], capsys)
    assert code == 2 and "expected SECTION.KEY=VALUE" in err
    code, err = run(["--config", str(project), "--set", "learning_rate=1"], capsys)
    assert code == 2 and "name the section, e.g. --set training.learning_rate" in err
    code, err = run(["--config", str(project.parent / "nope.yaml")], capsys)
    assert code == 2 and "config file not found" in err and err.count("\n") == 1


def test_bad_data_is_one_line_with_file_and_line(project, capsys):
    intents = project.parent / "intents.jsonl"
    intents.write_text(intents.read_text() + '{"text": "where is it"}\n')
    code, err = run(["--config", str(project)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "intents.jsonl:25: missing field 'intent'" in err


def test_resume_without_checkpoint_is_one_line(project, capsys):
    code, err = run(["--config", str(project), "--resume"], capsys)
    assert code == 2 and "no checkpoint to resume from" in err and "training.train" in err


# ---------------------------------------------------------------------------- training, saving, resuming

def test_train_save_load_and_resume_continues_from_the_saved_step(project, tmp_path, capsys):
    artifacts = project.parent / "artifacts"
    common = ["--config", str(project), "--max-steps", "8", "--set", "training.checkpoint_every=4",
              "--set", "training.eval_every=4", "--set", "training.early_stopping_patience=0",
              "--set", "training.wise_alphas=[0.5]", "--set", "training.intent_pair_weight=0.5",
              "--set", "training.anchor_weight=0.5"]
    code, err = run(common, capsys)
    assert code == 0, err
    out_dir, work = artifacts / "teacher", artifacts / "runs" / "teacher"
    full = json.loads((work / "ranks" / "rank0.json").read_text())
    results = json.loads((work / "results.json").read_text())
    assert full["steps"] == 8 and len(full["losses"]) == 8
    assert results["steps"] == results["optimizer_steps"] == 8 and results["effective_batch_size"] == 4
    assert results["global_batch_size"] == 4 and results["processes"] == 1 and results["samples_seen"] == 8 * 4
    assert "loss" in results["validation"]
    assert results["contrastive_pairs"] > 0 and results["train_examples_per_second"] > 0
    assert results["chosen_weights"] in {"final", "ema", "best", "wise0.5-final", "wise0.5-ema"}
    assert (work / "checkpoints" / "step_4" / "trainer_state.json").is_file()

    # the folder follows the contract and loads three ways
    for name in ("config.json", "model.safetensors", "tokenizer.json", "intent_head.safetensors", "labels.json",
                 "attendant.json"):
        assert (out_dir / name).is_file(), name
    meta = json.loads((out_dir / "attendant.json").read_text())
    assert meta["pooling"] == "mean" and meta["max_length"] == 24 and meta["training"]["steps"] == 8
    assert json.loads((out_dir / "labels.json").read_text()) == sorted(INTENTS)
    # the held-out rows travel with the model (the service calibrates on exactly those)
    from runtime.folder import read_validation_split

    held_out = read_validation_split(out_dir)
    assert held_out and len(held_out) == results["validation"]["n"]
    assert {r["text"] for r in held_out} <= {t for ts in INTENTS.values() for t in ts}
    model = SupportModel.from_pretrained(out_dir)
    probs, emb = model.predict(["where is my parcel", "hello", "refund"])
    assert probs.shape == (3, 3) and emb.shape == (3, 32)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert model.fingerprint == meta["fingerprint"] and model.dim == 32
    served = load_support_model(out_dir)
    assert served.labels == sorted(INTENTS) and served.fingerprint == meta["fingerprint"]
    from transformers import AutoModel

    AutoModel.from_pretrained(out_dir)
    from runtime.embedder import Embedder

    e = Embedder(out_dir, max_length=24)
    assert e.fingerprint == model.fingerprint
    # the head reads the Embedder's embedding: the service can score intents from it alone
    np.testing.assert_allclose(e.encode(["hello"]), emb[1:2], atol=1e-5)

    # resume from step 4 into another folder: continues at step 5 and ends where the full run did
    code, err = run(common + ["--resume", str(work / "checkpoints" / "step_4"), "--output-dir",
                              str(tmp_path / "resumed"), "--work-dir", str(tmp_path / "resumed_run")], capsys)
    assert code == 0, err
    resumed = json.loads((tmp_path / "resumed_run" / "ranks" / "rank0.json").read_text())
    assert resumed["steps"] == 8 and len(resumed["losses"]) == 4  # steps 5..8 only
    np.testing.assert_allclose(resumed["losses"], full["losses"][4:], rtol=1e-4)
    assert resumed["param_checksum"] == full["param_checksum"]

    # --resume with no path picks the latest checkpoint of the work dir
    assert loop.latest_checkpoint(work / "checkpoints").name == "step_4"


def test_missing_and_corrupt_models_are_one_line_artifact_errors(tmp_path, tiny_encoder_dir):
    with pytest.raises(ArtifactError, match=r"no trained model at .*accelerate launch -m training\.train --config"):
        SupportModel.from_pretrained(tmp_path / "none")
    model = SupportModel.from_encoder(str(tiny_encoder_dir), ["a", "b"], max_length=16)
    d = model.save_pretrained(tmp_path / "m")
    assert not list(tmp_path.glob(".m.tmp-*"))            # no temporary folder left behind
    SupportModel.from_pretrained(d)
    model.save_pretrained(d)                                 # replacing an existing folder works too
    (d / "intent_head.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="is corrupt") as err:
        SupportModel.from_pretrained(d)
    assert "\n" not in str(err.value) and "training.train" in str(err.value)
    (d / "labels.json").unlink()
    with pytest.raises(ArtifactError, match=r"incomplete \(missing labels\.json\)"):
        SupportModel.from_pretrained(d)


def test_fingerprint_detects_changed_weights(tmp_path, tiny_encoder_dir):
    model = SupportModel.from_encoder(str(tiny_encoder_dir), ["a", "b"], max_length=16)
    d = model.save_pretrained(tmp_path / "m")
    from safetensors.torch import save_file

    save_file({"weight": torch.ones(2, 32), "bias": torch.zeros(2)}, str(d / "intent_head.safetensors"))
    with pytest.raises(ArtifactError, match="does not match its fingerprint"):
        SupportModel.from_pretrained(d)


def test_head_from_logistic_regression_and_temperature():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    X = np.concatenate([c + 0.3 * rng.normal(size=(20, 8)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(3), 20)

    class Enc(torch.nn.Module):
        config = type("C", (), {"hidden_size": 8})()

    m = SupportModel(Enc(), None, ["a", "b", "c"])
    assert m.fit_head(X, y, C=10) == 1.0
    logits = m.intent_head(torch.from_numpy(X))
    assert (logits.argmax(1).numpy() == y).all()
    # over-confident logits with some errors: the fitted temperature softens them (T > 1)
    noisy = np.eye(3)[np.where(rng.random(60) < 0.2, rng.integers(0, 3, 60), y)] * 10
    assert fit_temperature(noisy, y) > 1.5
    # well-calibrated logits stay near 1
    p = 0.8
    calibrated = np.log(np.where(np.eye(3)[y] > 0, p, (1 - p) / 2))
    flip = rng.random(60) >= p
    y_obs = np.where(flip, (y + 1) % 3, y)
    assert 0.6 < fit_temperature(calibrated, y_obs) < 1.6


def test_layerwise_groups_and_no_decay(tiny_encoder_dir):
    model = SupportModel.from_encoder(str(tiny_encoder_dir), ["a", "b"], max_length=16)
    from core.config import TrainingSettings

    settings = TrainingSettings(learning_rate=1e-4, head_learning_rate=1e-2, layer_decay=0.5, weight_decay=0.01)
    groups = loop.param_groups(model, settings)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["intent_head.weight"])]["lr"] == 1e-2
    assert by_param[id(named["encoder.encoder.layer.1.attention.self.query.weight"])]["lr"] == pytest.approx(1e-4)
    assert by_param[id(named["encoder.encoder.layer.0.attention.self.query.weight"])]["lr"] == pytest.approx(5e-5)
    assert by_param[id(named["encoder.encoder.layer.0.attention.self.query.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["encoder.encoder.layer.0.output.LayerNorm.weight"])]["weight_decay"] == 0.0
    assert by_param[id(named["encoder.encoder.layer.0.output.dense.weight"])]["weight_decay"] == 0.01


def test_settings_come_from_the_config_with_section_overrides(project):
    from core.config import load_config

    with pytest.raises(ConfigError, match="unknown key"):
        load_config(project, ["training.nope=1"])
    s = load_config(project, ["training.learning_rate=3e-5", "training.freeze_embeddings=false"]).training
    assert s.learning_rate == 3e-5 and s.freeze_embeddings is False and s.batch_size == 4


def test_batch_plan_is_global_and_must_divide():
    plan = loop.BatchPlan.make(32, 2, 2, "training.batch_size")
    assert (plan.per_process, plan.micro_global) == (8, 16)
    with pytest.raises(ConfigError, match=r"training.batch_size 6 .* 2 process\(es\) x 2 accumulation"):
        loop.BatchPlan.make(6, 2, 2, "training.batch_size")


def test_tune_writes_a_loadable_best_config(project, capsys):
    from core.config import load_config
    from training import tune

    out = project.parent / "best.yaml"
    code = run_cli(tune.main, ["--config", str(project), "--trials", "2", "--max-steps", "2", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    best = load_config(out)
    import yaml

    section = yaml.safe_load(out.read_text())["training"]
    assert {"learning_rate", "epochs", "batch_size", "label_smoothing", "contrastive_weight"} <= set(section)
    assert best.training.eval_batch_size == 16            # the rest of the section is kept
    assert best.data.intents == load_config(project).data.intents
    trials = (project.parent / "artifacts" / "tune" / "trials.jsonl").read_text().splitlines()
    assert len(trials) == 2 and not list((project.parent / "artifacts" / "tune").glob("trial_*"))
