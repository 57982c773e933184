"""FAISS at scale: exact vs HNSW vs IVF-PQ on synthetic 384-d embeddings.

    nice python benchmarks/faiss_scale_bench.py [--n 1000000] [--queries 500]

The vectors are clustered, not uniform noise: real sentence embeddings form topical clusters
and most of their variance lies in a few directions, while uniform random vectors in 384-d are
nearly equidistant, which makes every approximate index look bad (see `make_data`). Queries are
fresh draws from the same mixture (near the data, as real questions are).

For each index kind, built with the same factory the app uses (`retrieval.index.create_faiss_index`):
build time (training included, all cores), index size (serialised bytes, ~ resident memory),
single-query latency p50/p95 over the queries one at a time on one thread (a server answers
one message per worker; on a small shared CPU, OpenMP across cores for one query is slower),
and recall@10 against exact search. HNSW's
efSearch and IVF-PQ's nprobe are swept; the reported point is the cheapest setting reaching
the target recall (HNSW: 0.95) or within 0.01 of the best IVF-PQ can do (PQ caps its recall).

Writes benchmarks/results/faiss_scale.json and prints a markdown table. Not part of CI.
"""
from __future__ import annotations

import argparse
import json
import os

import core  # noqa: E402,F401  (sets the OpenMP wait policy before torch and faiss load)

import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from retrieval.index import IndexParams, create_faiss_index  # noqa: E402

