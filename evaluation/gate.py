"""The gate a candidate version passes before it is served (training/models.py `promote`).

Both versions replay, through the real `Assistant` (each dialog with a fresh seeded store, as
`python -m evaluation` does):
- the held-out dialogs (`config.data.dialogs`; the gate only compares on them, nothing learns from
  them), and
- the regression set: every turn an operator has corrected, as a one-turn dialog expecting the
  correction (`service.corrections.regression_dialogs(store)`).

The candidate is refused when
1. its held-out dialog resolution is more than `gate.tolerance` (config, default 0.01) below the
   served version's,
2. a regression turn breaks: the candidate fails a turn (every stated expectation, the intent
   included: a correction is usually an intent) that the served version gets right, or that a
   previously promoted version got right (`previously_fixed`, kept by the registry), or
3. any replayed turn fails inside the assistant (an internal error).
With no served version there is nothing to compare on held-out resolution; rules 2 and 3 still apply.

The comparison is written into the candidate's folder either way: `gate.json` and `gate.md`.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from core.atomic import atomic_write_json, atomic_write_text
from core.config import Config
from core.errors import ArtifactError, DataError
from evaluation.dialog import Dialog, DialogEvaluator, load_dialogs
from service.corrections import regression_dialogs

log = logging.getLogger(__name__)

COMPARED = ("resolution", "task_success", "turn_resolution", "faq_hit_at_1", "intent_accuracy", "action_accuracy",
            "fallback_rate", "internal_errors")
EPS = 1e-9


@dataclass
class GateResult:
    passed: bool
    reasons: list[str]
    report: dict[str, Any]
    candidate_passed_regression: list[str] = field(default_factory=list)
    json_path: Path | None = None
    md_path: Path | None = None

    def summary(self) -> dict[str, Any]:
        """What version.json keeps (the full comparison is in gate.json)."""
        held = self.report.get("held_out") or {}
        reg = self.report.get("regression") or {}
        return {"passed": self.passed, "reasons": self.reasons, "at": self.report.get("created_at"),
                "tolerance": self.report.get("tolerance"), "served_version": self.report.get("served", {}).get("name"),
                "candidate": {k: (held.get("candidate") or {}).get(k) for k in ("resolution", "task_success")},
                "served": {k: (held.get("served") or {}).get(k) for k in ("resolution", "task_success")},
                "regression": {"turns": reg.get("count", 0), "broke": len(reg.get("broke", [])),
                               "fixed": len(reg.get("fixed", []))}}


# ---------------------------------------------------------------------------------- the regression set
def regression_set(store: Any) -> tuple[list[Dialog], str]:
    """Every corrected turn as a one-turn dialog (service/corrections.py), and a note on where it came from."""
    if store is None:
        return [], "no store given: the regression set is empty"
    rows = list(regression_dialogs(store))
    if not rows:
        return [], "no corrected turns yet: the regression set is empty"
    return dialogs_from_rows(rows), f"{len(rows)} corrected turn(s) from the store's corrections"


def dialogs_from_rows(rows: Sequence[dict[str, Any]]) -> list[Dialog]:
    """Dialogs in the evaluator's format (dicts), validated the way a dialogs file is."""
    with tempfile.TemporaryDirectory(prefix="attendant-gate-") as tmp:
        path = Path(tmp) / "regression.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        try:
            return load_dialogs(path)
        except DataError as exc:
            raise DataError(f"the regression set (service.corrections.regression_dialogs): {exc}") from None


# ---------------------------------------------------------------------------------- replaying one version
def replay(config: Config, folder: Path, dialogs: Sequence[Dialog], workdir: Path) -> dict[str, Any]:
    """Replay `dialogs` through the version in `folder`: {"metrics", "dialogs": {id: {...}}}."""
    from evaluation.evaluate import assistant_factory
    from service.assembly import folder_config, load_nlu

    if not dialogs:
        return {"metrics": {}, "dialogs": {}}
    vconfig = folder_config(config, folder)
    if vconfig.layout.served_model_dir() is None:
        raise ArtifactError(f"{folder} holds no model folder (served/, student/ or teacher/)")
    nlu = load_nlu(vconfig)
    workdir.mkdir(parents=True, exist_ok=True)
    result = DialogEvaluator(list(dialogs)).run(assistant_factory(vconfig, nlu, workdir))
    failed = {(f["dialog_id"], f["turn"]): f for f in result.details.get("failed_turns", [])}
    per_dialog = {}
    for d in result.details["dialogs"]:
        fails = [failed[k] for k in failed if k[0] == d["id"]]
        per_dialog[str(d["id"])] = {"success": bool(d["success"]), "resolved": bool(d["resolved"]),
                                    "got": [{"turn": f["turn"], "failed": f["failed"], "actual": f["actual"]}
                                            for f in fails][:3]}
    return {"metrics": dict(result.metrics), "dialogs": per_dialog}


