"""`/metrics` in the Prometheus text format: what the assistant is doing right now, per process.

* `TurnMetrics` owns one `CollectorRegistry` and is an `Assistant.observers` callable: every finished
  turn (a `service.engine.TurnEvent`, no message text) bumps the counters and the latency histograms.
  Label values come from closed sets (the domain's actions and intents), so no customer input can
  grow the number of series.
* `record_feedback(kind, value)`: count a customer's thumbs ("thumb", +1/-1) or rating ("rating", 1-5)
  where it is recorded (the customer page and the REST API call it after the store accepted it).
* Several replicas: every process counts its own turns; Prometheus scrapes each replica (one target
  per replica, see docs/prometheus.yml) and `sum()` adds them up. If the app is ever run under a
  forking server (gunicorn workers), set PROMETHEUS_MULTIPROC_DIR to an empty folder before start:
  `/metrics` then merges every worker's files (prometheus_client's multiprocess mode).
* Who may read it: by default only a direct connection from loopback or from the addresses in
  `server.metrics_allow` (e.g. the Prometheus server), never a request that came through a proxy
  (it carries X-Forwarded-For / Forwarded); `server.metrics_public: true` opens it to anyone.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.engine import STAGES, TurnEvent

log = logging.getLogger(__name__)

# Seconds; a turn's stages run from ~0.1 ms (policy) to ~100 ms (understanding on a busy CPU).
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TURN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER = "other"
ALREADY_HANDED_OFF = "already with a person"   # service.policy's reason for a turn while a person has it
FEEDBACK_KINDS = {"thumb": ("up", "down"), "rating": ("1", "2", "3", "4", "5")}
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class TurnMetrics:
    """The process's metrics; call it with each TurnEvent (`assistant.observers.append(metrics)`)."""

    def __init__(self, *, actions: Iterable[str] = (), intents: Iterable[str] = (), model_version: str = "",
                 registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.actions = frozenset(actions)
        self.intents = frozenset(intents)
        self.turns = Counter("attendant_turns", "Turns answered", registry=r)
        self.by_action = Counter("attendant_actions", "Turns by the action that answered them", ["action"], registry=r)
        self.by_intent = Counter("attendant_intents", "Turns by the recognised intent", ["intent"], registry=r)
        self.handoffs = Counter("attendant_handoffs", "Conversations handed to a person", registry=r)
        self.fallbacks = Counter("attendant_fallbacks", "Turns the assistant could not answer", registry=r)
        self.out_of_scope = Counter("attendant_out_of_scope", "Turns judged out of scope", registry=r)
        self.errors = Counter("attendant_errors", "Turns that failed inside (the customer got an apology)",
                              registry=r)
        self.feedback = Counter("attendant_feedback", "Customer feedback: thumbs (up/down) and ratings (1-5)",
                                ["kind", "value"], registry=r)
        self.stage_seconds = Histogram("attendant_turn_stage_seconds", "Time per stage of a turn", ["stage"],
                                       buckets=STAGE_BUCKETS, registry=r)
        self.turn_seconds = Histogram("attendant_turn_seconds", "Time of a whole turn (all stages)",
                                      buckets=TURN_BUCKETS, registry=r)
        self.model_info = Gauge("attendant_model_info", "The served model version (value 1)", ["version"],
                                registry=r, multiprocess_mode="liveall")
        self.drift_score = Gauge("attendant_drift_score", "Drift of live traffic against the training reference",
                                 ["signal"], registry=r, multiprocess_mode="liveall")
        self.drift_alert = Gauge("attendant_drift_alert", "1 while a drift signal is above its configured level",
                                 registry=r, multiprocess_mode="liveall")
        # Label children resolved once: a labelled lookup costs more than the increment itself.
        self._stage = {s: self.stage_seconds.labels(stage=s) for s in STAGES}
        self._action: dict[str, Any] = {}
        self._intent: dict[str, Any] = {}
        self._version = ""
        self._lock = threading.Lock()
        for kind, values in FEEDBACK_KINDS.items():    # present at 0 from the start: rate() needs a first point
            for value in values:
                self.feedback.labels(kind=kind, value=value)
        self.set_model_version(model_version)

    # -- the observer ---------------------------------------------------------------------------
    def __call__(self, event: TurnEvent) -> None:
        reply = event.reply
        self.turns.inc()
        action = self._action.get(reply.action)
        if action is None:
            action = self._child(self._action, self.by_action, "action", reply.action, self.actions)
        action.inc()
        if reply.intent:
            intent = self._intent.get(reply.intent)
            if intent is None:
                intent = self._child(self._intent, self.by_intent, "intent", reply.intent, self.intents)
            intent.inc()
        if reply.handoff and reply.debug.get("decision") != ALREADY_HANDED_OFF:
            self.handoffs.inc()
        if reply.action == "fallback":
            self.fallbacks.inc()
        elif reply.action == "out_of_scope":
            self.out_of_scope.inc()
        if event.error:
            self.errors.inc()
        stage = self._stage
        for name, ms in event.stages_ms.items():
            child = stage.get(name)
            if child is not None:
                child.observe(ms / 1000.0)
        self.turn_seconds.observe(event.total_ms / 1000.0)
        if reply.model_version and reply.model_version != self._version:
            self.set_model_version(reply.model_version)

    def _child(self, cache: dict[str, Any], metric: Counter, label: str, value: str, known: frozenset[str]) -> Any:
        shown = value if (not known or value in known) and len(cache) < 500 else OTHER
        with self._lock:
            child = cache.get(value)
            if child is None:
                child = cache[value] = metric.labels(**{label: shown})
        return child

    # -- the rest -------------------------------------------------------------------------------
    def record_feedback(self, kind: str, value: int | str) -> None:
        if kind == "thumb":
            shown = "up" if int(value) > 0 else "down"
        elif kind == "rating":
            shown = str(min(5, max(1, int(value))))
        else:
            raise ValueError(f"feedback kind must be 'thumb' or 'rating', got {kind!r}")
        self.feedback.labels(kind=kind, value=shown).inc()

    def set_model_version(self, version: str) -> None:
        version = str(version or "")
        with self._lock:
            if version == self._version:
                return
            if self._version:
                try:
                    self.model_info.remove(self._version)
                except KeyError:
                    pass
            self._version = version
            if version:
                self.model_info.labels(version=version).set(1)

    def set_drift(self, scores: dict[str, float], alert: bool) -> None:
        for signal, value in scores.items():
            self.drift_score.labels(signal=signal).set(float(value))
        self.drift_alert.set(1 if alert else 0)

    def exposition(self) -> bytes:
        """The text a scrape gets: this registry, or every worker's files in multiprocess mode."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


# ------------------------------------------------------------------------- the process's metrics
_active: TurnMetrics | None = None


def active() -> TurnMetrics | None:
    """The metrics of the app this process serves (the last `install_metrics`), or None."""
    return _active


def record_feedback(kind: str, value: int | str) -> None:
    """Count customer feedback where it is recorded: `record_feedback("thumb", +1 | -1)` after
    `store.set_turn_feedback` succeeded, `record_feedback("rating", 1..5)` after `store.add_feedback`.
    Never raises: monitoring must not break the customer's request."""
    metrics = _active
    if metrics is None:
        return
    try:
        metrics.record_feedback(kind, value)
    except Exception:
        log.warning("feedback not counted: kind=%r value=%r", kind, value)


def install_metrics(assistant: Any) -> TurnMetrics:
    """A TurnMetrics for `assistant`, appended to its observers and made this process's active one."""
    global _active
    domain = getattr(assistant, "domain", None)
    actions = getattr(domain, "actions", ()) or ()
    labels = getattr(getattr(assistant, "nlu", None), "labels", ()) or ()
    intents = set(labels) | set(getattr(domain, "intent_names", ()) or ())
    metrics = TurnMetrics(actions=actions, intents=intents, model_version=getattr(assistant, "model_version", ""))
    assistant.observers.append(metrics)
    _active = metrics
    return metrics


# ------------------------------------------------------------------------------- who may read it
def _networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for part in (spec or "").split(","):
        part = part.strip()
        if part:
            out.append(ipaddress.ip_network(part, strict=False))
    return out


def metrics_allowed(client_host: str | None, headers: Any, server: Any) -> bool:
    """True when this request may read /metrics (see the module docstring)."""
    if getattr(server, "metrics_public", False):
        return True
    if headers.get("x-forwarded-for") or headers.get("forwarded") or headers.get("x-real-ip"):
        return False   # relayed by a proxy: the peer address says nothing about who asks
    try:
        address = ipaddress.ip_address(str(client_host or ""))
    except ValueError:
        return False
    if address.is_loopback:
        return True
    try:
        allowed = _networks(getattr(server, "metrics_allow", ""))
    except ValueError:
        return False
    return any(address in net for net in allowed)


def add_metrics_route(app: Any, metrics: TurnMetrics, assistant: Any, server: Any) -> None:
    """GET /metrics on the FastAPI `app` (not in the OpenAPI schema)."""
    @app.get("/metrics", include_in_schema=False)
    def metrics_endpoint(request: Request):
        if not metrics_allowed(request.client.host if request.client else None, request.headers, server):
            return PlainTextResponse("Metrics are readable from this host or the addresses in server.metrics_allow.",
                                     status_code=403)
        # The served version may change without a turn (a promotion reloads the model).
        metrics.set_model_version(getattr(assistant, "model_version", "") or "")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


# ------------------------------------------------------------------------------- drift, periodically
class DriftWatch:
    """Every `monitoring.check_interval_s`, the drift of the last `window_hours` of turns of the served
    model: sets the drift gauges and logs a WARNING while it alerts (evaluation/drift.py). A daemon thread
    that sleeps first, so a starting server does no extra work; 0 turns it off."""

    def __init__(self, store: Any, assistant: Any, config: Any, metrics: TurnMetrics):
        self.store, self.assistant, self.config, self.metrics = store, assistant, config, metrics
        self.last = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> Any:
        from evaluation.drift import reference_for, run_check

        reference = reference_for(self.assistant, self.config.data.intents)
        report = run_check(self.store, self.assistant, reference, self.config.monitoring,
                           model_version=getattr(self.assistant, "model_version", None))
        self.last = report
        if report.enough:
            self.metrics.set_drift(report.scores(), report.alert)
        return report

    def start(self) -> None:
        interval = float(self.config.monitoring.check_interval_s)
        if interval <= 0 or not hasattr(self.store, "turns"):
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check()
                except Exception:   # a failed check never takes the server down; the next one retries
                    log.exception("drift check failed")

        self._thread = threading.Thread(target=loop, name="drift-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def install_monitoring(app: Any, assistant: Any, config: Any, store: Any) -> TurnMetrics:
    """Metrics observer on `assistant`, GET /metrics on `app`, the periodic drift check."""
    metrics = install_metrics(assistant)
    add_metrics_route(app, metrics, assistant, config.server)
    watch = DriftWatch(store, assistant, config, metrics)
    watch.start()
    app.state.metrics, app.state.drift_watch = metrics, watch
    return metrics