K = 10


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_data(n: int, nq: int, dim: int, clusters: int, seed: int, alpha: float = 0.6,
              spread: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors (database) and queries from the same mixture, generated in chunks.

    vector = normalise(centre + spread_c * (z * s) @ R): z standard normal, s_i ~ i^-alpha a
    decaying spectrum on a random rotation R. Real sentence embeddings have such a spectrum
    (a few directions carry most of the variance), which gives meaningful nearest neighbours:
    with the defaults a query's top-1 / top-10 cosine is ~0.76 / ~0.71 at 50k vectors.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scale = np.arange(1, dim + 1, dtype=np.float64) ** -alpha
    basis = (scale[:, None] / np.linalg.norm(scale) * rot.T).astype(np.float32)
    spreads = (rng.uniform(0.7, 1.3, clusters) * spread).astype(np.float32)
    weights = rng.zipf(1.5, clusters).astype(np.float64)  # uneven cluster sizes, as topics are
    weights = np.minimum(weights, np.percentile(weights, 99))
    weights /= weights.sum()

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for s in range(0, m, 100_000):
            e = min(m, s + 100_000)
            c = rng.choice(clusters, e - s, p=weights)
            x = centres[c] + (rng.standard_normal((e - s, dim), dtype=np.float32) @ basis) * spreads[c, None]
            out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return draw(n), draw(nq)


def index_bytes(index: faiss.Index) -> int:
    """Serialised size, written to a temp file (no second in-memory copy of a 1.5 GB index)."""
    with tempfile.NamedTemporaryFile(suffix=".faiss", delete=True) as fh:
        faiss.write_index(index, fh.name)
        return os.path.getsize(fh.name)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


def single_query_latency(index: faiss.Index, q: np.ndarray, params: faiss.SearchParameters | None,
                         threads: int = 1) -> dict[str, float]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        return _time_queries(index, q, params)
    finally:
        faiss.omp_set_num_threads(before)


def _time_queries(index: faiss.Index, q: np.ndarray, params: faiss.SearchParameters | None) -> dict[str, float]:
    for i in range(min(10, len(q))):  # warm caches
        index.search(q[i:i + 1], K, params=params)
    times = np.empty(len(q))
    for i in range(len(q)):
        t0 = time.perf_counter()
        index.search(q[i:i + 1], K, params=params)
        times[i] = time.perf_counter() - t0
    ms = times * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def build(kind: str, x: np.ndarray, params: IndexParams, train_n: int, seed: int) -> tuple[faiss.Index, float]:
    t0 = time.perf_counter()
    index = create_faiss_index(kind, x.shape[1], len(x), params)
    if kind == "ivfpq":
        rng = np.random.default_rng(seed + 1)
        sample = x[np.sort(rng.choice(len(x), min(len(x), train_n), replace=False))]
        log(f"training IVF-PQ (nlist={params.nlist}, m={params.pq_m}, nbits={params.pq_nbits}) on {len(sample):,} vectors")
        index.train(sample)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # as VectorIndex does (remove/reconstruct by id)
    labels = np.arange(len(x), dtype=np.int64)
    step = 100_000
    for s in range(0, len(x), step):
        index.add_with_ids(x[s:s + step], labels[s:s + step])
        log(f"{kind}: added {min(len(x), s + step):,}/{len(x):,} ({time.perf_counter() - t0:.0f}s)")
    return index, time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    log(f"generating {args.n:,} x {args.dim} clustered vectors + {args.queries} queries (seed {args.seed})")
    x, q = make_data(args.n, args.queries, args.dim, args.clusters, args.seed, args.alpha, args.spread)
    results: dict[str, Any] = {
        "n": args.n, "dim": args.dim, "queries": args.queries, "k": K, "clusters": args.clusters, "seed": args.seed,
        "alpha": args.alpha, "spread": args.spread,
        "faiss": faiss.__version__, "build_threads": faiss.omp_get_max_threads(), "latency_threads": args.latency_threads,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_at_start": [round(v, 2) for v in os.getloadavg()]},  # others' work skews a shared box
        "indexes": {},
    }

    # exact: ground truth (batched) and its own figures (single queries)
    flat, t_build = build("flat", x, IndexParams(), 0, args.seed)
    t0 = time.perf_counter()
    _, truth = flat.search(q, K)
    log(f"exact ground truth in {time.perf_counter() - t0:.1f}s")
    results["indexes"]["flat"] = {
        "build_s": round(t_build, 2), "bytes": index_bytes(flat), "recall@10": 1.0,
        "latency": single_query_latency(flat, q[: args.flat_queries], None, args.latency_threads), "latency_queries": min(args.flat_queries, len(q)),
        "params": {},
    }
    log(f"flat: {results['indexes']['flat']}")
    del flat

    if "hnsw" in args.kinds:
        p = IndexParams(hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
        hnsw, t_build = build("hnsw", x, p, 0, args.seed)
        sweep = {}
        for ef in (16, 32, 64, 128, 256, 512):
            sp = faiss.SearchParametersHNSW(efSearch=ef)
            _, found = hnsw.search(q, K, params=sp)
            sweep[ef] = recall_at_k(found, truth)
            log(f"hnsw efSearch={ef}: recall@10 {sweep[ef]:.4f}")
            if sweep[ef] >= 0.99:
                break
        ef = next((e for e, r in sweep.items() if r >= args.target_recall), max(sweep))
        results["indexes"]["hnsw"] = {
            "build_s": round(t_build, 2), "bytes": index_bytes(hnsw), "recall@10": round(sweep[ef], 4),
            "latency": single_query_latency(hnsw, q, faiss.SearchParametersHNSW(efSearch=ef), args.latency_threads),
            "params": {"M": args.hnsw_m, "efConstruction": args.ef_construction, "efSearch": ef},
            "sweep_recall@10": {str(k): round(v, 4) for k, v in sweep.items()},
        }
        log(f"hnsw: {results['indexes']['hnsw']}")
        del hnsw

    if "ivfpq" in args.kinds:
        nlist = args.nlist or int(min(2048, max(64, 4 * np.sqrt(args.n))))
        p = IndexParams(nlist=nlist, pq_m=args.pq_m, pq_nbits=8)
        ivf, t_build = build("ivfpq", x, p, args.train_n, args.seed)
        sweep = {}
        for nprobe in (4, 8, 16, 32, 64, 128, 256):
            if nprobe > nlist:
                break
            _, found = ivf.search(q, K, params=faiss.SearchParametersIVF(nprobe=nprobe))
            sweep[nprobe] = recall_at_k(found, truth)
            log(f"ivfpq nprobe={nprobe}: recall@10 {sweep[nprobe]:.4f}")
        best = max(sweep.values())
        nprobe = next(n for n, r in sweep.items() if r >= best - 0.01)
        results["indexes"]["ivfpq"] = {
            "build_s": round(t_build, 2), "bytes": index_bytes(ivf), "recall@10": round(sweep[nprobe], 4),
            "latency": single_query_latency(ivf, q, faiss.SearchParametersIVF(nprobe=nprobe), args.latency_threads),
            "params": {"nlist": nlist, "m": args.pq_m, "nbits": 8, "nprobe": nprobe, "train_n": min(args.n, args.train_n)},
            "sweep_recall@10": {str(k): round(v, 4) for k, v in sweep.items()},
        }
        log(f"ivfpq: {results['indexes']['ivfpq']}")
    results["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return results


def markdown(r: dict[str, Any]) -> str:
    names = {"flat": "exact (IndexFlatIP)", "hnsw": "HNSW (IndexHNSWFlat)", "ivfpq": "IVF-PQ (IndexIVFPQ)"}
    rows = [f"{r['n']:,} synthetic {r['dim']}-d clustered vectors, {r['queries']} queries, k={r['k']}, "
            f"faiss {r['faiss']}, built on {r['build_threads']} threads, queried on {r['latency_threads']}, "
            f"{r['machine']['cpus']} CPUs",
            "",
            "| index | parameters | build | size | latency p50 / p95 (1 query) | recall@10 |",
            "|---|---|---|---|---|---|"]
    for kind, v in r["indexes"].items():
        params = ", ".join(f"{k}={val}" for k, val in v["params"].items() if k != "train_n") or "-"
        rows.append(f"| {names[kind]} | {params} | {v['build_s']:.1f} s | {v['bytes'] / 2**20:,.0f} MiB | "
                    f"{v['latency']['p50_ms']:.2f} / {v['latency']['p95_ms']:.2f} ms | {v['recall@10']:.3f} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/faiss_scale_bench.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="database vectors (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--flat-queries", type=int, default=500, help="single queries timed on the exact index")
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.6, help="spectrum decay of the synthetic data")
    ap.add_argument("--spread", type=float, default=1.2, help="cluster spread of the synthetic data")
    ap.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads for building (0: all cores)")
    ap.add_argument("--latency-threads", type=int, default=1, help="threads for the single-query latency loop")
    ap.add_argument("--kinds", nargs="+", default=["hnsw", "ivfpq"], choices=["hnsw", "ivfpq"],
                    help="approximate indexes to compare with exact search")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--target-recall", type=float, default=0.95, help="HNSW: smallest efSearch reaching this")
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 4*sqrt(n), capped at 2048)")
    ap.add_argument("--pq-m", type=int, default=64, help="PQ sub-quantisers (bytes per vector; 64 = 6 dims each)")
    ap.add_argument("--train-n", type=int, default=100_000, help="IVF-PQ training sample (>= 39 * nlist)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faiss_scale.json"))
    args = ap.parse_args(argv)
    results = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown(results))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
