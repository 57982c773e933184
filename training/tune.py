"""Hyperparameter search for the teacher with Optuna; writes the best config.

    python -m training.tune --config configs/demo.yaml --trials 20
    python -m training.tune --config configs/demo.yaml --trials 8 --max-steps 200 --output configs/tune-best.yaml

Each trial trains in this process (`training.train.train`) with the trial's values set on top of
the config's `training:` section and scores the validation macro-F1 (accuracy breaks ties). The
search covers the learning rate, epochs, batch size, label smoothing and contrastive weight. The
best values are written into a copy of the config (default: `<config>-tuned.yaml` beside it, so
its relative data paths still resolve), and every trial is logged to `<artifacts>/tune/trials.jsonl`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from core.cli import add_config_arguments, config_from_args, run_cli, setup_logging
from core.errors import ConfigError

logger = logging.getLogger("training.tune")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.tune",
                                     description="Search the teacher's training hyperparameters with Optuna.")
    add_config_arguments(parser)
    parser.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    parser.add_argument("--output", default=None, help="best config to write (default: <config>-tuned.yaml beside it)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap every trial at N optimizer steps")
    parser.add_argument("--timeout", type=float, default=None, help="stop starting trials after S seconds")
    parser.add_argument("--train-file", default=None, help="intents to tune on instead of data.intents")
    parser.add_argument("--validation-file", default=None, help="validation intents (default: a stratified split)")
    parser.add_argument("--no-faq", action="store_true", help="intents only (contrastive weight not searched)")
    parser.add_argument("--seed", type=int, default=42, help="sampler seed")
    return parser.parse_args(argv)


@dataclass
class TrialResult:
    number: int
    params: dict[str, Any]
    macro_f1: float
    accuracy: float
    seconds: float


BATCH_SIZES = (16, 32, 64)


def batch_sizes(n_train: int) -> list[int]:
    """The searched batch sizes that fit the training set (a batch is global and full batches only)."""
    fit = [b for b in BATCH_SIZES if b <= n_train]
    return fit or [max(2, 2 ** max(1, n_train.bit_length() - 1))]


def suggest(trial: Any, with_contrastive: bool, sizes: Sequence[int] = BATCH_SIZES) -> dict[str, Any]:
    """The search space (values go to `training.<key>`)."""
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-4, log=True),
        "epochs": trial.suggest_int("epochs", 1, 4),
        "batch_size": trial.suggest_categorical("batch_size", list(sizes)),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
    }
    if with_contrastive:
        params["contrastive_weight"] = trial.suggest_float("contrastive_weight", 0.0, 1.0)
    return params


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from_args(args)
    if args.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {args.trials}")
    setup_logging(args.verbose)

    import optuna

    from training.train import TrainOptions, train

    base = config.training
    tune_dir = config.artifacts_dir / "tune"
    tune_dir.mkdir(parents=True, exist_ok=True)
    trials_log = tune_dir / "trials.jsonl"
    output = Path(args.output) if args.output else config.path.with_name(f"{config.path.stem}-tuned.yaml")
    with_contrastive = not args.no_faq and base.contrastive_weight > 0
    from training.data import load_intents

    n_rows = len(load_intents(args.train_file or config.data.intents))
    sizes = batch_sizes(n_rows if args.validation_file else int(n_rows * (1 - base.val_fraction)))
    results: list[TrialResult] = []

    def objective(trial: Any) -> float:
        params = suggest(trial, with_contrastive, sizes)
        trial_dir = tune_dir / f"trial_{trial.number:03d}"
        settings = dataclasses.replace(base, tensorboard=False, **params)
        settings.validate(f"trial {trial.number}")
        options = TrainOptions(output_dir=trial_dir / "model", work_dir=trial_dir / "run", max_steps=args.max_steps,
                               train_file=args.train_file, validation_file=args.validation_file, no_faq=args.no_faq,
                               verbose=args.verbose)
        t0 = time.perf_counter()
        summary = train(config.replace(training=settings), options)
        val = summary.get("validation") or {}
        result = TrialResult(trial.number, params, float(val.get("macro_f1", 0.0)), float(val.get("accuracy", 0.0)),
                             round(time.perf_counter() - t0, 1))
        results.append(result)
        with trials_log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(result.__dict__) + "\n")
        shutil.rmtree(trial_dir, ignore_errors=True)  # a model per trial is too much disk; retrain the best
        logger.info("trial %d: macro-F1 %.4f, accuracy %.4f (%s)", trial.number, result.macro_f1, result.accuracy,
                    ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()))
        # Ties on macro-F1 (common on small validation sets) are broken by accuracy.
        return result.macro_f1 + 1e-3 * result.accuracy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.optimize(objective, n_trials=args.trials, timeout=args.timeout, catch=())
    best = max(results, key=lambda r: (r.macro_f1, r.accuracy))
    write_best_config(config.path, output, best)
    logger.info("best trial %d: macro-F1 %.4f, accuracy %.4f; wrote %s", best.number, best.macro_f1, best.accuracy, output)
    logger.info("train with it: accelerate launch -m training.train --config %s", output)
    return 0


def write_best_config(source: Path, output: Path, best: TrialResult) -> None:
    """A copy of the source config with the best values in its `training:` section (relative paths kept valid)."""
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    output = output.resolve()
    if output.parent != source.resolve().parent:
        # Relative paths resolve against the config's folder: make them absolute in a copy elsewhere.
        base = source.resolve().parent
        for key, value in list((raw.get("data") or {}).items()):
            if isinstance(value, str):
                raw["data"][key] = str((base / value).resolve())
        if isinstance(raw.get("artifacts_dir"), str):
            raw["artifacts_dir"] = str((base / raw["artifacts_dir"]).resolve())
    training = dict(raw.get("training") or {})
    training.update(best.params)
    raw["training"] = training
    header = (f"# Written by `python -m training.tune` from {source.name}: best of the trials by validation\n"
              f"# macro-F1 ({best.macro_f1:.4f}, accuracy {best.accuracy:.4f}, trial {best.number}).\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(output)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
