"""Evaluation reports: `report.json` (everything), `report.md` (for people), comparison of two reports.

Layout of a report folder:
```
report.json   {"format", "meta", "summary", "sections": {evaluator: {"metrics", ...}}, "plots", "definitions"}
report.md     the same as tables, with the plots inline
*.png         plots (evaluation/plots.py);  *_results.csv  one CSV per evaluator
compare.md / compare.json / compare.png   with --compare: this run against another, with deltas
```
`reports_dir/latest` points at the newest report (a symlink replaced atomically), which is what the
operator console's Model tab shows.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

from core.atomic import atomic_write_json, atomic_write_text
from core.errors import ArtifactError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
REPORT_FILE = "report.json"
LATEST = "latest"

# Headline metrics, in the order the summary shows them: (section, metric).
SUMMARY_KEYS = (
    ("dialog", "resolution"), ("dialog", "turn_resolution"),
    ("dialog", "task_success"), ("dialog", "turn_success"), ("dialog", "intent_accuracy"), ("dialog", "action_accuracy"),
    ("dialog", "faq_hit_at_1"), ("dialog", "product_hit"), ("dialog", "containment"), ("dialog", "handoff_precision"),
    ("dialog", "handoff_recall"), ("dialog", "unnecessary_handoff_rate"), ("dialog", "fallback_rate"),
    ("nlu", "accuracy"), ("nlu", "macro_f1"), ("nlu", "ece"), ("nlu", "oos_recall"),
    ("nlu_probe", "accuracy"), ("nlu_probe", "macro_f1"), ("nlu_cv", "fold_accuracy_mean"), ("nlu_cv", "fold_macro_f1_mean"),
    ("faq_retrieval", "faq_recall_at_1"), ("faq_retrieval", "faq_recall_at_5"), ("faq_retrieval", "faq_mrr"),
    ("product_retrieval", "product_precision_at_5"),
    ("efficiency", "turn_latency_ms_p50"), ("efficiency", "turn_latency_ms_p95"), ("efficiency", "turn_latency_ms_p99"),
    ("efficiency", "model_size_mb"), ("efficiency", "load_time_s"),
)

DEFINITIONS = {
    "resolution": "dialogs in which every turn was customer-visibly right (every stated expectation met except "
                  "the intent label: action, not_action, FAQ, products, handoff, reply text) and the "
                  "end-of-dialog state checks passed / dialogs",
    "turn_resolution": "turns that met every stated expectation except the intent label / all turns",
    "intent_accuracy": "dialog turns whose reply intent equals the stated intent / turns that state an intent",
    "action_accuracy": "dialog turns whose reply action equals the stated action / turns that state an action",
    "faq_hit_at_1": "turns answered (answer_faq) with a stated FAQ as first source / turns that state faq_id or faq_ids",
    "product_hit": "turns whose suggested products include any stated product id / turns that state product_ids",
    "turn_success": "turns that met every stated expectation, the intent label included / all turns",
    "task_success": "dialogs in which every turn met every stated expectation (the intent label included) and "
                    "the end-of-dialog state checks passed / dialogs",
    "state_success": "dialogs whose end-of-dialog state checks (expect_state) all passed / dialogs that state some",
    "containment": "dialogs finished without a handoff to a human / dialogs",
    "contained_success": "dialogs with task success and no handoff / dialogs",
    "handoff_precision": "per dialog: handed off and expected a handoff / handed off",
    "handoff_recall": "per dialog: handed off and expected a handoff / expected a handoff "
                      "(a turn states handoff: true or action: handoff)",
    "unnecessary_handoff_rate": "dialogs handed off that expected no handoff / dialogs that expected none",
    "fallback_rate": "turns whose reply action is fallback / all turns",
    "accuracy": "sklearn accuracy_score over all examples",
    "macro_f1": "sklearn f1_score, macro average over the gold intents",
    "ece": "expected calibration error, 15 equal-width confidence bins",
    "label_overlap": "share of the gold intents the model knows (1 = same label set)",
    "oos_precision": "at threshold 0 (OOS only when the OOS label is predicted): precision of the OOS prediction",
    "oos_recall": "at threshold 0: recall of the gold OOS examples",
    "in_scope_accuracy": "in-scope examples predicted correctly and not rejected as OOS / in-scope examples",
    "oos_average_precision": "sklearn average_precision_score of the OOS score (1 - top probability)",
    "oos_best_threshold": "confidence threshold with the best OOS F1 (OOS when top probability < threshold)",
    "fold_accuracy_mean": "mean accuracy over the K folds (logistic regression on frozen embeddings)",
    "faq_recall_at_1": "held-out paraphrases whose FAQ is ranked first / paraphrases",
    "faq_recall_at_5": "held-out paraphrases whose FAQ is in the top 5 / paraphrases",
    "faq_mrr": "mean of 1 / rank of the right FAQ (top 10; 0 when absent)",
    "product_precision_at_5": "mean over requests of relevant products among the 5 suggestions / 5",
    "product_hit_at_5": "requests with a relevant product among the 5 suggestions / requests",
    "product_recall_at_5": "mean of relevant products among the 5 / min(5, relevant products)",
    "turn_latency_ms_p50": "median wall time of Assistant.respond over the replayed turns",
    "nlu_latency_ms_p50": "median wall time of nlu.parse on one message",
    "model_size_mb": "size of the model folder on disk (MiB)",
    "load_time_s": "time to load the NLU (pretrained+logreg: includes encoding the intents and fitting the regression)",
    "peak_rss_mb": "peak resident memory of the evaluation process (MiB)",
}

_COUNTS = {"dialogs", "turns", "examples", "intents", "expected_handoffs", "predicted_handoffs", "faq_queries",
           "product_queries", "folds", "oos_examples", "turns_timed", "failed_turn_count", "internal_errors",
           "state_dialogs"}
_LOWER_IS_BETTER = ("internal_errors", "ece", "fallback_rate", "unnecessary_handoff_rate", "latency", "size_mb", "load_time", "rss_mb", "_std")


def metric_unit(name: str) -> str:
    if name in _COUNTS or name.endswith("_turns"):
        return "count"
    if "latency_ms" in name:
        return "ms"
    if name.endswith("_mb"):
        return "MB"
    if name.endswith("_s"):
        return "s"
    if name.endswith("threshold"):
        return "threshold"
    return "ratio"


def lower_is_better(name: str) -> bool:
    return any(k in name for k in _LOWER_IS_BETTER)


def fmt(value: Any, unit: str = "ratio") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "count" or isinstance(value, int):
        return f"{value:,}" if isinstance(value, int) else f"{value:,.0f}"
    if unit in ("ms", "MB"):
        return f"{value:,.1f}"
    if unit == "s":
        return f"{value:,.2f}"
    if unit == "threshold":
        return f"{value:.2f}"
    return f"{value:.4f}"


# ---- building and writing ---------------------------------------------------------------------
def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def build_report(meta: dict[str, Any], sections: dict[str, Any], plots: Iterable[dict[str, str]] = ()) -> dict[str, Any]:
    """`sections` maps evaluator name -> EvalResult (or its `to_dict()`)."""
    secs = {name: (r.to_dict() if hasattr(r, "to_dict") else r) for name, r in sections.items()}
    # A model scored on intents it was never trained on (label_overlap < 0.5) measures the mismatch:
    # keep those numbers out of the headline (they stay in their section, with a note).
    mismatched = {s for s, sec in secs.items()
                  if sec["metrics"].get("label_overlap") is not None and sec["metrics"]["label_overlap"] < 0.5}
    summary = {f"{s}.{m}": secs[s]["metrics"].get(m) for s, m in SUMMARY_KEYS
               if s in secs and m in secs[s]["metrics"] and s not in mismatched}
    used = {m for sec in secs.values() for m in sec["metrics"]}
    return _clean({"format": FORMAT_VERSION, "meta": meta, "summary": summary, "sections": secs,
                   "plots": list(plots), "definitions": {k: v for k, v in DEFINITIONS.items() if k in used}})


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    js, md = out_dir / REPORT_FILE, out_dir / "report.md"
    atomic_write_json(js, report)
    atomic_write_text(md, render_markdown(report))
    return js, md


def load_report(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    p = p / REPORT_FILE if p.is_dir() else p
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"no evaluation report at {p}; write one with "
                            "`python -m evaluation --config <config> --out <folder>`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read the evaluation report {p}: {exc}") from None
    if not isinstance(report, dict) or "sections" not in report:
        raise ArtifactError(f"{p} is not an evaluation report (no 'sections')")
    return report


def update_latest(reports_dir: Path, out_dir: Path) -> Path:
    """Point `reports_dir/latest` at `out_dir` with one atomic rename (readers never see it missing)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    link = reports_dir / LATEST
    out_dir = Path(out_dir).resolve()
    try:
        target = os.path.relpath(out_dir, reports_dir.resolve())
    except ValueError:  # another drive on Windows
        target = str(out_dir)
    tmp = reports_dir / f".{LATEST}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as exc:  # no symlinks here (or `latest` is a real folder): leave a pointer file instead
        tmp.unlink(missing_ok=True)
        log.debug("cannot symlink %s (%s); writing %s.txt", link, exc, LATEST)
        atomic_write_text(reports_dir / f"{LATEST}.txt", str(out_dir) + "\n")
    return link


