"""Score a model before it goes live: held-out dialogs, NLU, retrieval, efficiency; one report.

    python -m evaluation --config configs/demo.yaml [--set SECTION.KEY=VALUE] [--model DIR]
        [--dialogs PATH] [--data DIR_OR_FILE] [--out DIR] [--compare DIR] [--folds K] [--no-latest]

From Python: `run_evaluation(config, EvaluateOptions(model_dir=..., compare_dir=...))` returns the
report folder (what the command line does, without the printing).

- Dialogs are replayed through the real `Assistant` (service.assembly.build_assistant), turn by
  turn, each dialog with a fresh SQLite store seeded with the config's orders.
- The model is `--model DIR` (a SupportModel folder: teacher, student, served) or, by default,
  whatever the app serves for the config (`service.assembly.load_nlu`).
- The FAQ/product indexes are the config's own when they were built with this model's encoder;
  otherwise temporary ones are built for it (the app's artifacts are never touched).
- NLU is scored on `--data` (an intents file, or a folder evaluated on test.jsonl, else val.jsonl);
  without it, on the dialog turns that state an intent. When the gold intents are not the model's,
  the report says so, and with a train.jsonl beside the split a linear probe (logistic regression
  on the model's frozen embeddings) is scored too. `--folds K`: stratified K-fold cross-validation
  of that same probe on the intents (`--data`, else the config's intents), for small intent sets.
- Output: report.json, report.md, PNG plots and one CSV per evaluator in `--out` (default
  `<artifacts>/reports/<time>-<model>`), and `<artifacts>/reports/latest` then points to it.
  `--compare DIR` (a model folder or a previous report folder) adds compare.md/json/png with deltas.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from core.cli import add_config_arguments, config_from_args, run_cli, setup_logging
from core.config import PROJECT_ROOT, Config
from core.errors import ArtifactError, ConfigError, DataError
from evaluation import plots
from evaluation.base import EvalResult, Evaluator
from evaluation.dialog import DialogEvaluator, load_dialogs
from evaluation.efficiency import EfficiencyEvaluator, EfficiencyInputs
from evaluation.nlu import (
    FrozenEmbeddingCVEvaluator,
    IntentSet,
    NLUEvaluator,
    load_intent_data,
    read_intents,
)
from evaluation.report import (
    build_report,
    latest_report_dir,
    load_report,
    update_latest,
    write_comparison,
    write_report,
)
from evaluation.retrieval import FaqRetrievalEvaluator, ProductRetrievalEvaluator

log = logging.getLogger(__name__)

PROG = "python -m evaluation"


@dataclass(frozen=True)
class EvaluateOptions:
    """What to evaluate and where the report goes; every field may be left at its default.

    The command line's flags, one for one: --model, --dialogs, --data, --out, --compare, --folds,
    --no-latest.
    """

    model_dir: Path | None = None     # a trained model folder (teacher/, student/, served/); None: what the app serves
    dialogs: Path | None = None       # held-out dialogs JSONL; None: the config's data.dialogs
    intents: Path | None = None       # intents to score the NLU on (a JSONL file or a folder of splits);
                                      # None: the dialog turns that state an intent
    out_dir: Path | None = None       # report folder; None: <artifacts>/reports/<time>-<model>
    compare_dir: Path | None = None   # another model folder or a previous report folder, put side by side
    folds: int | None = None          # K-fold cross-validation of a linear probe on the frozen embeddings
    update_latest: bool = True        # point <artifacts>/reports/latest at this report
    command: str | None = None        # the command line, recorded in the report's meta

    def __post_init__(self) -> None:
        for name in ("model_dir", "dialogs", "intents", "out_dir", "compare_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    def validate(self) -> None:
        """ConfigError/DataError, naming the flag, for a bad fold count or an input that does not exist."""
        if self.folds is not None and self.folds < 2:
            raise ConfigError(f"--folds must be 2 or more, got {self.folds}")
        for flag, path in (("dialogs", self.dialogs), ("data", self.intents), ("model", self.model_dir),
                           ("compare", self.compare_dir)):
            if path is not None and not path.exists():
                raise DataError(f"--{flag} {path}: no such file or folder")


@dataclass
class LoadedModel:
    name: str                 # shown in reports ("student", "served", "pretrained+logreg")
    nlu: Any                  # the NLU protocol (service.nlu)
    model_path: Path | None   # the folder whose size is reported
    load_time_s: float
    kind: str                 # "trained" | "pretrained"


# ---- model, indexes, assistant --------------------------------------------------------------------
def load_model(config: Config, model_dir: Path | None) -> LoadedModel:
    from service.assembly import load_nlu
    from service.nlu import ModelNLU

    t0 = time.perf_counter()
    if model_dir is not None:
        model_dir = model_dir.resolve()
        if not (model_dir / "attendant.json").is_file():
            raise ArtifactError(f"--model {model_dir}: not a trained model folder (no attendant.json); train one with "
                                f"`accelerate launch -m training.train --config {config.path}`")
        from runtime.loading import load_support_model

        nlu = ModelNLU(load_support_model(model_dir))
        return LoadedModel(model_dir.name, nlu, model_dir, time.perf_counter() - t0, "trained")
    served = config.layout.served_model_dir()
    nlu = load_nlu(config)
    elapsed = time.perf_counter() - t0
    if served is not None:
        return LoadedModel(served.name, nlu, served, elapsed, "trained")
    path = getattr(nlu.embedder, "path", None)
    return LoadedModel("pretrained+logreg", nlu, Path(path) if path else None, elapsed, "pretrained")


def indexed_config(config: Config, nlu: Any, workdir: Path) -> tuple[Config, str]:
    """The config whose indexes fit `nlu`'s encoder: the app's own, else a copy with temporary ones."""
    from retrieval.build import build_indexes, load_indexes

    try:
        load_indexes(config, nlu.embedder)
        return config, f"the config's own ({config.layout.indexes})"
    except ArtifactError as exc:
        tmp = dataclasses.replace(config, artifacts_dir=workdir / "artifacts")
        log.info("the indexes in %s do not fit %s (%s); building temporary ones in %s",
                 config.layout.indexes, nlu.embedder.name, str(exc).split(";")[0], tmp.layout.indexes)
        build_indexes(tmp, embedder=nlu.embedder, show_progress=False)
        return tmp, "temporary, built for this model's encoder (the app's indexes were missing or from another encoder)"


def assistant_factory(config: Config, nlu: Any, workdir: Path) -> Callable[[], Any]:
    """A function returning a fresh Assistant with a fresh, seeded SQLite store on every call."""
    from service.assembly import build_assistant, open_store

    counter = iter(range(1, 1_000_000))

    def make() -> Any:
        store = open_store(config, workdir / f"eval-{next(counter)}.sqlite")
        return build_assistant(config, nlu=nlu, store=store)

    return make


# ---- one model, all evaluators ------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def dialog_intents(dialogs_path: Path) -> IntentSet:
    texts, labels = [], []
    for d in load_dialogs(dialogs_path):
        for t in d.turns:
            if "intent" in t.expect:
                texts.append(t.user)
                labels.append(str(t.expect["intent"]))
    if not texts:
        raise DataError(f"{dialogs_path}: no turn states an intent; pass --data with an intents file")
    return IntentSet(texts, labels, f"{dialogs_path} (dialog turns that state an intent)")


def _concat(sets: list[IntentSet], source: str) -> IntentSet:
    return IntentSet([t for s in sets for t in s.texts], [l for s in sets for l in s.labels], source)


class _Sections:
    """The results, plots and notes of one model's evaluation, as the evaluators produce them."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.results: dict[str, EvalResult] = {}
        self.plots: list[dict[str, str]] = []
        self.notes: list[str] = []

    def keep(self, result: EvalResult, evaluator: Evaluator) -> EvalResult:
        self.results[result.name] = result
        evaluator.write_csv(result, self.out_dir)
        return result

    def add_plot(self, path: Path | None, section: str, title: str) -> None:
        if path is not None:
            self.plots.append({"file": path.name, "section": section, "title": title})


