"""The demo build on 1 and on N processes, side by side: more devices must never mean a worse model.

    python benchmarks/nproc_build_bench.py --config configs/demo.yaml [--processes 2] [--seeds 42 7] [--work DIR]

For each process count it runs the operator workflow of the README into its own artifacts folder
(`--set artifacts_dir=...`): `accelerate launch [--multi_gpu --num_processes N] -m training.train`,
the same for `training.distill`, then `python -m training.pipeline --steps compress,index,evaluate`.
It prints the held-out dialog metrics and the training runs' step counts as a table and writes
`benchmarks/results/nproc_build.json` and `.md`. With several `--seeds` each build is repeated
per training seed, so the gap between 1 and N processes can be read against the spread between
seeds of the same process count. On a machine without a GPU the N-process runs use
N CPU processes (gloo); they share the cores, so wall times say little, the metrics everything.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("task_success", "turn_success", "action_accuracy", "intent_accuracy", "faq_hit_at_1", "product_hit",
           "containment", "fallback_rate")


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.call(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"error: `{' '.join(cmd)}` exited {code}; see {log}")
    return round(time.perf_counter() - t0, 1)


def build(config: str, processes: int, seed: int, artifacts: Path, log: Path, reuse: bool = False) -> dict:
    if reuse and (artifacts / "reports" / "latest" / "report.json").is_file():
        print(f"reusing the {processes}-process build in {artifacts}", flush=True)
        return read_build(processes, seed, artifacts, {})
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    launch += ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    common = ["--config", config, "--set", f"artifacts_dir={artifacts}", "--set", f"training.seed={seed}"]
    seconds = {
        "train": run(launch + ["-m", "training.train", *common], log),
        "distill": run(launch + ["-m", "training.distill", *common], log),
        "compress+index+evaluate": run([sys.executable, "-m", "training.pipeline", *common,
                                        "--steps", "compress,index,evaluate"], log),
    }
    return read_build(processes, seed, artifacts, seconds)


def read_build(processes: int, seed: int, artifacts: Path, seconds: dict) -> dict:
    report = json.loads((artifacts / "reports" / "latest" / "report.json").read_text())
    dialog = report["sections"]["dialog"]["metrics"]
    runs = {}
    for kind in ("teacher", "student"):
        res = json.loads((artifacts / "runs" / kind / "results.json").read_text())
        runs[kind] = {k: res.get(k) for k in ("processes", "global_batch_size", "per_process_batch_size",
                                              "optimizer_steps", "samples_seen")}
        runs[kind]["val_macro_f1"] = (res.get("validation") or {}).get("macro_f1")
    return {"processes": processes, "seed": seed, "metrics": {k: dialog.get(k) for k in METRICS}, "runs": runs,
            "seconds": seconds}


def markdown(results: list[dict], command: str) -> str:
    counts = sorted({r["processes"] for r in results})
    cols = [r for n in counts for r in results if r["processes"] == n]
    head = "| metric | " + " | ".join(f"{r['processes']}p seed {r['seed']}" for r in cols) + " | " + \
        " | ".join(f"mean {n}p" for n in counts) + " |"
    lines = [f"Command: `{command}`", "", head, "|---" * (len(cols) + len(counts) + 1) + "|"]
    for k in METRICS:
        means = []
        for n in counts:
            vals = [r["metrics"][k] for r in results if r["processes"] == n and r["metrics"][k] is not None]
            means.append(f"{sum(vals) / len(vals):.3f}" if vals else "–")
        lines.append(f"| {k} | " + " | ".join(f"{r['metrics'][k]:.3f}" if r["metrics"][k] is not None else "–"
                                               for r in cols) + " | " + " | ".join(means) + " |")
    for kind in ("teacher", "student"):
        for k in ("optimizer_steps", "samples_seen", "global_batch_size", "per_process_batch_size", "val_macro_f1"):
            cell = (lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))
            lines.append(f"| {kind} {k} | " + " | ".join(cell(r["runs"][kind][k]) for r in cols) + " |" +
                         " |" * len(counts))
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--processes", type=int, default=2, help="the N to compare with 1 process")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "attendant-nproc-bench"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds (each a full build per count)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse finished builds in --work instead of rebuilding (only with the same code)")
    a = p.parse_args()
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in a.seeds:
        for n in (1, a.processes):
            log = work / f"p{n}s{seed}.log"
            print(f"building with {n} process(es), seed {seed}; log in {log}", flush=True)
            results.append(build(a.config, n, seed, work / f"p{n}s{seed}", log, reuse=a.reuse))
    command = (f"python benchmarks/nproc_build_bench.py --config {a.config} --processes {a.processes} "
               f"--seeds {' '.join(map(str, a.seeds))}")
    out = {"command": command, "machine": f"{os.cpu_count()} CPU cores, no GPU" if not _has_gpu() else "GPU",
           "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "nproc_build.json").write_text(json.dumps(out, indent=2))
    table = markdown(results, command)
    (out_dir / "nproc_build.md").write_text(table)
    print(table)
    return 0


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
