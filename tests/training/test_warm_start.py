"""Warm start (training/warm.py): a retrain continues from the last build's teacher and student.

What it must do: start from the saved weights (not the pretrained encoder), keep the starting
model's validation rows as validation, run the short `warm_epochs` schedule at `warm_lr_scale` x
the learning rates, cope with an intent added since, and say in one line when there is nothing
to start from. Tiny random encoders keep it fast.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from core.cli import run_cli
from core.config import load_config
from runtime.folder import read_validation_split
from runtime.model import SupportModel
from tests.helpers import HELD_OUT, make_project, make_teacher, write_project
from training import distill, pipeline, train
from training.warm import PREVIOUS, warm_overrides, warm_start


def encoder_distance(a: SupportModel, b: SupportModel) -> float:
    """Largest absolute difference between two models' encoder weights (same architecture)."""
    sb = b.encoder.state_dict()
    return max(float((v.float() - sb[k].float()).abs().max()) for k, v in a.encoder.state_dict().items())


def run(main, argv: list[str], capsys) -> tuple[int, str]:
    code = run_cli(main, argv)
    return code, capsys.readouterr().err


def test_warm_settings_shorten_the_schedule_and_scale_the_learning_rates(tmp_path, tiny_encoder_dir):
    config = load_config(make_project(tmp_path / "proj", tiny_encoder_dir,
                                      "  init_from: previous\n  warm_epochs: 0.5\n  warm_lr_scale: 0.1\n"))
    out = tmp_path / "teacher"
    make_teacher(tiny_encoder_dir, out)
    settings, folder = warm_start(config.training, out)
    assert folder == out.resolve()
    assert settings.epochs == 0.5
    assert settings.learning_rate == pytest.approx(config.training.learning_rate * 0.1)
    assert settings.head_learning_rate == pytest.approx(config.training.head_learning_rate * 0.1)
    # no init_from: the settings as they are, a cold start
    cold, none = warm_start(config.training.__class__(), out)
    assert none is None and cold.epochs == config.training.__class__().epochs
    assert warm_overrides() == [f"training.init_from={PREVIOUS}", f"distill.init_from={PREVIOUS}"]


def test_warm_start_without_a_previous_model_is_one_line(tmp_path, tiny_encoder_dir, capsys):
    project = make_project(tmp_path / "proj", tiny_encoder_dir)
    code, err = run(train.main, ["--config", str(project), "--set", "training.init_from=previous"], capsys)
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and "training.init_from=previous" in lines[-1] and "Traceback" not in err


