"""Teacher vs distilled student vs compressed student vs frozen encoder + logistic regression.

    python benchmarks/distill_bench.py --data ../shared/data/banking77 --teacher DIR
        [--data ../shared/data/clinc150 --teacher DIR2] [--work DIR] [--set distill.KEY=VALUE ...]
        [--layer-study STEPS] [--reuse]

For each dataset (a folder with train.jsonl and test.jsonl, else val.jsonl), in one run on the
same split: the teacher (`--teacher DIR`, a `training.train` model folder trained on that
train.jsonl; `--teacher train` trains one first), the student distilled from it with
`training.distill` (the config's `distill:` defaults, `--set` overrides), the student compressed
with `training.compress` (the default served format), the other compression variants that the
default was chosen against (torch dynamic int8, ONNX Runtime fp32, ONNX Runtime int8 per tensor,
int8 with fp32 embeddings), and the frozen default encoder + logistic regression.

Columns: accuracy, macro-F1, agreement with the teacher (same top intent), expected calibration
error (15 bins, calibrated probabilities), parameters, size on disk, single-message latency
p50/p95 (tokenisation included) at 1 and 2 threads, throughput at batch 64, load time. Latency is
measured round-robin (message i through every variant before message i+1), so a busy shared
machine slows every variant alike and the ratios stay fair.

`--layer-study STEPS` first distils one short student per layer selection (alternate, bottom,
top, spread) on the first dataset and reports their validation accuracy: how the default
selection was picked.

Writes benchmarks/results/distill.json and benchmarks/results/distill.md. Not part of CI.
"""
from __future__ import annotations

import os

import core  # noqa: E402,F401  (sets the OpenMP wait policy before torch and faiss load)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import gc
import json
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.cli import run_cli, setup_logging  # noqa: E402
from core.config import DEFAULT_ENCODER  # noqa: E402
from core.errors import ConfigError, DataError  # noqa: E402

log = logging.getLogger("distill_bench")
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Variant:
    name: str
    load: Callable[[int], Any]           # threads -> object with predict(texts) -> (probs, embeddings)
    path: Path | None                    # folder whose size is reported
    params: int
    note: str = ""
    size_bytes: int | None = None        # when not a folder on disk (an in-memory variant)
    loaded: dict[int, Any] = field(default_factory=dict)


def read_intents(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                texts.append(str(row["text"]))
                labels.append(str(row["intent"]))
    return texts, labels


def folder_bytes(path: Path, skip: Sequence[str] = ()) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and p.name not in skip)


def write_config(work: Path, train_file: Path, distill: dict[str, Any] | None = None) -> Path:
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    cfg = {"name": train_file.parent.name,
           "data": {"intents": str(train_file), "faq": str(ROOT / "data" / "demo" / "faq.jsonl"),
                    "products": str(ROOT / "data" / "demo" / "products.jsonl")},
           "artifacts_dir": str(work / "artifacts"),
           "encoder": {"name": DEFAULT_ENCODER, "max_length": 64},
           "training": {"tensorboard": False},
           "distill": {"tensorboard": False, **(distill or {})}}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# ---------------------------------------------------------------------- building the models

def ensure_teacher(teacher: str, config: Path, train_file: Path, test_file: Path) -> Path:
    if teacher != "train":
        d = Path(teacher).resolve()
        if not (d / "attendant.json").is_file():
            raise ConfigError(f"--teacher {d}: not a trained model folder; train one with `accelerate launch -m "
                              f"training.train --config ... --train-file {train_file}` or pass --teacher train")
        return d
    from core.config import load_config
    from training.train import TrainOptions, train

    out = config.parent / "artifacts" / "teacher"
    if not (out / "attendant.json").is_file():
        log.info("training a teacher on %s", train_file)
        train(load_config(config), TrainOptions(no_faq=True, test_file=str(test_file)))
    return out


def distil(config: Path, teacher: Path, train_file: Path, test_file: Path, out: Path, work: Path,
           overrides: Sequence[str], max_steps: int | None = None, cache_from: Path | None = None) -> dict[str, Any]:
    from core.config import load_config
    from training.distill import DistillOptions, distill

    work.mkdir(parents=True, exist_ok=True)
    if cache_from is not None:  # the teacher's outputs on the same texts: computed once for every run
        for f in cache_from.glob("teacher-outputs-*.npz"):
            shutil.copy(f, work / f.name)
    options = DistillOptions(teacher=teacher, train_file=str(train_file), test_file=str(test_file), no_faq=True,
                             output_dir=out, work_dir=work, max_steps=max_steps)
    t0 = time.perf_counter()
    results = distill(load_config(config, overrides), options)
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return results