def _evaluate_nlu(config: Config, nlu: Any, options: EvaluateOptions, dialogs_path: Path | None,
                  sections: _Sections) -> IntentSet | None:
    """NLU on labelled intents (+ a linear probe and K-fold CV when asked for); returns the scored set."""
    train_set: IntentSet | None = None
    if options.intents is not None:
        eval_set, train_set = load_intent_data(options.intents)
    elif dialogs_path is not None:
        eval_set = dialog_intents(dialogs_path)
    else:
        eval_set = None
    if eval_set is not None:
        ev = NLUEvaluator(eval_set)
        res = sections.keep(ev.run(nlu), ev)
        mismatch = (res.metrics.get("label_overlap") or 0.0) < 0.5 and bool(res.details.get("unknown_intents"))
        if mismatch:
            res.details["notes"][-1] += ("; the linear probe below shows how well its embeddings separate these intents"
                                         if train_set is not None else
                                         "; pass a folder with train.jsonl (linear probe) or --folds K to see how well "
                                         "its embeddings separate these intents")
        sections.notes += res.details.get("notes", [])
        if res.details.get("unknown_intents") and train_set is not None:
            probe_ev = NLUEvaluator(eval_set, name="nlu_probe")
            log.info("linear probe: logistic regression on the model's frozen embeddings of %s (%d examples)",
                     train_set.source, len(train_set))
            from service.nlu import FrozenEncoderNLU

            probe = probe_ev.run(FrozenEncoderNLU(nlu.embedder, train_set.texts, train_set.labels))
            probe.details["method"] = (f"logistic regression (C=10) fitted on the model's frozen embeddings of "
                                       f"{train_set.source}, scored on {eval_set.source}")
            probe.details["notes"] = []
            sections.keep(probe, probe_ev)
    if options.folds:
        if options.intents is not None:
            cv_data = _concat([s for s in (train_set, eval_set) if s is not None], str(options.intents))
        else:
            cv_data = read_intents(config.data.intents)
        ev = FrozenEmbeddingCVEvaluator(cv_data, folds=options.folds)
        sections.keep(ev.run(nlu.embedder), ev)
    titles = {"nlu": "NLU", "nlu_probe": "linear probe", "nlu_cv": f"{options.folds}-fold CV"}
    for name, title in titles.items():
        result = sections.results.get(name)
        overlap = result.metrics.get("label_overlap") if result is not None else None
        if result is not None and (overlap is None or overlap >= 0.5):   # no plots of a label mismatch
            for path in plots.nlu_plots(result, sections.out_dir, name):
                sections.add_plot(path, name, f"{title}: {path.stem.removeprefix(name + '_').replace('_', ' ')}")
    return eval_set


