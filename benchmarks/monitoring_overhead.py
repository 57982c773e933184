"""What the metrics observer costs a turn: p50 with it on and off, side by side in one run.

    python benchmarks/monitoring_overhead.py --config configs/demo.yaml [--turns 300]

Builds the served assistant of the config (a throwaway store), then answers the same messages (the
intents' validation split, repeated) alternately with the `webapp.metrics.TurnMetrics` observer on and
off, so both see the same machine load; prints the p50/p95 of `Assistant.respond` each way and the
observer's own time per call (timed directly over many calls: a turn's own noise on a shared CPU is
larger than the observer). Goal: monitoring adds at most 0.5 ms to the p50. Writes
benchmarks/results/monitoring_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.errors import AttendantError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
    parser.add_argument("--turns", type=int, default=300, help="turns each way (default 300)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "monitoring_overhead.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        from core.config import load_config
        from runtime.folder import read_validation_split
        from service.assembly import build_assistant, open_store
        from service.engine import TurnEvent
        from webapp.metrics import TurnMetrics

        config = load_config(args.config)
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(config, Path(tmp) / "store.sqlite")
            assistant = build_assistant(config, store=store)
            model_dir = getattr(getattr(assistant.nlu, "model", None), "name_or_path", None)
            texts = [r["text"] for r in (read_validation_split(model_dir) or [])] if model_dir else []
            if not texts:
                raise AttendantError(f"no validation split to replay: build the model with "
                                     f"`python -m training.pipeline --config {config.path}`")
            metrics = TurnMetrics(actions=assistant.domain.actions, intents=assistant.nlu.labels,
                                  model_version=assistant.model_version)
            for i in range(20):                                    # warm-up
                assistant.respond(f"warm-{i}", texts[i % len(texts)])
            times: dict[str, list[float]] = {"off": [], "on": []}
            events: list[TurnEvent] = []
            capture = events.append
            for i in range(args.turns):
                text = texts[i % len(texts)]
                for mode in (("on", "off") if i % 2 else ("off", "on")):   # alternate who goes first
                    assistant.observers[:] = [metrics, capture] if mode == "on" else [capture]
                    t0 = time.perf_counter()
                    assistant.respond(f"{mode}-{i}", text)       # a new conversation each: no handoff pile-up
                    times[mode].append((time.perf_counter() - t0) * 1000)
            store.close()
        # The observer alone, on the recorded events.
        reps = max(1, 20000 // max(len(events), 1))
        t0 = time.perf_counter()
        for _ in range(reps):
            for e in events:
                metrics(e)
        observer_us = (time.perf_counter() - t0) / (reps * len(events)) * 1e6
    except AttendantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {mode: {"p50_ms": float(np.percentile(v, 50)), "p95_ms": float(np.percentile(v, 95)), "turns": len(v)}
              for mode, v in times.items()}
    result["p50_difference_ms"] = result["on"]["p50_ms"] - result["off"]["p50_ms"]
    result["observer_call_us"] = observer_us
    print(f"{'metrics observer':<18} {'turns':>6} {'p50 ms':>8} {'p95 ms':>8}")
    for mode in ("off", "on"):
        r = result[mode]
        print(f"{mode:<18} {r['turns']:>6} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f}")
    print(f"p50 difference (on - off): {result['p50_difference_ms']:+.3f} ms; "
          f"the observer itself: {observer_us:.1f} µs per turn")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
