"""PNG plots for evaluation reports (matplotlib, Agg backend: no display needed).

Every function takes an `EvalResult` (or plain values) and a path, writes one PNG and returns
the path, or returns None when there is nothing to plot.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from evaluation.base import EvalResult  # noqa: E402

DPI = 110
MAX_MATRIX_CLASSES = 20   # the reduced confusion matrix shows at most this many classes


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def top_confusions_png(result: EvalResult, path: Path, title: str = "") -> Path | None:
    """Horizontal bars: the most frequent gold -> predicted mistakes (readable at any class count)."""
    pairs = result.details.get("top_confusions") or []
    if not pairs:
        return None
    pairs = pairs[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(pairs) + 1.2))
    ax.barh(range(len(pairs)), [p["count"] for p in pairs], color="#c0504d")
    ax.set_yticks(range(len(pairs)), [f"{p['gold']} → {p['predicted']}" for p in pairs], fontsize=8)
    ax.set_xlabel("examples")
    ax.set_title(title or f"Top {len(pairs)} confusions (gold → predicted)")
    return _save(fig, path)


def confusion_matrix_png(result: EvalResult, path: Path, title: str = "") -> Path | None:
    """Confusion matrix over all classes when there are few, else over the most-confused classes."""
    gold, pred = result.arrays.get("gold"), result.arrays.get("pred")
    if not gold:
        return None
    classes = sorted(set(gold) | set(pred))
    reduced = len(classes) > MAX_MATRIX_CLASSES
    if reduced:
        chosen: list[str] = []
        for p in result.details.get("top_confusions") or []:
            for c in (p["gold"], p["predicted"]):
                if c not in chosen and len(chosen) < MAX_MATRIX_CLASSES:
                    chosen.append(c)
        if not chosen:
            return None
        classes = sorted(chosen)
    cm = confusion_matrix(gold, pred, labels=classes)
    size = max(4.0, 0.38 * len(classes) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the gold row")
    ax.set_title(title or ("Confusion matrix, most-confused classes" if reduced else "Confusion matrix"))
    return _save(fig, path)


def confidence_hist_png(result: EvalResult, path: Path, title: str = "") -> Path | None:
    conf, correct = result.arrays.get("confidences"), result.arrays.get("correct")
    if conf is None or not len(conf):
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.linspace(0, 1, 21)
    ax.hist(conf[correct], bins=bins, alpha=0.7, label=f"correct ({int(correct.sum())})", color="#4f81bd")
    ax.hist(conf[~correct], bins=bins, alpha=0.7, label=f"wrong ({int((~correct).sum())})", color="#c0504d")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("examples")
    ax.legend()
    ax.set_title(title or "Confidence of correct and wrong predictions")
    return _save(fig, path)


def reliability_png(result: EvalResult, path: Path, title: str = "") -> Path | None:
    bins = result.details.get("reliability") or []
    if not bins:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 5))
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"]
    acc = [b["accuracy"] if b["count"] else 0.0 for b in bins]
    ax.bar(centers, acc, width=width * 0.95, color="#4f81bd", edgecolor="#2c4d75", label="accuracy in bin")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for c, b in zip(centers, bins):
        if b["count"]:
            ax.text(c, 0.01, str(b["count"]), ha="center", va="bottom", fontsize=6, rotation=90, color="white")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ece = result.metrics.get("ece")
    ax.set_title(title or f"Reliability diagram (ECE {ece:.3f})" if ece is not None else "Reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def oos_curve_png(result: EvalResult, path: Path, title: str = "") -> Path | None:
    curve = result.details.get("oos_curve") or []
    if not curve:
        return None
    t = [r["threshold"] for r in curve]

    def col(key: str) -> list[float]:
        return [np.nan if r[key] is None else r[key] for r in curve]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(t, col("oos_precision"), label="OOS precision")
    ax1.plot(t, col("oos_recall"), label="OOS recall")
    ax1.plot(t, col("in_scope_accuracy"), label="in-scope accuracy", linestyle="--")
    best = result.metrics.get("oos_best_threshold")
    if best is not None:
        ax1.axvline(best, color="grey", linestyle=":", label=f"best F1 at {best:.2f}")
    ax1.set_xlabel("confidence threshold (OOS when top probability < threshold)")
    ax1.set_ylim(0, 1.02)
    ax1.legend(fontsize=8)
    ax1.set_title("OOS detection over thresholds")
    ax2.plot(col("oos_recall"), col("oos_precision"), marker=".", markersize=3)
    ax2.set_xlabel("OOS recall")
    ax2.set_ylabel("OOS precision")
    ax2.set_xlim(0, 1.02)
    ax2.set_ylim(0, 1.02)
    ap = result.metrics.get("oos_average_precision")
    ax2.set_title(f"OOS precision-recall (AP {ap:.3f})" if ap is not None else "OOS precision-recall")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def latency_png(latencies_ms: Sequence[float], path: Path, title: str = "") -> Path | None:
    arr = np.asarray(latencies_ms, dtype=float)
    if not arr.size:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.hist(arr, bins=min(40, max(5, arr.size // 3)), color="#9bbb59")
    for p, style in ((50, "-"), (95, "--"), (99, ":")):
        v = float(np.percentile(arr, p))
        ax.axvline(v, color="black", linestyle=style, label=f"p{p} {v:.1f} ms")
    ax.set_xlabel("turn latency (ms)")
    ax.set_ylabel("turns")
    ax.legend()
    ax.set_title(title or f"Per-turn latency over {arr.size} turns")
    return _save(fig, path)


def compare_png(rows: Sequence[dict[str, Any]], names: tuple[str, str], path: Path, title: str = "") -> Path | None:
    """Grouped bars of the [0, 1] metrics of two reports (rows from `report.compare_reports`)."""
    rows = [r for r in rows if r.get("unit") == "ratio" and r["a"] is not None and r["b"] is not None]
    if not rows:
        return None
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.36 * len(rows) + 1.5))
    ax.barh(y - 0.2, [r["a"] for r in rows], height=0.4, label=names[0], color="#4f81bd")
    ax.barh(y + 0.2, [r["b"] for r in rows], height=0.4, label=names[1], color="#f79646")
    ax.set_yticks(y, [r["metric"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "Side by side")
    return _save(fig, path)


def nlu_plots(result: EvalResult, out_dir: Path, prefix: str) -> list[Path]:
    """All NLU plots for one result: confusions, matrix, confidence histogram, reliability, OOS curve."""
    label = result.details.get("source", "")
    made = [
        top_confusions_png(result, out_dir / f"{prefix}_top_confusions.png"),
        confusion_matrix_png(result, out_dir / f"{prefix}_confusion_matrix.png"),
        confidence_hist_png(result, out_dir / f"{prefix}_confidence.png"),
        reliability_png(result, out_dir / f"{prefix}_reliability.png"),
        oos_curve_png(result, out_dir / f"{prefix}_oos_curve.png", title=Path(label).name if label else ""),
    ]
    return [p for p in made if p is not None]