def test_a_warm_retrain_continues_from_the_previous_teacher(tmp_path, tiny_encoder_dir, capsys):
    project = make_project(tmp_path / "proj", tiny_encoder_dir, "  epochs: 2\n  early_stopping_patience: 0\n")
    artifacts = project.parent / "artifacts"
    code, err = run(train.main, ["--config", str(project)], capsys)
    assert code == 0, err
    before = SupportModel.from_pretrained(artifacts / "teacher")
    cold_steps = json.loads((artifacts / "runs" / "teacher" / "results.json").read_text())["steps"]
    validation = read_validation_split(artifacts / "teacher")
    pretrained = SupportModel.from_encoder(str(tiny_encoder_dir), before.labels)
    assert encoder_distance(before, pretrained) > 1e-3   # the cold run moved away from the encoder

    # an operator adds wordings; the warm retrain barely moves (tiny learning rate) from the last teacher
    with open(project.parent / "intents.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "where on earth is my package", "intent": "order_status"}) + "\n")
    code, err = run(train.main, ["--config", str(project), "--set", "training.init_from=previous",
                                 "--set", "training.warm_epochs=1", "--set", "training.warm_lr_scale=1e-6"], capsys)
    assert code == 0, err
    after = SupportModel.from_pretrained(artifacts / "teacher")
    assert encoder_distance(after, before) < 1e-4 < encoder_distance(after, pretrained)
    results = json.loads((artifacts / "runs" / "teacher" / "results.json").read_text())
    assert results["steps"] == math.ceil(cold_steps / 2)             # 1 warm epoch against 2 cold ones
    assert results["init_from"] == str((artifacts / "teacher").resolve())
    assert after.metadata["init_from"] == results["init_from"]
    # the previous validation rows stay validation (never trained on); the new wording trains
    assert read_validation_split(artifacts / "teacher") == validation
    assert results["validation"]["n"] == len(validation)


def test_a_new_intent_keeps_the_encoder_and_starts_a_new_head(tmp_path, tiny_encoder_dir, capsys, caplog):
    project = make_project(tmp_path / "proj", tiny_encoder_dir)
    artifacts = project.parent / "artifacts"
    code, err = run(train.main, ["--config", str(project), "--max-steps", "4"], capsys)
    assert code == 0, err
    with open(project.parent / "intents.jsonl", "a", encoding="utf-8") as fh:
        for text in ("cancel my order", "stop the order", "please cancel it", "i want to cancel"):
            fh.write(json.dumps({"text": text, "intent": "cancel_order"}) + "\n")
    code, err = run(train.main, ["--config", str(project), "--max-steps", "2", "--set", "training.init_from=previous"],
                    capsys)
    assert code == 0, err
    assert "intent head starts afresh" in caplog.text
    model = SupportModel.from_pretrained(artifacts / "teacher")
    assert "cancel_order" in model.labels and len(model.labels) == 4


@pytest.fixture()
def distill_project(tmp_path, tiny_encoder_dir) -> Path:
    config = write_project(tmp_path / "proj", tiny_encoder_dir)
    make_teacher(tiny_encoder_dir, tmp_path / "proj" / "artifacts" / "teacher")
    return config


def test_a_warm_distillation_continues_from_the_previous_student(distill_project, capsys):
    artifacts = distill_project.parent / "artifacts"
    code, err = run(distill.main, ["--config", str(distill_project), "--max-steps", "8"], capsys)
    assert code == 0, err
    before = SupportModel.from_pretrained(artifacts / "student")
    code, err = run(distill.main, ["--config", str(distill_project), "--max-steps", "2",
                                   "--set", "distill.init_from=previous", "--set", "distill.warm_lr_scale=1e-6"],
                    capsys)
    assert code == 0, err
    after = SupportModel.from_pretrained(artifacts / "student")
    results = json.loads((artifacts / "runs" / "student" / "results.json").read_text())
    assert results["student"] == {"init": "warm_start", "from": str((artifacts / "student").resolve())}
    assert encoder_distance(after, before) < 1e-4
    assert read_validation_split(artifacts / "student") == HELD_OUT

    # a cold distillation of the same teacher starts again from the teacher's layers
    code, err = run(distill.main, ["--config", str(distill_project), "--max-steps", "2"], capsys)
    assert code == 0, err
    assert json.loads((artifacts / "runs" / "student" / "results.json").read_text())["student"]["init"] == "teacher_layers"


def test_pipeline_warm_start_retrains_both_models_from_the_last_build(tmp_path, tiny_encoder_dir, capsys):
    from tests.training.test_pipeline import write_tiny_demo_config

    config_path = write_tiny_demo_config(tmp_path, tiny_encoder_dir)
    common = ["--config", str(config_path), "--steps", "train,distill,compress,index", "--max-steps", "2"]
    code, err = run(pipeline.main, common, capsys)   # the first build: registered and served
    assert code == 0, err
    config = load_config(config_path)
    art = config.artifacts_dir
    assert pipeline.warm_start_source_warning(config) is None   # the workspace is the served build
    # --warm-start retrains both, each from its previous model (a plain run would find them up to date)
    code, err = run(pipeline.main, common + ["--warm-start", "--no-register"], capsys)
    assert code == 0, err
    teacher = json.loads((art / "runs" / "teacher" / "results.json").read_text())
    student = json.loads((art / "runs" / "student" / "results.json").read_text())
    assert teacher["init_from"] == str((art / "teacher").resolve())
    assert student["student"]["init"] == "warm_start"
    # that build was not promoted: the next warm start says it continues from an unserved model
    warning = pipeline.warm_start_source_warning(config)
    assert warning and "not the served version v0001" in warning