def latest_report_dir(reports_dir: Path) -> Path | None:
    """The folder `latest` points to; else the newest folder holding a report.json."""
    reports_dir = Path(reports_dir)
    link = reports_dir / LATEST
    if (link / REPORT_FILE).is_file():
        return link.resolve()
    pointer = reports_dir / f"{LATEST}.txt"
    if pointer.is_file():
        d = Path(pointer.read_text(encoding="utf-8").strip())
        if (d / REPORT_FILE).is_file():
            return d
    if not reports_dir.is_dir():
        return None
    found = [p.parent for p in reports_dir.glob(f"*/{REPORT_FILE}")]
    return max(found, key=lambda p: (p / REPORT_FILE).stat().st_mtime) if found else None


# ---- markdown --------------------------------------------------------------------------------
def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(metrics: dict[str, Any]) -> str:
    return table(["metric", "value"], [[k, fmt(v, metric_unit(k))] for k, v in metrics.items()])


SECTION_TITLES = {
    "dialog": "Dialogs (replayed through the assistant)",
    "nlu": "NLU (intent classification)",
    "nlu_probe": "NLU linear probe (logistic regression on the model's frozen embeddings)",
    "nlu_cv": "NLU cross-validation (logistic regression on the model's frozen embeddings)",
    "faq_retrieval": "FAQ retrieval",
    "product_retrieval": "Product retrieval",
    "efficiency": "Efficiency",
}


