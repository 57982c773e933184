"""Fit the policy's cut-offs on the training conversations (`policy.decisions: learned`).

    python -m training.decisions --config configs/demo.yaml

Plays `data.train_dialogs` once through the built assistant with the hand-set cut-offs, recording for
every turn what `service.policy.decide` was given (message, session state, the NLU reading of the
message alone and with its context, FAQ hits, signals) and what the turn expects. Then, offline, a
coordinate search over small grids (the intent confidence, an offset on the calibrated FAQ threshold,
the near-FAQ band, the clarify margin) re-runs `decide` on every recorded turn and keeps the values
under which most turns are customer-visibly right (evaluation/dialog.py `check_turn`/`visibly_right`).

The objective is turn-level and approximate: the recorded inputs are those of the hand-set policy, so a
turn after a different decision would have seen another session state (a flow not started, a
clarification not pending); the flows' own use of the intent cut-off is not replayed either. A turn
whose decision is unchanged keeps its real, recorded outcome; a changed decision is judged on what
the decision alone shows (its action, FAQ, handoff, the FAQ answer or small-talk text), and
expectations it cannot show (products of a new recommendation, a flow's reply text) count as missed.

The result goes to `<artifacts>/indexes/decisions.json` (with the encoder fingerprint and the FAQ
threshold it was fitted on, so serving can tell when it is stale); the model registry copies it with
the indexes. Never fitted on the held-out dialogs (`data.dialogs`, `faq_heldout`, `shopping_requests`).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from core.atomic import atomic_write_json
from core.cli import add_config_arguments, config_from_args, run_cli, setup_logging
from core.config import Config
from core.errors import DataError
from evaluation.dialog import Dialog, DialogEvaluator, actual_of, check_turn, load_dialogs, visibly_right
from service import engine as engine_module
from service.assembly import DECISIONS_FILE, LEARNED_KEYS
from service.domain import Domain
from service.engine import MAX_FAILED_TURNS
from service.nlu import NLUResult
from service.policy import HAND_CLARIFY_MARGIN, HAND_INTENT, HAND_NEAR_FAQ, Decision, Signals, Thresholds, decide
from service.sessions import SessionState

log = logging.getLogger("training.decisions")

# The values each cut-off may take (a small, sensible range around the hand-set ones).
GRIDS: dict[str, list[float]] = {
    "intent": [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7],
    "faq_offset": [round(-0.1 + 0.02 * i, 2) for i in range(11)],
    "near_faq": [round(0.02 * i, 2) for i in range(9)],
    "clarify_margin": [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1],
}
HAND = {"intent": HAND_INTENT, "faq_offset": 0.0, "near_faq": HAND_NEAR_FAQ, "clarify_margin": HAND_CLARIFY_MARGIN}
MAX_PASSES = 4
# The cut-offs fitted by default, chosen on the validation dialogs (data/demo/val_dialogs.jsonl): fitting the
# intent cut-off too took it to 0.7 on the training turns (FAQ questions misread as service requests) and lost
# validation dialogs whose return/address requests the NLU reads at 0.55-0.6 (resolution 0.906 -> 0.887).
FITTED_KEYS: tuple[str, ...] = ("faq_offset", "near_faq", "clarify_margin")


@dataclass
class RecordedTurn:
    """What `decide` was given on one turn under the hand-set policy, and what the turn expects."""
    dialog_id: str
    turn: int
    text: str
    state: SessionState
    own: NLUResult                       # the message read alone
    context: NLUResult | None            # ... and read with the message it follows (a follow-up), if any
    own_oos: tuple[bool, float | None]   # the OOS detector on each reading
    context_oos: tuple[bool, float | None]
    faq_hits: list
    signals: Signals
    flows_available: bool
    expect: dict[str, Any]
    decision: Decision                   # what the hand-set policy decided
    actual: dict[str, Any] = field(default_factory=dict)   # the real reply (evaluation.dialog.actual_of)
    right: bool = False                  # the real reply was customer-visibly right
    running_flow_action: str | None = None


@dataclass
class Recording:
    turns: list[RecordedTurn]
    domain: Domain
    faq_base: float                      # the FAQ threshold the recording was served with
    answers: dict[str, str]              # FAQ id -> answer text (for reply_contains on a changed decision)
    store_name: str
    encoder: str = ""
    encoder_fingerprint: str = ""
    skipped_turns: int = 0               # turns that never reached the policy (an empty message)


def _light(nlu: NLUResult) -> NLUResult:
    return NLUResult(nlu.intent, float(nlu.confidence), list(nlu.ranking), None)


def training_dialogs_path(config: Config, path: str | Path | None = None) -> Path:
    """The training dialogs to fit on (`data.train_dialogs` unless given); refuses every held-out file."""
    chosen = Path(path) if path is not None else config.data.train_dialogs
    if chosen is None:
        raise DataError(f"{config.path}: data.train_dialogs is not set; the learned cut-offs are fitted on "
                        f"training conversations (e.g. generated by `python -m training.dialogs`)")
    resolved = Path(chosen).resolve()
    for key in ("dialogs", "faq_heldout", "shopping_requests"):
        held_out = getattr(config.data, key)
        if held_out is not None and resolved == Path(held_out).resolve():
            raise DataError(f"{resolved} is the held-out data.{key}: the cut-offs must never be fitted on what "
                            f"they are judged on; point data.train_dialogs at training dialogs")
    if not resolved.is_file():
        raise DataError(f"training dialogs not found: {resolved}")
    return resolved


# ---- recording ---------------------------------------------------------------------------------------
class _Recorder:
    """Hooks one assistant's turns: the NLU readings and the first `decide` call of each turn."""

    def __init__(self) -> None:
        self.turns: list[RecordedTurn | None] = []
        self._parses: list[NLUResult] = []
        self._call: dict[str, Any] | None = None
        self._assistant: Any = None

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], Any]:
        def make() -> Any:
            assistant = factory()
            respond, parse = assistant.respond, assistant.nlu.parse

            def recording_parse(text: str) -> NLUResult:
                result = parse(text)
                self._parses.append(result)
                return result

            def recording_respond(session_id: str, message: object) -> Any:
                self._parses, self._call, self._assistant = [], None, assistant
                assistant.nlu.parse = recording_parse
                try:
                    reply = respond(session_id, message)
                finally:
                    del assistant.nlu.parse           # the instance attribute shadowed the method
                self.turns.append(self._finish(reply))
                return reply

            assistant.respond = recording_respond
            return assistant

        return make

    def decide(self, text, state, nlu, faq_hits, th, flows_available=False, signals=None, domain=None):
        if self._call is None:   # the turn's decision (a flow stepping aside decides again: not recorded)
            self._call = {"text": text, "state": copy.deepcopy(state), "nlu": nlu, "faq_hits": list(faq_hits),
                          "signals": copy.copy(signals or Signals()), "flows_available": flows_available,
                          "parses": list(self._parses)}
            decision = decide(text, state, nlu, faq_hits, th, flows_available, signals, domain)
            self._call["decision"] = copy.deepcopy(decision)
            return decision
        return decide(text, state, nlu, faq_hits, th, flows_available, signals, domain)

    def _finish(self, reply: Any) -> RecordedTurn | None:
        call, assistant = self._call, self._assistant
        if call is None:
            return None
        parses = call["parses"]
        own, context = parses[0], (parses[1] if len(parses) > 1 else None)
        oos = assistant.oos

        def check(result: NLUResult | None) -> tuple[bool, float | None]:
            if result is None or oos is None:
                return (False, None)
            flagged, score = oos.check_result(result)
            return bool(flagged), score

        state = call["state"]
        running = None
        if state.flow and getattr(assistant.flows, "by_name", None):
            flow = assistant.flows.by_name.get(state.flow.get("name"))
            running = getattr(flow, "action", None)
        actual = actual_of(reply)
        return RecordedTurn("", 0, call["text"], state, _light(own), _light(context) if context else None,
                            check(own), check(context), call["faq_hits"], call["signals"], call["flows_available"],
                            {}, call["decision"], actual, running_flow_action=running)