def evaluate_model(config: Config, model: LoadedModel, options: EvaluateOptions, out_dir: Path,
                   workdir: Path) -> dict[str, Any]:
    """Run every evaluator that has data for `model`; write the CSVs, plots and report into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    nlu = model.nlu
    sections = _Sections(out_dir)
    cfg, index_note = indexed_config(config, nlu, workdir)
    make_assistant = assistant_factory(cfg, nlu, workdir)

    dialogs_path = options.dialogs or config.data.dialogs
    if dialogs_path is not None:
        ev = DialogEvaluator(dialogs_path)
        log.info("replaying %d dialogs (%d turns) from %s", len(ev.dialogs), sum(len(d.turns) for d in ev.dialogs),
                 dialogs_path)
        dialog = sections.keep(ev.run(make_assistant), ev)
        sections.add_plot(plots.latency_png(dialog.arrays["latencies_ms"], out_dir / "turn_latency.png"),
                          "efficiency", "Per-turn latency")
    else:
        sections.notes.append("no held-out dialogs (set data.dialogs in the config or pass --dialogs): "
                              "dialog metrics skipped")

    eval_set = _evaluate_nlu(config, nlu, options, Path(dialogs_path) if dialogs_path else None, sections)

    # Retrieval, through the same indexes the replay used
    if config.data.faq_heldout is not None or config.data.shopping_requests is not None:
        assistant = make_assistant()
        if config.data.faq_heldout is not None:
            ev = FaqRetrievalEvaluator(config.data.faq_heldout)
            sections.keep(ev.run(assistant), ev)
        if config.data.shopping_requests is not None:
            ev = ProductRetrievalEvaluator(config.data.shopping_requests)
            sections.keep(ev.run(assistant), ev)

    latencies = sections.results["dialog"].arrays["latencies_ms"] if "dialog" in sections.results else []
    ev = EfficiencyEvaluator(eval_set.texts if eval_set is not None else [])
    sections.keep(ev.run(EfficiencyInputs(nlu, model.model_path, model.load_time_s, list(latencies))), ev)

    embedder = nlu.embedder
    meta = {
        "model": model.name,
        "model_path": str(model.model_path) if model.model_path else None,
        "model_kind": model.kind,
        "nlu": type(nlu).__name__,
        "encoder": getattr(embedder, "name", None),
        "encoder_fingerprint": str(getattr(embedder, "fingerprint", ""))[:16] or None,
        "labels": len(getattr(nlu, "labels", []) or []),
        "indexes": index_note,
        "config": str(config.path),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "command": options.command,
        "data": {"dialogs": str(dialogs_path) if dialogs_path else None,
                 "intents": eval_set.source if eval_set is not None else None,
                 "faq_heldout": str(config.data.faq_heldout) if config.data.faq_heldout else None,
                 "shopping_requests": str(config.data.shopping_requests) if config.data.shopping_requests else None},
        "notes": sections.notes,
    }
    report = build_report(meta, sections.results, sections.plots)
    _, md = write_report(report, out_dir)
    log.info("report written: %s", md)
    return report


def default_out_dir(config: Config, model_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = config.layout.reports / f"{stamp}-{_slug(model_name)}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def load_comparison(config: Config, path: Path, options: EvaluateOptions, out_dir: Path,
                    workdir: Path) -> dict[str, Any]:
    """The report to compare with: a report folder as is, or a model folder evaluated now on the same data."""
    path = path.resolve()
    if (path / "report.json").is_file() or path.name == "report.json":
        return load_report(path)
    if (path / "attendant.json").is_file():
        other = load_model(config, path)
        log.info("evaluating %s for the comparison", path)
        sub = workdir / "compare"
        sub.mkdir(exist_ok=True)
        return evaluate_model(config, other, options, out_dir / f"compare-{_slug(other.name)}", sub)
    latest = latest_report_dir(path) if path.is_dir() else None
    if latest is not None:
        return load_report(latest)
    raise ConfigError(f"--compare {path}: neither a model folder (with attendant.json) nor a report folder "
                      "(with report.json)")


# ---- entry points ---------------------------------------------------------------------------------
def run_evaluation(config: Config, options: EvaluateOptions | None = None) -> Path:
    """Evaluate one model on the config's data (and compare it when asked); returns the report folder.

    Writes report.json, report.md, the plots and CSVs (and compare.* with `compare_dir`) into
    `options.out_dir` (default `<artifacts>/reports/<time>-<model>`), then points
    `<artifacts>/reports/latest` at it unless `update_latest` is False.
    """
    options = options or EvaluateOptions()
    options.validate()
    model = load_model(config, options.model_dir)
    out_dir = (options.out_dir or default_out_dir(config, model.name)).resolve()
    with tempfile.TemporaryDirectory(prefix="attendant-eval-") as tmp:
        report = evaluate_model(config, model, options, out_dir, Path(tmp))
        if options.compare_dir is not None:
            other = load_comparison(config, options.compare_dir, options, out_dir, Path(tmp))
            _, md, _ = write_comparison(report, other, out_dir)
            log.info("comparison written: %s", md)
    if options.update_latest:
        update_latest(config.layout.reports, out_dir)
    return out_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate a model on held-out dialogs (replayed through the real assistant), intents, "
                    "FAQ/product retrieval and speed; write report.json, report.md and plots.")
    add_config_arguments(p)
    p.add_argument("--model", type=Path, default=None,
                   help="a trained model folder (teacher/, student/, served/); default: what the app serves")
    p.add_argument("--dialogs", type=Path, default=None, help="held-out dialogs JSONL (default: data.dialogs)")
    p.add_argument("--data", type=Path, default=None,
                   help="intents to score the NLU on: a JSONL file, or a folder with test.jsonl/val.jsonl "
                        "(+ train.jsonl for a linear probe); default: the dialog turns that state an intent")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: <artifacts>/reports/<time>-<model>)")
    p.add_argument("--compare", type=Path, default=None,
                   help="another model folder, or a previous report folder, to put side by side with deltas")
    p.add_argument("--folds", type=int, default=None,
                   help="K: stratified K-fold cross-validation of a logistic regression on the model's frozen "
                        "embeddings (for small intent sets; CPU, seconds)")
    p.add_argument("--no-latest", action="store_true", help="do not point <artifacts>/reports/latest at this report")
    return p


def options_from_args(args: argparse.Namespace, command: str | None = None) -> EvaluateOptions:
    return EvaluateOptions(model_dir=args.model, dialogs=args.dialogs, intents=args.data, out_dir=args.out,
                           compare_dir=args.compare, folds=args.folds, update_latest=not args.no_latest,
                           command=command)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.folds is not None and args.folds < 2:
        parser.error("--folds must be 2 or more")
    setup_logging(args.verbose)
    config = config_from_args(args)
    out_dir = run_evaluation(config, options_from_args(args, command=f"{PROG} {shlex.join(argv)}".rstrip()))
    report = load_report(out_dir)
    print(f"report: {out_dir / 'report.md'}")
    for key, value in report["summary"].items():
        if value is not None:
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