def layer_study(config: Path, teacher: Path, train_file: Path, test_file: Path, work: Path,
                overrides: Sequence[str], steps: int, reuse: bool = False) -> list[dict[str, Any]]:
    rows = []
    first_work = None
    for how in ("alternate", "bottom", "top", "spread"):
        run_work = work / f"layers-{how}"
        done = run_work / "results.json"
        if reuse and done.is_file() and json.loads(done.read_text()).get("steps") == steps:
            res = json.loads(done.read_text())   # a finished run of the same study
        else:
            res = distil(config, teacher, train_file, test_file, work / f"student-{how}", run_work,
                         [*overrides, f"distill.layer_selection={how}", "distill.augment_copies=0"], max_steps=steps,
                         cache_from=first_work)
        first_work = first_work or run_work
        rows.append({"selection": how, "layers": res["student"]["layers"], "steps": res["steps"],
                     "test_accuracy": (res.get("test") or {}).get("accuracy"),
                     "validation_accuracy": res["validation"].get("accuracy"),
                     "validation_macro_f1": res["validation"].get("macro_f1"),
                     "validation_teacher_agreement": res["validation"].get("teacher_agreement")})
        log.info("layer study: %s %s -> validation accuracy %.4f", how, res["student"]["layers"],
                 rows[-1]["validation_accuracy"] or 0)
        shutil.rmtree(work / f"student-{how}", ignore_errors=True)
    return rows


def onnx_variant(student: Path, out: Path, name: str, note: str, check: Sequence[str], **settings: Any) -> Variant:
    from training.compress import CompressionSettings, compress_model
    from runtime.onnx_model import OnnxSupportModel

    if not (out / "attendant.json").is_file():
        compress_model(student, out, CompressionSettings(min_agreement=0.0, **settings), check)
    return Variant(name, lambda n, d=out: OnnxSupportModel(d, threads=n), out, count_params(student), note)


def count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in list(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                if "pooler" in k:  # not used by mean pooling
                    continue
                total += int(np.prod(fh.get_slice(k).get_shape()))
    return total


class FrozenLogReg:
    """The frozen default encoder + a logistic regression on its embeddings (the cheap alternative)."""

    def __init__(self, embedder: Any, clf: Any, labels: list[str]) -> None:
        self.embedder, self.clf, self.labels = embedder, clf, labels

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        emb = self.embedder.encode(list(texts))
        return self.clf.predict_proba(emb), emb


def frozen_variant(train_texts: list[str], train_labels: list[str], labels: list[str], cache: Path,
                   C: float = 10.0) -> Variant:
    import pickle

    from sklearn.linear_model import LogisticRegression

    from runtime.embedder import Embedder, resolve_model_path

    embedder = Embedder(DEFAULT_ENCODER)
    if cache.is_file():
        clf = pickle.loads(cache.read_bytes())
    else:
        t0 = time.perf_counter()
        X = embedder.encode(train_texts)
        y = np.array([labels.index(l) for l in train_labels])
        clf = LogisticRegression(C=C, max_iter=2000).fit(X, y)
        cache.write_bytes(pickle.dumps(clf))
        log.info("frozen encoder + logistic regression fitted in %.0f s", time.perf_counter() - t0)
    path = Path(resolve_model_path(DEFAULT_ENCODER))
    n_params = sum(p.numel() for n, p in embedder.model.named_parameters() if "pooler" not in n) + clf.coef_.size + \
        clf.intercept_.size

    def load(threads: int) -> FrozenLogReg:
        set_threads(threads)
        return FrozenLogReg(Embedder(DEFAULT_ENCODER), clf, labels)

    size = folder_bytes(path, skip=("pytorch_model.bin", "tf_model.h5", "rust_model.ot")) + clf.coef_.nbytes
    return Variant("frozen encoder + LogReg", load, None, n_params,
                   f"all-MiniLM-L6-v2 embeddings + LogisticRegression(C={C}); load time excludes the fit "
                   "(a deployment would store the fitted classifier)", size_bytes=size)


# ---------------------------------------------------------------------- measuring

def ece(confidences: np.ndarray, correct: np.ndarray) -> float:
    from evaluation.nlu import expected_calibration_error

    return float(expected_calibration_error(confidences, correct)[0])


def score(model: Any, texts: list[str], gold: np.ndarray, teacher_pred: np.ndarray | None, n_labels: int) -> dict[str, Any]:
    from training.metrics import classification_metrics

    probs, _ = model.predict(texts)
    pred = probs.argmax(1)
    m = classification_metrics(pred, gold, n_labels)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "teacher_agreement": float((pred == teacher_pred).mean()) if teacher_pred is not None else 1.0,
            "ece": ece(probs.max(1), pred == gold), "predictions": pred}


