"""One improvement cycle on the demo: failed turns -> review queue -> 20 corrections -> export ->
retrain -> (gate) -> how many are fixed, how long it took, and held-out resolution before and after.

    python benchmarks/improve_cycle.py --config configs/demo.yaml [--corrections 20] [--workdir DIR]
        [--retrain warm|cold] [--set training.warm_epochs=1.0 ...] [--no-held-out]

1. The served model (a copy of `<artifacts>` in a temporary folder; the real one is never touched)
   plays the GENERATED validation dialogs (`data/demo/val_dialogs.jsonl`) into the copy's store, as
   customers would, and every turn is checked against the dialog's expectations.
2. A scripted operator walks the review queue (service/review.py: neediest conversation first, its
   neediest turns first, then its other turns) and corrects the first N turns it knows are wrong (the
   dialogs' expectations are its knowledge): the right FAQ, out of scope, or the right intent.
3. The corrections are exported (`training.feedback`), merged into the training data, and the model
   is rebuilt (train, distil, compress, index) in the copy: `--retrain warm` (default) continues from
   the served build's teacher and student (`training.pipeline --warm-start`, training/warm.py),
   `--retrain cold` starts again from the pretrained encoder (`--force`). `--set` overrides the
   retrain's config (e.g. training.warm_epochs). Before that, the same corrections are tried with
   the FAQ index alone rebuilt (no retraining).
4. Fixed = the corrected turn, replayed in its original dialog (same earlier turns, a fresh store),
   now meets every customer-visible expectation. What the retrain settings are chosen on: the
   resolution of the validation dialogs that hold no corrected turn ("untouched"), before and after.
   Held-out resolution (`data/demo/dialogs.jsonl`) is measured once before and once after, and only
   reported: nothing is chosen on it (`--no-held-out` skips it, and the gate, for such choices).
5. When the model registry and gate exist (training/models.py, evaluation/gate.py), the gate compares
   the rebuilt model with the served one (held-out + the regression set of corrected turns).

Writes benchmarks/results/improve_cycle.json and prints a table.
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import PROJECT_ROOT, load_config, shown_path  # noqa: E402

log = logging.getLogger("improve_cycle")
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "improve_cycle.json"
VALIDATION = PROJECT_ROOT / "data" / "demo" / "val_dialogs.jsonl"
COPY = ("teacher", "student", "served", "indexes")   # what the served model needs (no runs, caches, reports)


def play(config: Any, dialogs: list, workdir: Path, prefix: str, upto: dict[str, int] | None = None,
         mirror: Any = None) -> list[dict[str, Any]]:
    """Every turn of `dialogs` through the config's served model, each dialog on a fresh, seeded store
    (as the evaluator does: one dialog's order changes or lockouts never fail another), stopping a
    dialog after turn `upto[id]` when given. `mirror`: a store that also receives every turn (the
    deployment's store, where the review queue reads them). [{dialog, turn, ok, turn_id, ...}]"""
    from evaluation.dialog import actual_of, check_turn, visibly_right
    from service.assembly import build_assistant, load_nlu, open_store

    nlu = load_nlu(config)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, d in enumerate(dialogs):
        store = open_store(config, workdir / f"{prefix}-{i}.sqlite")
        assistant = build_assistant(config, nlu=nlu, store=store)
        sid = f"{prefix}-{d.id}"
        last = upto.get(d.id) if upto is not None else None
        for n, t in enumerate(d.turns):
            if last is not None and n > last:
                break
            reply = assistant.respond(sid, t.user)
            actual = actual_of(reply)
            rows.append({"dialog": d.id, "turn": n, "expect": t.expect, "actual": actual, "turn_id": reply.turn_id,
                         "session_id": sid, "ok": visibly_right(check_turn(t.expect, actual, reply.text))})
        if mirror is not None:
            for t in store.turns(session_id=sid):
                mirror.append_transcript(sid, "user", t["user_text"], turn_id=t["turn_id"])
                mirror.append_transcript(sid, "assistant", t["text"], t["action"], t["intent"], t["confidence"],
                                         turn_id=t["turn_id"], model_version=t["model_version"],
                                         latency_ms=t["latency_ms"], details=t["details"])
        store.close()
    return rows


def operator_correction(dialog: Any, n: int, actual: dict[str, Any], domain: Any) -> tuple[str, dict[str, Any]] | None:
    """What an operator who knows the expected outcome would enter for a wrong turn, or None when no
    label of the message would fix it: a wrong product list or reply text, a turn whose intent was
    already right, or an answer inside a running flow ("yes", an email, an address: the flow's
    business, not the message's meaning)."""
    expect = dialog.turns[n].expect
    faq = expect.get("faq_id") or (expect.get("faq_ids") or [None])[0]
    if faq:
        return "faq", {"faq_id": faq}
    action = expect.get("action")
    if action == "out_of_scope":
        return "out_of_scope", {}
    by_action = {a: i for i, a in domain.flow_actions.items()}
    by_action.update({"recommend": "product_search", "handoff": "human_request"})
    intent = expect.get("intent") or by_action.get(action)
    if not intent or actual.get("intent") == intent:
        return None
    previous = dialog.turns[n - 1].expect.get("action") if n > 0 else None
    if action in domain.flow_actions.values() and previous == action:
        return None   # an answer to the flow's own question
    return "intent", {"intent": intent}


def dialog_resolution(config: Any, workdir: Path, dialogs: Path | None = None) -> dict[str, Any]:
    """The project evaluator's figures on `dialogs` (default: the held-out dialogs)."""
    from evaluation.dialog import DialogEvaluator
    from evaluation.evaluate import assistant_factory
    from service.assembly import load_nlu

    t0 = time.perf_counter()
    result = DialogEvaluator(dialogs or config.data.dialogs).run(assistant_factory(config, load_nlu(config), workdir))
    return {"resolution": result.metrics.get("resolution"), "turn_resolution": result.metrics.get("turn_resolution"),
            "task_success": result.metrics.get("task_success"), "seconds": round(time.perf_counter() - t0, 1)}


def gate_summary(config: Any, candidate: Path, served: Path, store: Any, out_dir: Path) -> dict[str, Any] | str:
    """The gate's verdict on `candidate` against `served` (held-out + the regression set), or why it failed."""
    from evaluation.gate import run_gate

    try:
        run_gate(config, candidate, served, store=store, out_dir=out_dir)
        report = json.loads((out_dir / "gate.json").read_text())
    except Exception as exc:  # report, don't hide: the cycle's other figures still stand
        return f"gate failed: {type(exc).__name__}: {exc}"
    regression = report["regression"]
    return {"passed": report["passed"], "reasons": report["reasons"],
            "regression": {k: len(regression[k]) if isinstance(regression[k], list) else regression[k]
                           for k in ("count", "broke", "fixed")},
            "held_out": report["held_out"].get("delta"),
            "held_out_resolution": {side: (report["held_out"].get(side) or {}).get("resolution")
                                    for side in ("served", "candidate")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--corrections", type=int, default=20)
    parser.add_argument("--workdir", default=None, help="temporary folder (default: a new one, removed after)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--no-gate", action="store_true")
    parser.add_argument("--retrain", choices=("warm", "cold"), default="warm",
                        help="warm: continue from the served build (pipeline --warm-start); cold: from the encoder")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                        help="config override for the retrain, e.g. training.warm_epochs=0.5 (repeatable)")
    parser.add_argument("--held-out", action=argparse.BooleanOptionalAction, default=True,
                        help="measure held-out resolution and run the gate (off: choose settings on validation only)")
    parser.add_argument("--top-up", action=argparse.BooleanOptionalAction, default=True,
                        help="when the validation dialogs hold too few label-fixable failures, also play the "
                             "generated training dialogs (default: on)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from evaluation.dialog import load_dialogs
    from retrieval.build import build_indexes
    from service import corrections as corr
    from service import review
    from service.assembly import open_store
    from service.domain import default_domain
    from training import feedback

    base = load_config(args.config)
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="improve-cycle-"))
    art = tmp / "artifacts"
    for name in COPY:
        src = base.artifacts_dir / name
        if not src.is_dir():
            raise SystemExit(f"error: {src} is missing; build the demo first: python -m training.pipeline --config {args.config}")
        shutil.copytree(src, art / name, dirs_exist_ok=True)
    shutil.copytree(base.artifacts_dir / "served", tmp / "before" / "served")
    shutil.copytree(base.artifacts_dir / "indexes", tmp / "before" / "indexes")
    config = base.replace(artifacts_dir=art)
    from training.warm import warm_overrides
    retrain_config = load_config(args.config, (warm_overrides() if args.retrain == "warm" else [])
                                 + args.overrides).replace(artifacts_dir=art)
    domain = default_domain()
    val = load_dialogs(VALIDATION)
    by_id = {d.id: d for d in val}
    out: dict[str, Any] = {"config": shown_path(args.config), "machine": "2 shared CPU cores",
                           "retrain": args.retrain, "overrides": args.overrides}
    timings: dict[str, float] = {}

    # 1. the served model plays the validation dialogs; the turns land in the deployment's store
    t0 = time.perf_counter()
    store = open_store(config)
    played = play(config, val, tmp / "play", "val", mirror=store)
    failed = {r["turn_id"]: r for r in played if not r["ok"]}
    timings["play_validation_dialogs"] = round(time.perf_counter() - t0, 1)
    out["validation"] = {"dialogs": len(val), "turns": len(played), "failed_turns": len(failed)}
    log.info("validation dialogs: %d of %d turns failed", len(failed), len(played))

    # 2. the scripted operator corrects N failed turns, in the review queue's order
    t0 = time.perf_counter()
    pack = corr.Pack.from_config(config)
    picked: list[dict[str, Any]] = []
    walked = 0

    def correctable() -> int:
        return sum(1 for r in failed.values() if operator_correction(by_id[r["dialog"]], r["turn"], r["actual"], domain))

    if correctable() < args.corrections and args.top_up:
        # Too few label-fixable failures in the validation dialogs: the generated training dialogs
        # (also written from templates over the pack, never the held-out files) top the queue up.
        extra = [d for d in load_dialogs(PROJECT_ROOT / "data" / "demo" / "train_dialogs.jsonl") if d.id not in by_id]
        by_id.update({d.id: d for d in extra})
        more = play(config, extra, tmp / "play-train", "train", mirror=store)
        failed.update({r["turn_id"]: r for r in more if not r["ok"]})
        out["topped_up_from_train_dialogs"] = {"dialogs": len(extra), "turns": len(more),
                                               "failed_turns": sum(1 for r in more if not r["ok"])}
    out["correctable_failed_turns"] = correctable()
    queue = review.rank_conversations(store.turns(), store.ratings(), include_calm=True)
    for need in queue:
        needy = need.needy_turns()
        order = needy + [t for t in need.turns if t not in needy]
        for turn in order:
            walked += 1
            row = failed.get(turn["turn_id"])
            if row is None:
                continue
            fix = operator_correction(by_id[row["dialog"]], row["turn"], row["actual"], domain)
            if fix is None:
                continue
            kind, payload = fix
            row["correction_id"] = corr.apply_correction(store, kind, payload, "scripted-operator", pack,
                                                         session_id=turn["session_id"], turn_id=turn["turn_id"])
            row["kind"], row["needy"] = kind, turn in needy
            picked.append(row)
            if len(picked) >= args.corrections:
                break
        if len(picked) >= args.corrections:
            break
    timings["review_and_correct"] = round(time.perf_counter() - t0, 2)
    out["corrections"] = {"count": len(picked), "turns_walked": walked,
                          "kinds": {k: sum(1 for p in picked if p["kind"] == k) for k in corr.KINDS},
                          "from_needy_turns": sum(1 for p in picked if p["needy"]),
                          "conversations_in_queue": len(queue)}

    # 3. export + merged training data
    t0 = time.perf_counter()
    corrections = feedback.read_corrections(config, store)
    export = feedback.export_corrections(corrections, pack)
    feedback.write_export(export, tmp / "feedback")
    feedback.prepare_training_data(config, corrections=corrections)
    timings["export"] = round(time.perf_counter() - t0, 2)
    regression = feedback.regression_dialogs(corrections)
    upto: dict[str, int] = {}
    for p in picked:
        upto[p["dialog"]] = max(p["turn"], upto.get(p["dialog"], 0))
    wanted = {(p["dialog"], p["turn"]) for p in picked}
    replay_dialogs = [by_id[d] for d in upto]

    kinds = {(p["dialog"], p["turn"]): p["kind"] for p in picked}
    out["not_fixed"] = {}

    def fixed_count(label: str) -> int:
        rows = [r for r in play(config, replay_dialogs, tmp / f"replay-{label}", label, upto)
                if (r["dialog"], r["turn"]) in wanted]
        # the corrections a candidate still gets wrong, to read what a retrain could not learn
        out["not_fixed"][label] = [{"dialog": r["dialog"], "turn": r["turn"], "kind": kinds[(r["dialog"], r["turn"])],
                                    "expect": r["expect"], "actual": r["actual"]} for r in rows if not r["ok"]]
        return sum(1 for r in rows if r["ok"])

    # control: the same turns replayed with nothing changed (0 unless a failure was not reproducible)
    out["fixed_without_changes"] = fixed_count("control")

    # what retrain settings are chosen on: the validation dialogs no correction came from
    untouched = tmp / "validation-untouched.jsonl"
    untouched.write_text("".join(line + "\n" for line in VALIDATION.read_text(encoding="utf-8").splitlines()
                                 if line.strip() and json.loads(line)["id"] not in upto), encoding="utf-8")
    out["validation_untouched_before"] = dialog_resolution(config, tmp / "eval-val-before", untouched)

    # before: held-out once with the served model
    if args.held_out:
        out["held_out_before"] = dialog_resolution(config, tmp / "eval-before")

    # 3a. the FAQ corrections alone, in the index (no retraining)
    t0 = time.perf_counter()
    build_indexes(config, show_progress=False)
    timings["index_only_rebuild"] = round(time.perf_counter() - t0, 1)
    out["fixed_index_only"] = fixed_count("index-only")
    out["validation_untouched_index_only"] = dialog_resolution(config, tmp / "eval-val-index-only", untouched)
    if args.held_out and not args.no_gate:   # the same model with the corrected FAQ index is a candidate too
        out["gate_index_only"] = gate_summary(config, art, tmp / "before", store, tmp / "gate-index-only")

    # 3b. retrain with the corrections (train, distil, compress, index) in the copy
    from training import pipeline

    t0 = time.perf_counter()
    kwargs = {"register": False} if "register" in inspect.signature(pipeline.run_pipeline).parameters else {}
    built = pipeline.run_pipeline(retrain_config, steps="train,distill,compress,index", force=True, **kwargs)
    timings["retrain"] = round(time.perf_counter() - t0, 1)
    out["retrain_steps"] = {s: r.get("seconds") for s, r in built["steps"].items()}
    out["fixed_after_retrain"] = fixed_count("retrained")

    # regression set (one-turn dialogs of the corrected turns) on the rebuilt model
    from evaluation.dialog import DialogEvaluator
    out["regression_passed"] = None
    try:
        from evaluation.evaluate import assistant_factory
        from service.assembly import load_nlu

        reg_path = tmp / "regression.jsonl"
        reg_path.write_text("".join(json.dumps(r) + "\n" for r in regression), encoding="utf-8")
        res = DialogEvaluator(reg_path).run(assistant_factory(config, load_nlu(config), tmp / "eval-regression"))
        out["regression_passed"] = round(float(res.metrics.get("resolution") or 0) * len(regression))
    except Exception as exc:  # a benchmark reports what it could not measure
        log.warning("regression set not measured: %s", exc)

    out["validation_untouched_after"] = dialog_resolution(config, tmp / "eval-val-after", untouched)
    vb, va = out["validation_untouched_before"]["resolution"], out["validation_untouched_after"]["resolution"]
    out["validation_untouched_delta_points"] = round((va - vb) * 100, 1)

    # 4. held-out after (reported only)
    if args.held_out:
        out["held_out_after"] = dialog_resolution(config, tmp / "eval-after")

    # 5. the gate: the retrained candidate against the served version
    if args.held_out and not args.no_gate:
        t0 = time.perf_counter()
        out["gate"] = gate_summary(config, art, tmp / "before", store, tmp / "gate")
        timings["gate"] = round(time.perf_counter() - t0, 1)
    timings["cycle_export_retrain_gate"] = round(timings["export"] + timings["retrain"] + timings.get("gate", 0.0), 1)
    out["seconds"] = timings
    before = (out.get("held_out_before") or {}).get("resolution")
    after = (out.get("held_out_after") or {}).get("resolution")
    out["held_out_delta_points"] = round((after - before) * 100, 1) if before is not None and after is not None else None
    out["targets"] = {"fixed>=15": out["fixed_after_retrain"] >= 15,
                      "held_out_drop<=1pt": out["held_out_delta_points"] is not None and out["held_out_delta_points"] >= -1,
                      "cycle<=300s": timings["cycle_export_retrain_gate"] <= 300}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2), encoding="utf-8")

    n = out["corrections"]["count"]
    print("\n| step | figure |\n|---|---|")
    print(f"| validation dialogs played | {len(val)} dialogs, {len(played)} turns, {out['validation']['failed_turns']} failed |")
    if "topped_up_from_train_dialogs" in out:
        top = out["topped_up_from_train_dialogs"]
        print(f"| topped up from the generated training dialogs | {top['dialogs']} dialogs, {top['failed_turns']} failed |")
    print(f"| corrections (review-queue order) | {n}: {out['corrections']['kinds']} |")
    print(f"| already right when replayed unchanged (control) | {out['fixed_without_changes']} / {n} |")
    print(f"| fixed, FAQ index rebuilt only ({timings['index_only_rebuild']} s) | {out['fixed_index_only']} / {n} |")
    vi = out["validation_untouched_index_only"]["resolution"]
    print(f"| untouched validation dialogs, FAQ index rebuilt only | {vb:.3f} -> {vi:.3f} ({(vi - vb) * 100:+.1f} points) |")
    print(f"| fixed after the {args.retrain} retrain ({timings['retrain']} s) | {out['fixed_after_retrain']} / {n} |")
    print(f"| regression set passed (one-turn dialogs) | {out['regression_passed']} / {len(regression)} |")
    print(f"| untouched validation dialogs, resolution before -> after | {vb:.3f} -> {va:.3f} "
          f"({out['validation_untouched_delta_points']:+.1f} points) |")
    if args.held_out:
        print(f"| held-out resolution before -> after | {before:.3f} -> {after:.3f} "
              f"({out['held_out_delta_points']:+.1f} points) |")
        print(f"| gate, index-only candidate | {out.get('gate_index_only')} |")
        print(f"| gate, retrained candidate | {out.get('gate')} |")
    print(f"| export + retrain + gate | {timings['cycle_export_retrain_gate']} s |")
    print(f"\nwritten {args.out}")
    if not args.workdir:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
