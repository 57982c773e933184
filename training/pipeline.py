"""The whole build in one go: train -> distil -> compress -> index -> evaluate.

    python -m training.pipeline --config configs/demo.yaml [--steps train,distill,compress,index,evaluate] [--force]

Each step runs only when its output is missing or out of date (or with `--force`):

| step     | runs when                                                                     | writes |
|----------|-------------------------------------------------------------------------------|--------|
| train    | no teacher                                                                    | `<artifacts>/teacher/` |
| distill  | no student, or the student was distilled from another teacher                  | `<artifacts>/student/` |
| compress | no served model, or it was compressed from another student                    | `<artifacts>/served/` |
| index    | the FAQ/product indexes are missing or were built by another encoder          | `<artifacts>/indexes/` |
| evaluate | no report for the served model yet                                           | `<artifacts>/reports/` |

A forced step makes every later step of the run out of date. Training and distillation run in
this process, on one process (the app's first run uses `run_pipeline`); for several processes or
GPUs run them with `accelerate launch` first: the pipeline then finds them done.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from service.cli import run_cli, setup_logging
from service.config import Config, load_config
from service.errors import ArtifactError, ConfigError

log = logging.getLogger("training.pipeline")

STEPS = ("train", "distill", "compress", "index", "evaluate")
# What the app needs before it can serve (evaluation is for the operator).
SERVING_STEPS = ("train", "distill", "compress", "index")


def pipeline_steps(config: Config) -> list[str]:
    """`distill.pipeline.steps` of the config (default: all five, in order)."""
    section = (config.distill or {}).get("pipeline") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{config.path}: distill.pipeline must be a mapping (e.g. steps: [train, distill, ...])")
    unknown = sorted(set(section) - {"steps"})
    if unknown:
        raise ConfigError(f"{config.path}: unknown key(s) in 'distill.pipeline': {', '.join(unknown)} (known: steps)")
    steps = section.get("steps") or list(STEPS)
    if isinstance(steps, str):
        steps = [s.strip() for s in steps.split(",")]
    return parse_steps(steps, where=f"{config.path}: distill.pipeline.steps")


def serving_steps(config: Config) -> list[str]:
    """The config's steps that the app needs before it serves (evaluation left to the operator)."""
    return [s for s in pipeline_steps(config) if s in SERVING_STEPS]


def parse_steps(steps: Sequence[str] | str, where: str = "--steps") -> list[str]:
    if isinstance(steps, str):
        steps = [s.strip() for s in steps.split(",") if s.strip()]
    steps = [str(s).strip() for s in steps]
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        raise ConfigError(f"{where}: unknown step(s) {', '.join(bad) or '(none given)'}; "
                          f"choose from {','.join(STEPS)}")
    return [s for s in STEPS if s in steps]  # always in pipeline order


def _meta(directory: Path) -> dict[str, Any] | None:
    from training.model import read_model_meta

    try:
        return read_model_meta(directory)
    except ArtifactError:
        return None


def step_status(config: Config, step: str) -> tuple[bool, str]:
    """(up to date, why) for one step of this config's build."""
    art = config.artifacts_dir
    teacher, student, served = _meta(art / "teacher"), _meta(art / "student"), _meta(art / "served")
    if step == "train":
        return (teacher is not None, "teacher present" if teacher else "no teacher model")
    if step == "distill":
        if student is None:
            return False, "no student model"
        if teacher is not None and (student.get("training") or {}).get("teacher_fingerprint") != teacher.get("fingerprint"):
            return False, "the student was distilled from another teacher"
        return True, "student present and distilled from the current teacher"
    if step == "compress":
        if served is None:
            return False, "no served model"
        if student is not None and (served.get("source") or {}).get("fingerprint") != student.get("fingerprint"):
            return False, "the served model was compressed from another student"
        return True, "served model present and made from the current student"
    if step == "index":
        from service.assembly import served_model_dir

        served_dir = served_model_dir(config)
        if served_dir is not None:
            fingerprint, encoder = (_meta(served_dir) or {}).get("fingerprint"), f"the {served_dir.name} encoder"
        else:  # no trained model: the app serves the pretrained encoder (hashing its files loads nothing)
            from retrieval.embedder import model_fingerprint, resolve_model_path

            fingerprint, encoder = model_fingerprint(resolve_model_path(config.encoder.name)), config.encoder.name
        from retrieval.build import load_calibration

        try:
            load_calibration(config, fingerprint)
        except ArtifactError as exc:
            return False, str(exc).split(";")[0]
        missing = [k for k in ("faq", "products") if not (config.index_dir / k).is_dir()]
        if missing:
            return False, f"missing index(es): {', '.join(missing)}"
        return True, f"indexes built with {encoder}"
    if step == "evaluate":
        from service.assembly import served_model_dir
        from training.report import latest_report_dir, load_report

        served_dir = served_model_dir(config)
        fingerprint = str((_meta(served_dir) or {}).get("fingerprint", "")) if served_dir is not None else ""
        latest = latest_report_dir(config.reports_dir)
        if latest is None:
            return False, "no evaluation report"
        try:
            meta = load_report(latest).get("meta") or {}
        except ArtifactError:
            return False, "the latest evaluation report is unreadable"
        if not fingerprint or not fingerprint.startswith(str(meta.get("encoder_fingerprint") or "-")):
            return False, "the latest evaluation report is of another model"
        return True, f"latest report ({latest.name}) is of the served model"
    raise ConfigError(f"unknown pipeline step {step!r}; choose from {','.join(STEPS)}")


