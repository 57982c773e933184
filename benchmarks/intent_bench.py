"""Intent-detection benchmark: the fine-tuned teacher against the cheap alternatives, on one split.

    python benchmarks/intent_bench.py --data ../shared/data/banking77
    python benchmarks/intent_bench.py --data ../shared/data/clinc150 --skip-throughput

DIR holds `train.jsonl`, and `test.jsonl` and/or `val.jsonl` in the intents format. The test set is
`test.jsonl` (or `val.jsonl` when there is no test file); the teacher's validation set is `val.jsonl`
when a separate test file exists, else a stratified split of the training file. Every method sees
the same training file and is scored on the same test file:

- TF-IDF (word 1-2-grams + character 2-5-grams) + LinearSVC;
- frozen default-encoder embeddings (mean pooled, L2-normalised) + LogisticRegression;
- the teacher: `accelerate launch -m training.train` from the default encoder (one process);
- throughput of the teacher's training loop, examples/s, on 1 process (all cores), 1 process with
  half the cores, and 2 processes (half the cores each): the data-parallel scaling on this machine.

Writes `benchmarks/results/intent_<name>.json` and `.md` (a markdown table), and prints the table.
Figures depend on the machine and on what else runs on it: the JSON records the cores, the
threads and the load average before and after each step.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import DEFAULT_CONFIG, DEFAULT_ENCODER  # noqa: E402
from training.data import load_intents  # noqa: E402
from training.metrics import classification_metrics  # noqa: E402

# The teacher recipe for a large intent set (about 10k examples, 77 intents): one pass over the data
# from a logistic-regression head, with same-intent pairs in every batch (in-batch contrastive) and a
# KL term towards the frozen-embedding regression (it keeps what the pretrained encoder knew).
# How it was chosen is in the README's training section.
TEACHER_RECIPE = {
    "epochs": 1.0,
    "batch_size": 32,
    "learning_rate": 2.0e-4,
    "head_learning_rate": 5.0e-3,
    "label_smoothing": 0.1,
    "warmup_ratio": 0.1,
    "ema_decay": 0.99,
    "freeze_embeddings": True,
    "intent_pair_weight": 1.0,
    "contrastive_scale": 20.0,
    "anchor_weight": 1.0,
    "anchor_temperature": 2.0,
    "logreg_c": 10.0,
    "max_length": 64,
    "val_fraction": 0.05,
    "eval_every": 0,
    "early_stopping_patience": 0,
    "tensorboard": False,
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with train.jsonl and test.jsonl and/or val.jsonl")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="config whose encoder section is used")
    p.add_argument("--name", default=None, help="result name (default: the data folder's name)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    p.add_argument("--work", default=None, help="where models and logs go (default: a temporary folder)")
    p.add_argument("--set", action="append", default=[], metavar="training.KEY=VALUE", help="override the teacher recipe")
    p.add_argument("--throughput-steps", type=int, default=40, help="optimizer steps per throughput run")
    p.add_argument("--skip-teacher", action="store_true")
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    return p.parse_args()


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads_default": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "host": socket.gethostname()}


def load_split(data: Path):
    train = data / "train.jsonl"
    test = data / "test.jsonl" if (data / "test.jsonl").is_file() else data / "val.jsonl"
    if not train.is_file() or not test.is_file():
        raise SystemExit(f"error: {data} needs train.jsonl and test.jsonl or val.jsonl")
    val = data / "val.jsonl" if test.name == "test.jsonl" and (data / "val.jsonl").is_file() else None
    return train, val, test


def tfidf_svm(train, test) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    t0 = time.perf_counter()
    clf = make_pipeline(
        make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                   TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        LinearSVC(C=1.0))
    clf.fit(list(train["text"]), list(train["intent"]))
    fit = time.perf_counter() - t0
    pred = clf.predict(list(test["text"]))
    return score(pred, list(test["intent"])) | {"train_seconds": round(fit, 2)}


def frozen_logreg(train, test, config) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression

    from runtime.embedder import Embedder

    t0 = time.perf_counter()
    emb = Embedder(DEFAULT_ENCODER, max_length=64, batch_size=64)
    X = emb.encode(list(train["text"]))
    clf = LogisticRegression(C=10.0, max_iter=1000).fit(X, list(train["intent"]))
    fit = time.perf_counter() - t0
    pred = clf.predict(emb.encode(list(test["text"])))
    return score(pred, list(test["intent"])) | {"train_seconds": round(fit, 2), "threads": torch.get_num_threads()}


def score(pred, gold) -> dict:
    labels = sorted(set(gold) | set(pred))
    index = {k: i for i, k in enumerate(labels)}
    m = classification_metrics(np.array([index[p] for p in pred]), np.array([index[g] for g in gold]), len(labels))
    return {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4), "n_test": m["n"]}


def launch(num_processes: int, args: list[str], threads: int | None, log: Path) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd += ["--multi_gpu", "--main_process_port", str(port)]
    cmd += ["-m", "training.train", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        cmd[cmd.index("training.train") + 1:cmd.index("training.train") + 1] = ["--set", f"training.num_threads={threads}"]
    t0 = time.perf_counter()
    with log.open("w") as fh:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    return code, time.perf_counter() - t0


def recipe_args(recipe: dict) -> list[str]:
    return [f"--set=training.{k}={json.dumps(v)}" for k, v in recipe.items()]  # JSON is valid YAML


def main() -> int:
    a = parse_args()
    data = Path(a.data).resolve()
    name = a.name or data.name
    train_path, val_path, test_path = load_split(data)
    train, test = load_intents(train_path), load_intents(test_path)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix=f"intent_bench_{name}_"))
    work.mkdir(parents=True, exist_ok=True)
    out = {"data": str(data), "train_file": str(train_path), "validation_file": str(val_path) if val_path else None,
           "test_file": str(test_path), "n_train": len(train), "n_test": len(test),
           "n_intents": len(set(train["intent"])), "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "results": {}}

    def note_load(key: str) -> None:
        out["results"].setdefault(key, {})["load_average"] = [round(x, 2) for x in os.getloadavg()]

    if not a.skip_baselines:
        print("TF-IDF + LinearSVC ...", flush=True)
        out["results"]["tfidf_linearsvc"] = tfidf_svm(train, test)
        note_load("tfidf_linearsvc")
        print("frozen embeddings + LogisticRegression ...", flush=True)
        out["results"]["frozen_minilm_logreg"] = frozen_logreg(train, test, a.config)
        note_load("frozen_minilm_logreg")

    recipe = dict(TEACHER_RECIPE)
    for item in a.set:
        k, _, v = item.partition("=")
        recipe[k.strip().removeprefix("training.")] = yaml.safe_load(v)  # the same parsing as training.train --set
    common = ["--config", a.config, "--train-file", str(train_path), "--no-faq"]
    if not a.skip_teacher:
        print("teacher (1 process) ...", flush=True)
        args = common + ["--test-file", str(test_path), "--output-dir", str(work / "teacher"),
                         "--work-dir", str(work / "teacher_run")] + recipe_args(recipe)
        if val_path:
            args += ["--validation-file", str(val_path)]
        before = [round(x, 2) for x in os.getloadavg()]
        code, wall = launch(1, args, None, work / "teacher.log")
        if code:
            raise SystemExit(f"error: teacher training failed (exit {code}); see {work / 'teacher.log'}")
        r = json.loads((work / "teacher_run" / "results.json").read_text())
        out["results"]["teacher"] = {
            "accuracy": round(r["test"]["accuracy"], 4), "macro_f1": round(r["test"]["macro_f1"], 4),
            "n_test": r["test"]["n"], "validation": r["validation"], "chosen_weights": r["chosen_weights"],
            "temperature": round(r["temperature"], 4), "steps": r["steps"], "epochs": r["epochs"],
            "train_seconds": r["wall_seconds"], "loop_seconds": r["train_seconds"],
            "head_init_seconds": r["head_init_seconds"], "command_seconds": round(wall, 1),
            "examples_per_second": r["train_examples_per_second"], "threads": r["threads_per_process"],
            "recipe": recipe, "load_average_before": before,
            "command": "accelerate launch -m training.train " + " ".join(args),
        }
        note_load("teacher")

    if not a.skip_throughput:
        cores = os.cpu_count() or 1
        half = max(1, cores // 2)
        # Efficiency compares 2 processes with twice one process that has the same threads each.
        runs = {f"1 process, {cores} threads": (1, cores), f"1 process, {half} thread(s)": (1, half),
                f"2 processes, {half} thread(s) each": (2, half)}
        tp = {}
        for label, (n, threads) in runs.items():
            print(f"throughput: {label} ...", flush=True)
            key = {0: "p1_tall", 1: "p1_t1", 2: "p2"}[list(runs).index(label)]
            args = common + ["--output-dir", str(work / f"tp_{key}"), "--work-dir", str(work / f"tp_{key}_run"),
                             "--max-steps", str(a.throughput_steps)]
            # The loop alone: no regression head (and so no anchor), no validation, no checkpoints.
            args += recipe_args({**recipe, "head_init": "random", "anchor_weight": 0.0, "val_fraction": 0.0,
                                 "ema_decay": 0.0, "checkpoint_every": 10 ** 6})
            before = [round(x, 2) for x in os.getloadavg()]
            code, wall = launch(n, args, threads, work / f"tp_{key}.log")
            if code:
                raise SystemExit(f"error: throughput run '{label}' failed (exit {code}); see {work / f'tp_{key}.log'}")
            r = json.loads((work / f"tp_{key}_run" / "results.json").read_text())
            tp[key] = {"label": label, "processes": n, "threads_per_process": r["threads_per_process"],
                       "examples_per_second": r["train_examples_per_second"], "steps": r["steps"],
                       "effective_batch_size": r["effective_batch_size"], "loop_seconds": r["train_seconds"],
                       "load_average_before": before, "load_average_after": [round(x, 2) for x in os.getloadavg()]}
        one_thread = tp["p1_t1"]["examples_per_second"]
        tp["scaling_efficiency_2proc_vs_2x1thread"] = round(tp["p2"]["examples_per_second"] / (2 * one_thread), 3)
        tp["speedup_2proc_vs_1proc_all_threads"] = round(
            tp["p2"]["examples_per_second"] / tp["p1_tall"]["examples_per_second"], 3)
        out["throughput"] = tp

    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = out_dir / f"intent_{name}.json"
    if previous.is_file() and (a.skip_baselines or a.skip_teacher or a.skip_throughput):
        # A partial run keeps the parts it skipped from the previous result file.
        old = json.loads(previous.read_text())
        for key, value in old.get("results", {}).items():
            out["results"].setdefault(key, value)
        if "throughput" not in out and "throughput" in old:
            out["throughput"] = old["throughput"]
    (out_dir / f"intent_{name}.json").write_text(json.dumps(out, indent=2))
    table = markdown(name, out)
    (out_dir / f"intent_{name}.md").write_text(table)
    print(table)
    return 0


def markdown(name: str, out: dict) -> str:
    rows = [f"### {name}: {out['n_train']} training / {out['n_test']} test examples, {out['n_intents']} intents",
            "", "| method | test accuracy | macro-F1 | training wall time (s) |", "|---|---|---|---|"]
    labels = {"tfidf_linearsvc": "TF-IDF + LinearSVC", "frozen_minilm_logreg": "frozen MiniLM-L6 embeddings + LogisticRegression",
              "teacher": "teacher: fine-tuned MiniLM-L6 (training.train, 1 process)"}
    for key, label in labels.items():
        r = out["results"].get(key)
        if r and "accuracy" in r:
            rows.append(f"| {label} | {100 * r['accuracy']:.2f} | {100 * r['macro_f1']:.2f} | {r['train_seconds']:.0f} |")
    tp = out.get("throughput")
    if tp:
        rows += ["", "| teacher training loop | threads / process | examples/s |", "|---|---|---|"]
        for key in ("p1_tall", "p1_t1", "p2"):
            rows.append(f"| {tp[key]['label']} | {tp[key]['threads_per_process']} | {tp[key]['examples_per_second']:.1f} |")
        rows.append("")
        rows.append(f"Scaling efficiency, 2 processes against twice one process with the same threads: "
                    f"{100 * tp['scaling_efficiency_2proc_vs_2x1thread']:.0f}%; speed-up against one process using all "
                    f"cores: {tp['speedup_2proc_vs_1proc_all_threads']:.2f}x.")
    rows.append("")
    rows.append(f"Machine: {out['machine']['cpu_count']} cores ({out['machine']['platform']}); load averages are in the JSON.")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
