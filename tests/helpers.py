"""Helpers shared by the tests (one place): tiny deployments, a tiny teacher, the demo config in a
temporary folder, a free port, a real `accelerate launch`, Debian's Chromium and a REST API client.
Fixtures live in tests/conftest.py (and tests/webapp/conftest.py)."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import torch
import yaml

from core.config import PROJECT_ROOT, Config, FlowsConfig, load_config
from core.processes import stop
from runtime.model import SupportModel
from service.nlu import NLUResult

ROOT = PROJECT_ROOT
DEMO_ORDERS = PROJECT_ROOT / "data" / "demo" / "orders.jsonl"
# The demo orders' "today" (configs/demo.yaml), so return windows don't drift.
FLOW_POLICY = FlowsConfig(reference_date=dt.date(2026, 11, 29))


class Clock:
    """A clock the test moves by hand (FlowRunner(clock=...)): expiries without sleeping."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def nlu(intent: str = "none", confidence: float = 0.0) -> NLUResult:
    """What the NLU would say, without a model: flows only read the intent and its confidence."""
    return NLUResult(intent, confidence, [(intent, confidence)], np.zeros(4, dtype=np.float32))


def free_port() -> int:
    # Several people run tests on this machine: never rely on a default port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(args: list[str], processes: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """A real `accelerate launch` of `args` (e.g. ["-m", "training.train", ...]) on N CPU processes (gloo)."""
    launch = ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@contextmanager
def running_app(config: Path, log_path: Path, *args: str, env: dict[str, str] | None = None,
                timeout: float = 900) -> Iterator[str]:
    """`python app.py --config CONFIG ARGS` for real on a free port; yields its base URL once the page
    answers, and stops it afterwards. A start that fails or times out fails the test with the log."""
    import pytest

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--config", str(config), "--port", str(port), *args],
                                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"app.py did not start in time:\n{log_path.read_text()[-3000:]}")
            time.sleep(2)
        yield url
    finally:
        stop(proc)


