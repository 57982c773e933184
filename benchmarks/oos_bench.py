"""Out-of-scope detection on CLINC150: thresholds calibrated on a split of train, figures on val.

    python benchmarks/oos_bench.py --data ../shared/data/clinc150
    python benchmarks/oos_bench.py --data ../shared/data/clinc150 --write-splits WORK
    nice python -m training.train --config CLINC.yaml --train-file WORK/fit.jsonl \
        --validation-file WORK/calib.jsonl --no-faq --output-dir WORK/teacher
    python benchmarks/oos_bench.py --data ../shared/data/clinc150 --model WORK/teacher

(CLINC.yaml: any config; the recorded teacher used the `training:` recipe of
benchmarks/intent_bench.py: 1 epoch, batch 32, lr 1e-4, head lr 2e-3, label smoothing 0.1, EMA 0.99,
frozen word embeddings, max_length 64; 402 steps, ~25 min on 2 shared cores.)

DIR holds CLINC150 "full" as intents JSONL: `train.jsonl` (15,100 rows incl. 100 `oos`) and
`val.jsonl` (3,100 incl. 100 `oos`). Protocol:

- a stratified `--calib-fraction` (15%) of train is carved out (seed `--seed`): the *calibration*
  split. Classifiers and kNN references use the rest (the *fit* split); temperatures, score
  normalisation and thresholds use the calibration split only; val is scored once, never used
  for a choice. `--write-splits DIR` writes fit.jsonl / calib.jsonl so a teacher can be
  trained on exactly the fit split (`python -m training.train --train-file DIR/fit.jsonl
  --validation-file DIR/calib.jsonl --no-faq ...`) and passed with `--model`.
- models: (a/b) the frozen default encoder (`runtime.embedder.Embedder()`, all-MiniLM-L6-v2)
  + LogisticRegression (C=10, as `service.nlu.FrozenEncoderNLU`) with an `oos` class;
  (c) `--model DIR`, a fine-tuned `SupportModel` (its temperature-scaled probabilities and its
  embeddings).
- scores (`service.oos`): msp (max softmax probability, temperature fitted on calibration), knn
  (mean cosine similarity to the k nearest in-scope fit examples), centroid, combined.
- objectives: `drop` = the largest threshold keeping calibration in-scope accuracy within
  `--max-drop` (2 points, fixed before val was first scored) of its no-threshold value (the main
  table; `service.oos` defaults to 1 point, a choice made after reading this benchmark's
  "drop_sweep", so CLINC150 val figures at 1 point are not clean held-out figures); `floor` =
  the same with an absolute floor `--floor` (95%, the issue's target); `balanced` = max of the
  mean of in-scope accuracy and OOS recall on calibration (only 15 OOS examples there: noisy).
- the teacher uses the calibration split as its own validation file (choice of final/EMA
  weights, temperature), so that split is not untouched by it; val is.

Metrics on val: in-scope accuracy (an in-scope example counts only when predicted as its own
intent AND not flagged), OOS recall and precision (flag = predicted `oos` or score < threshold),
and the threshold-free OOS AUROC / average precision of each score. Embeddings and
probabilities are cached under `--cache` (default attendant_oos_cache in the temporary folder), keyed by the
encoder's fingerprint and the texts. Writes `--out` (benchmarks/results/oos_clinc150.json) and
prints a markdown table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import core  # noqa: E402,F401  (sets the OpenMP wait policy before torch and faiss load)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from service.oos import (SCORE_METHODS, OOSDetector, apply_temperature, calibrate_oos_threshold, oos_figures,  # noqa: E402
                         oos_mask)  # noqa: E402

log = logging.getLogger("oos_bench")
DROP_SWEEP = (0.005, 0.01, 0.015, 0.02, 0.03)
OBJECTIVE_SETTINGS = {
    "drop": lambda a: {"objective": "accuracy_floor", "max_accuracy_drop": a.max_drop},
    "floor": lambda a: {"objective": "accuracy_floor", "min_in_scope_accuracy": a.floor},
    "balanced": lambda a: {"objective": "balanced"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with train.jsonl and val.jsonl (CLINC150 'full')")
    p.add_argument("--model", default=None, help="a fine-tuned SupportModel folder to add as method (c)")
    p.add_argument("--calib-fraction", type=float, default=0.15, help="share of train held out for calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=10, help="neighbours for the knn score")
    p.add_argument("--max-drop", type=float, default=0.02, help="'drop' objective: in-scope accuracy given up")
    p.add_argument("--floor", type=float, default=0.95, help="'floor' objective: absolute in-scope accuracy floor")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "attendant_oos_cache"), help="embedding/probability cache folder")
    p.add_argument("--write-splits", default=None, metavar="DIR", help="write fit.jsonl and calib.jsonl there")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "oos_clinc150.json"))
    return p.parse_args(argv)


def read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                texts.append(str(row["text"]))
                labels.append(str(row["intent"]))
    return texts, labels


def carve(labels: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, calibration indices), stratified by intent, both sorted."""
    from sklearn.model_selection import train_test_split

    fit, cal = train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(fit), np.sort(cal)


