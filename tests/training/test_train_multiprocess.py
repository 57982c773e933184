"""A real two-process CPU launch (`accelerate launch --multi_gpu --num_processes 2`, gloo) on a tiny config.

Checks that both ranks trained the same number of steps, that DDP kept their parameters identical,
that the loss went down, that the saved model loads, that two processes train the same model as
one (batch_size is global: same examples seen, same optimizer steps, close validation loss), and
that a resumed two-process run continues from the saved step and ends with the same parameters as
the uninterrupted one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.model import SupportModel
from tests.helpers import accelerate_launch, make_project

pytestmark = pytest.mark.slow


def launch(args: list[str], timeout: int = 400):
    return accelerate_launch(["-m", "training.train", *args], processes=2, timeout=timeout)


def read_ranks(work: Path) -> list[dict]:
    return [json.loads((work / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_process_training_and_resume(tmp_path, tiny_encoder_dir):
    config = make_project(tmp_path / "proj", tiny_encoder_dir, "  early_stopping_patience: 0\n")
    artifacts = tmp_path / "proj" / "artifacts"
    overrides = ["training.batch_size=6", "training.eval_every=8", "training.checkpoint_every=8"]
    common = ["--config", str(config), "--max-steps", "16"] + [f"--set={o}" for o in overrides]
    proc = launch(common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = artifacts / "runs" / "teacher"
    ranks = read_ranks(work)

    # both ranks trained, in step, on their own shards
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["num_processes"] == 2 for r in ranks)
    assert all(r["steps"] == 16 and len(r["losses"]) == 16 and r["examples"] > 0 for r in ranks)
    assert ranks[0]["losses"] != ranks[1]["losses"]          # different data on each rank
    # DDP kept the replicas identical
    assert ranks[0]["param_checksum"] == ranks[1]["param_checksum"]
    # the loss went down (mean over both ranks, first steps against last steps)
    losses = np.mean([r["losses"] for r in ranks], axis=0)
    assert losses[-4:].mean() < losses[:4].mean(), losses
    results = json.loads((work / "results.json").read_text())
    assert results["num_processes"] == 2 and results["global_batch_size"] == 6 and results["per_process_batch_size"] == 3
    assert results["train_examples_seen"] == sum(r["examples"] for r in ranks) == 16 * 6

    # one process, same config: the same run (batch_size is global, so the same steps and examples)
    from core.config import load_config
    from training.train import TrainOptions, train

    one = train(load_config(config, overrides), TrainOptions(max_steps=16, output_dir=tmp_path / "one",
                                                             work_dir=tmp_path / "one_run"))
    assert one["processes"] == 1
    for key in ("samples_seen", "optimizer_steps", "global_batch_size", "epochs"):
        assert one[key] == results[key], key
    # not equal: dropout masks and in-batch contrastive negatives (per process) differ
    assert abs(one["validation"]["loss"] - results["validation"]["loss"]) < 0.15 * one["validation"]["loss"], \
        (one["validation"], results["validation"])

    # the saved model loads and predicts
    model = SupportModel.from_pretrained(artifacts / "teacher")
    probs, emb = model.predict(["where is my order", "hello"])
    assert probs.shape == (2, 3) and emb.shape == (2, 32)
    assert model.metadata["num_processes"] == 2

    # resume the same run from its step-8 checkpoint in two processes
    assert (work / "checkpoints" / "step_8").is_dir()
    proc = launch(common + ["--resume", str(work / "checkpoints" / "step_8"), "--output-dir",
                            str(tmp_path / "resumed"), "--work-dir", str(tmp_path / "resumed_run")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "at step 8" in proc.stderr
    resumed = read_ranks(tmp_path / "resumed_run")
    assert all(r["steps"] == 16 and len(r["losses"]) == 8 for r in resumed)   # steps 9..16
    assert resumed[0]["param_checksum"] == resumed[1]["param_checksum"] == ranks[0]["param_checksum"]
    SupportModel.from_pretrained(tmp_path / "resumed")
