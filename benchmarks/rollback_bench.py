"""Rollback latency under load: from `rollback` to the first turn answered by the old version.

    python benchmarks/rollback_bench.py --config configs/demo.yaml [--rounds 10] [--clients 8]
        [--interval 0.5] [--workdir DIR]

Works on a copy of the config's built model and indexes in a temporary folder (the real artifacts are
never touched; build them first with `python -m training.pipeline --config configs/demo.yaml`):
1. registers the build as v0001 (served) and the same model under another name as v0002 (a copy with a
   note in its metadata, so it is a different version);
2. holds the app's `LiveAssistant` (webapp.startup.prepare_assistant, with its watcher thread) and runs
   `--clients` customer threads calling `respond` back to back (what the web handlers call), the demo
   pack's questions in turn;
3. each round promotes v0002 (`--force`: the gate is not what is measured) and waits for its turns,
   then calls `Registry.rollback()` (what `python -m training.models rollback` runs) and measures the
   time until the first reply made by v0001 comes back. The first promotion loads v0002 (reported
   apart); later switches find both versions warm.
A failed turn is a reply with the internal-error apology or an exception out of `respond`.

Writes benchmarks/results/rollback_bench.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import load_config, shown_path  # noqa: E402
from core.errors import ArtifactError  # noqa: E402

MESSAGES = ["Where is my order HC-100234?", "How long does shipping take?", "hello", "Do you sell gift cards?",
            "I want a robot vacuum under $300", "Can I return an opened item?", "what's your name?",
            "How do I reset my password?"]


def prepare(config_path: Path, workdir: Path):
    """A copy of the built deployment in `workdir`, with v0001 served and v0002 registered."""
    import yaml

    config = load_config(config_path)
    model_dir = config.layout.served_model_dir()
    if model_dir is None or not (config.layout.indexes / "calibration.json").is_file():
        raise ArtifactError(f"no built model in {config.artifacts_dir}; build it with "
                            f"`python -m training.pipeline --config {config_path}`")
    art = workdir / "artifacts"
    shutil.copytree(model_dir, art / model_dir.name)
    shutil.copytree(config.layout.indexes, art / "indexes")
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    base = config_path.resolve().parent
    raw["data"] = {k: str((base / v).resolve()) for k, v in raw["data"].items() if v}
    raw["artifacts_dir"] = str(art)
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    config = load_config(path)

    from training.models import Registry

    registry = Registry(config)
    registry.register(by="bench")                                   # v0001, served (the first version)
    meta_file = art / model_dir.name / "attendant.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta_file.write_text(json.dumps({**meta, "note": "rollback bench copy"}), encoding="utf-8")
    registry.register(by="bench")                                   # v0002, a candidate
    return config, registry


class Load:
    """`clients` threads calling respond back to back; every reply recorded as (time, version, ok)."""

    def __init__(self, live, clients: int):
        from service import smalltalk

        self.live, self.error_text = live, smalltalk.INTERNAL_ERROR
        self.replies: list[tuple[float, str, bool]] = []
        self.crashes = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.customer, args=(i,), daemon=True) for i in range(clients)]

    def customer(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                reply = self.live.respond(f"bench-{i}-{n // 6}", MESSAGES[(i + n) % len(MESSAGES)])
                item = (time.perf_counter(), reply.model_version, reply.text != self.error_text)
            except Exception:   # respond must never raise: counted as a failed turn
                item = (time.perf_counter(), "?", False)
                with self.lock:
                    self.crashes += 1
            with self.lock:
                self.replies.append(item)
            n += 1

    def first_reply_of(self, version: str, after: float, timeout: float = 120.0) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                for t, v, _ in reversed(self.replies):
                    if t < after:
                        break
                    if v == version:
                        hit = [t2 for t2, v2, _ in self.replies if t2 >= after and v2 == version]
                        return min(hit) - after
            time.sleep(0.002)
        raise TimeoutError(f"no turn answered by {version} within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--clients", type=int, default=8, help="customer threads sending turns back to back")
    p.add_argument("--interval", type=float, default=None,
                   help="how often the watcher reads the store's served_version (default: service.live's)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rollback_bench.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from service import live as live_module
    from webapp.startup import prepare_assistant

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rollback-bench-"))
    config, registry = prepare(args.config, workdir)
    interval = args.interval if args.interval is not None else live_module.WATCH_INTERVAL_S
    live = prepare_assistant(config, build_missing=False)   # what app.py holds, its watcher running
    live.interval = interval                                  # read by the watcher before each wait
    load = Load(live, args.clients)
    for t in load.threads:
        t.start()
    time.sleep(2.0)   # warm-up turns on v0001

    promote_s, rollback_s = [], []
    pause = random.Random(0)   # random pauses: a fixed one would lock the rounds to the watcher's phase
    t_start = time.perf_counter()
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        registry.promote("v0002", force=True, by="bench")
        promote_s.append(load.first_reply_of("v0002", t0))
        time.sleep(pause.uniform(0.2, 1.2))
        t0 = time.perf_counter()
        registry.rollback(by="bench")
        rollback_s.append(load.first_reply_of("v0001", t0))
        time.sleep(pause.uniform(0.2, 1.2))
    elapsed = time.perf_counter() - t_start
    load.stop.set()
    for t in load.threads:
        t.join(30)
    live.close()

    turns = len(load.replies)
    failed = sum(1 for _, _, ok in load.replies if not ok)
    result = {
        "config": shown_path(args.config), "rounds": args.rounds, "clients": args.clients, "watch_interval_s": interval,
        "turns": turns, "failed_turns": failed, "exceptions": load.crashes,
        "turns_per_s": round(turns / max(elapsed + 2.0, 1e-9), 1),
        "first_promote_cold_load_s": round(promote_s[0], 3),
        "promote_warm_s": {"median": round(statistics.median(promote_s[1:]), 3), "max": round(max(promote_s[1:]), 3)}
        if len(promote_s) > 1 else None,
        "rollback_s": {"median": round(statistics.median(rollback_s), 3), "p90": round(sorted(rollback_s)[
            int(0.9 * (len(rollback_s) - 1))], 3), "max": round(max(rollback_s), 3), "all": [round(x, 3) for x in rollback_s]},
        "hardware": "2 shared CPU cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print("| measure | value |\n|---|---|")
    print(f"| rollback -> first turn by the old version (median / p90 / max of {args.rounds}) | "
          f"{result['rollback_s']['median']:.3f} / {result['rollback_s']['p90']:.3f} / {result['rollback_s']['max']:.3f} s |")
    print(f"| first promote (loads the new version) | {result['first_promote_cold_load_s']:.3f} s |")
    if result["promote_warm_s"]:
        print(f"| later promotes (both warm), median / max | {result['promote_warm_s']['median']:.3f} / "
              f"{result['promote_warm_s']['max']:.3f} s |")
    print(f"| turns during the run / failed | {turns} / {failed} ({load.crashes} exceptions) |")
    print(f"| throughput | {result['turns_per_s']} turns/s with {args.clients} clients |")
    print(f"| watcher interval | {interval} s |")
    print(f"\nwritten: {args.out}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