def write_demo_config(folder: Path, **overrides: str) -> Path:
    """configs/demo.yaml with absolute data paths and artifacts under `folder`."""
    text = (PROJECT_ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8")
    text = text.replace("../data/", f"{PROJECT_ROOT}/data/")
    text = text.replace("artifacts_dir: ../artifacts/demo", f"artifacts_dir: {folder / 'artifacts'}")
    for old, new in overrides.items():
        text = text.replace(old, new)
    path = folder / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def write_tiny_data(root: Path, intents: dict[str, list[str]], faq: list[dict]) -> None:
    """intents.jsonl, faq.jsonl and a one-product catalogue in `root`."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "intents.jsonl", "w", encoding="utf-8") as fh:
        for intent, texts in intents.items():
            for t in texts:
                fh.write(json.dumps({"text": t, "intent": intent}) + "\n")
    with open(root / "faq.jsonl", "w", encoding="utf-8") as fh:
        for r in faq:
            fh.write(json.dumps(r) + "\n")
    (root / "products.jsonl").write_text(json.dumps({"id": "p1", "title": "Lamp", "category": "home", "price": 10}) + "\n")


# ---------------------------------------------------------------------- a tiny project for training.train

TRAIN_INTENTS = {
    "greeting": ["hello there", "hi", "good morning", "hey you", "hello friend", "hiya", "morning!", "hey hey"],
    "order_status": ["where is my order", "track my parcel", "has my order shipped", "order status please",
                     "when will my package arrive", "where is my package", "is my order on its way", "track order"],
    "refund": ["i want my money back", "refund please", "how do i get a refund", "return money to my card",
               "refund my purchase", "give me a refund", "money back please", "i need a refund"],
}
TRAIN_FAQ = [
    {"id": "f1", "question": "How long does shipping take?", "answer": "3-5 days.",
     "paraphrases": ["shipping time?", "how fast do you ship", "delivery duration"]},
    {"id": "f2", "question": "Can I return an item?", "answer": "Yes, within 30 days.",
     "paraphrases": ["return policy", "can i send it back", "how to return"]},
    {"id": "f3", "question": "Do you sell gift cards?", "answer": "Yes.",
     "paraphrases": ["gift card available?", "can i buy a voucher"]},
]


def make_project(root: Path, encoder_dir: Path, training: str = "") -> Path:
    """A tiny deployment: intents, FAQ, a product, and a config whose training section is `training`."""
    write_tiny_data(root, TRAIN_INTENTS, TRAIN_FAQ)
    config = root / "config.yaml"
    config.write_text(f"""name: tiny
data:
  intents: intents.jsonl
  faq: faq.jsonl
  products: products.jsonl
artifacts_dir: artifacts
encoder:
  name: {encoder_dir}
  max_length: 24
training:
  batch_size: 4
  eval_batch_size: 16
  learning_rate: 1.0e-3
  head_learning_rate: 1.0e-2
  val_fraction: 0.25
  contrastive_batch_size: 4
  log_every: 2
  tensorboard: false
{training}""", encoding="utf-8")
    return config


# ---------------------------------------------------------------------- a tiny project and teacher for distillation

DISTILL_INTENTS = {
    "greeting": ["hello there", "hi", "good morning", "hey you", "hello friend", "hiya", "morning!", "hey hey",
                 "hi there friend", "good evening"],
    "order_status": ["where is my order", "track my parcel", "has my order shipped", "order status please",
                     "when will my package arrive", "where is my package", "is my order on its way", "track order",
                     "my parcel is late", "package tracking"],
    "refund": ["i want my money back", "refund please", "how do i get a refund", "return money to my card",
               "refund my purchase", "give me a refund", "money back please", "i need a refund",
               "refund the order", "can i be refunded"],
}
DISTILL_FAQ = [
    {"id": "f1", "question": "How long does shipping take?", "answer": "3-5 days.",
     "paraphrases": ["shipping time?", "how fast do you ship", "delivery duration"]},
    {"id": "f2", "question": "Can I return an item?", "answer": "Yes, within 30 days.",
     "paraphrases": ["return policy", "can i send it back", "how to return"]},
]
# The teacher's held-out rows (saved in its folder): the student must validate on exactly these.
HELD_OUT = [{"text": texts[-1], "intent": intent} for intent, texts in DISTILL_INTENTS.items()] + \
    [{"text": texts[0], "intent": intent} for intent, texts in DISTILL_INTENTS.items()]
DISTILL = {"batch_size": 8, "eval_batch_size": 32, "learning_rate": 3e-3, "head_learning_rate": 1e-2,
           "log_every": 2, "tensorboard": False, "augment_copies": 1, "val_fraction": 0.2}


def write_project(root: Path, encoder_dir: Path, distill_section: dict | None = None, **sections: dict) -> Path:
    write_tiny_data(root, DISTILL_INTENTS, DISTILL_FAQ)
    config = {"name": "tiny", "data": {"intents": "intents.jsonl", "faq": "faq.jsonl", "products": "products.jsonl"},
              "artifacts_dir": "artifacts", "encoder": {"name": str(encoder_dir), "max_length": 24},
              "training": {"val_fraction": 0.2, "tensorboard": False},
              "distill": {**DISTILL, **(distill_section or {})}, **sections}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def make_teacher(encoder_dir: Path, out: Path, layers: int = 2) -> Path:
    """A teacher without a training run: the tiny encoder + a logistic-regression head on its embeddings.

    The random encoder's word vectors are redrawn with unit variance: with BERT's 0.02 every text
    pools to nearly the same vector (pairwise cosine 0.9), a degenerate space no trained encoder has.
    """
    labels = sorted(DISTILL_INTENTS)
    model = SupportModel.from_encoder(str(encoder_dir), labels, max_length=24)
    torch.manual_seed(0)
    with torch.no_grad():
        model.encoder.get_input_embeddings().weight.normal_(0, 1)
    texts = [t for ts in DISTILL_INTENTS.values() for t in ts]
    ids = np.array([labels.index(i) for i, ts in DISTILL_INTENTS.items() for _ in ts])
    _, emb = model.predict_logits(texts)
    model.fit_head(emb, ids, C=10.0)
    model.metadata = {"settings": {"seed": 42, "val_fraction": 0.2}, "intents_file": ""}
    return model.save_pretrained(out, validation=HELD_OUT)


# ------------------------------------------------------------------- Chromium (Debian's, never `playwright install`)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def skip_module_without_chromium() -> None:
    """Call at a browser test module's top: skips it where Chromium is missing, except in CI (which
    installs it, so a missing one fails there)."""
    import pytest

    if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it",
                    allow_module_level=True)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def operator_login(page: Any, url: str, password: str) -> None:
    """Open the operator console at `url`/operator/ in a Playwright page and log in."""
    page.goto(url + "/operator/", wait_until="domcontentloaded")
    page.locator("input[type=password]").wait_for(timeout=60_000)
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Log in").click()


# ------------------------------------------------------------------- the REST API as a channel uses it
API = "/api/v1"


def api_start(url: str, key: str, **headers: str) -> httpx.Response:
    """POST /conversations with an API key."""
    return httpx.post(url + API + "/conversations", headers={"Authorization": f"Bearer {key}", **headers})


def api_conversation(url: str, key: str) -> dict:
    """A new conversation: {"conversation_id", "token", ...}."""
    r = api_start(url, key)
    assert r.status_code == 201, r.text
    return r.json()


def api_send(url: str, conv: dict, text: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}{API}/conversations/{conv['conversation_id']}/messages", json={"text": text},
                      headers={"X-Conversation-Token": conv["token"], **headers}, timeout=120)


def api_history(url: str, conv: dict) -> httpx.Response:
    return httpx.get(f"{url}{API}/conversations/{conv['conversation_id']}/messages",
                     headers={"X-Conversation-Token": conv["token"]})


# ------------------------------------------------------------------- the model registry and the gate
REGISTRY_DIALOGS = [
    {"id": "d1", "turns": [{"user": "hello there", "expect": {"action": "small_talk"}}]},
    {"id": "d2", "turns": [{"user": "hi", "expect": {"action": "small_talk"}}]},
    {"id": "d3", "turns": [{"user": "good evening", "expect": {"action": "small_talk"}}]},
    {"id": "d4", "turns": [{"user": "where is my order", "expect": {"action": "order_status"}}]},
    {"id": "d5", "turns": [{"user": "track my parcel", "expect": {"action": "order_status"}}]},
    {"id": "d6", "turns": [{"user": "my parcel is late", "expect": {"action": "order_status"}}]},
]


def build_indexes_for(config: Config) -> None:
    """The FAQ and product indexes of `config`, with its own served encoder."""
    from retrieval.build import build_indexes
    from service.assembly import load_nlu

    build_indexes(config, embedder=load_nlu(config).embedder, show_progress=False)


def install_teacher(config: Config, encoder_dir: Path, *, broken: bool = False, note: str = "") -> None:
    """Put a (new) build in the artifacts folder's teacher/: the tiny teacher, its labels rotated when
    `broken`, `note` written into its metadata (another build of the same quality)."""
    teacher = config.layout.teacher
    shutil.rmtree(teacher, ignore_errors=True)
    make_teacher(encoder_dir, teacher)
    if broken:
        labels = json.loads((teacher / "labels.json").read_text())
        (teacher / "labels.json").write_text(json.dumps(labels[1:] + labels[:1]))
    if note:
        meta = json.loads((teacher / "attendant.json").read_text())
        (teacher / "attendant.json").write_text(json.dumps({**meta, "note": note}))


def registry_project(root: Path, encoder_dir: Path) -> Config:
    """A tiny deployment for the model registry and the gate: held-out dialogs, a built teacher and
    its indexes (nothing registered)."""
    path = write_project(root, encoder_dir)
    with open(root / "dialogs.jsonl", "w", encoding="utf-8") as fh:
        for d in REGISTRY_DIALOGS:
            fh.write(json.dumps(d) + "\n")
    raw = yaml.safe_load(path.read_text())
    raw["data"]["dialogs"] = "dialogs.jsonl"
    raw["gate"] = {"tolerance": 0.01}
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    install_teacher(config, encoder_dir)
    build_indexes_for(config)
    return config