def _run_step(step: str, config: Config, max_steps: int | None) -> dict[str, Any]:
    path = str(config.path)
    extra = ["--max-steps", str(max_steps)] if max_steps else []
    if step == "train":
        from training import train

        train.main(["--config", path, *extra])
        return {"output": str(config.artifacts_dir / "teacher")}
    if step == "distill":
        from training import distill

        distill.main(["--config", path, *extra])
        return {"output": str(config.artifacts_dir / "student")}
    if step == "compress":
        from training.compress import CompressionSettings, compress_model, read_texts

        source = config.artifacts_dir / "student"
        if _meta(source) is None:
            raise ArtifactError(f"no fp32 student at {source} to compress; distil one with "
                                f"`accelerate launch -m training.distill --config {path}`")
        settings = CompressionSettings.from_section(config.distill, where=path)
        report = compress_model(source, config.artifacts_dir / "served", settings, read_texts(config.data.intents),
                                config_path=config.path)
        return {"output": report["output_dir"], "precision": report["precision"], "bytes": report["bytes"]}
    if step == "index":
        from retrieval.build import build_indexes

        summary = build_indexes(config, show_progress=False)
        return {"output": summary["index_dir"], "encoder": summary["encoder"]}
    if step == "evaluate":
        from training import evaluate

        evaluate.main(["--config", path])
        from training.report import latest_report_dir

        latest = latest_report_dir(config.reports_dir)
        return {"output": str(latest) if latest else None}
    raise ConfigError(f"unknown pipeline step {step!r}")


def run_pipeline(config: Config, steps: Sequence[str] | str | None = None, force: bool = False, *,
                 max_steps: int | None = None,
                 on_step: Callable[[int, int, str, str], None] | None = None) -> dict[str, Any]:
    """Run the steps that are missing or out of date (all of `steps` with `force`), in order.

    Returns {"steps": {step: {"status": "done"|"skipped", "why", "seconds", ...}}, "seconds": total}.
    `on_step(i, n, step, message)` is called before each step (for a progress display).
    """
    if steps is not None and not isinstance(steps, str) and len(steps) == 0:
        return {"steps": {}, "seconds": 0.0}   # e.g. a config whose pipeline serves without building
    chosen = parse_steps(steps) if steps is not None else pipeline_steps(config)
    results: dict[str, Any] = {}
    t_all = time.perf_counter()
    rebuilt = False  # a step that ran makes the later ones out of date
    for i, step in enumerate(chosen, 1):
        current, why = step_status(config, step)
        if force or rebuilt:
            current, why = False, "forced" if force else "an earlier step was rebuilt"
        if current:
            log.info("[%d/%d] %s: up to date (%s)", i, len(chosen), step, why)
            results[step] = {"status": "skipped", "why": why}
            if on_step:
                on_step(i, len(chosen), step, f"up to date ({why})")
            continue
        log.info("[%d/%d] %s: running (%s)", i, len(chosen), step, why)
        if on_step:
            on_step(i, len(chosen), step, f"running ({why})")
        t0 = time.perf_counter()
        out = _run_step(step, config, max_steps)
        seconds = round(time.perf_counter() - t0, 1)
        results[step] = {"status": "done", "why": why, "seconds": seconds, **out}
        rebuilt = True
        log.info("[%d/%d] %s: done in %.0f s", i, len(chosen), step, seconds)
    total = round(time.perf_counter() - t_all, 1)
    log.info("pipeline finished in %.0f s (%s)", total,
             ", ".join(f"{s} {r['status']}" for s, r in results.items()))
    return {"steps": results, "seconds": total}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.pipeline",
        description="Build everything a config needs, in order: train the teacher, distil the student, compress "
                    "it for serving, build the FAQ/product indexes, evaluate. Steps already up to date are skipped.")
    parser.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
    parser.add_argument("--steps", default=None,
                        help=f"comma-separated subset of {','.join(STEPS)} (default: distill.pipeline.steps, else all)")
    parser.add_argument("--force", action="store_true", help="run the chosen steps even when they are up to date")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="optimizer steps for train and distill (a quick build; default: their epochs)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    config = load_config(args.config)
    steps = parse_steps(args.steps) if args.steps else None
    result = run_pipeline(config, steps, args.force, max_steps=args.max_steps)
    for step, r in result["steps"].items():
        detail = f"{r['seconds']:.0f} s" if r["status"] == "done" else r["why"]
        print(f"{step:9s} {r['status']:8s} {detail}")
    print(f"total     {result['seconds']:.0f} s; artifacts in {config.artifacts_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