def record(config: Config, dialogs: Sequence[Dialog], nlu: Any, workdir: Path) -> Recording:
    """Play `dialogs` once through fresh assistants (the hand-set cut-offs), recording every turn."""
    from evaluation.evaluate import assistant_factory

    hand = config.replace(policy=dataclasses.replace(config.policy, decisions="hand"))
    recorder = _Recorder()
    factory = recorder.wrap(assistant_factory(hand, nlu, workdir))
    original = engine_module.decide
    engine_module.decide = recorder.decide
    try:
        result = DialogEvaluator(dialogs).run(factory)
    finally:
        engine_module.decide = original
    probe = factory()    # the domain, FAQ answers and served thresholds, once
    turns, skipped = [], 0
    flat = [(d, n, t) for d in dialogs for n, t in enumerate(d.turns, 1)]
    for (dialog, n, turn), recorded, row in zip(flat, recorder.turns, result.csv_rows, strict=True):
        if recorded is None:
            skipped += 1
            continue
        recorded.dialog_id, recorded.turn, recorded.expect = dialog.id, n, dict(turn.expect)
        recorded.right = bool(row[11])
        turns.append(recorded)
    log.info("recorded %d turns of %d dialogs (%d never reached the policy); %.3f customer-visibly right",
             len(turns), len(dialogs), skipped, sum(t.right for t in turns) / max(len(turns), 1))
    return Recording(turns, probe.domain, float(probe.thresholds.faq),
                     {k: str(v.get("answer", "")) for k, v in probe.faq_records.items()}, probe.store_name,
                     str(getattr(nlu.embedder, "name", "")), str(getattr(nlu.embedder, "fingerprint", "")), skipped)


