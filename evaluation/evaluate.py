"""Score a model before it goes live: held-out dialogs, NLU, retrieval, efficiency; one report.

    python -m training.evaluate --config configs/demo.yaml [--model DIR] [--dialogs PATH]
        [--data DIR_OR_FILE] [--out DIR] [--compare DIR] [--folds K]

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

import os

# torch and faiss each bring an OpenMP runtime; with both loaded, idle threads of one spin while the
# other works. On a shared CPU that made a turn ~20x slower (357 ms vs 17 ms with a tiny model), so
# latency would measure the spinning, not the model. Must be set before either library starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

from service.cli import run_cli, setup_logging  # noqa: E402
from service.config import PROJECT_ROOT, Config, load_config  # noqa: E402
from service.errors import ArtifactError, ConfigError, DataError  # noqa: E402
from training import plots  # noqa: E402
from training.evaluation import (DialogEvaluator, EfficiencyEvaluator, EfficiencyInputs, EvalResult,  # noqa: E402
                                 FaqRetrievalEvaluator, FrozenEmbeddingCVEvaluator, IntentSet, NLUEvaluator,
                                 ProductRetrievalEvaluator, load_dialogs, load_intent_data)
from training.evaluation.nlu import read_intents  # noqa: E402
from training.report import build_report, latest_report_dir, load_report, update_latest, write_comparison, write_report  # noqa: E402

log = logging.getLogger("training.evaluate")


@dataclass
class LoadedModel:
    name: str                 # shown in reports ("student", "served", "pretrained+logreg")
    nlu: Any                  # the NLU protocol (service.nlu)
    model_path: Path | None   # the folder whose size is reported
    load_time_s: float
    kind: str                 # "trained" | "pretrained"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a model on held-out dialogs (replayed through the real assistant), intents, "
                    "FAQ/product retrieval and speed; write report.json, report.md and plots.")
    p.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
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
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    if args.folds is not None and args.folds < 2:
        p.error("--folds must be 2 or more")
    return args


# ---- model, indexes, assistant --------------------------------------------------------------------
def load_model(config: Config, model_dir: Path | None) -> LoadedModel:
    from service.assembly import load_nlu, served_model_dir
    from service.nlu import ModelNLU

    t0 = time.perf_counter()
    if model_dir is not None:
        model_dir = model_dir.resolve()
        if not (model_dir / "attendant.json").is_file():
            raise ArtifactError(f"--model {model_dir}: not a trained model folder (no attendant.json); train one with "
                                f"`accelerate launch -m training.train --config {config.path}`")
        from training.model import load_support_model

        nlu = ModelNLU(load_support_model(model_dir))
        return LoadedModel(model_dir.name, nlu, model_dir, time.perf_counter() - t0, "trained")
    served = served_model_dir(config)
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
        return config, f"the config's own ({config.index_dir})"
    except ArtifactError as exc:
        tmp = dataclasses.replace(config, artifacts_dir=workdir / "artifacts")
        log.info("the indexes in %s do not fit %s (%s); building temporary ones in %s",
                 config.index_dir, nlu.embedder.name, str(exc).split(";")[0], tmp.index_dir)
        build_indexes(tmp, embedder=nlu.embedder, show_progress=False)
        return tmp, "temporary, built for this model's encoder (the app's indexes were missing or from another encoder)"


def assistant_factory(config: Config, nlu: Any, workdir: Path) -> Callable[[], Any]:
    """A function returning a fresh Assistant with a fresh, seeded SQLite store on every call."""
    from service import assembly

    counter = iter(range(1, 1_000_000))

    def make() -> Any:
        path = workdir / f"eval-{next(counter)}.sqlite"
        if hasattr(assembly, "open_store"):
            store = assembly.open_store(config, path)
        else:  # pragma: no cover - before the store existed
            from service.store import Store

            store = Store(path)
            if config.data.orders is not None:
                store.seed_orders(config.data.orders)
        return assembly.build_assistant(config, nlu=nlu, store=store)

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


def evaluate_model(config: Config, model: LoadedModel, args: argparse.Namespace, out_dir: Path,
                   workdir: Path) -> dict[str, Any]:
    """Run every evaluator that has data for `model`; write the CSVs, plots and report into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    nlu = model.nlu
    results: dict[str, EvalResult] = {}
    plot_list: list[dict[str, str]] = []
    notes: list[str] = []

    def keep(result: EvalResult, evaluator: Any) -> None:
        results[result.name] = result
        evaluator.write_csv(result, out_dir)

    def add_plot(path: Path | None, section: str, title: str) -> None:
        if path is not None:
            plot_list.append({"file": path.name, "section": section, "title": title})

    cfg, index_note = indexed_config(config, nlu, workdir)
    make_assistant = assistant_factory(cfg, nlu, workdir)

    dialogs_path = args.dialogs or config.data.dialogs
    if dialogs_path is not None:
        ev = DialogEvaluator(dialogs_path)
        log.info("replaying %d dialogs (%d turns) from %s", len(ev.dialogs), sum(len(d.turns) for d in ev.dialogs),
                 dialogs_path)
        keep(ev.run(make_assistant), ev)
        add_plot(plots.latency_png(results["dialog"].arrays["latencies_ms"], out_dir / "turn_latency.png"),
                 "efficiency", "Per-turn latency")
    else:
        notes.append("no held-out dialogs (set data.dialogs in the config or pass --dialogs): dialog metrics skipped")

    # NLU on labelled intents
    train_set: IntentSet | None = None
    if args.data is not None:
        eval_set, train_set = load_intent_data(args.data)
    elif dialogs_path is not None:
        eval_set = dialog_intents(Path(dialogs_path))
    else:
        eval_set = None
    if eval_set is not None:
        ev = NLUEvaluator(eval_set)
        res = ev.run(nlu)
        keep(res, ev)
        mismatch = (res.metrics.get("label_overlap") or 0.0) < 0.5 and bool(res.details.get("unknown_intents"))
        if mismatch:
            res.details["notes"][-1] += ("; the linear probe below shows how well its embeddings separate these intents"
                                         if train_set is not None else
                                         "; pass a folder with train.jsonl (linear probe) or --folds K to see how well "
                                         "its embeddings separate these intents")
        notes += res.details.get("notes", [])
        if res.details.get("unknown_intents") and train_set is not None:
            probe_ev = NLUEvaluator(eval_set, name="nlu_probe")
            log.info("linear probe: logistic regression on the model's frozen embeddings of %s (%d examples)",
                     train_set.source, len(train_set))
            from service.nlu import FrozenEncoderNLU

            probe = probe_ev.run(FrozenEncoderNLU(nlu.embedder, train_set.texts, train_set.labels))
            probe.details["method"] = (f"logistic regression (C=10) fitted on the model's frozen embeddings of "
                                       f"{train_set.source}, scored on {eval_set.source}")
            probe.details["notes"] = []
            keep(probe, probe_ev)
    if args.folds:
        if args.data is not None:
            cv_data = _concat([s for s in (train_set, eval_set) if s is not None], str(args.data))
        else:
            cv_data = read_intents(config.data.intents)
        ev = FrozenEmbeddingCVEvaluator(cv_data, folds=args.folds)
        keep(ev.run(nlu.embedder), ev)
    for name in ("nlu", "nlu_probe", "nlu_cv"):
        overlap = results[name].metrics.get("label_overlap") if name in results else None
        if name in results and (overlap is None or overlap >= 0.5):   # no plots of a label mismatch
            title = {"nlu": "NLU", "nlu_probe": "linear probe", "nlu_cv": f"{args.folds}-fold CV"}[name]
            for path in plots.nlu_plots(results[name], out_dir, name):
                add_plot(path, name, f"{title}: {path.stem.removeprefix(name + '_').replace('_', ' ')}")

    # Retrieval, through the same indexes the replay used
    assistant = None
    if config.data.faq_heldout is not None or config.data.shopping_requests is not None:
        assistant = make_assistant()
    if config.data.faq_heldout is not None:
        ev = FaqRetrievalEvaluator(config.data.faq_heldout)
        keep(ev.run(assistant), ev)
    if config.data.shopping_requests is not None:
        ev = ProductRetrievalEvaluator(config.data.shopping_requests)
        keep(ev.run(assistant), ev)

    # Efficiency
    latencies = results["dialog"].arrays["latencies_ms"] if "dialog" in results else []
    samples = eval_set.texts if eval_set is not None else []
    ev = EfficiencyEvaluator(samples)
    keep(ev.run(EfficiencyInputs(nlu, model.model_path, model.load_time_s, list(latencies))), ev)

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
        "command": "python -m training.evaluate " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("evaluate.py") else None,
        "data": {"dialogs": str(dialogs_path) if dialogs_path else None,
                 "intents": eval_set.source if eval_set is not None else None,
                 "faq_heldout": str(config.data.faq_heldout) if config.data.faq_heldout else None,
                 "shopping_requests": str(config.data.shopping_requests) if config.data.shopping_requests else None},
        "notes": notes,
    }
    report = build_report(meta, results, plot_list)
    js, md = write_report(report, out_dir)
    log.info("report written: %s", md)
    return report


