"""Load: simulated customers over real HTTP against the REST API, on one and two replicas.

    python benchmarks/load_bench.py                       # the full run (about 15 minutes)
    python benchmarks/load_bench.py --quick               # a few seconds per scenario (the smoke test)
    python benchmarks/load_bench.py --replicas 2 --scenarios think-time --customers 2000
    python benchmarks/load_bench.py --url http://127.0.0.1:7860 --config CONFIG   # a server already running

The script starts the app itself as real processes (`python app.py --config C --port P --set ...`),
waits for `GET /api/v1/health`, makes an API key with the real CLI (`python -m webapp.apikeys`) and
then plays customers with asyncio and one shared `httpx.AsyncClient`:

- deployments: 1 replica on SQLite (the default store), 1 replica on PostgreSQL, 2 replicas sharing
  one PostgreSQL (`--replicas`, `--backends`). PostgreSQL is a private server started here with
  `pgserver` (a fresh database per deployment). With 2 replicas the client is the load balancer: it
  sends requests round-robin to the replicas (the REST API keeps nothing in a process, so a
  conversation's messages may go to either).
- scenarios: `back-to-back`, N clients (`--clients`, default 1,10,50) each sending its next message
  as soon as the reply arrives, for `--duration` seconds after `--warmup`; `think-time`, many
  concurrent customers (`--customers`, default 1000) each waiting a think time drawn uniformly from
  [0.6, 1.4] x `--think` (default 5 s: 3-7 s) before every message, for `--think-duration` seconds
  after a ramp-up in which the customers arrive spread over one think time.
- a customer plays one of the conversations in CONVERSATIONS (FAQ questions, product searches,
  small talk, the order-status flow with an order number and its email from the config's orders,
  a return, an out-of-scope question, a handoff), each on a new conversation
  (`POST /api/v1/conversations`), then the next.

The app's per-client, per-key and per-conversation rate limits are raised (LIMITS, also stated in
the output) so that they don't throttle the benchmark: every simulated customer talks from 127.0.0.1.

Measured over the requests completed in the window after the warm-up: turns/s (message requests
answered 2xx), latency p50/p95/p99 of the message requests, new TCP connections, errors (non-2xx by status, exceptions by type; conversation
starts included), the CPU of the server processes (% of one core, summed over replicas), of the
PostgreSQL processes, of this client process (it runs on the same cores), and how busy the whole
machine was (other people's work included). Prints a markdown table and writes `--out`
(benchmarks/results/load_bench.json).

Artifacts: without `--config`, the demo config is copied to `--work` (default attendant_load_bench in
the temporary folder) with its data paths made absolute and its first-run build limited to
`--build-steps` (default: index, the frozen default encoder: training and distillation on the demo
pack take many minutes, and this measures serving). The build happens once and is reused. With
`--config`, the app uses (and on its first run builds) whatever that config says. Not part of CI.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import shown_path  # noqa: E402
from core.processes import stop  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEMO_ORDERS = ROOT / "data" / "demo" / "orders.jsonl"
API = "/api/v1"
# Raised so the limits don't throttle the benchmark (every customer here comes from one address).
LIMITS = {"server.client_rate_per_minute": 100_000_000, "server.key_rate_per_minute": 100_000_000,
          "server.conversation_rate_per_minute": 1_000_000}
GOALS = {"back_to_back": {"clients": 50, "min_turns_per_s": 200, "max_p95_ms": 250, "max_errors": 0},
         "think_time": {"customers": 1000, "think_s": 5, "max_p95_ms": 300, "max_errors": 0}}
GOALS_TEXT = ("the project's goals: 50 back-to-back clients >= 200 turns/s with p95 <= 250 ms and 0 errors; "
              "1,000 customers with 5 s think time at p95 <= 300 ms (and 0 errors)")

# Conversations in the demo pack's style (not its held-out dialogs). {order} / {email}: a real demo order.
CONVERSATIONS: list[list[str]] = [
    ["hi there", "how much does shipping cost?", "great, thanks, bye"],
    ["do you ship to Canada?", "how long does standard delivery take?"],
    ["can I return something I already opened?", "how do refunds work if I paid with a gift card?", "thanks!"],
    ["I'm looking for noise cancelling headphones under $300", "anything cheaper?", "ok thanks"],
    ["need a cheap TV for my bedroom", "what about a big one for the living room?"],
    ["where is my order?", "{order}", "{email}", "thank you"],
    ["has {order} shipped yet? my email is {email}", "ok great, thanks"],
    ["hello", "what payment methods do you accept?", "can I pay in instalments?"],
    ["good morning", "do you have a gaming laptop?", "which one is the lightest?"],
    ["is there a warranty on laptops?", "how do I make a warranty claim?"],
    ["do I need an account to buy something?", "how do I reset my password?"],
    ["I want an air fryer for a small kitchen", "and a toaster to go with it"],
    ["can you check my order status", "it's {order}", "{email}"],
    ["what are your support hours?", "ok thanks"],
    ["I'd like to return my order", "{order}", "{email}"],
    ["what's the weather like today?", "ok, never mind"],
    ["looking for a gift for my dad who likes cooking, around $50", "something under $30?"],
    ["do you price match?", "what if the price drops right after I buy?"],
    ["how do I track my parcel?", "{order}", "{email}", "cheers"],
    ["can someone deliver and install my washing machine?", "will you take the old one away?"],
    ["this is useless, I want to talk to a real person"],
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def read_orders(path: Path | None) -> list[tuple[str, str]]:
    rows = []
    for line in open(path or DEMO_ORDERS, encoding="utf-8"):
        if line.strip():
            r = json.loads(line)
            rows.append((r["order_id"], r["email"]))
    return rows


# ------------------------------------------------------------------------------------- servers
@dataclass
class Deployment:
    name: str
    backend: str                      # sqlite | postgresql
    replicas: int
    urls: list[str]
    pids: list[int]
    db_pid: int | None = None         # the PostgreSQL postmaster (its backends are its children)
    key: str = ""


def write_work_config(work: Path, build_steps: str) -> Path:
    """configs/demo.yaml with absolute data paths, artifacts under `work` and the first-run build
    limited to `build_steps` (as tests/helpers.write_demo_config does)."""
    text = (ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8")
    text = text.replace("../data/", f"{ROOT}/data/")
    text = text.replace("artifacts_dir: ../artifacts/demo", f"artifacts_dir: {work / 'artifacts'}")
    steps = ", ".join(s.strip() for s in build_steps.split(",") if s.strip())
    text = text.replace("steps: [train, distill, compress, index, evaluate]", f"steps: [{steps}]")
    path = work / "demo.yaml"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


def sets(pairs: dict[str, Any]) -> list[str]:
    return [a for k, v in pairs.items() for a in ("--set", f"{k}={v}")]


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            r = httpx.get(url + API + "/health", timeout=5)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            raise RuntimeError(f"app.py did not answer {url}{API}/health in {timeout:.0f} s:\n"
                               f"{log_path.read_text()[-3000:]}")
        time.sleep(1)


@contextmanager
def app_process(config: Path, log_path: Path, extra: list[str], timeout: float = 1200) -> Iterator[tuple[str, int, dict]]:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "app.py", "--config", str(config), "--port", str(port), *extra]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        health = wait_healthy(url, proc, log_path, timeout)
        yield url, proc.pid, health
    finally:
        stop(proc)


def create_key(config: Path, extra: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "webapp.apikeys", "--config", str(config), *extra,
                           "create", f"load-bench-{uuid.uuid4().hex[:6]}", "--rate-per-minute", "100000000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"python -m webapp.apikeys create failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


class Postgres:
    """One private PostgreSQL (pgserver) for the benchmark; a fresh database per deployment."""

    def __init__(self):
        import pgserver

        self.dir = Path(tempfile.mkdtemp(prefix="lbpg"))   # short: the Unix socket lives here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.server = pgserver.get_server(self.dir / "data", cleanup_mode="stop")

    def new_database(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        self.server.psql(f"CREATE DATABASE {name};")
        return self.server.get_uri(name)

    def pid(self) -> int | None:
        try:
            return self.server.get_pid()
        except Exception:
            return None

    def close(self) -> None:
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def deploy(config: Path, backend: str, replicas: int, work: Path, pg: Postgres | None,
           fresh_sqlite: bool, app_sets: Sequence[str] = ()) -> Iterator[Deployment]:
    """`replicas` app processes on `backend`, healthy, with an API key."""
    extra = sets(LIMITS) + [a for kv in app_sets for a in ("--set", kv)]
    name = f"{replicas} replica{'s' if replicas > 1 else ''}, {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}"
    db_pid = None
    if backend == "postgresql":
        assert pg is not None
        extra += ["--set", f"store.url={pg.new_database()}"]
        db_pid = pg.pid()
    elif fresh_sqlite:
        from core.config import load_config

        store = load_config(str(config)).layout.store
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(store) + suffix).unlink(missing_ok=True)
    with ExitStack() as stack:
        urls, pids = [], []
        for i in range(replicas):
            # The first replica builds what is missing; the others start on the built artifacts.
            url, pid, health = stack.enter_context(app_process(
                config, work / "logs" / f"{backend}-{replicas}r-{i}.log", extra + (["--no-build"] if i else [])))
            if health.get("store") != backend:
                raise RuntimeError(f"the app serves a {health.get('store')!r} store, not {backend!r} "
                                   f"(is store.url honoured?)")
            urls.append(url)
            pids.append(pid)
        key = create_key(config, [a for kv in extra if kv.startswith("store.url=") for a in ("--set", kv)])
        yield Deployment(name, backend, replicas, urls, pids, db_pid, key)


# ------------------------------------------------------------------------------------ customers
@dataclass
class Sample:
    kind: str          # "message" | "start"
    start: float
    end: float
    error: str | None  # None: 2xx
    action: str | None = None


@dataclass
class Run:
    deployment: Deployment
    orders: list[tuple[str, str]]
    think: float | None          # mean think time (s); None: back-to-back
    seed: int
    client: httpx.AsyncClient | None = None
    samples: list[Sample] = field(default_factory=list)
    stopped: bool = False
    connects: list[float] = field(default_factory=list)   # when each new TCP connection was opened
    _rr: int = 0

    async def trace(self, event: str, info: dict) -> None:
        if event == "connection.connect_tcp.complete":
            self.connects.append(time.perf_counter())

    def next_url(self) -> str:
        urls = self.deployment.urls
        self._rr += 1
        return urls[self._rr % len(urls)]

    async def request(self, kind: str, path: str, headers: dict[str, str], body: dict | None) -> dict | None:
        t0 = time.perf_counter()
        error, data = None, None
        try:
            r = await self.client.post(self.next_url() + path, headers=headers, json=body,
                                       extensions={"trace": self.trace})
            if 200 <= r.status_code < 300:
                data = r.json()
            else:
                try:
                    code = r.json()["error"]["code"]
                except Exception:
                    code = ""
                error = f"http_{r.status_code}" + (f" {code}" if code else "")
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # timeouts, refused or reset connections, bad JSON
            error = type(exc).__name__
        action = data.get("action") if kind == "message" and isinstance(data, dict) else None
        self.samples.append(Sample(kind, t0, time.perf_counter(), error, action))
        return data

    async def think_pause(self, rng: random.Random) -> None:
        if self.think:
            await asyncio.sleep(rng.uniform(0.6, 1.4) * self.think)

    async def customer(self, i: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + i)
        if self.think:   # arrivals spread over one think time
            await asyncio.sleep(rng.uniform(0, 1.4 * self.think))
        while not self.stopped:
            order, email = rng.choice(self.orders)
            script = [m.format(order=order, email=email) for m in rng.choice(CONVERSATIONS)]
            conv = await self.request("start", API + "/conversations",
                                      {"Authorization": f"Bearer {self.deployment.key}"}, None)
            if not conv:
                await asyncio.sleep(1.0)     # no tight loop on errors
                continue
            headers = {"X-Conversation-Token": conv["token"]}
            path = f"{API}/conversations/{conv['conversation_id']}/messages"
            for text in script:
                await self.think_pause(rng)
                if self.stopped:
                    return
                if await self.request("message", path, headers, {"text": text}) is None:
                    break


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class ProcessTreeCpu:
    """CPU seconds of a process and its children (PostgreSQL: the postmaster and its backends),
    sampled often so that a backend that exits (a pool's overflow connection) still counts up to
    its last sample; `since(mark)` is the CPU used after `mark`."""

    def __init__(self, pid: int | None):
        self.pid, self.last = pid, {}

    def sample(self) -> None:
        if self.pid is None:
            return
        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return
        for q in procs:
            try:
                t = q.cpu_times()
                self.last[q.pid] = t.user + t.system
            except psutil.Error:
                pass

    def mark(self) -> dict[int, float]:
        self.sample()
        return dict(self.last)

    def since(self, mark: dict[int, float]) -> float:
        self.sample()
        return sum(v - mark.get(pid, 0.0) for pid, v in self.last.items())


def snapshot(dep: Deployment) -> dict[str, float]:
    me = psutil.Process().cpu_times()
    machine = psutil.cpu_times()
    return {"t": time.perf_counter(), "server": cpu_seconds(dep.pids), "client": me.user + me.system,
            "machine_busy": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)}


async def sample_every(tracker: ProcessTreeCpu, seconds: float) -> None:
    while True:
        tracker.sample()
        await asyncio.sleep(seconds)


async def play(dep: Deployment, orders: list[tuple[str, str]], n: int, think: float | None,
               warmup: float, duration: float, seed: int) -> dict[str, Any]:
    run = Run(dep, orders, think, seed)
    # Idle connections are dropped after 4 s, before uvicorn's 5 s keep-alive timeout closes them
    # (equal timeouts race: a request sent on a connection the server is closing fails), as a load
    # balancer's idle timeout should be shorter than its backends'.
    limits = httpx.Limits(max_connections=n + 16, max_keepalive_connections=n + 16, keepalive_expiry=4.0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as client:
        run.client = client
        db = ProcessTreeCpu(dep.db_pid)
        tasks = [asyncio.create_task(run.customer(i)) for i in range(n)]
        tasks.append(asyncio.create_task(sample_every(db, 0.5)))
        await asyncio.sleep(warmup)
        before, db_mark = snapshot(dep), db.mark()
        before["db"] = 0.0
        await asyncio.sleep(duration)
        after = snapshot(dep)
        after["db"] = db.since(db_mark)
        run.stopped = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    m = measure(run.samples, before, after)
    m["connections_opened"] = sum(1 for t in run.connects if before["t"] <= t <= after["t"])
    return m


def measure(samples: list[Sample], before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    t0, t1 = before["t"], after["t"]
    # Requests completed in the window (those started in the warm-up included): under saturation
    # latencies run to many seconds, and counting only requests that also started in the window
    # would leave out the slow ones near its end and undercount turns/s.
    window = [s for s in samples if t0 <= s.end <= t1]
    wall = t1 - t0
    ok = sorted((s.end - s.start) * 1000 for s in window if s.kind == "message" and s.error is None)
    errors: dict[str, int] = {}
    actions: dict[str, int] = {}
    for s in window:
        if s.error:
            key = f"{s.kind}: {s.error}"
            errors[key] = errors.get(key, 0) + 1
        elif s.action:
            actions[s.action] = actions.get(s.action, 0) + 1
    cores = psutil.cpu_count() or 1

    def pct(k: str) -> float:
        return round(100 * (after[k] - before[k]) / wall, 1)

    return {"window_s": round(wall, 2), "turns": len(ok), "turns_per_s": round(len(ok) / wall, 1),
            "conversations_started": sum(1 for s in window if s.kind == "start" and s.error is None),
            "latency_ms": {"p50": _r(percentile(ok, 50)), "p95": _r(percentile(ok, 95)),
                           "p99": _r(percentile(ok, 99)), "mean": _r(sum(ok) / len(ok) if ok else None),
                           "max": _r(ok[-1] if ok else None)},
            "errors": dict(sorted(errors.items())), "error_count": sum(errors.values()),
            "server_cpu_pct": pct("server"), "db_cpu_pct": pct("db"), "client_cpu_pct": pct("client"),
            "machine_busy_pct": pct("machine_busy"), "machine_cores": cores,
            "actions": dict(sorted(actions.items(), key=lambda kv: -kv[1]))}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def goal_verdict(scenario: str, n: int, think: float | None, m: dict[str, Any]) -> str | None:
    p95 = m["latency_ms"]["p95"]
    if scenario == "back-to-back" and n == GOALS["back_to_back"]["clients"]:
        g = GOALS["back_to_back"]
        ok = (m["turns_per_s"] >= g["min_turns_per_s"] and p95 is not None and p95 <= g["max_p95_ms"]
              and m["error_count"] <= g["max_errors"])
        return "met" if ok else "missed"
    if scenario == "think-time" and n == GOALS["think_time"]["customers"] and think == GOALS["think_time"]["think_s"]:
        g = GOALS["think_time"]
        ok = p95 is not None and p95 <= g["max_p95_ms"] and m["error_count"] <= g["max_errors"]
        return "met" if ok else "missed"
    return None


# ------------------------------------------------------------------------------------- the run
def bench_deployment(dep: Deployment, args: argparse.Namespace, orders: list[tuple[str, str]]) -> list[dict]:
    rows = []
    plan = []
    if "back-to-back" in args.scenarios:
        plan += [("back-to-back", n, None, args.warmup, args.duration) for n in args.clients]
    if "think-time" in args.scenarios:
        plan.append(("think-time", args.customers, args.think, args.think_warmup, args.think_duration))
    for scenario, n, think, warmup, duration in plan:
        label = f"{n} clients back-to-back" if think is None else f"{n} customers, {think:g} s think time"
        log(f"{dep.name}: {label} ({warmup:g} s warm-up + {duration:g} s)")
        m = asyncio.run(play(dep, orders, n, think, warmup, duration, args.seed))
        row = {"deployment": dep.name, "backend": dep.backend, "replicas": dep.replicas, "scenario": scenario,
               "clients": n, "think_s": think, "warmup_s": warmup, **m}
        row["goal"] = goal_verdict(scenario, n, think, m)
        rows.append(row)
        log(f"  {m['turns_per_s']} turns/s, p50/p95/p99 {m['latency_ms']['p50']}/{m['latency_ms']['p95']}/"
            f"{m['latency_ms']['p99']} ms, errors {m['error_count']}, server CPU {m['server_cpu_pct']}%, "
            f"client CPU {m['client_cpu_pct']}%")
        time.sleep(args.pause)   # let cancelled requests drain before the next scenario
    return rows


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(), "processor": platform.processor()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info["lscpu"] = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in lscpu.splitlines() if ":" in ln)
                         if k.strip() in ("Architecture", "CPU(s)", "Model name", "Thread(s) per core",
                                          "Core(s) per socket", "Socket(s)", "CPU max MHz", "Hypervisor vendor")}
    except (OSError, subprocess.SubprocessError):
        pass
    info["loadavg_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Load benchmark: REST API over real HTTP ({results['machine']['nproc']} cores, shared; "
             f"client and servers on the same machine). Goals ({GOALS_TEXT}).",
             f"Rate limits raised for the benchmark: {', '.join(f'{k}={v:,}' for k, v in LIMITS.items())}.",
             "",
             "| deployment | scenario | turns/s | p50 ms | p95 ms | p99 ms | errors | server CPU % | DB CPU % "
             "| client CPU % | machine busy % | goal |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in results["runs"]:
        lat = r["latency_ms"]
        scen = (f"{r['clients']} back-to-back" if r["scenario"] == "back-to-back"
                else f"{r['clients']:,} customers, {r['think_s']:g} s think")
        errs = str(r["error_count"]) if not r["errors"] else \
            f"{r['error_count']} ({'; '.join(f'{k} x{v}' for k, v in r['errors'].items())})"
        fmt = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
        db = "-" if r["backend"] == "sqlite" else f"{r['db_cpu_pct']:.0f}"
        lines.append(f"| {r['deployment']} | {scen} | {r['turns_per_s']:,.1f} | {fmt(lat['p50'])} | {fmt(lat['p95'])} "
                     f"| {fmt(lat['p99'])} | {errs} | {r['server_cpu_pct']:.0f} | "
                     f"{db} "
                     f"| {r['client_cpu_pct']:.0f} | {r['machine_busy_pct']:.0f} | {r['goal'] or ''} |")
    for f in results.get("failures", []):
        lines.append(f"\n**{f['deployment']} failed:** {f['error'].splitlines()[0]}")
    lines.append("")
    lines.append("CPU: % of one core over the measured window (server: the app processes summed; DB: the "
                 "PostgreSQL processes; client: this script; machine busy: all cores, everyone's work included, "
                 f"out of {results['machine']['nproc'] * 100}%).")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/load_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml copied to --work)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "attendant_load_bench"),
                   help="folder for the demo config copy, its artifacts and the app logs (reused between runs)")
    p.add_argument("--build-steps", default="index",
                   help="the first-run build steps of the demo copy (default: index; 'train,distill,compress,index' "
                        "builds the distilled model, many minutes); ignored with --config")
    p.add_argument("--url", default=None,
                   help="comma-separated base URLs of replicas already running (needs --config for the API key; "
                        "server CPU is read from the process listening on each port when visible)")
    p.add_argument("--app-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="another --set for the app processes (repeatable), e.g. server.workers_threads=4")
    p.add_argument("--store-url", default=None, help="with --url: the store.url those servers use (for the key CLI)")
    p.add_argument("--replicas", default="1,2", help="replica counts (default 1,2; 2 replicas run on PostgreSQL only)")
    p.add_argument("--backends", default="sqlite,postgresql", help="stores for 1 replica (default sqlite,postgresql)")
    p.add_argument("--scenarios", default="back-to-back,think-time")
    p.add_argument("--clients", default="1,10,50", help="back-to-back client counts")
    p.add_argument("--duration", type=float, default=20.0, help="back-to-back measured seconds per client count")
    p.add_argument("--warmup", type=float, default=4.0, help="back-to-back warm-up seconds")
    p.add_argument("--customers", type=int, default=1000, help="think-time: concurrent customers")
    p.add_argument("--think", type=float, default=5.0, help="think-time: mean think time in seconds (uniform 0.6-1.4x)")
    p.add_argument("--think-duration", type=float, default=40.0, help="think-time: measured seconds")
    p.add_argument("--think-warmup", type=float, default=None, help="think-time: ramp-up seconds (default 2x --think)")
    p.add_argument("--pause", type=float, default=2.0, help="seconds between scenarios")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 1 and 4 clients for 3 s, 20 customers with 0.5 s think time for 4 s")
    p.add_argument("--out", default=str(RESULTS / "load_bench.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.warmup, args.pause = "1,4", 3.0, 1.0, 0.5
        args.customers, args.think, args.think_duration = 20, 0.5, 4.0
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = set(args.scenarios) - {"back-to-back", "think-time"}
    if bad:
        p.error(f"unknown scenario(s) {', '.join(sorted(bad))}; choose back-to-back, think-time")
    args.clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    args.replicas = [int(r) for r in args.replicas.split(",") if r.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(args.backends) - {"sqlite", "postgresql"} or set(args.replicas) - {1, 2}:
        p.error("--backends: sqlite,postgresql; --replicas: 1,2")
    if args.think_warmup is None:
        args.think_warmup = 2 * args.think
    if args.url and not args.config:
        p.error("--url needs --config (the deployment's config, for the API key CLI)")
    return args


def listening_pid(url: str) -> int | None:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return c.pid
    except (psutil.Error, OSError):
        pass
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    own_config = args.config is None
    config = Path(args.config).resolve() if args.config else write_work_config(work, args.build_steps)
    from core.config import load_config

    orders_path = load_config(str(config)).data.orders
    orders = read_orders(Path(orders_path) if orders_path else None)
    results: dict[str, Any] = {
        "command": " ".join(["python benchmarks/load_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(), "config": shown_path(config),
        "build_steps": args.build_steps if own_config else "as the config says",
        "limits_raised": LIMITS, "app_sets": args.app_set, "goals": GOALS, "goals_text": GOALS_TEXT,
        "client": f"asyncio + one httpx.AsyncClient {httpx.__version__}, in this process",
        "conversations": len(CONVERSATIONS), "runs": [], "failures": []}
    started = time.perf_counter()
    if args.url:
        urls = [u.strip().rstrip("/") for u in args.url.split(",") if u.strip()]
        backend = httpx.get(urls[0] + API + "/health", timeout=10).json().get("store", "sqlite")
        extra = ["--set", f"store.url={args.store_url}"] if args.store_url else []
        pids = [pid for pid in (listening_pid(u) for u in urls) if pid]
        dep = Deployment(f"{len(urls)} replica{'s' if len(urls) > 1 else ''}, "
                         f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL'} (--url)",
                         backend, len(urls), urls, pids, key=create_key(config, extra))
        results["runs"] += bench_deployment(dep, args, orders)
    else:
        plan = [(b, 1) for b in args.backends if 1 in args.replicas]
        plan += [("postgresql", 2)] if 2 in args.replicas else []
        pg = None
        try:
            for backend, replicas in plan:
                name = f"{replicas} replica(s), {backend}"
                try:
                    if backend == "postgresql" and pg is None:
                        pg = Postgres()
                    t = time.perf_counter()
                    with deploy(config, backend, replicas, work, pg, own_config, args.app_set) as dep:
                        log(f"{dep.name}: up in {time.perf_counter() - t:.0f} s at {', '.join(dep.urls)}")
                        results["runs"] += bench_deployment(dep, args, orders)
                except Exception as exc:  # one deployment failing (e.g. PostgreSQL) leaves the others
                    log(f"{name} FAILED: {exc}")
                    results["failures"].append({"deployment": name, "error": str(exc)})
        finally:
            if pg is not None:
                pg.close()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    results["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown(results))
    print(f"\nwritten to {out} ({results['wall_s']:.0f} s)")
    return 1 if results["failures"] and not results["runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