# ---- replaying ---------------------------------------------------------------------------------------
def thresholds_of(values: dict[str, float], faq_base: float) -> Thresholds:
    return Thresholds(faq=faq_base + values["faq_offset"], clarify_margin=values["clarify_margin"],
                      intent=values["intent"], near_faq=values["near_faq"])


def replay(turn: RecordedTurn, th: Thresholds, domain: Domain) -> Decision:
    """`decide` on a recorded turn with other cut-offs. The engine reads a follow-up with its context
    when the message alone is below the intent cut-off and the pair reaches it: replayed here too."""
    nlu, (flagged, score) = turn.own, turn.own_oos
    if turn.context is not None and turn.own.confidence < th.intent <= turn.context.confidence:
        nlu, (flagged, score) = turn.context, turn.context_oos
    signals = dataclasses.replace(turn.signals, out_of_scope=flagged, oos_score=score)
    return decide(turn.text, turn.state, nlu, turn.faq_hits, th, turn.flows_available, signals, domain)


def _key(d: Decision) -> tuple:
    return d.action, tuple(d.faq_ids), d.flow, d.intent, tuple(d.extra.get("products", ()))


def predicted_actual(turn: RecordedTurn, d: Decision, rec: Recording) -> dict[str, Any]:
    """What the reply to a changed decision would show, as far as the decision tells."""
    action = d.action
    if d.flow is not None or action == "flow":
        action = d.flow or turn.running_flow_action or "fallback"
    handoff = action == "handoff" or turn.state.handoff
    if action == "fallback" and turn.state.failed_turns + 1 >= MAX_FAILED_TURNS:
        action, handoff = "handoff", True   # the engine hands off after two failed turns in a row
    faq_id = d.faq_ids[0] if d.faq_ids and action in ("answer_faq", "clarify") else None
    text = rec.answers.get(faq_id or "", "") if action == "answer_faq" else \
        (rec.domain.small_talk_reply(d.intent or "", rec.store_name) or "") if action == "small_talk" else ""
    products = list(d.extra.get("products", ())) if action == "compare" else \
        turn.actual.get("product_ids", []) if action == "recommend" == turn.actual.get("action") else []
    return {"intent": d.intent, "action": action, "faq_id": faq_id, "product_ids": products, "handoff": handoff,
            "text": text}


def turn_right(turn: RecordedTurn, d: Decision, rec: Recording) -> bool:
    if _key(d) == _key(turn.decision):
        return turn.right                  # the decision the recording made: its real outcome
    actual = predicted_actual(turn, d, rec)
    return visibly_right(check_turn(turn.expect, actual, actual["text"]))


# Decisions that change the session state the next turns read: a flow started or not, a clarification
# pending, a person called, a failed-turn count.
_STATEFUL = ("clarify", "handoff", "fallback", "flow")


def _stateful(d: Decision) -> bool:
    return d.flow is not None or d.action in _STATEFUL


def objective(rec: Recording, values: dict[str, float]) -> int:
    """Recorded turns judged right under these cut-offs. After a changed decision that changes what the
    next turns read (see _STATEFUL), the rest of that dialog counts as missed: its recorded inputs no
    longer hold (pessimistic on purpose; e.g. a return request no longer starting the return flow)."""
    th = thresholds_of(values, rec.faq_base)
    right, derailed = 0, None
    for t in rec.turns:
        if derailed == t.dialog_id:
            continue
        d = replay(t, th, rec.domain)
        right += turn_right(t, d, rec)
        if _key(d) != _key(t.decision) and (_stateful(d) or _stateful(t.decision)):
            derailed = t.dialog_id
    return right


