"""Speed and size: per-turn latency of the dialog replay, single-message NLU latency, model size on
disk and load time.

Metric definitions:
- turn_latency_ms_p50/p95/p99/mean: percentiles (numpy, linear interpolation) of the wall time of
  `Assistant.respond` over every replayed dialog turn (the whole turn: NLU, retrieval, policy, action).
- nlu_latency_ms_p50/p95: wall time of `nlu.parse` on one message at a time, over up to 100 sample
  messages after 3 warm-up calls.
- model_size_mb: bytes of every file in the model folder / 2**20 (the served/--model folder, or the
  pretrained encoder's folder when no trained model exists).
- load_time_s: wall time to load the NLU (as measured by the caller; for the pretrained encoder +
  logistic regression it includes encoding the intent examples and fitting the regression).
- peak_rss_mb: the evaluation process's peak resident memory (everything loaded, not only the model).
"""
from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from evaluation.base import EvalResult, Evaluator

log = logging.getLogger(__name__)


def dir_size_mb(path: str | Path | None) -> float | None:
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return p.stat().st_size / 2**20
    if not p.is_dir():
        return None
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20


def percentiles(values_ms: Sequence[float], prefix: str, ps: Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    arr = np.asarray(values_ms, dtype=float)
    out: dict[str, float | None] = {}
    for p in ps:
        out[f"{prefix}_p{p}"] = float(np.percentile(arr, p)) if arr.size else None
    out[f"{prefix}_mean"] = float(arr.mean()) if arr.size else None
    return out


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


@dataclass
class EfficiencyInputs:
    nlu: Any = None
    model_path: str | Path | None = None
    load_time_s: float | None = None
    turn_latencies_ms: Sequence[float] = field(default_factory=list)


class EfficiencyEvaluator(Evaluator):
    name = "efficiency"

    def __init__(self, sample_texts: Sequence[str] = (), max_samples: int = 100, warmup: int = 3):
        self.sample_texts = list(sample_texts)[:max_samples]
        self.warmup = warmup

    def run(self, target: EfficiencyInputs) -> EvalResult:
        metrics: dict[str, Any] = {}
        metrics.update(percentiles(target.turn_latencies_ms, "turn_latency_ms"))
        metrics["turns_timed"] = len(target.turn_latencies_ms)
        nlu_ms: list[float] = []
        if target.nlu is not None and self.sample_texts:
            for text in self.sample_texts[: self.warmup]:
                target.nlu.parse(text)
            for text in self.sample_texts:
                t0 = time.perf_counter()
                target.nlu.parse(text)
                nlu_ms.append((time.perf_counter() - t0) * 1000.0)
        nlu_stats = percentiles(nlu_ms, "nlu_latency_ms", (50, 95))
        metrics.update({k: v for k, v in nlu_stats.items() if not k.endswith("_mean")})
        metrics["model_size_mb"] = dir_size_mb(target.model_path)
        metrics["load_time_s"] = target.load_time_s
        metrics["peak_rss_mb"] = peak_rss_mb()
        rows = [["turn", i, v] for i, v in enumerate(target.turn_latencies_ms)] + \
               [["nlu", i, v] for i, v in enumerate(nlu_ms)]
        log.info("efficiency: turn p50 %s ms, p95 %s ms, model %s MB, load %s s",
                 _fmt(metrics["turn_latency_ms_p50"]), _fmt(metrics["turn_latency_ms_p95"]),
                 _fmt(metrics["model_size_mb"]), _fmt(metrics["load_time_s"]))
        return EvalResult(self.name, metrics, {"model_path": str(target.model_path) if target.model_path else None},
                          ["kind", "i", "latency_ms"], rows,
                          arrays={"turn_latencies_ms": np.asarray(target.turn_latencies_ms, dtype=float),
                                  "nlu_latencies_ms": np.asarray(nlu_ms, dtype=float)})


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"
