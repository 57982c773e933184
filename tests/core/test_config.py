"""The one typed config: every section typed, unknown keys rejected with file and key, one override syntax."""
from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
import yaml

from core.config import (
    DEFAULT_CONFIG,
    SECTIONS,
    CompressionSettings,
    Config,
    DistillSettings,
    FlowsConfig,
    PipelineSettings,
    TrainingSettings,
    apply_overrides,
    load_config,
)
from core.errors import ConfigError

DEMO = yaml.safe_load(DEFAULT_CONFIG.read_text())


def write_config(tmp_path: Path, raw: dict) -> Path:
    """A copy of the demo config in tmp_path whose data paths still point at the demo pack."""
    raw = {**raw, "data": {k: str((DEFAULT_CONFIG.parent / v).resolve()) for k, v in DEMO["data"].items()},
           "artifacts_dir": str(tmp_path / "artifacts")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_demo_config_is_typed_in_every_section():
    config = load_config()
    assert isinstance(config, Config)
    assert isinstance(config.training, TrainingSettings) and isinstance(config.distill, DistillSettings)
    assert isinstance(config.compression, CompressionSettings) and isinstance(config.pipeline, PipelineSettings)
    assert isinstance(config.flows, FlowsConfig)
    assert config.flows.reference_date == dt.date(2026, 11, 29)
    assert config.flows.restocking_fee == 0.15
    assert config.distill.layer_selection == "spread" and config.distill.epochs == 4.0
    assert config.training.epochs == 2.0            # the default, set in one place
    assert config.pipeline.steps == ["train", "distill", "compress", "index", "evaluate"]
    assert config.data.intents.is_absolute() and config.data.intents.is_file()
    assert config.layout.served == config.artifacts_dir / "served"


@pytest.mark.parametrize("section", sorted(set(SECTIONS) - {"data"}))
def test_unknown_key_in_any_section_names_file_and_key(tmp_path, section):
    path = write_config(tmp_path, {**DEMO, section: {**(DEMO.get(section) or {}), "no_such_key": 1}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "no_such_key" in str(err.value) and f"'{section}'" in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("training.learning_rate=fast", "training.learning_rate must be a number"),
    ("training.batch_size=0", "training.batch_size must be at least 1"),
    ("distill.layer_selection=middle", "distill.layer_selection must be one of"),
    ("compression.format=zip", "compression.format must be one of"),
    ("pipeline.steps=[train, bake]", "pipeline.steps must be a list of"),
    ("flows.reference_date=yesterday", "flows.reference_date must be a date"),
    ("flows.restocking_fee=2", "flows.restocking_fee must be in [0, 1)"),
    ("server.port=70000", "server.port must be a TCP port"),
    ("training.freeze_embeddings=maybe", "training.freeze_embeddings must be true or false"),
    ("learning_rate=3e-5", "name the section"),
    ("nosuch.key=1", "unknown section 'nosuch'"),
    ("training.learning_rate", "expected SECTION.KEY=VALUE"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT_CONFIG, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_overrides_are_typed_like_the_file():
    config = load_config(DEFAULT_CONFIG, ["training.learning_rate=3e-5", "distill.layer_selection=[0, 2, 4]",
                                          "pipeline.steps=index,train", "flows.reference_date=2027-01-05",
                                          "name=other", "training.wise_alphas=[0.5, 1]"])
    assert config.training.learning_rate == 3e-5
    assert config.distill.layer_selection == "0,2,4"
    assert config.pipeline.steps == ["train", "index"]   # always in pipeline order
    assert config.flows.reference_date == dt.date(2027, 1, 5)
    assert config.name == "other"
    assert config.training.wise_alphas == [0.5, 1.0]


def test_overrides_do_not_touch_the_raw_mapping():
    raw = {"training": {"epochs": 1}}
    out = apply_overrides(raw, ["training.epochs=3"])
    assert raw == {"training": {"epochs": 1}} and out["training"]["epochs"] == 3


def test_sections_that_moved_out_of_distill_say_where_to(tmp_path):
    path = write_config(tmp_path, {**DEMO, "distill": {"compression": {"format": "onnx-int8"}}})
    with pytest.raises(ConfigError, match="'distill.compression' is now a top-level section"):
        load_config(path)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(tmp_path / "list.yaml")
    path = write_config(tmp_path, {k: v for k, v in DEMO.items() if k != "data"})
    raw = yaml.safe_load(path.read_text())
    raw["data"]["intents"] = "missing.jsonl"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="data.intents points to a missing file"):
        load_config(path)


def test_defaults_live_in_the_dataclasses_only():
    # Distillation overrides some loop defaults; the rest are inherited, not repeated.
    loop = {f.name: f.default for f in dataclasses.fields(TrainingSettings)}
    distill = {f.name: f.default for f in dataclasses.fields(DistillSettings)}
    assert distill["epochs"] == 4.0 and loop["epochs"] == 2.0
    assert distill["batch_size"] == loop["batch_size"]
    assert distill["val_fraction"] is None   # the teacher's split
