"""How much a build moves with its seed, and which seed to build with: the same config built with
several seeds, each scored on the VALIDATION dialogs (never the held-out ones).

    python benchmarks/seed_sweep.py --config configs/demo.yaml --seeds 42,7,13 [--set retrieval.dialog_paraphrases=true]

Each seed is a whole build (train, distil, compress, index) in its own folder under a temporary
directory (the config's artifacts are never touched), with `training.seed` set (the student takes the
teacher's). Each build plays the generated and the written validation dialogs
(`data/demo/val_dialogs.jsonl` and `written_val_dialogs.jsonl` to `written_val4_dialogs.jsonl`). The
table shows each seed's resolution on each and over all of them together (the figure a seed is chosen
on), the mean and the spread.
On 2 CPU cores a demo build takes about 2.5 minutes. Writes benchmarks/results/seed_sweep.json.

Why: on the demo the same config moves by several points of validation resolution from one seed to
another, more than most single changes are worth; a change is judged over seeds, and the seed the
demo builds with is the one this sweep ranks first (README, "Results").
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import load_config, shown_path  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "seed_sweep.json"
VALIDATION = {"generated": ROOT / "data" / "demo" / "val_dialogs.jsonl",
              "written": ROOT / "data" / "demo" / "written_val_dialogs.jsonl",
              "written2": ROOT / "data" / "demo" / "written_val2_dialogs.jsonl",
              "written3": ROOT / "data" / "demo" / "written_val3_dialogs.jsonl",
              "written4": ROOT / "data" / "demo" / "written_val4_dialogs.jsonl"}
# written_val5_dialogs.jsonl is kept out: a fresh set, scored once at the end of a round, never chosen on.


def score(config: Any, workdir: Path) -> dict[str, Any]:
    """Resolution of each validation set and of all of them together for the config's built model."""
    from evaluation.dialog import DialogEvaluator
    from evaluation.evaluate import assistant_factory
    from service.assembly import load_nlu

    nlu = load_nlu(config)
    out: dict[str, Any] = {}
    resolved = total = 0
    for name, path in VALIDATION.items():
        evaluator = DialogEvaluator(path)
        result = evaluator.run(assistant_factory(config, nlu, workdir / name))
        n = len(evaluator.dialogs)
        out[name] = {k: round(result.metrics[k], 4) for k in ("resolution", "faq_hit_at_1", "action_accuracy")}
        resolved += round(result.metrics["resolution"] * n)
        total += n
    out["all"] = round(resolved / total, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--seeds", default="42,7,13", help="comma-separated training seeds")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                        help="config override for every build (repeatable)")
    parser.add_argument("--workdir", default=None, help="where the builds go (default: a temporary folder, removed)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from training.pipeline import run_pipeline

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="seed-sweep-"))
    rows = []
    try:
        for seed in seeds:
            config = load_config(args.config, [*args.overrides, f"training.seed={seed}",
                                               f"artifacts_dir={tmp / f'seed-{seed}'}"])
            t0 = time.perf_counter()
            run_pipeline(config, steps="train,distill,compress,index", force=True, register=False)
            built = round(time.perf_counter() - t0, 1)
            rows.append({"seed": seed, "build_seconds": built, **score(config, tmp / f"eval-{seed}")})
            print(f"seed {seed}: {rows[-1]}", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    together = [r["all"] for r in rows]
    best = max(rows, key=lambda r: r["all"])
    out = {"config": shown_path(args.config), "overrides": args.overrides, "machine": "2 shared CPU cores",
           "validation": {name: shown_path(path) for name, path in VALIDATION.items()},
           "seeds": rows, "mean_all": round(statistics.mean(together), 4),
           "spread_all": round(max(together) - min(together), 4), "best_seed": best["seed"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    names = list(VALIDATION)
    print("\n| seed | " + " | ".join(names) + " | all | build |")
    print("|---" * (len(names) + 3) + "|")
    for r in rows:
        print(f"| {r['seed']} | " + " | ".join(f"{r[n]['resolution']:.3f}" for n in names) +
              f" | {r['all']:.3f} | {r['build_seconds']} s |")
    print(f"| mean | " + " | " * (len(names) - 1) + f" | {out['mean_all']:.3f} (spread {out['spread_all']:.3f}) | |")
    print(f"\nbest on validation: seed {best['seed']} (set training.seed: {best['seed']} in the config)")
    print(f"written {shown_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