# ---------------------------------------------------------------------------------- the gate
def run_gate(config: Config, candidate_dir: Path, served_dir: Path | None, *, store: Any = None,
             tolerance: float | None = None, previously_fixed: Sequence[str] = (),
             names: tuple[str | None, str | None] = (None, None), regression: Sequence[Dialog] | None = None,
             out_dir: Path | None = None) -> GateResult:
    """Compare the candidate in `candidate_dir` with the served version in `served_dir` (None: none is
    served); write gate.json and gate.md into `out_dir` (default: the candidate's folder)."""
    t0 = time.perf_counter()
    candidate_dir = Path(candidate_dir)
    tolerance = config.gate.tolerance if tolerance is None else float(tolerance)
    out_dir = Path(out_dir or candidate_dir)
    if regression is None:
        regression, regression_note = regression_set(store)
    else:
        regression, regression_note = list(regression), f"{len(regression)} regression turn(s) given"
    held_out = load_dialogs(config.data.dialogs) if config.data.dialogs is not None else []
    held_out_note = (f"{len(held_out)} held-out dialogs from {Path(config.data.dialogs).name}" if held_out
                     else "no held-out dialogs (data.dialogs is not set): resolution not compared")
    log.info("gate: %s vs %s on %d held-out dialogs and %d regression turns", names[0] or candidate_dir.name,
             names[1] or (served_dir.name if served_dir else "nothing"), len(held_out), len(regression))
    with tempfile.TemporaryDirectory(prefix="attendant-gate-") as tmp:
        runs: dict[str, dict[str, Any]] = {}
        for role, folder in (("candidate", candidate_dir), ("served", served_dir)):
            if folder is None:
                continue
            runs[role] = {"held_out": replay(config, Path(folder), held_out, Path(tmp) / role / "held_out"),
                          "regression": replay(config, Path(folder), regression, Path(tmp) / role / "regression")}

    reasons: list[str] = []
    cand_held = runs["candidate"]["held_out"]["metrics"]
    served_held = runs["served"]["held_out"]["metrics"] if "served" in runs else {}
    if held_out and served_held:
        before, after = served_held.get("resolution"), cand_held.get("resolution")
        if before is not None and after is not None and before - after > tolerance + EPS:
            reasons.append(f"held-out resolution drops from {before:.3f} to {after:.3f} "
                           f"({(before - after) * 100:.1f} points; at most {tolerance * 100:.1f} allowed)")
    errors = int(cand_held.get("internal_errors") or 0) + \
        int(runs["candidate"]["regression"]["metrics"].get("internal_errors") or 0)
    if errors:
        reasons.append(f"{errors} replayed turn(s) failed inside the candidate (internal errors; see the log)")

    fixed_before = {str(i) for i in previously_fixed}
    turns, broke, fixed, cand_ok_ids = [], [], [], []
    cand_reg = runs["candidate"]["regression"]["dialogs"]
    served_reg = runs["served"]["regression"]["dialogs"] if "served" in runs else {}
    for d in regression:
        cand_ok = cand_reg.get(d.id, {}).get("success", False)
        served_ok = served_reg.get(d.id, {}).get("success") if served_reg else None
        was_fixed = d.id in fixed_before
        breaks = not cand_ok and (bool(served_ok) or was_fixed)
        row = {"id": d.id, "user": d.turns[0].user if d.turns else "", "expect": d.turns[0].expect if d.turns else {},
               "served_ok": served_ok, "candidate_ok": cand_ok, "previously_fixed": was_fixed, "breaks": breaks,
               "candidate_got": cand_reg.get(d.id, {}).get("got", [])}
        turns.append(row)
        if cand_ok:
            cand_ok_ids.append(d.id)
        if breaks:
            broke.append(d.id)
        elif cand_ok and not served_ok:
            fixed.append(d.id)
    if broke:
        reasons.append(f"{len(broke)} corrected turn(s) that worked before break: {', '.join(broke[:10])}"
                       + (" ..." if len(broke) > 10 else ""))

    passed = not reasons
    report = {
        "passed": passed, "reasons": reasons, "tolerance": tolerance,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "candidate": {"name": names[0] or candidate_dir.name, "path": str(candidate_dir)},
        "served": {"name": names[1] or (Path(served_dir).name if served_dir else None),
                   "path": str(served_dir) if served_dir else None},
        "held_out": {"note": held_out_note, "dialogs": len(held_out),
                     "candidate": {k: cand_held.get(k) for k in COMPARED},
                     "served": {k: served_held.get(k) for k in COMPARED} if served_held else None,
                     "delta": {k: _delta(cand_held.get(k), served_held.get(k)) for k in COMPARED} if served_held else None,
                     "changed": _changed_dialogs(runs)},
        "regression": {"note": regression_note, "count": len(regression), "broke": broke, "fixed": fixed,
                       "previously_fixed": sorted(fixed_before), "turns": turns},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_json(out_dir / "gate.json", report)
    md_path = atomic_write_text(out_dir / "gate.md", render_gate_markdown(report))
    log.info("gate %s for %s (%s) in %.0f s", "passed" if passed else "REFUSED", report["candidate"]["name"],
             "; ".join(reasons) or "no regression", report["seconds"])
    return GateResult(passed, reasons, report, cand_ok_ids, json_path, md_path)


def _delta(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else round(float(a) - float(b), 6)


def _changed_dialogs(runs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Held-out dialogs resolved by one version and not the other (ids only)."""
    if "served" not in runs:
        return {"now_resolved": [], "no_longer_resolved": []}
    cand, served = runs["candidate"]["held_out"]["dialogs"], runs["served"]["held_out"]["dialogs"]
    return {"now_resolved": sorted(i for i in cand if cand[i]["resolved"] and not served.get(i, {}).get("resolved")),
            "no_longer_resolved": sorted(i for i in cand if not cand[i]["resolved"] and served.get(i, {}).get("resolved"))}


def fmt_cell(value: Any) -> str:
    """A table cell: "-" for nothing, three decimals for a fraction."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_gate_markdown(report: dict[str, Any], escape: Callable[[str], str] | None = None) -> str:
    """gate.md: the verdict, the held-out metrics side by side, the regression turns. `escape`: applied
    to the customers' messages and expectations (a web page passes its escaping; the file keeps them)."""
    escape = escape or _cell
    cand, served = report["candidate"]["name"], report["served"]["name"] or "(none served)"
    verdict = "PASSED" if report["passed"] else "REFUSED"
    lines = [f"# Gate: {cand} vs {served}: {verdict}", "",
             f"Tolerance: held-out resolution may drop by at most {report['tolerance'] * 100:.1f} points. "
             f"Run {report['created_at']} in {report['seconds']:.0f} s.", ""]
    if report["reasons"]:
        lines += ["Refused because:", ""] + [f"- {_cell(r)}" for r in report["reasons"]] + [""]
    held = report["held_out"]
    lines += ["## Held-out dialogs", "", held["note"], ""]
    if held["dialogs"]:
        lines += [f"| metric | {_cell(served)} | {_cell(cand)} | change |", "|---|---|---|---|"]
        for k in COMPARED:
            s = (held["served"] or {}).get(k)
            c = held["candidate"].get(k)
            d = (held["delta"] or {}).get(k)
            lines.append(f"| {k} | {fmt_cell(s)} | {fmt_cell(c)} | {'-' if d is None else f'{d:+.3f}'} |")
        changed = held.get("changed") or {}
        for key, what in (("now_resolved", "now resolved"), ("no_longer_resolved", "no longer resolved")):
            if changed.get(key):
                lines += ["", f"Dialogs {what}: {', '.join(changed[key][:30])}" + (" ..." if len(changed[key]) > 30 else "")]
        lines.append("")
    reg = report["regression"]
    lines += ["## Regression set (corrected turns)", "", reg["note"], ""]
    if reg["turns"]:
        lines += [f"{len(reg['broke'])} break, {len(reg['fixed'])} newly fixed, of {reg['count']}.", "",
                  "| turn | customer said | expected | served | candidate | breaks |", "|---|---|---|---|---|---|"]
        for t in reg["turns"]:
            ok = {True: "right", False: "wrong", None: "-"}
            lines.append(f"| {_cell(t['id'])} | {escape(t['user'][:80])} | {escape(json.dumps(t['expect']))} | "
                         f"{ok[t['served_ok']]} | {ok[t['candidate_ok']]} | "
                         f"{'**yes**' if t['breaks'] else 'no'}{' (fixed before)' if t['previously_fixed'] else ''} |")
    return "\n".join(lines) + "\n"