def _concat(sets: list[IntentSet], source: str) -> IntentSet:
    return IntentSet([t for s in sets for t in s.texts], [l for s in sets for l in s.labels], source)


def default_out_dir(config: Config, model_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = config.reports_dir / f"{stamp}-{_slug(model_name)}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def load_comparison(config: Config, path: Path, args: argparse.Namespace, out_dir: Path, workdir: Path) -> dict[str, Any]:
    """The report to compare with: a report folder as is, or a model folder evaluated now on the same data."""
    path = path.resolve()
    if (path / "report.json").is_file() or path.name == "report.json":
        return load_report(path)
    if (path / "attendant.json").is_file():
        other = load_model(config, path)
        log.info("evaluating %s for the comparison", path)
        sub = workdir / "compare"
        sub.mkdir(exist_ok=True)
        return evaluate_model(config, other, args, out_dir / f"compare-{_slug(other.name)}", sub)
    if path.is_dir() and latest_report_dir(path) is not None:
        return load_report(latest_report_dir(path))
    raise ConfigError(f"--compare {path}: neither a model folder (with attendant.json) nor a report folder "
                      "(with report.json)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    config = load_config(args.config)
    for flag in ("dialogs", "data", "model", "compare"):
        p = getattr(args, flag)
        if p is not None and not p.exists():
            raise DataError(f"--{flag} {p}: no such file or folder")
    model = load_model(config, args.model)
    out_dir = (args.out or default_out_dir(config, model.name)).resolve()
    with tempfile.TemporaryDirectory(prefix="attendant-eval-") as tmp:
        report = evaluate_model(config, model, args, out_dir, Path(tmp))
        if args.compare is not None:
            other = load_comparison(config, args.compare, args, out_dir, Path(tmp))
            _, md, _ = write_comparison(report, other, out_dir)
            log.info("comparison written: %s", md)
    if not args.no_latest:
        update_latest(config.reports_dir, out_dir)
    print(f"report: {out_dir / 'report.md'}")
    for key, value in report["summary"].items():
        if value is not None:
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