def cached(cache: Path, kind: str, key_parts: list[str], compute: Callable[[], dict[str, np.ndarray]]
           ) -> dict[str, np.ndarray]:
    h = hashlib.sha256("\x1f".join(key_parts).encode("utf-8")).hexdigest()[:20]
    path = cache / f"{kind}-{h}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    arrays = compute()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def text_key(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def ece(probs: np.ndarray, gold_idx: np.ndarray) -> float:
    from evaluation.nlu import expected_calibration_error

    keep = gold_idx >= 0
    conf = probs[keep].max(1)
    correct = probs[keep].argmax(1) == gold_idx[keep]
    return float(expected_calibration_error(conf, correct)[0])


def evaluate_model(name: str, labels: list[str], splits: dict[str, dict[str, Any]], a: argparse.Namespace,
                   fingerprint: str | None) -> dict[str, Any]:
    """All scores x objectives for one model's outputs on fit/calib/val."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    fit, cal, val = splits["fit"], splits["calib"], splits["val"]
    col = {n: i for i, n in enumerate(labels)}
    val_idx = np.asarray([col.get(g, -1) for g in val["labels"]])
    val_oos = oos_mask(val["labels"])
    pred_val = [labels[i] for i in val["probs"].argmax(1)]
    none = oos_figures(np.zeros(len(pred_val)), val["labels"], pred_val, -np.inf)
    out: dict[str, Any] = {"labels": len(labels), "encoder_fingerprint": fingerprint,
                           "val_no_threshold": none, "val_accuracy_all": float(np.mean(
                               np.asarray(pred_val) == np.asarray(val["labels"]))), "scores": {}}
    for method in SCORE_METHODS:
        entry: dict[str, Any] = {}
        for obj, settings in OBJECTIVE_SETTINGS.items():
            t0 = time.perf_counter()
            det = OOSDetector.fit(labels, fit["emb"], fit["labels"], cal["probs"], cal["emb"], cal["labels"],
                                  method=method, k=a.k, encoder_fingerprint=fingerprint, **settings(a))
            s_val = det.scores(val["probs"], val["emb"])
            figs = oos_figures(s_val, val["labels"], pred_val, det.threshold)
            assert np.array_equal(det.flags(val["probs"], val["emb"]),
                                  oos_mask(pred_val) | (s_val < det.threshold))
            entry[obj] = {"threshold": det.threshold, "temperature": det.temperature,
                          "calibration": det.calibration.to_dict(), "val": figs,
                          "seconds": round(time.perf_counter() - t0, 2)}
            if obj == "drop":
                # Threshold-free: how well the score alone separates OOS from in-scope on val.
                entry["val_oos_auroc"] = float(roc_auc_score(val_oos, -s_val))
                entry["val_oos_average_precision"] = float(average_precision_score(val_oos, -s_val))
                # Diagnostic only, NOT a deployable figure: thresholds chosen on val itself, to place each
                # score against the reference points (94.6 / 62, and the 95 / 80 target).
                entry["oracle_val_tuned"] = {
                    str(fl): calibrate_oos_threshold(s_val, val["labels"], pred_val, min_in_scope_accuracy=fl,
                                                     method=method).figures for fl in (0.946, 0.95)}
                # Sensitivity to the one free choice (the accuracy budget), thresholds still from calibration.
                s_cal = det.scores(cal["probs"], cal["emb"])
                pred_cal = det.predicted_labels(cal["probs"])
                entry["drop_sweep"] = {}
                for drop in DROP_SWEEP:
                    c = calibrate_oos_threshold(s_cal, cal["labels"], pred_cal, max_accuracy_drop=drop, method=method)
                    entry["drop_sweep"][str(drop)] = {"threshold": c.threshold, "calibration": c.figures,
                                                      "val": oos_figures(s_val, val["labels"], pred_val, c.threshold)}
                if method == "msp":
                    entry["val_ece_raw"] = ece(val["probs"], val_idx)
                    entry["val_ece_temperature"] = ece(apply_temperature(val["probs"], det.temperature), val_idx)
        out["scores"][method] = entry
        d = entry["drop"]["val"]
        log.info("%s/%s: val in-scope %.4f, OOS recall %.4f, precision %s, AUROC %.4f", name, method,
                 d["in_scope_accuracy"], d["oos_recall"], d["oos_precision"], entry["val_oos_auroc"])
    return out


def frozen_logreg(a, texts: dict[str, list[str]], labels: dict[str, list[str]], cache: Path):
    from runtime.embedder import Embedder

    emb = Embedder()
    embs = {}
    for split in ("fit", "calib", "val"):
        embs[split] = cached(cache, "emb", [emb.fingerprint, text_key(texts[split])],
                             lambda s=split: {"emb": emb.encode(texts[s], show_progress=True)})["emb"]

    def train() -> dict[str, np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        t0 = time.perf_counter()
        clf = LogisticRegression(C=10.0, max_iter=2000).fit(embs["fit"], labels["fit"])
        return {"classes": np.asarray(clf.classes_, dtype=str), "calib": clf.predict_proba(embs["calib"]),
                "val": clf.predict_proba(embs["val"]), "seconds": np.asarray(time.perf_counter() - t0)}

    probs = cached(cache, "logreg", [emb.fingerprint, text_key(texts["fit"]), text_key(labels["fit"]),
                                     text_key(texts["calib"]), text_key(texts["val"]), "C=10"], train)
    model_labels = [str(c) for c in probs["classes"]]
    splits = {"fit": {"emb": embs["fit"], "labels": labels["fit"]},
              "calib": {"emb": embs["calib"], "probs": probs["calib"], "labels": labels["calib"]},
              "val": {"emb": embs["val"], "probs": probs["val"], "labels": labels["val"]}}
    return model_labels, splits, emb.fingerprint, float(probs["seconds"])


def support_model(a, texts, labels, cache: Path):
    from runtime.model import SupportModel

    model = SupportModel.from_pretrained(a.model)
    out = {}
    for split in ("fit", "calib", "val"):
        out[split] = cached(cache, "model", [model.fingerprint, str(float(model.temperature)), text_key(texts[split])],
                            lambda s=split: dict(zip(("probs", "emb"), model.predict(texts[s]))))
    splits = {s: {"emb": out[s]["emb"], "probs": out[s]["probs"], "labels": labels[s]} for s in out}
    info = {"dir": str(Path(a.model).resolve()), "temperature": float(model.temperature),
            "training": {k: v for k, v in model.metadata.items() if not isinstance(v, (dict, list))}}
    return list(model.labels), splits, model.fingerprint, info


LABELS = {"msp": "max prob (temperature-scaled)", "knn": "kNN similarity", "centroid": "centroid similarity",
          "combined": "combined (msp + kNN)"}


def markdown(res: dict[str, Any]) -> str:
    sp = res["split"]
    rows = [f"CLINC150 val ({sp['n_val']} examples, {sp['n_val_oos']} `oos`); thresholds calibrated on a stratified "
            f"{100 * sp['calib_fraction']:.0f}% of train ({sp['n_calib']} examples, {sp['n_calib_oos']} `oos`), "
            f"models fitted on the other {sp['n_fit']}.", "",
            "| model | OOS score | objective | threshold | in-scope acc | OOS recall | OOS precision | OOS AUROC |",
            "|---|---|---|---|---|---|---|---|"]

    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}"

    for mname, m in res["models"].items():
        n = m["val_no_threshold"]
        rows.append(f"| {mname} | none (`oos` class only) | – | – | {pct(n['in_scope_accuracy'])} | "
                    f"{pct(n['oos_recall'])} | {pct(n['oos_precision'])} | – |")
        for method, e in m["scores"].items():
            for obj in ("drop", "floor"):
                v = e[obj]["val"]
                cal = e[obj]["calibration"]
                objective = (f"≤{100 * res['settings']['max_drop']:.0f} pt drop" if obj == "drop"
                             else f"≥{100 * res['settings']['floor']:.0f}% floor" + ("" if cal["floor_met"] else " (unmet)"))
                rows.append(f"| {mname} | {LABELS[method]} | {objective} | {e[obj]['threshold']:.3f} | "
                            f"{pct(v['in_scope_accuracy'])} | {pct(v['oos_recall'])} | {pct(v['oos_precision'])} | "
                            f"{e['val_oos_auroc']:.3f} |")
    rows += ["", "Sensitivity to the accuracy budget (thresholds calibrated as above, only the allowed drop varies; "
             f"{100 * res['settings']['max_drop']:.0f} points was fixed before val was scored): val in-scope accuracy / "
             "OOS recall.", "",
             "| model | OOS score | " + " | ".join(f"drop ≤{100 * d:g}" for d in DROP_SWEEP) + " |",
             "|---|---|" + "---|" * len(DROP_SWEEP)]
    for mname, m in res["models"].items():
        for method, e in m["scores"].items():
            cells = [f"{pct(e['drop_sweep'][str(d)]['val']['in_scope_accuracy'])} / "
                     f"{pct(e['drop_sweep'][str(d)]['val']['oos_recall'])}" for d in DROP_SWEEP]
            rows.append(f"| {mname} | {LABELS[method]} | " + " | ".join(cells) + " |")
    rows += ["", "Diagnostic, not deployable: OOS recall when the threshold is tuned on val itself to keep val in-scope "
             "accuracy at 94.6% / 95.0% (places each score against the issue's 94.6 / 62 reference and 95 / 80 target).", "",
             "| model | OOS score | recall @ 94.6 | recall @ 95.0 |", "|---|---|---|---|"]
    for mname, m in res["models"].items():
        for method, e in m["scores"].items():
            o = e["oracle_val_tuned"]
            cells = [pct(o[k]["oos_recall"]) if o[k]["in_scope_accuracy"] >= float(k) - 1e-9 else "unreachable"
                     for k in ("0.946", "0.95")]
            rows.append(f"| {mname} | {LABELS[method]} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    a = parse_args(argv)
    data = Path(a.data)
    if not (data / "train.jsonl").is_file() or not (data / "val.jsonl").is_file():
        raise SystemExit(f"error: {data} needs train.jsonl and val.jsonl (CLINC150 'full' in the intents format)")
    tr_texts, tr_labels = read_jsonl(data / "train.jsonl")
    va_texts, va_labels = read_jsonl(data / "val.jsonl")
    fit_i, cal_i = carve(tr_labels, a.calib_fraction, a.seed)
    texts = {"fit": [tr_texts[i] for i in fit_i], "calib": [tr_texts[i] for i in cal_i], "val": va_texts}
    labels = {"fit": [tr_labels[i] for i in fit_i], "calib": [tr_labels[i] for i in cal_i], "val": va_labels}
    if a.write_splits:
        d = Path(a.write_splits)
        d.mkdir(parents=True, exist_ok=True)
        for s in ("fit", "calib"):
            with open(d / f"{s}.jsonl", "w", encoding="utf-8") as fh:
                for t, l in zip(texts[s], labels[s]):
                    fh.write(json.dumps({"text": t, "intent": l}) + "\n")
        log.info("wrote %s/fit.jsonl and calib.jsonl", d)
    cache = Path(a.cache)
    res: dict[str, Any] = {
        "data": str(data.resolve()), "reported_on": "val.jsonl",
        "split": {"calib_fraction": a.calib_fraction, "seed": a.seed, "n_fit": len(fit_i), "n_calib": len(cal_i),
                  "n_calib_oos": int(oos_mask(labels["calib"]).sum()), "n_val": len(va_labels),
                  "n_val_oos": int(oos_mask(va_labels).sum()),
                  "fit_sha256": text_key([json.dumps([t, l]) for t, l in zip(texts["fit"], labels["fit"])])},
        "settings": {"k": a.k, "max_drop": a.max_drop, "floor": a.floor, "objectives": {
            "drop": f"accuracy_floor: largest threshold with calibration in-scope accuracy >= no-threshold accuracy - {a.max_drop}",
            "floor": f"accuracy_floor: largest threshold with calibration in-scope accuracy >= {a.floor}",
            "balanced": "balanced: max (in-scope accuracy + OOS recall) / 2 on calibration"}},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_start": [round(x, 2) for x in os.getloadavg()]},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "models": {},
    }
    log.info("frozen encoder + LogisticRegression ...")
    labs, splits, fp, secs = frozen_logreg(a, texts, labels, cache)
    res["models"]["frozen MiniLM-L6 + LogReg"] = evaluate_model("frozen", labs, splits, a, fp) | {"fit_seconds": secs}
    if a.model:
        log.info("fine-tuned model %s ...", a.model)
        labs, splits, fp, info = support_model(a, texts, labels, cache)
        res["models"]["fine-tuned teacher"] = evaluate_model("teacher", labs, splits, a, fp) | {"model": info}
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    res["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    res["command"] = "python benchmarks/oos_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(res)
    res["markdown"] = table
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=float), encoding="utf-8")
    os.replace(tmp, out)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
