"""The whole build in one go: train -> distil -> compress -> index -> evaluate.

    python -m training.pipeline --config configs/demo.yaml [--steps train,distill,compress,index,evaluate] [--force]

Each step runs only when its output is missing or out of date (or with `--force`):

| step     | runs when                                                                     | writes |
|----------|-------------------------------------------------------------------------------|--------|
| train    | no teacher, or its training files (intents, FAQ, training dialogs) changed since | `<artifacts>/teacher/` |
| distill  | no student, or the student was distilled from another teacher                  | `<artifacts>/student/` |
| compress | no served model, or it was compressed from another student                    | `<artifacts>/served/` |
| index    | the FAQ/product indexes are missing, were built by another encoder or from other data (FAQ, catalogue, intents, training dialogs; or, with `policy.decisions: learned`, the fitted cut-offs are) | `<artifacts>/indexes/` (+ `decisions.json`) |
| evaluate | no report for the served model yet                                           | `<artifacts>/reports/` |

The files a step learned from are compared by content (core/datafiles.py), so an operator who adds
FAQ wordings or training conversations and runs the pipeline gets a new build, not the old one
registered again. (Builds from before that record are taken as they are: run with `--force`.)
A forced step makes every later step of the run out of date. Training and distillation run in
this process, on one process (the app's first run uses `run_pipeline`); for several processes or
GPUs run them with `accelerate launch` first: the pipeline then finds them done.

The steps write the build's workspace (teacher/, student/, served/, indexes/, reports/ under the
artifacts folder). At the end the build is registered as a new CANDIDATE version
(`<artifacts>/models/vNNNN/`, training/models.py): the served version is never touched by a build;
`python -m training.models promote vNNNN` puts it through the gate. One exception, so that a fresh
clone's `python app.py` just works: when no version is served yet (the very first build, or the first
run after upgrading from an unversioned artifacts folder), the new version is served at once.
A build already registered (same model, data hash and indexes) registers nothing new; `--no-register`
skips this step.

`--warm-start` is the retrain an operator runs after adding corrections: every chosen step runs
(as with --force), and train and distill continue from the last build's teacher and student for a
short schedule instead of starting from the pretrained encoder (training/warm.py).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from core.cli import add_config_arguments, config_from_args, run_cli, setup_logging
from core.config import PIPELINE_STEPS, Config
from core.datafiles import INDEX_FILES, TEACHER_FILES, changed_since
from core.errors import ArtifactError, ConfigError
from runtime.folder import read_model_meta
from runtime.loading import is_made_from
from training.warm import warm_overrides

log = logging.getLogger("training.pipeline")

STEPS = PIPELINE_STEPS
# What the app needs before it can serve (evaluation is for the operator).
SERVING_STEPS = ("train", "distill", "compress", "index")


def pipeline_steps(config: Config) -> list[str]:
    """`pipeline.steps` of the config (default: all five, in order)."""
    return list(config.pipeline.steps)


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

    try:
        return read_model_meta(directory)
    except ArtifactError:
        return None


def step_status(config: Config, step: str) -> tuple[bool, str]:
    """(up to date, why) for one step of this config's build."""
    layout = config.layout
    teacher, student, served = _meta(layout.teacher), _meta(layout.student), _meta(layout.served)
    if step == "train":
        if teacher is None:
            return False, "no teacher model"
        changed = changed_since((teacher.get("training") or {}).get("data_files"), config, TEACHER_FILES)
        if changed:
            return False, f"the training data changed since the teacher was trained ({', '.join(changed)})"
        return True, "teacher present"
    if step == "distill":
        if student is None:
            return False, "no student model"
        if teacher is not None and (student.get("training") or {}).get("teacher_fingerprint") != teacher.get("fingerprint"):
            return False, "the student was distilled from another teacher"
        return True, "student present and distilled from the current teacher"
    if step == "compress":
        if served is None:
            return False, "no served model"
        if student is not None and not is_made_from(layout.served, layout.student):
            return False, "the served model was compressed from another student"
        return True, "served model present and made from the current student"
    if step == "index":
        served_dir = config.layout.served_model_dir()
        if served_dir is not None:
            fingerprint, encoder = (_meta(served_dir) or {}).get("fingerprint"), f"the {served_dir.name} encoder"
        else:  # no trained model: the app serves the pretrained encoder (hashing its files loads nothing)
            from runtime.embedder import model_fingerprint, resolve_model_path

            fingerprint, encoder = model_fingerprint(resolve_model_path(config.encoder.name)), config.encoder.name
        from retrieval.build import load_calibration

        try:
            calibration = load_calibration(config, fingerprint)
        except ArtifactError as exc:
            return False, str(exc).split(";")[0]
        changed = changed_since(calibration.get("data_files"), config, INDEX_FILES)
        if changed:
            return False, f"the data changed since the indexes were built ({', '.join(changed)})"
        missing = [k for k in ("faq", "products") if not (layout.indexes / k).is_dir()]
        if missing:
            return False, f"missing index(es): {', '.join(missing)}"
        if config.policy.decisions == "learned" and config.data.train_dialogs is not None:
            from training.decisions import decisions_status

            fitted, why = decisions_status(config, fingerprint)
            if not fitted:
                return False, why
        return True, f"indexes built with {encoder}"
    if step == "evaluate":
        from evaluation.report import latest_report_dir, load_report

        served_dir = config.layout.served_model_dir()
        fingerprint = str((_meta(served_dir) or {}).get("fingerprint", "")) if served_dir is not None else ""
        latest = latest_report_dir(layout.reports)
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
    layout = config.layout
    if step == "train":
        from training.train import TrainOptions, train

        train(config, TrainOptions(max_steps=max_steps))
        return {"output": str(layout.teacher)}
    if step == "distill":
        from training.distill import DistillOptions, distill

        distill(config, DistillOptions(max_steps=max_steps))
        return {"output": str(layout.student)}
    if step == "compress":
        from training.compress import compress_model, read_texts

        if _meta(layout.student) is None:
            raise ArtifactError(f"no fp32 student at {layout.student} to compress; distil one with "
                                f"`accelerate launch -m training.distill --config {config.path}`")
        report = compress_model(layout.student, layout.served, config.compression, read_texts(config.data.intents),
                                config_path=config.path)
        return {"output": report["output_dir"], "precision": report["precision"], "bytes": report["bytes"]}
    if step == "index":
        from retrieval.build import build_indexes

        summary = build_indexes(config, show_progress=False)
        out = {"output": summary["index_dir"], "encoder": summary["encoder"]}
        if config.policy.decisions == "learned" and config.data.train_dialogs is not None:
            # The policy's cut-offs are fitted on the served model + these indexes (they replay the training
            # dialogs through them), so they are refitted with every index build that serves them. Off by
            # default (they tied the hand-set ones on validation, README), and then not fitted: replaying
            # the dialogs adds ~30 s to a build; `python -m training.decisions` fits them on demand. Not in
            # retrieval.build: it plays whole conversations through the service, a layer above retrieval.
            from training.decisions import fit_decisions

            fitted = fit_decisions(config)
            out["decisions"] = {"thresholds": fitted["thresholds"], "objective": fitted["objective"]["after"]}
        return out
    if step == "evaluate":
        from evaluation.evaluate import run_evaluation

        return {"output": str(run_evaluation(config))}
    raise ConfigError(f"unknown pipeline step {step!r}")


