"""Retrieval quality (and speed) on a config's held-out sets.

    python benchmarks/retrieval_bench.py --config configs/demo.yaml [--encoder PATH_OR_ID]

* FAQ: recall@1, recall@5 and MRR of the held-out paraphrases (`data.faq_heldout`), plus the
  share the calibrated threshold would answer; for dense search alone and with the learned
  dense + BM25 fusion (retrieval/fusion.py, trained and calibrated as the index build does).
* Products: precision@5 on the labelled shopping requests (`data.shopping_requests`), for the
  full recommender (dense search + parsed filters + re-ranking) and for dense search alone.
  Most requests have 2-3 relevant products, so precision@5 tops out well below 1; the table
  also gives the ceiling and the normalised figure (hits / min(5, relevant)).
* Latency of one query on this machine: encode, FAQ search, recommend.
* Per-turn latency of `Assistant.respond` over the held-out dialogs, with the model the app
  serves (`--no-turns` skips it).

Writes benchmarks/results/retrieval.json and prints a markdown table. Not part of CI.
"""
from __future__ import annotations

import os

import core  # noqa: E402,F401  (sets the OpenMP wait policy before torch and faiss load)

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.jsonl import read_jsonl  # noqa: E402
from runtime.loading import served_embedder  # noqa: E402
from retrieval.build import fusion_messages  # noqa: E402
from retrieval.faq import FaqIndex, calibrate_faq_threshold  # noqa: E402
from retrieval.fusion import calibrate_fused_threshold, train_fusion  # noqa: E402
from retrieval.recommend import Recommender  # noqa: E402
from core.cli import run_cli, setup_logging  # noqa: E402
from core.config import Config, load_config, shown_path  # noqa: E402
from core.errors import ConfigError  # noqa: E402



def _shown_model(name: str) -> str:
    """A model folder as a project-relative path (no machine's absolute path in results); a hub id as it is."""
    return shown_path(name) if Path(name).exists() else name

def faq_metrics(faq_index: FaqIndex, embedder, heldout: list[dict], threshold: float | None) -> dict[str, Any]:
    """Held-out FAQ metrics; with a fusion model attached to `faq_index`, of the fused ranking (its
    re-ranked candidates first, then the rest of the dense top 10)."""
    texts = [h["text"] for h in heldout]
    vecs = embedder.encode(texts)
    dense = [[h.id for h in hits] for hits in faq_index.search_batch(vecs, 10)]
    if faq_index.fusion is not None:
        fused = faq_index.search_batch(vecs, 10, texts=texts)
        ranked = [[h.id for h in f] + [i for i in d if i not in {h.id for h in f}] for f, d in zip(fused, dense)]
        top_scores = [hits[0].score for hits in fused]
    else:
        ranked = dense
        top_scores = [hits[0].score for hits in faq_index.search_batch(vecs, 1)]
    gold = [h["faq_id"] for h in heldout]
    rr = [1.0 / (r.index(g) + 1) if g in r else 0.0 for r, g in zip(ranked, gold)]
    out = {
        "n": len(heldout),
        "recall@1": float(np.mean([r[:1] == [g] for r, g in zip(ranked, gold)])),
        "recall@5": float(np.mean([g in r[:5] for r, g in zip(ranked, gold)])),
        "mrr@10": float(np.mean(rr)),
    }
    if threshold is not None:
        out["threshold"] = threshold
        out["answered_at_threshold"] = float(np.mean([s >= threshold for s in top_scores]))
        out["answered_and_correct"] = float(np.mean([s >= threshold and r[:1] == [g]
                                                     for s, r, g in zip(top_scores, ranked, gold)]))
    return out


def product_metrics(rec: Recommender, embedder, requests: list[dict], k: int = 5) -> dict[str, Any]:
    vecs = embedder.encode([r["text"] for r in requests])
    full, dense, norm, ceiling = [], [], [], []
    for r, v in zip(requests, vecs):
        rel = set(r["relevant_ids"])
        got = [s.product["id"] for s in rec.recommend(r["text"], v, k)]
        raw = [h.id for h in rec.index.search(v, k)[0]]
        full.append(len(rel & set(got)) / k)
        dense.append(len(rel & set(raw)) / k)
        norm.append(len(rel & set(got)) / min(k, len(rel)))
        ceiling.append(min(k, len(rel)) / k)
    return {
        "n": len(requests),
        f"precision@{k}": float(np.mean(full)),
        f"precision@{k}_dense_only": float(np.mean(dense)),
        f"precision@{k}_ceiling": float(np.mean(ceiling)),
        f"normalised_precision@{k}": float(np.mean(norm)),
    }


