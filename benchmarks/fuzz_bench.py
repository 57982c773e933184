"""The fuzz properties of tests/service/test_fuzz.py, run for longer and counted.

    python benchmarks/fuzz_bench.py                       # 2000 redaction, 300 conversation examples
    python benchmarks/fuzz_bench.py --redaction 20000 --conversations 2000 --seed 7

Unlike the test (which stops at the first failure and shrinks it), every example is run and every
failure counted; the first few failing inputs are kept in the output. Properties:

- `redaction`: random Unicode with embedded emails, phone numbers and card numbers; a failure is
  an exception, a value that survives `redact`, or a second `redact` changing the text.
- `unicode`: arbitrary (and long) text through `redact`; a failure is an exception or instability.
- `conversations`: random interleavings of flow answers, order numbers, right and wrong emails,
  "yes"/"no"/"stop" and random text through `Assistant.respond`, on the demo pack (frozen default
  encoder, demo indexes built into a temporary folder, a new store per example); a failure is an exception, an order changed without its email ever being given, an
  order written twice, or personal data from the input in the stored transcripts or tickets.

Writes `--out` (benchmarks/results/fuzz.json) and prints a markdown table (examples tried,
failures found, orders changed, orders double-written, time).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import core  # noqa: E402,F401  (OpenMP wait policy before torch and faiss load)
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.service import test_fuzz as fz  # noqa: E402


class Tally:
    def __init__(self, name: str):
        self.name, self.tried, self.failures, self.examples = name, 0, 0, []
        self.orders_changed = self.orders_double_written = self.turns = 0
        self.seconds = 0.0

    def fail(self, case: Any, exc: BaseException) -> None:
        self.failures += 1
        if len(self.examples) < 5:
            self.examples.append({"input": repr(case)[:2000], "error": "".join(
                traceback.format_exception_only(type(exc), exc)).strip()[:2000]})

    def row(self) -> dict[str, Any]:
        return {"property": self.name, "examples": self.tried, "failures": self.failures,
                "turns": self.turns, "orders_changed": self.orders_changed,
                "orders_double_written": self.orders_double_written, "seconds": round(self.seconds, 1),
                "failing_examples": self.examples}


def run_property(tally: Tally, strategy: st.SearchStrategy, body: Callable[[Any], None], n: int,
                 seed_value: int) -> Tally:
    """Run `body` on `n` generated examples, counting failures instead of stopping at the first."""
    @seed(seed_value)
    @settings(max_examples=n, deadline=None, database=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def prop(case):
        tally.tried += 1
        try:
            body(case)
        except Exception as exc:   # noqa: BLE001 - counted, never raised
            tally.fail(case, exc)

    start = time.perf_counter()
    prop()
    tally.seconds = time.perf_counter() - start
    return tally


def build_assistant(folder: Path):
    from core.config import DEFAULT_ENCODER, load_config
    from retrieval.build import build_indexes
    from runtime.embedder import Embedder
    from service.assembly import build_assistant as build, open_store
    from service.nlu import FrozenEncoderNLU
    from tests.helpers import write_demo_config

    config = load_config(write_demo_config(folder))
    nlu = FrozenEncoderNLU.from_file(Embedder(DEFAULT_ENCODER), config.data.intents)
    build_indexes(config, embedder=nlu.embedder)

    def make():   # a new store per example: no verification limits or writes carried over
        path = folder / f"fuzz-{time.monotonic_ns()}.sqlite"
        return build(config, nlu=nlu, store=open_store(config, path)), path
    return make


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--redaction", type=int, default=2000, help="examples of the redaction property")
    p.add_argument("--unicode", type=int, default=2000, help="examples of arbitrary text through redact")
    p.add_argument("--conversations", type=int, default=300, help="conversations through Assistant.respond")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    rows = []
    if args.redaction:
        rows.append(run_property(Tally("redaction"), fz.messages_with_pii(), lambda c: fz.check_redaction(*c),
                                 args.redaction, args.seed))
    if args.unicode:
        rows.append(run_property(Tally("unicode"), st.one_of(st.text(), st.text(st.characters(codec="utf-8"),
                                                                                   max_size=20000)),
                                 lambda t: fz.check_redaction(t, []), args.unicode, args.seed))
    if args.conversations:
        with tempfile.TemporaryDirectory(prefix="attendant_fuzz_") as tmp:
            make = build_assistant(Path(tmp))
            tally = Tally("conversations")

            def converse(case):
                assistant, path = make()
                stats = fz.check_conversation(assistant, path, *case)
                tally.turns += stats.turns
                tally.orders_changed += stats.orders_changed
                tally.orders_double_written += stats.orders_double_written

            rows.append(run_property(tally, fz.conversations(), converse, args.conversations, args.seed))

    table = [r.row() for r in rows]
    print("| property | examples | failures | turns | orders changed | orders double-written | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['property']} | {r['examples']} | {r['failures']} | {r['turns']} | {r['orders_changed']} | "
              f"{r['orders_double_written']} | {r['seconds']} |")
    for r in table:
        for ex in r["failing_examples"]:
            print(f"\n{r['property']} failure: {ex['error']}\n  input: {ex['input'][:400]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seed": args.seed, "python": platform.python_version(),
                                    "machine": platform.machine(), "results": table}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 1 if any(r["failures"] for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