def run_pipeline(config: Config, steps: Sequence[str] | str | None = None, force: bool = False, *,
                 max_steps: int | None = None,
                 on_step: Callable[[int, int, str, str], None] | None = None,
                 register: bool = True, store: Any = None) -> dict[str, Any]:
    """Run the steps that are missing or out of date (all of `steps` with `force`), in order, then
    register the build as a candidate version (`register`; the first one is served, see above).

    Returns {"steps": {step: {"status": "done"|"skipped", "why", "seconds", ...}}, "seconds": total,
    "version": {"name", "created", "status", "served"} | None}.
    `on_step(i, n, step, message)` is called before each step (for a progress display). `store`: where
    the registry shares the served version (default: the config's store).
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
    version = register_build(config, results, store) if register else None
    total = round(time.perf_counter() - t_all, 1)
    log.info("pipeline finished in %.0f s (%s)", total,
             ", ".join(f"{s} {r['status']}" for s, r in results.items()))
    return {"steps": results, "seconds": total, "version": version}


def register_build(config: Config, results: dict[str, Any], store: Any = None) -> dict[str, Any] | None:
    """The build as a registered version (training/models.py); None when there is no trained model
    or the build is incomplete (e.g. `--steps train`: the indexes are not built for it yet)."""
    from training.models import Registry

    registry = Registry(config, store)
    evaluated = (results.get("evaluate") or {}).get("output") if (results.get("evaluate") or {}).get("status") == "done" else None
    try:
        version, created = registry.register(report_dir=Path(evaluated) if evaluated else None)
    except ArtifactError as exc:
        log.warning("the build was not registered as a version: %s", exc)
        return None
    if version is None:
        return None
    served = registry.served_name()
    if created and served == version.name:
        log.info("registered %s and serving it (no version was served before)", version.name)
    elif created:
        log.info("registered %s as a candidate; serve it with `python -m training.models --config %s promote %s` "
                 "(gated against %s)", version.name, config.path, version.name, served)
    return {"name": version.name, "created": created, "status": version.status, "served": served == version.name}


def warm_start_source_warning(config: Config) -> str | None:
    """Why a warm start may not continue from what customers are served: the workspace's student is
    not the one the served version was compressed from (e.g. the last build was a refused candidate)."""
    from training.models import Registry

    try:
        served = Registry(config).served()
    except Exception:  # no registry or store yet: nothing to compare with
        return None
    student = _meta(config.layout.student)
    source = ((served.meta.get("model") or {}).get("source_fingerprint")) if served else None
    if not source or not student or student.get("fingerprint") == source:
        return None
    return (f"the last build in {config.layout.student.parent} is not the served version {served.name}'s model "
            f"(a candidate that was not promoted?): this warm start continues from it")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.pipeline",
        description="Build everything a config needs, in order: train the teacher, distil the student, compress "
                    "it for serving, build the FAQ/product indexes, evaluate. Steps already up to date are skipped.")
    add_config_arguments(parser)
    parser.add_argument("--steps", default=None,
                        help=f"comma-separated subset of {','.join(STEPS)} (default: the config's pipeline.steps)")
    parser.add_argument("--force", action="store_true", help="run the chosen steps even when they are up to date")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="optimizer steps for train and distill (a quick build; default: their epochs)")
    parser.add_argument("--no-register", action="store_true",
                        help="do not register the build as a candidate version in <artifacts>/models")
    parser.add_argument("--warm-start", action="store_true",
                        help="retrain (implies --force) continuing from the last build's teacher and student, for "
                             "the short schedule of training/distill.warm_epochs: what a retrain with corrections uses")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.warm_start:
        args.overrides = list(args.overrides) + warm_overrides()
    config = config_from_args(args)
    if args.warm_start and (warning := warm_start_source_warning(config)):
        log.warning("%s", warning)
    steps = parse_steps(args.steps) if args.steps else None
    result = run_pipeline(config, steps, args.force or args.warm_start, max_steps=args.max_steps,
                          register=not args.no_register)
    for step, r in result["steps"].items():
        detail = f"{r['seconds']:.0f} s" if r["status"] == "done" else r["why"]
        print(f"{step:9s} {r['status']:8s} {detail}")
    print(f"total     {result['seconds']:.0f} s; artifacts in {config.artifacts_dir}")
    version = result.get("version")
    if version:
        what = "served" if version["served"] else version["status"]
        print(f"version   {version['name']} ({'new' if version['created'] else 'already registered'}, {what})"
              + ("" if version["served"] else f"; promote it with `python -m training.models --config "
                                                f"{config.path} promote {version['name']}`"))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