def render_markdown(report: dict[str, Any], max_rows: int = 100, images: bool = True) -> str:
    """report.md's text; `images=False` leaves out the inline plots (the Model tab shows them itself)."""
    meta = report.get("meta", {})
    out = [f"# Evaluation report: {meta.get('model', 'model')}", ""]
    info = [[k, v] for k, v in meta.items() if k not in ("data", "notes") and v not in (None, "", [])]
    out += [table(["", ""], info), ""]
    if meta.get("data"):
        out += ["Data:", ""] + [f"- {k}: `{v}`" for k, v in meta["data"].items() if v] + [""]
    for note in meta.get("notes") or []:
        out += [f"> **Note:** {note}", ""]
    if report.get("summary"):
        out += ["## Summary", "", table(["metric", "value"], [[k, fmt(v, metric_unit(k.split('.')[-1]))]
                                                              for k, v in report["summary"].items()]), ""]
    plots = {p["file"]: p for p in report.get("plots", [])}
    for name, sec in report.get("sections", {}).items():
        out += [f"## {SECTION_TITLES.get(name, name)}", ""]
        if sec.get("source"):
            out += [f"Data: `{sec['source']}`", ""]
        if sec.get("method"):
            out += [f"Method: {sec['method']}", ""]
        for note in sec.get("notes") or []:
            out += [f"> **Note:** {note}", ""]
        out += [metrics_table(sec["metrics"]), ""]
        out += _section_tables(name, sec, max_rows)
        for f, p in plots.items():
            if images and p.get("section") == name:
                out += [f"![{p.get('title', f)}]({f})", ""]
    if report.get("definitions"):
        out += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in report["definitions"].items()] + [""]
    return "\n".join(out).rstrip() + "\n"