def search(rec: Recording, grids: dict[str, list[float]] | None = None, start: dict[str, float] | None = None,
           max_passes: int = MAX_PASSES, keys: Sequence[str] = LEARNED_KEYS) -> tuple[dict[str, float], dict[str, Any]]:
    """Coordinate search over `keys` (the others stay at `start`, the hand-set values): each cut-off in turn
    over its grid, the others fixed; a value replaces the current one only when strictly better (ties keep
    the hand-set value: no change without evidence)."""
    grids = grids or GRIDS
    values = dict(start or HAND)
    before = best = objective(rec, values)
    passes = 0
    for passes in range(1, max_passes + 1):
        changed = False
        for key in keys:
            for candidate in grids[key]:
                if candidate == values[key]:
                    continue
                score = objective(rec, {**values, key: candidate})
                if score > best:
                    best, values, changed = score, {**values, key: candidate}, True
        if not changed:
            break
    n = max(len(rec.turns), 1)
    return values, {"turns": len(rec.turns), "right_before": before, "right_after": best,
                    "before": round(before / n, 4), "after": round(best / n, 4), "passes": passes}


def fit_decisions(config: Config, nlu: Any = None, dialogs_path: str | Path | None = None,
                  output: Path | None = None, keys: Sequence[str] = FITTED_KEYS) -> dict[str, Any]:
    """Record the training dialogs, search the cut-offs, write decisions.json; returns what was written."""
    from service.assembly import load_nlu

    t0 = time.perf_counter()
    path = training_dialogs_path(config, dialogs_path)
    dialogs = load_dialogs(path)
    nlu = nlu or load_nlu(config)
    with tempfile.TemporaryDirectory(prefix="decisions-") as tmp:
        rec = record(config, dialogs, nlu, Path(tmp))
    mismatched = sum(_key(replay(t, thresholds_of(HAND, rec.faq_base), rec.domain)) != _key(t.decision)
                     for t in rec.turns)
    if mismatched:
        log.warning("%d recorded turns decide differently when replayed with the same cut-offs", mismatched)
    values, stats = search(rec, keys=keys)
    result = {
        "thresholds": values,
        "hand": dict(HAND),
        "faq_base": rec.faq_base,
        "encoder": rec.encoder,
        "encoder_fingerprint": rec.encoder_fingerprint,
        "train_dialogs": str(path),
        "dialogs": len(dialogs),
        "objective": {**stats, "name": "customer-visibly right training turns (turn-level, replayed)",
                      "replay_mismatches": mismatched, "skipped_turns": rec.skipped_turns},
        "grid": {k: GRIDS[k] for k in keys},
        "fitted": list(keys),
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    output = output or config.index_dir / DECISIONS_FILE
    atomic_write_json(output, result)
    log.info("learned cut-offs %s (hand %s): training turns right %.3f -> %.3f, written to %s in %.0f s",
             values, HAND, stats["before"], stats["after"], output, result["seconds"])
    return result


def decisions_status(config: Config, fingerprint: str | None) -> tuple[bool, str]:
    """(up to date, why) for the fitted cut-offs of `config`'s indexes (the pipeline's index step)."""
    path = config.index_dir / DECISIONS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False, f"no readable fitted cut-offs ({path.name})"
    if not isinstance(data, dict) or data.get("encoder_fingerprint") != fingerprint:
        return False, f"the fitted cut-offs ({path.name}) are of another encoder"
    return True, "fitted cut-offs present"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.decisions",
        description="Fit the policy's cut-offs (intent confidence, FAQ threshold offset, near-FAQ band, clarify "
                    "margin) on the training dialogs and write <artifacts>/indexes/decisions.json; serve them "
                    "with policy.decisions: learned.")
    parser.add_argument("--dialogs", default=None, help="training dialogs (default: data.train_dialogs)")
    parser.add_argument("--keys", default=",".join(FITTED_KEYS),
                        help=f"comma-separated cut-offs to fit, of {','.join(LEARNED_KEYS)} (the others keep their "
                             f"hand-set values; default: %(default)s)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    config = config_from_args(args)
    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    bad = [k for k in keys if k not in LEARNED_KEYS]
    if bad or not keys:
        raise DataError(f"--keys: unknown cut-off(s) {', '.join(bad) or '(none given)'}; choose from "
                        f"{','.join(LEARNED_KEYS)}")
    r = fit_decisions(config, dialogs_path=args.dialogs, keys=keys)
    o = r["objective"]
    print(f"learned {', '.join(f'{k}={v:g}' for k, v in r['thresholds'].items())} on {o['turns']} training turns: "
          f"right {o['before']:.3f} (hand-set) -> {o['after']:.3f}; written to "
          f"{config.index_dir / DECISIONS_FILE} in {r['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