def _pcts(samples_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def query_latency(embedder, faq_index: FaqIndex, rec: Recommender, texts: list[str], repeats: int = 2) -> dict[str, Any]:
    """Single-message latency of each retrieval step, as the app runs it (one message at a time)."""
    texts = (texts * repeats)[: max(len(texts), 100)]
    embedder.encode(texts[:4])  # warm-up
    enc, faq_s, rec_s = [], [], []
    for t in texts:
        t0 = time.perf_counter()
        v = embedder.encode([t])[0]
        t1 = time.perf_counter()
        faq_index.search(v, 5)
        t2 = time.perf_counter()
        rec.recommend(t, v, 5)
        t3 = time.perf_counter()
        enc.append(t1 - t0)
        faq_s.append(t2 - t1)
        rec_s.append(t3 - t2)
    return {"n": len(texts), "encode": _pcts(enc), "faq_search": _pcts(faq_s), "recommend": _pcts(rec_s)}


def turn_latency(config: Config, args: argparse.Namespace) -> dict[str, Any] | None:
    """Per-turn latency of `Assistant.respond` (p50/p95 ms) over the held-out dialogs, replayed turn by
    turn (one session each, so flows run as they would), with the model the app serves and a
    throw-away store; the app's own store is not touched."""
    import tempfile

    from retrieval.build import build_indexes
    from service.assembly import build_assistant, load_nlu, open_store
    from core.errors import ArtifactError

    if config.data.dialogs is None:
        return None
    dialogs = read_jsonl(config.data.dialogs, ("id", "turns"), "dialog")
    nlu = load_nlu(config)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(config, Path(tmp) / "bench.sqlite")
        try:
            assistant = build_assistant(config, nlu=nlu, store=store)
        except ArtifactError:
            build_indexes(config, embedder=nlu.embedder)
            assistant = build_assistant(config, nlu=nlu, store=store)
        assistant.respond("warm-up", "hello")
        samples = []
        for d in dialogs:
            for turn in d["turns"]:
                t0 = time.perf_counter()
                assistant.respond(d["id"], turn["user"])
                samples.append(time.perf_counter() - t0)
        store.close()
    return {"n": len(samples), "model": _shown_model(nlu.embedder.name), **_pcts(samples)}


def markdown(results: dict[str, Any]) -> str:
    f, p, lat = results["faq"], results["products"], results["latency"]
    rows = [
        "| metric | value |", "|---|---|",
        f"| FAQ recall@1 (n={f['n']} held-out paraphrases) | {f['recall@1']:.3f} |",
        f"| FAQ recall@5 | {f['recall@5']:.3f} |",
        f"| FAQ MRR@10 | {f['mrr@10']:.3f} |",
    ]
    if "answered_at_threshold" in f:
        rows.append(f"| FAQ answered at threshold {f['threshold']:.3f} (correct) | "
                    f"{f['answered_at_threshold']:.3f} ({f['answered_and_correct']:.3f}) |")
    fused = results.get("faq_fused")
    if fused:
        rows += [
            f"| FAQ recall@1, dense + BM25 fusion | {fused['recall@1']:.3f} |",
            f"| FAQ recall@5, dense + BM25 fusion | {fused['recall@5']:.3f} |",
            f"| FAQ MRR@10, dense + BM25 fusion | {fused['mrr@10']:.3f} |",
        ]
        if "answered_at_threshold" in fused:
            rows.append(f"| FAQ answered at fused threshold {fused['threshold']:.3f} (correct) | "
                        f"{fused['answered_at_threshold']:.3f} ({fused['answered_and_correct']:.3f}) |")
    rows += [
        f"| product precision@5 (n={p['n']} shopping requests) | {p['precision@5']:.3f} |",
        f"| product precision@5, dense search only | {p['precision@5_dense_only']:.3f} |",
        f"| product precision@5 ceiling (few relevant items) | {p['precision@5_ceiling']:.3f} |",
        f"| product normalised precision@5 (hits / min(5, relevant)) | {p['normalised_precision@5']:.3f} |",
        f"| encode one message p50 / p95 | {lat['encode']['p50_ms']:.1f} / {lat['encode']['p95_ms']:.1f} ms |",
        f"| FAQ search p50 / p95 | {lat['faq_search']['p50_ms']:.2f} / {lat['faq_search']['p95_ms']:.2f} ms |",
        f"| recommend (filters + re-rank) p50 / p95 | {lat['recommend']['p50_ms']:.2f} / {lat['recommend']['p95_ms']:.2f} ms |",
    ]
    turn = results.get("turn_latency")
    if turn:
        rows.append(f"| Assistant.respond per turn p50 / p95 | {turn.get('p50_ms', float('nan')):.1f} / "
                    f"{turn.get('p95_ms', float('nan')):.1f} ms |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/retrieval_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
    parser.add_argument("--encoder", default=None, help="encoder folder or id (default: what the app serves)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "retrieval.json"), help="JSON output")
    parser.add_argument("--no-latency", action="store_true", help="skip the per-query latency loop")
    parser.add_argument("--no-turns", action="store_true", help="skip the per-turn latency of Assistant.respond")
    args = parser.parse_args(argv)
    setup_logging()
    config = load_config(args.config)
    for field in ("faq_heldout", "shopping_requests"):
        if getattr(config.data, field) is None:
            raise ConfigError(f"{config.path}: data.{field} is not set; the benchmark needs the held-out file")
    embedder = served_embedder(config, args.encoder)
    faqs = read_jsonl(config.data.faq, ("id", "question", "answer"), "FAQ entry")
    products = read_jsonl(config.data.products, ("id", "title", "category", "price"), "product")
    t0 = time.perf_counter()
    faq_index = FaqIndex.build(faqs, embedder, exact_max=config.retrieval.exact_max)
    rec = Recommender.build(products, embedder, exact_max=config.retrieval.exact_max)
    build_s = time.perf_counter() - t0
    intents = read_jsonl(config.data.intents, ("text", "intent"))
    cal = calibrate_faq_threshold(faq_index, embedder, intents)
    # the fusion as the index build trains it (never on the held-out files)
    training = train_fusion(faq_index, faq_index.lexical, embedder, messages=fusion_messages(config),
                            candidates=config.retrieval.fusion_candidates)
    faq_index.fusion = training.model
    fused_cal = calibrate_fused_threshold(faq_index, embedder, intents, training.oof_top,
                                          training.stats["paraphrases"])
    faq_index.fusion = None
    heldout = read_jsonl(config.data.faq_heldout, ("faq_id", "text"), "held-out paraphrase")
    requests = read_jsonl(config.data.shopping_requests, ("text", "relevant_ids"), "shopping request")

    results: dict[str, Any] = {
        "config": shown_path(config.path),
        "encoder": _shown_model(embedder.name),
        "encoder_fingerprint": embedder.fingerprint,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg": [round(v, 2) for v in os.getloadavg()]},  # latency on a shared box depends on it
        "index_build_s": round(build_s, 2),
        "faq": faq_metrics(faq_index, embedder, heldout, cal.threshold),
        "faq_calibration": cal.to_dict(),
        "faq_fusion_training": training.stats,
        "products": product_metrics(rec, embedder, requests),
    }
    faq_index.fusion = training.model
    results["faq_fused"] = faq_metrics(faq_index, embedder, heldout, fused_cal.threshold)
    faq_index.fusion = None
    if not args.no_latency:
        results["latency"] = query_latency(embedder, faq_index, rec, [h["text"] for h in heldout[:50]] +
                                           [r["text"] for r in requests[:50]])
    turn = None if args.no_turns else turn_latency(config, args)
    if turn is not None:
        results["turn_latency"] = turn
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if "latency" in results:
        print(markdown(results))
    else:
        print(json.dumps({k: results[k] for k in ("faq", "faq_fused", "products")}, indent=2))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
