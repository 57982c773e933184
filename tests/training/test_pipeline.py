"""training.pipeline end to end on a temporary copy of the demo deployment, with a tiny encoder:
train -> distil -> compress -> index -> evaluate, then the assistant serves the compressed student."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from core.cli import run_cli
from core.config import PROJECT_ROOT, load_config
from training import pipeline


def write_tiny_demo_config(folder: Path, encoder_dir: Path, copied: tuple[str, ...] = ()) -> Path:
    """configs/demo.yaml with absolute data paths, artifacts under `folder` and a tiny encoder; the
    `copied` data files (config keys) are copies in `folder`, free to change."""
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    raw["data"] = {k: str((PROJECT_ROOT / "configs" / v).resolve()) for k, v in raw["data"].items() if v}
    for key in copied:
        copy = folder / Path(raw["data"][key]).name
        copy.write_bytes(Path(raw["data"][key]).read_bytes())
        raw["data"][key] = str(copy)
    raw["artifacts_dir"] = str(folder / "artifacts")
    raw["encoder"] = {**raw.get("encoder", {}), "name": str(encoder_dir), "max_length": 32}
    raw["training"] = {**(raw.get("training") or {}), "batch_size": 16, "eval_batch_size": 128, "log_every": 2,
                       "tensorboard": False}
    raw["distill"] = {**(raw.get("distill") or {}), "batch_size": 16, "eval_batch_size": 128, "log_every": 2,
                      "tensorboard": False, "learning_rate": 1e-3}
    raw["compression"] = {**(raw.get("compression") or {}), "min_agreement": 0.0}
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def test_pipeline_builds_everything_and_the_app_serves_the_compressed_student(tmp_path, tiny_encoder_dir):
    config = load_config(write_tiny_demo_config(tmp_path, tiny_encoder_dir, copied=("faq", "products")))
    seen: list[tuple[str, str]] = []
    result = pipeline.run_pipeline(config, max_steps=3, on_step=lambda i, n, step, msg: seen.append((step, msg)))
    assert [s for s, _ in seen] == list(pipeline.STEPS)
    assert all(r["status"] == "done" for r in result["steps"].values()), result
    art = config.artifacts_dir
    for name in ("teacher", "student", "served"):
        assert (art / name / "attendant.json").is_file(), name
    served_meta = json.loads((art / "served" / "attendant.json").read_text())
    assert served_meta["runtime"] == "onnxruntime"
    assert served_meta["source"]["fingerprint"] == json.loads((art / "student" / "attendant.json").read_text())["fingerprint"]
    calibration = json.loads((config.index_dir / "calibration.json").read_text())
    assert calibration["encoder_fingerprint"] == served_meta["fingerprint"]   # indexes built with the served encoder
    assert (config.index_dir / "faq").is_dir() and (config.index_dir / "products").is_dir()
    report = json.loads((result["steps"]["evaluate"]["output"] and
                         (Path(result["steps"]["evaluate"]["output"]) / "report.json")).read_text())
    assert report["meta"]["model"] == "served"

    # the app's assembly picks the served (compressed) student and answers through ModelNLU
    from runtime.onnx_model import OnnxSupportModel
    from service.assembly import build_assistant, open_store
    from service.nlu import ModelNLU

    assistant = build_assistant(config, store=open_store(config, tmp_path / "store.sqlite"))
    assert isinstance(assistant.nlu, ModelNLU) and isinstance(assistant.nlu.model, OnnxSupportModel)
    reply = assistant.respond("s1", "How long does shipping take?")
    assert reply.text and reply.action

    # a second run finds everything up to date; --force on one step redoes it and what follows
    again = pipeline.run_pipeline(config)
    assert all(r["status"] == "skipped" for r in again["steps"].values()), again
    forced = pipeline.run_pipeline(config, steps="compress,index", force=True)
    assert [r["status"] for r in forced["steps"].values()] == ["done", "done"]
    # evaluation is current exactly when the served model's fingerprint is the one it evaluated
    served_fp = json.loads((art / "served" / "attendant.json").read_text())["fingerprint"]
    assert pipeline.step_status(config, "evaluate")[0] is (served_fp == served_meta["fingerprint"])

    # Changed data is not up to date: a new catalogue needs new indexes (the teacher never read it),
    # a new FAQ wording a new teacher too.
    with open(config.data.products, "a", encoding="utf-8") as fh:
        fh.write("\n")
    assert pipeline.step_status(config, "train")[0] is True
    fresh, why = pipeline.step_status(config, "index")
    assert fresh is False and "products" in why
    faq = config.data.faq.read_text(encoding="utf-8").splitlines()
    first = json.loads(faq[0])
    first["paraphrases"].append("a wording added by the operator")
    config.data.faq.write_text("\n".join([json.dumps(first)] + faq[1:]) + "\n", encoding="utf-8")
    fresh, why = pipeline.step_status(config, "train")
    assert fresh is False and "faq" in why


def test_pipeline_cli_help_and_one_line_errors(tmp_path, tiny_encoder_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        pipeline.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--steps" in out and "--force" in out and "train,distill,compress,index,evaluate" in out
    config = write_tiny_demo_config(tmp_path, tiny_encoder_dir)
    code = run_cli(pipeline.main, ["--config", str(config), "--steps", "train,quantise"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown step(s) quantise" in err
    # distilling without a teacher names the command that trains one
    code = run_cli(pipeline.main, ["--config", str(config), "--steps", "distill"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "training.train --config" in err