def _got(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """The parts of a reply that correspond to a turn's expectations (for "expected vs got")."""
    source = {"faq_ids": "faq_id", "not_action": "action", "reply_contains": "reply"}
    got = {"action": actual.get("action")} | {source.get(k, k): actual.get(source.get(k, k)) for k in expected}
    if actual.get("candidates"):
        got["candidates"] = actual["candidates"]
    return got


def _error_analysis(analysis: dict[str, Any], failed: list[dict[str, Any]] | None) -> list[str]:
    """The causes table, then up to 3 examples of each. Examples are shown only next to the failed-turn
    list that holds their messages: a report without it (the console's Model tab's) shows the counts only."""
    causes = analysis.get("causes") or []
    title = (f"### Error analysis ({analysis.get('failed_turns', 0)} failed turns, "
             f"{analysis.get('customer_visible_failed_turns', 0)} customer-visible; "
             f"{analysis.get('failed_state_dialogs', 0)} dialogs failed a state check)")
    out = [title, ""]
    if not causes:
        return out + ["No failures.", ""]
    total = sum(c["count"] for c in causes)
    out += [table(["cause", "what happened", "count", "share", "customer-visible"],
                  [[c["cause"], c["title"], c["count"], f"{100 * c['count'] / total:.1f}%",
                    "yes" if c["customer_visible"] else "no"] for c in causes]), ""]
    if failed is None:
        return out
    by_turn = {(f["dialog_id"], f["turn"]): f for f in failed}
    for c in causes:
        lines = []
        for e in c["examples"]:
            if e.get("turn") == "end":
                lines.append(f"- `{e['dialog_id']}` (end of dialog): expected {json.dumps(e['expected'], ensure_ascii=False)}; "
                             f"got {json.dumps(e['got'], ensure_ascii=False)}")
                continue
            f = by_turn.get((e["dialog_id"], e["turn"]))
            if f is None:
                continue
            user = _md_escape(f["user"][:160])
            lines.append(f"- `{f['dialog_id']}` turn {f['turn']}: \"{user}\" expected "
                         f"{json.dumps(f['expected'], ensure_ascii=False)}; got "
                         f"{json.dumps(_got(f['expected'], f['actual']), ensure_ascii=False)}")
        if lines:
            out += [f"**{c['cause']}**: {c['title']} ({c['count']})", ""] + lines + [""]
    return out


def _section_tables(name: str, sec: dict[str, Any], max_rows: int) -> list[str]:
    out: list[str] = []
    if sec.get("error_analysis") is not None:
        out += _error_analysis(sec["error_analysis"], sec.get("failed_turns"))
    if sec.get("failed_turns") is not None:
        failed = sec["failed_turns"]
        total = sec.get("failed_turn_count", len(failed))
        out += [f"### Failed turns ({total})", ""]
        if failed:
            rows = []
            for f in failed[:max_rows]:
                a = f["actual"]
                actual = _got(f["expected"], a) if f["expected"] else {}
                rows.append([f["dialog_id"], f["turn"], f["user"][:80], json.dumps(f["expected"], ensure_ascii=False),
                             json.dumps(actual, ensure_ascii=False), ", ".join(f["failed"]),
                             a.get("action"), fmt(a.get("confidence")), f.get("cause") or ""])
            out += [table(["dialog", "turn", "user", "expected", "actual", "failed", "action", "confidence", "cause"],
                          rows), ""]
            if total > max_rows:
                out += [f"(first {max_rows} of {total}; all are in dialog_results.csv)", ""]
        else:
            out += ["None.", ""]
    if sec.get("fold_results"):
        out += ["### Folds", "", table(["fold", "examples", "accuracy", "macro-F1"],
                                       [[r["fold"], r["examples"], fmt(r["accuracy"]), fmt(r["macro_f1"])]
                                        for r in sec["fold_results"]]), ""]
        if sec.get("left_out_intents"):
            out += [f"Left out (fewer examples than folds): {', '.join(sec['left_out_intents'])}", ""]
    if sec.get("top_confusions"):
        out += ["### Top confusions", "", table(["gold", "predicted", "count"],
                                                [[p["gold"], p["predicted"], p["count"]] for p in sec["top_confusions"]]), ""]
    if sec.get("per_intent"):
        items = sorted(sec["per_intent"].items(), key=lambda kv: (kv[1]["f1"], kv[0]))
        out += [f"### Per intent ({len(items)}, worst F1 first)", "",
                table(["intent", "precision", "recall", "F1", "support"],
                      [[k, fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), v["support"]] for k, v in items[:max_rows]]), ""]
        if len(items) > max_rows:
            out += [f"(worst {max_rows} of {len(items)}; all are in {name}_results.csv)", ""]
    if sec.get("oos_curve"):
        picks = [r for r in sec["oos_curve"] if round(r["threshold"] * 100) % 10 == 0]
        out += ["### OOS detection by threshold", "",
                table(["threshold", "OOS precision", "OOS recall", "OOS F1", "in-scope accuracy"],
                      [[fmt(r["threshold"], "threshold"), fmt(r["oos_precision"]), fmt(r["oos_recall"]), fmt(r["oos_f1"]),
                        fmt(r["in_scope_accuracy"])] for r in picks]), ""]
    for key, title in (("faq_misses", "FAQ paraphrases not ranked first"), ("product_misses", "Requests with no relevant product")):
        misses = sec.get(key)
        if misses:
            out += [f"### {title} ({len(misses)})", "",
                    table(list(misses[0].keys()), [[json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v
                                                    for v in m.values()] for m in misses[:max_rows]]), ""]
    return out


