"""The evaluator reports exactly the numbers worked out by hand on a tiny world with known outcomes.

The dialogs (tests/evaluation/fixtures/eval/dialogs.jsonl) go through the real `Assistant` (engine + policy)
with a deterministic fake NLU and fake indexes (tests/evaluation/fixtures/eval/world.json), once with a good
NLU and once with a broken one that always says "greeting". Expected values are derived in the
comments from the policy's rules (thresholds: FAQ 0.6, intent 0.5). One smoke run of the CLI on
the demo config (artifacts in tmp, a tiny encoder) checks the whole command end to end.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from core.config import PROJECT_ROOT
from evaluation.dialog import DialogEvaluator, load_dialogs
from evaluation.efficiency import EfficiencyEvaluator, EfficiencyInputs
from evaluation.nlu import (
    FrozenEmbeddingCVEvaluator,
    IntentSet,
    NLUEvaluator,
    expected_calibration_error,
    read_intents,
)
from evaluation.report import (
    build_report,
    compare_reports,
    latest_report_dir,
    load_report,
    update_latest,
    write_report,
)
from evaluation.retrieval import FaqRetrievalEvaluator, ProductRetrievalEvaluator

from tests.evaluation.world import (
    FIXTURES,
    WORLD,
    FakeEmbedder,
    FakeFaqIndex,
    FakeNLU,
    FakeRecommender,
    world_assistant,
    world_nlu,
)

# ---------------------------------------------------------------- dialogs
def test_dialog_metrics_good_model_match_hand_computed_values(tmp_path):
    built = []

    def factory():
        built.append(world_assistant(world_nlu()))
        return built[-1]

    ev = DialogEvaluator(FIXTURES / "dialogs.jsonl")
    result = ev.run(factory)
    m = result.metrics
    assert len(built) == 6, "a fresh assistant (and store) for every dialog"
    # 9 turns in 6 dialogs. Stated intents: 7 turns, all recognised (the complaint too, at 0.3).
    assert (m["dialogs"], m["turns"], m["intent_turns"], m["action_turns"]) == (6, 9, 7, 9)
    assert m["intent_accuracy"] == 1.0
    # Actions wrong: d5 turn 2 (second fallback in a row -> handoff) and d6 (unconfident complaint -> fallback).
    assert m["action_accuracy"] == pytest.approx(7 / 9)
    # FAQ: d1 answers faq_ship (right); d4's embedding points at shipping, so faq_ship instead of faq_ret.
    assert (m["faq_hit_at_1"], m["faq_turns"]) == (0.5, 2)
    assert (m["product_hit"], m["product_turns"]) == (1.0, 1)
    # Turns passing every check: d1 x3, d2, d3, d5 turn 1.
    assert m["turn_success"] == pytest.approx(6 / 9)
    assert m["task_success"] == pytest.approx(3 / 6)          # d1, d2, d3
    assert m["containment"] == pytest.approx(4 / 6)           # d3 and d5 handed off
    assert m["contained_success"] == pytest.approx(2 / 6)     # d1, d2
    # Expected handoffs: d3, d6. Predicted: d3, d5. TP 1, FP 1, FN 1.
    assert (m["expected_handoffs"], m["predicted_handoffs"]) == (2, 2)
    assert m["handoff_precision"] == 0.5 and m["handoff_recall"] == 0.5
    assert m["unnecessary_handoff_rate"] == pytest.approx(1 / 4)   # d5 of d1, d2, d4, d5
    assert m["fallback_rate"] == pytest.approx(2 / 9)              # d5 turn 1, d6
    assert m["internal_errors"] == 0
    failed = {(f["dialog_id"], f["turn"]): f["failed"] for f in result.details["failed_turns"]}
    assert failed == {("d4_wrong_faq", 1): ["faq_id"],
                      ("d5_gibberish_handed_off", 2): ["action", "handoff"],
                      ("d6_missed_complaint", 1): ["action", "handoff"]}
    f = next(f for f in result.details["failed_turns"] if f["dialog_id"] == "d4_wrong_faq")
    assert f["expected"]["faq_id"] == "faq_ret" and f["actual"]["faq_id"] == "faq_ship"
    assert len(result.arrays["latencies_ms"]) == 9
    csv = ev.write_csv(result, tmp_path)
    assert len(csv.read_text().strip().splitlines()) == 1 + 9


def test_dialog_metrics_broken_model_always_greeting():
    # Every turn: a confident "greeting" -> small talk. No handoff, no fallback.
    m = DialogEvaluator(FIXTURES / "dialogs.jsonl").run(lambda: world_assistant(world_nlu(always="greeting"))).metrics
    assert m["intent_accuracy"] == pytest.approx(1 / 7)    # only d1's greeting
    assert m["action_accuracy"] == pytest.approx(2 / 9)    # d1's two small-talk turns
    assert m["faq_hit_at_1"] == 0.0 and m["product_hit"] == 0.0
    assert m["turn_success"] == pytest.approx(1 / 9)       # "hello there"
    assert m["task_success"] == 0.0
    assert m["containment"] == 1.0 and m["contained_success"] == 0.0
    assert m["predicted_handoffs"] == 0
    assert m["handoff_precision"] is None                  # no handoff predicted: undefined, not 0
    assert m["handoff_recall"] == 0.0
    assert m["unnecessary_handoff_rate"] == 0.0
    assert m["fallback_rate"] == 0.0


def test_dialog_file_errors_name_the_dialog(tmp_path):
    from core.errors import DataError

    bad = tmp_path / "d.jsonl"
    bad.write_text('{"id": "x", "turns": [{"user": "hi", "expect": {"action": "dance"}}]}\n')
    with pytest.raises(DataError, match="dialog 'x', turn 1: unknown action 'dance'"):
        load_dialogs(bad)
    bad.write_text('{"id": "x", "turns": [{"user": "hi", "expect": {"mood": "happy"}}]}\n')
    with pytest.raises(DataError, match="unknown expectation"):
        load_dialogs(bad)


# ---------------------------------------------------------------- NLU
def intent_nlu(labels=("a", "b", "oos")) -> FakeNLU:
    preds = json.loads((FIXTURES / "intent_predictions.json").read_text())
    preds.pop("_comment")
    return FakeNLU({t: (p[0], p[1]) for t, p in preds.items()}, {}, list(labels))


def test_nlu_metrics_match_hand_computed_values(tmp_path):
    data = read_intents(FIXTURES / "intents.jsonl")
    result = NLUEvaluator(data).run(intent_nlu())
    m = result.metrics
    assert m["accuracy"] == pytest.approx(6 / 10)
    # a: P 3/5, R 3/4; b: P 2/4, R 2/3; oos: P 1/1, R 1/3
    f1 = lambda p, r: 2 * p * r / (p + r)  # noqa: E731
    per = result.details["per_intent"]
    assert per["a"]["precision"] == pytest.approx(0.6) and per["a"]["recall"] == pytest.approx(0.75)
    assert per["b"]["f1"] == pytest.approx(f1(0.5, 2 / 3))
    assert m["macro_f1"] == pytest.approx((f1(0.6, 0.75) + f1(0.5, 2 / 3) + f1(1.0, 1 / 3)) / 3)
    assert result.details["top_confusions"] == [
        {"gold": "a", "predicted": "b", "count": 1}, {"gold": "b", "predicted": "a", "count": 1},
        {"gold": "oos", "predicted": "a", "count": 1}, {"gold": "oos", "predicted": "b", "count": 1}]
    # OOS at threshold 0: only o2 (predicted "oos") -> precision 1, recall 1/3.
    assert (m["oos_precision"], m["oos_recall"]) == (1.0, pytest.approx(1 / 3))
    at = {r["threshold"]: r for r in result.details["oos_curve"]}
    # At 0.5: o1 (0.3), o3 (0.45), a4 (0.4) rejected too -> predicted OOS {o1, o2, o3, a4}.
    assert at[0.5]["oos_precision"] == 0.75 and at[0.5]["oos_recall"] == 1.0
    assert at[0.5]["in_scope_accuracy"] == pytest.approx(4 / 7)   # a1, a2, b1, b2 of 7 in-scope
    assert m["oos_best_threshold"] == 0.46 and m["oos_best_f1"] == pytest.approx(f1(0.75, 1.0))
    assert m["label_overlap"] == 1.0 and result.details["notes"] == []


def test_expected_calibration_error_by_hand():
    ece, _ = expected_calibration_error(np.array([0.9, 0.9, 0.9, 0.9]), np.array([1, 1, 1, 0]))
    assert ece == pytest.approx(0.15)
    # bins at 0.2 (acc 0.5) and 0.9 (acc 1.0): 0.5 * 0.3 + 0.5 * 0.1
    ece, bins = expected_calibration_error(np.array([0.2, 0.2, 0.9, 0.9]), np.array([0, 1, 1, 1]))
    assert ece == pytest.approx(0.2) and sum(b["count"] for b in bins) == 4


def test_nlu_says_when_the_labels_differ():
    result = NLUEvaluator(read_intents(FIXTURES / "intents.jsonl")).run(intent_nlu(labels=("a", "x", "y")))
    assert result.metrics["label_overlap"] == pytest.approx(1 / 3)
    assert result.details["unknown_intents"] == ["b", "oos"]
    assert "the labels differ" in result.details["notes"][0]


def test_cross_validation_on_frozen_embeddings():
    rng = np.random.default_rng(0)
    texts = [f"{c}{i}" for c in "abc" for i in range(6)] + ["lonely"]
    labels = [c for c in "abc" for _ in range(6)] + ["d"]
    centers = {"a": [1, 0, 0, 0], "b": [0, 1, 0, 0], "c": [0, 0, 1, 0], "d": [0, 0, 0, 1]}
    vecs = {t: list(np.asarray(centers[l]) + 0.05 * rng.standard_normal(4)) for t, l in zip(texts, labels)}
    result = FrozenEmbeddingCVEvaluator(IntentSet(texts, labels, "toy"), folds=3).run(FakeEmbedder(vecs))
    assert result.metrics["accuracy"] == 1.0 and result.metrics["fold_accuracy_mean"] == 1.0
    assert result.metrics["examples"] == 18 and result.details["left_out_intents"] == ["d"]
    assert len(result.details["fold_results"]) == 3


# ---------------------------------------------------------------- retrieval, efficiency
@dataclass
class _Target:
    nlu: object
    faq_index: object
    recommender: object


def test_retrieval_metrics_by_hand():
    nlu = FakeNLU({}, {"ship?": [1, 0, 0, 0], "return?": [1, 0, 0, 0.5]}, ["x"])
    target = _Target(nlu, FakeFaqIndex(WORLD["faqs"]), FakeRecommender(WORLD["products"]))
    faq = FaqRetrievalEvaluator([{"faq_id": "faq_ship", "text": "ship?"}, {"faq_id": "faq_ret", "text": "return?"}]).run(target)
    # ranks 1 and 2
    assert faq.metrics["faq_recall_at_1"] == 0.5 and faq.metrics["faq_recall_at_5"] == 1.0
    assert faq.metrics["faq_mrr"] == pytest.approx((1 + 1 / 2) / 2)
    # The fake recommender always suggests P1..P5.
    prod = ProductRetrievalEvaluator([{"text": "q1", "relevant_ids": ["P2", "P9"]},
                                      {"text": "q2", "relevant_ids": ["P7"]}]).run(target)
    assert prod.metrics["product_precision_at_5"] == pytest.approx((1 / 5 + 0) / 2)
    assert prod.metrics["product_hit_at_5"] == 0.5
    assert prod.metrics["product_recall_at_5"] == pytest.approx((1 / 2 + 0) / 2)


def test_efficiency_percentiles_and_size(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 2**20)
    result = EfficiencyEvaluator(["hello there"]).run(
        EfficiencyInputs(world_nlu(), tmp_path, 1.5, [float(v) for v in range(1, 101)]))
    m = result.metrics
    assert m["turn_latency_ms_p50"] == pytest.approx(50.5) and m["turn_latency_ms_p99"] == pytest.approx(99.01)
    assert m["model_size_mb"] == pytest.approx(1.0) and m["load_time_s"] == 1.5
    assert m["nlu_latency_ms_p50"] is not None


# ---------------------------------------------------------------- report, comparison, model tab
def _dialog_report(always, out: Path, name: str) -> dict:
    result = DialogEvaluator(FIXTURES / "dialogs.jsonl").run(lambda: world_assistant(world_nlu(always)))
    report = build_report({"model": name}, {"dialog": result})
    write_report(report, out)
    return report


def test_report_compare_and_latest(tmp_path):
    from evaluation.report import write_comparison

    good = _dialog_report(None, tmp_path / "good", "good")
    broken = _dialog_report("greeting", tmp_path / "broken", "broken")
    assert load_report(tmp_path / "good")["summary"]["dialog.task_success"] == 0.5
    md = (tmp_path / "good" / "report.md").read_text()
    assert "### Failed turns (3)" in md and "d4_wrong_faq" in md
    rows = {r["metric"]: r for r in compare_reports(good, broken)}
    assert rows["dialog.task_success"]["delta"] == pytest.approx(0.5) and rows["dialog.task_success"]["better"] == "a"
    assert rows["dialog.fallback_rate"]["delta"] == pytest.approx(2 / 9)
    assert rows["dialog.fallback_rate"]["better"] == "b"      # lower is better
    assert rows["dialog.handoff_precision"]["delta"] is None   # undefined for the broken model
    _, cmp_md, _ = write_comparison(good, broken, tmp_path / "good")
    assert "| dialog.task_success | 0.5000 | 0.0000 | +0.5000 ▲ this |" in cmp_md.read_text()
    reports = tmp_path / "reports"
    update_latest(reports, tmp_path / "good")
    update_latest(reports, tmp_path / "broken")
    assert latest_report_dir(reports) == (tmp_path / "broken").resolve()


def test_model_tab_renders_the_latest_report(tmp_path):
    import dataclasses

    import gradio as gr

    from core.config import load_config
    from webapp.model_tab import build_model_tab, load_latest

    config = dataclasses.replace(load_config(), artifacts_dir=tmp_path / "artifacts")
    text, images = load_latest(config)
    assert "No evaluation report yet" in text and images == []
    out = config.reports_dir / "run1"
    _dialog_report(None, out, "good")
    from evaluation.plots import latency_png

    latency_png([1.0, 2.0, 3.0], out / "turn_latency.png")
    report = load_report(out)
    report["plots"] = [{"file": "turn_latency.png", "section": "efficiency", "title": "latency"}]
    write_report(report, out)
    update_latest(config.reports_dir, out)
    text, images = load_latest(config)
    assert "task_success" in text and "![" not in text and len(images) == 1
    with gr.Blocks():
        with gr.Tab("Model"):
            build_model_tab(config)


# ---------------------------------------------------------------- the CLI
def _tmp_demo_config(tmp_path: Path, **overrides) -> Path:
    """configs/demo.yaml with absolute data paths and artifacts in tmp (the app's are never touched)."""
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "demo.yaml").read_text())
    base = PROJECT_ROOT / "configs"
    raw["data"] = {k: str((base / v).resolve()) for k, v in raw["data"].items() if v}
    raw["artifacts_dir"] = str(tmp_path / "artifacts")
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[key] = value
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_errors_are_one_line(tmp_path, capsys):
    from core.cli import run_cli
    from evaluation.evaluate import main

    cfg = _tmp_demo_config(tmp_path)
    assert run_cli(main, ["--config", str(cfg), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model") and "attendant.json" in err and "\n" not in err
    assert run_cli(main, ["--config", str(cfg), "--dialogs", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_run_evaluation_checks_its_options_before_loading_anything(tmp_path):
    from core.config import load_config
    from core.errors import ArtifactError, ConfigError, DataError
    from evaluation import EvaluateOptions, run_evaluation

    config = load_config(_tmp_demo_config(tmp_path))
    options = EvaluateOptions(model_dir=str(tmp_path), compare_dir=str(tmp_path / "old"))
    assert options.model_dir == tmp_path and isinstance(options.compare_dir, Path)
    with pytest.raises(DataError, match="--compare .*no such file"):
        run_evaluation(config, options)
    with pytest.raises(ConfigError, match="--folds"):
        run_evaluation(config, EvaluateOptions(folds=1))
    with pytest.raises(ArtifactError, match="not a trained model folder"):
        run_evaluation(config, EvaluateOptions(model_dir=tmp_path))
    assert not (tmp_path / "artifacts" / "reports").exists()


def test_python_dash_m_evaluation_is_the_command_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "evaluation", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m evaluation")
    for flag in ("--config", "--set", "--model", "--compare", "--dialogs", "--data", "--folds", "--no-latest"):
        assert flag in out.stdout


def test_cli_smoke_on_the_demo_config(tmp_path, tiny_encoder_dir, capsys):
    """The whole command on the demo pack: a 3-dialog file, trimmed held-out sets, a tiny encoder (speed)."""
    from core.cli import run_cli
    from evaluation.evaluate import main

    demo = PROJECT_ROOT / "data" / "demo"
    for name, n in (("faq_heldout.jsonl", 12), ("shopping_requests.jsonl", 6), ("dialogs.jsonl", 3)):
        lines = (demo / name).read_text(encoding="utf-8").splitlines()[:n]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = _tmp_demo_config(tmp_path, data__faq_heldout=str(tmp_path / "faq_heldout.jsonl"),
                           data__shopping_requests=str(tmp_path / "shopping_requests.jsonl"))
    previous = tmp_path / "previous"
    _dialog_report("greeting", previous, "broken")       # a previous report to compare with
    out = tmp_path / "report"
    code = run_cli(main, ["--config", str(cfg), "--set", f"encoder.name={tiny_encoder_dir}",
                          "--dialogs", str(tmp_path / "dialogs.jsonl"), "--out", str(out),
                          "--folds", "2", "--compare", str(previous)])
    assert code == 0, capsys.readouterr().err
    report = load_report(out)
    assert set(report["sections"]) == {"dialog", "nlu", "nlu_cv", "faq_retrieval", "product_retrieval", "efficiency"}
    assert report["sections"]["dialog"]["metrics"]["dialogs"] == 3
    assert report["sections"]["dialog"]["metrics"]["internal_errors"] == 0
    assert report["sections"]["faq_retrieval"]["metrics"]["faq_queries"] == 12
    assert report["sections"]["nlu_cv"]["metrics"]["folds"] == 2
    assert "temporary" in report["meta"]["indexes"]
    assert report["meta"]["encoder"] == str(tiny_encoder_dir)                      # --set reached the config
    assert report["meta"]["command"].startswith("python -m evaluation --config ")
    assert report["plots"] and all((out / p["file"]).is_file() for p in report["plots"])
    assert (out / "report.md").is_file() and (out / "dialog_results.csv").is_file()
    compare = (out / "compare.md").read_text()
    assert "dialog.task_success" in compare and "Δ" in compare and (out / "compare.png").is_file()
    assert latest_report_dir(tmp_path / "artifacts" / "reports") == out.resolve()
    assert not (tmp_path / "artifacts" / "indexes").exists(), "the evaluation must not build the app's indexes"


def test_model_flag_loads_a_support_model_folder(tmp_path, tiny_encoder_dir):
    """`--model DIR` serves the folder through ModelNLU, as the app serves a trained model."""
    from core.config import load_config
    from evaluation.evaluate import load_model
    from runtime.model import SupportModel
    from service.nlu import ModelNLU

    model = SupportModel.from_encoder(str(tiny_encoder_dir), ["greeting", "thanks"])
    model.fit_head(model.encode(["hi", "hello", "thanks", "thank you"]), np.array([0, 0, 1, 1]))
    model.save_pretrained(tmp_path / "student")
    loaded = load_model(load_config(_tmp_demo_config(tmp_path)), tmp_path / "student")
    assert isinstance(loaded.nlu, ModelNLU) and loaded.nlu.labels == ["greeting", "thanks"]
    assert (loaded.name, loaded.kind, loaded.model_path) == ("student", "trained", (tmp_path / "student").resolve())
    assert loaded.nlu.parse("hello").intent in ("greeting", "thanks")