def latency_round_robin(models: dict[str, Any], messages: list[str], warmup: int = 10) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        for t in messages[:warmup]:
            m.predict([t])
    for t in messages:
        for name, m in models.items():
            t0 = time.perf_counter()
            m.predict([t])
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def throughput_round_robin(models: dict[str, Any], texts: list[str], batch: int = 64) -> dict[str, float]:
    """Messages per second at `batch`, each batch through every variant in turn (fair on a shared machine)."""
    seconds = {k: 0.0 for k in models}
    for m in models.values():
        m.predict(texts[:batch])  # warm-up
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        for name, m in models.items():
            t0 = time.perf_counter()
            m.predict(chunk)
            seconds[name] += time.perf_counter() - t0
    return {k: len(texts) / v for k, v in seconds.items()}


def load_seconds(variant: Variant, repeats: int = 3) -> float:
    out = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        variant.load(1)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def bench_dataset(data: Path, teacher_arg: str, args: argparse.Namespace, first: bool = True) -> dict[str, Any]:
    from training.compress import compress_model, CompressionSettings, torch_dynamic_int8
    from runtime.model import SupportModel
    from runtime.onnx_model import OnnxSupportModel

    train_file = data / "train.jsonl"
    test_file = data / "test.jsonl" if (data / "test.jsonl").is_file() else data / "val.jsonl"
    if not train_file.is_file() or not test_file.is_file():
        raise DataError(f"{data}: expected train.jsonl and test.jsonl (or val.jsonl) in the intents format")
    work = Path(args.work).resolve() / data.name
    config = write_config(work, train_file)
    teacher_dir = ensure_teacher(teacher_arg, config, train_file, test_file)
    result: dict[str, Any] = {"data": str(data), "train": str(train_file), "test": str(test_file),
                              "teacher": str(teacher_dir)}

    if args.layer_study and first:
        result["layer_study"] = layer_study(config, teacher_dir, train_file, test_file, work / "study", args.set,
                                            args.layer_study, reuse=args.reuse)

    student_dir, served_dir = work / "student", work / "served"
    if not (args.reuse and (student_dir / "attendant.json").is_file()):
        cache = work / "study" / "layers-alternate" if args.layer_study else None
        result["distillation"] = distil(config, teacher_dir, train_file, test_file, student_dir, work / "run",
                                        args.set, cache_from=cache)
        shutil.rmtree(served_dir, ignore_errors=True)
        for extra in work.glob("variant-*"):
            shutil.rmtree(extra, ignore_errors=True)
    elif (work / "run" / "results.json").is_file():
        result["distillation"] = json.loads((work / "run" / "results.json").read_text())
    train_texts, train_labels = read_intents(train_file)
    check = train_texts[:: max(1, len(train_texts) // 512)]
    if not (served_dir / "attendant.json").is_file():
        result["compression"] = compress_model(student_dir, served_dir, CompressionSettings(), check)
    served_meta = json.loads((served_dir / "attendant.json").read_text())
    result["served_precision"] = served_meta["compression"]["precision"]

    teacher_params, student_params = count_params(teacher_dir), count_params(student_dir)
    student_fp32 = SupportModel.from_pretrained(student_dir)
    q_state = work / "variant-torch-int8.pt"
    import torch

    torch.save(torch_dynamic_int8(student_fp32).state_dict(), q_state)
    tok_bytes = sum((student_dir / f).stat().st_size for f in ("tokenizer.json", "tokenizer_config.json")
                    if (student_dir / f).is_file())
    variants = [
        Variant("teacher fp32 (torch)", lambda n: SupportModel.from_pretrained(teacher_dir), teacher_dir, teacher_params),
        Variant("student fp32 (torch)", lambda n: SupportModel.from_pretrained(student_dir), student_dir, student_params),
        Variant(f"student served: ONNX Runtime {result['served_precision']}",
                lambda n: OnnxSupportModel(served_dir, threads=n), served_dir, student_params,
                "the default (training.compress): per-channel int8, embeddings int8, head fp32, fused graph"),
        Variant("student torch dynamic int8", lambda n: torch_dynamic_int8(SupportModel.from_pretrained(student_dir)),
                None, student_params, "Linear layers int8 (per tensor); embeddings fp32",
                size_bytes=q_state.stat().st_size + tok_bytes),
        onnx_variant(student_dir, work / "variant-onnx-fp32", "student ONNX Runtime fp32", "fused graph, fp32",
                     check, format="onnx-fp32"),
        onnx_variant(student_dir, work / "variant-onnx-int8-per-tensor", "student ONNX Runtime int8 per tensor",
                     "one scale per weight tensor", check, per_channel=False),
        onnx_variant(student_dir, work / "variant-onnx-int8-fp32-emb", "student ONNX Runtime int8, fp32 embeddings",
                     "per channel; word-embedding table left fp32", check, quantize_embeddings=False),
    ]
    if not args.no_frozen:
        labels = SupportModel.from_pretrained(teacher_dir).labels
        variants.append(frozen_variant(train_texts, train_labels, labels, work / "frozen-logreg.pkl"))

    test_texts, test_labels = read_intents(test_file)
    result["n_test"] = len(test_texts)
    labels = student_fp32.labels
    gold = np.array([labels.index(l) for l in test_labels])
    rows: list[dict[str, Any]] = []
    teacher_pred = None
    for v in variants:
        set_threads(2)
        model = v.load(2)
        s = score(model, test_texts, gold, teacher_pred, len(labels))
        if teacher_pred is None:
            teacher_pred = s["predictions"]
            s["teacher_agreement"] = 1.0
        s.pop("predictions")
        size = v.size_bytes if v.size_bytes is not None else folder_bytes(v.path)
        rows.append({"variant": v.name, **s, "params": v.params, "size_mb": round(size / 1e6, 2), "note": v.note})
        log.info("%-45s accuracy %.4f macro-F1 %.4f agreement %.4f", v.name, s["accuracy"], s["macro_f1"],
                 s["teacher_agreement"])
        del model
        gc.collect()

    rng = np.random.default_rng(0)
    messages = [test_texts[i] for i in rng.choice(len(test_texts), size=min(args.latency_messages, len(test_texts)),
                                                  replace=False)]
    for threads in (1, 2):
        set_threads(threads)
        models = {v.name: v.load(threads) for v in variants}
        times = latency_round_robin(models, messages)
        for row in rows:
            ms = np.array(times[row["variant"]])
            row[f"p50_ms_{threads}t"] = round(float(np.percentile(ms, 50)), 3)
            row[f"p95_ms_{threads}t"] = round(float(np.percentile(ms, 95)), 3)
        if threads == 2:
            batch_texts = [test_texts[i] for i in rng.choice(len(test_texts), size=args.throughput_messages,
                                                             replace=len(test_texts) < args.throughput_messages)]
            rates = throughput_round_robin(models, batch_texts)
            for row in rows:
                row["throughput_msgs_per_s_b64_2t"] = round(rates[row["variant"]], 1)
        del models
        gc.collect()
    set_threads(2)
    for v, row in zip(variants, rows):
        row["load_s"] = round(load_seconds(v), 3)

    base = rows[0]
    served = rows[2]
    result["rows"] = rows
    result["targets"] = {
        "served_accuracy_over_teacher": round(served["accuracy"] / base["accuracy"], 4),
        "served_p50_over_teacher_1t": round(served["p50_ms_1t"] / base["p50_ms_1t"], 4),
        "served_p50_over_teacher_2t": round(served["p50_ms_2t"] / base["p50_ms_2t"], 4),
        "served_size_over_teacher": round(served["size_mb"] / base["size_mb"], 4),
        "met": {"accuracy >= 99% of teacher": served["accuracy"] >= 0.99 * base["accuracy"],
                "p50 <= 1/3 of teacher (1 thread)": served["p50_ms_1t"] <= base["p50_ms_1t"] / 3,
                "p50 <= 1/3 of teacher (2 threads)": served["p50_ms_2t"] <= base["p50_ms_2t"] / 3,
                "size <= 1/4 of teacher": served["size_mb"] <= base["size_mb"] / 4},
    }
    return result


def render(results: dict[str, Any]) -> str:
    lines = [f"# Distillation and compression ({results['machine']})", "",
             f"Command: `{results['command']}`", ""]
    for ds in results["datasets"]:
        lines += [f"## {Path(ds['data']).name} ({Path(ds['test']).name}, {ds.get('n_test', '?')} messages)", ""]
        d = ds.get("distillation") or {}
        if d:
            lines.append(f"Student: teacher layers {d.get('student', {}).get('layers')}, {d.get('steps')} steps, "
                         f"{d.get('texts')}, {d.get('train_seconds')} s of training.")
            lines.append("")
        head = ["variant", "accuracy", "macro-F1", "agree w/ teacher", "ECE", "params (M)", "size MB",
                "p50 ms 1t", "p95 ms 1t", "p50 ms 2t", "p95 ms 2t", "msgs/s b64 2t", "load s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in ds["rows"]:
            lines.append("| " + " | ".join([
                r["variant"], f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['teacher_agreement']:.4f}",
                f"{r['ece']:.4f}", f"{r['params'] / 1e6:.1f}", f"{r['size_mb']:.1f}", f"{r['p50_ms_1t']:.2f}",
                f"{r['p95_ms_1t']:.2f}", f"{r['p50_ms_2t']:.2f}", f"{r['p95_ms_2t']:.2f}",
                f"{r['throughput_msgs_per_s_b64_2t']:.0f}", f"{r['load_s']:.2f}"]) + " |")
        t = ds["targets"]
        lines += ["", f"Served student vs teacher: accuracy x{t['served_accuracy_over_teacher']:.4f}, p50 "
                      f"x{t['served_p50_over_teacher_1t']:.3f} (1 thread) / x{t['served_p50_over_teacher_2t']:.3f} "
                      f"(2 threads), size x{t['served_size_over_teacher']:.3f}. Targets met: "
                      + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in t["met"].items()) + "."]
        if ds.get("layer_study"):
            lines += ["", "Layer selection (short runs, same budget, no augmentation; chosen on validation, "
                          "test shown for reference):", "",
                      "| selection | teacher layers | steps | val accuracy | val macro-F1 | val agreement | test accuracy |",
                      "|---|---|---|---|---|---|---|"]
            for r in ds["layer_study"]:
                lines.append(f"| {r['selection']} | {r['layers']} | {r['steps']} | {r['validation_accuracy']:.4f} | "
                             f"{r['validation_macro_f1']:.4f} | {r['validation_teacher_agreement']:.4f} | "
                             f"{r.get('test_accuracy') or float('nan'):.4f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/distill_bench.py",
                                description="Teacher vs student vs compressed student vs frozen encoder + LogReg.")
    p.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    p.add_argument("--teacher", action="append", required=True,
                   help="teacher folder for each --data, in order ('train' to train one)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "attendant-distill-bench"),
                   help="work folder (students, served folders, runs)")
    p.add_argument("--set", action="append", default=[], metavar="distill.KEY=VALUE", help="config override, e.g. distill.student_layers=4")
    p.add_argument("--layer-study", type=int, default=0, metavar="STEPS",
                   help="first compare layer selections with short runs of STEPS steps (first --data only)")
    p.add_argument("--reuse", action="store_true", help="reuse the student in the work folder if there is one")
    p.add_argument("--no-frozen", action="store_true", help="skip the frozen encoder + LogReg baseline")
    p.add_argument("--latency-messages", type=int, default=300)
    p.add_argument("--throughput-messages", type=int, default=640)
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if len(args.teacher) != len(args.data):
        raise ConfigError("give one --teacher per --data (a folder, or 'train')")
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
               "command": "python benchmarks/distill_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "datasets": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, (data, teacher) in enumerate(zip(args.data, args.teacher)):
        results["datasets"].append(bench_dataset(Path(data).resolve(), teacher, args, first=i == 0))
        # written after each dataset, so a long run leaves its first table behind
        (out / "distill.json").write_text(json.dumps(results, indent=2, default=str))
        (out / "distill.md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