# ---- comparison ------------------------------------------------------------------------------
def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric present in either report: a, b, delta = a - b, and which is better."""
    rows = []
    sections = list(a.get("sections", {})) + [s for s in b.get("sections", {}) if s not in a.get("sections", {})]
    for s in sections:
        ma = a.get("sections", {}).get(s, {}).get("metrics", {})
        mb = b.get("sections", {}).get(s, {}).get("metrics", {})
        for m in list(ma) + [k for k in mb if k not in ma]:
            va, vb = ma.get(m), mb.get(m)
            unit = metric_unit(m)
            numeric = isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool)
            delta = va - vb if numeric else None
            better = None
            if numeric and unit != "count" and delta:
                better = "a" if (delta < 0) == lower_is_better(m) else "b"
            rows.append({"section": s, "metric": f"{s}.{m}", "unit": unit, "a": va, "b": vb, "delta": delta,
                         "better": better})
    return rows


def render_comparison(a: dict[str, Any], b: dict[str, Any], rows: list[dict[str, Any]], png: str | None = None) -> str:
    """compare.md's text: one row per metric, both values and the delta (this run - the other)."""
    na, nb = a.get("meta", {}).get("model", "this run"), b.get("meta", {}).get("model", "other")
    if na == nb:
        na, nb = f"{na} (this run)", f"{nb} (other)"
    out = [f"# Comparison: {na} vs {nb}", "",
           f"Δ = {na} − {nb}; ▲ marks the better of the two (lower is better for latency, size, ECE, "
           "fallback and unnecessary-handoff rates).", ""]
    body = []
    for r in rows:
        delta = "" if r["delta"] is None else (f"{r['delta']:+,.1f}" if r["unit"] in ("ms", "MB", "count")
                                               else f"{r['delta']:+.4f}")
        mark = {"a": " ▲ " + "this", "b": " ▲ " + "other"}.get(r["better"] or "", "")
        body.append([r["metric"], fmt(r["a"], r["unit"]), fmt(r["b"], r["unit"]), delta + mark])
    out += [table(["metric", na, nb, "Δ"], body), ""]
    if png:
        out += [f"![side by side]({png})", ""]
    return "\n".join(out)


def write_comparison(a: dict[str, Any], b: dict[str, Any], out_dir: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    from evaluation.plots import compare_png

    rows = compare_reports(a, b)
    names = (str(a.get("meta", {}).get("model", "this run")), str(b.get("meta", {}).get("model", "other")))
    png = compare_png(rows, names, Path(out_dir) / "compare.png", title=f"{names[0]} vs {names[1]}")
    js, md = Path(out_dir) / "compare.json", Path(out_dir) / "compare.md"
    atomic_write_json(js, _clean({"a": a.get("meta"), "b": b.get("meta"), "rows": rows}))
    atomic_write_text(md, render_comparison(a, b, rows, png.name if png else None))
    return js, md, rows
