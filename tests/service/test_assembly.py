"""service.assembly: out-of-scope detection is calibrated on the split the served model held out.

The split comes from the model folder (validation.jsonl, written by training), never recomputed
from the config: after `--set training.val_fraction=...` or another training file, a recomputed
split would put examples the model was trained on into calibration.
"""
from __future__ import annotations

import shutil

import pytest

from core.config import load_config
from core.errors import ArtifactError
from runtime.folder import VALIDATION_FILE
from service import assembly
from tests.helpers import DISTILL_INTENTS, HELD_OUT, make_teacher, write_project


@pytest.fixture()
def served(tmp_path, tiny_encoder_dir):
    config_path = write_project(tmp_path / "proj", tiny_encoder_dir)
    make_teacher(tiny_encoder_dir, tmp_path / "proj" / "artifacts" / "teacher")
    return config_path


def spy_on_calibration(monkeypatch, nlu):
    seen: list[list[str]] = []
    predict = nlu.model.predict

    def recording_predict(texts, *args, **kwargs):
        seen.append(list(texts))
        return predict(texts, *args, **kwargs)

    monkeypatch.setattr(nlu.model, "predict", recording_predict)
    return seen


@pytest.mark.parametrize("overrides", [[], ["training.val_fraction=0.5", "training.seed=7"]])
def test_calibration_uses_the_models_own_held_out_rows(served, monkeypatch, overrides):
    config = load_config(served, overrides)
    nlu = assembly.load_nlu(config)
    seen = spy_on_calibration(monkeypatch, nlu)
    detector = assembly.fit_oos_detector(config, nlu)
    train_texts, val_texts = seen
    assert val_texts == [r["text"] for r in HELD_OUT]                      # exactly the saved rows
    assert not set(train_texts) & set(val_texts)                          # nothing trained on is calibrated on
    assert set(train_texts) | set(val_texts) == {t for ts in DISTILL_INTENTS.values() for t in ts}
    assert detector.encoder_fingerprint == nlu.embedder.fingerprint


def test_a_model_without_its_split_is_refused_with_the_fix(served):
    config = load_config(served)
    (config.layout.teacher / VALIDATION_FILE).unlink()
    nlu = assembly.load_nlu(config)
    with pytest.raises(ArtifactError, match="validation.jsonl.*training.pipeline"):
        assembly.fit_oos_detector(config, nlu)


def test_the_split_travels_with_a_copied_model(served, tmp_path):
    # A served folder copied elsewhere keeps calibrating on its own rows, not on the config's data.
    config = load_config(served)
    shutil.copytree(config.layout.teacher, config.layout.student)
    nlu = assembly.load_nlu(config)
    assert nlu.model.name_or_path == str(config.layout.student)
    assembly.fit_oos_detector(config, nlu)
