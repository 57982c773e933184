"""One deployment's configuration: a YAML file, validated into typed dataclasses, every section.

Relative paths in the file are resolved against the folder the file lives in, so a config works
from any working directory. Every section is a dataclass below with its defaults (the one place
they are set); unknown keys are rejected with the file and the key; every command takes the same
overrides, `--set section.key=value` (a YAML value), applied before validation.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from core.errors import ConfigError
from core.layout import ArtifactLayout

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"


def shown_path(path: str | Path) -> str:
    """A path as results files and reports show it: relative to the project when inside it, else its
    name (no machine's absolute paths in anything committed)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(PROJECT_ROOT))
    except ValueError:
        return p.name
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "polynomial", "cosine_with_restarts")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
LAYER_SELECTIONS = ("spread", "alternate", "bottom", "top")
COMPRESSION_FORMATS = ("onnx-int8", "onnx-fp32")
PIPELINE_STEPS = ("train", "distill", "compress", "index", "evaluate")


class _Checks:
    """`validate(where)` helpers shared by the sections: each failure names section.key and the value."""
    SECTION = ""

    def _bad(self, where: str, key: str, why: str) -> ConfigError:
        return ConfigError(f"{where}: {self.SECTION}.{key} {why}, got {getattr(self, key)!r}")

    def _at_least_one(self, where: str, *keys: str) -> None:
        for key in keys:
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise self._bad(where, key, "must be at least 1")

    def _positive(self, where: str, *keys: str) -> None:
        for key in keys:
            if not getattr(self, key) > 0:
                raise self._bad(where, key, "must be positive")

    def _not_negative(self, where: str, *keys: str) -> None:
        for key in keys:
            if getattr(self, key) < 0:
                raise self._bad(where, key, "must not be negative")

    def _fraction(self, where: str, *keys: str) -> None:
        for key in keys:
            if getattr(self, key) is not None and not 0 <= getattr(self, key) < 1:
                raise self._bad(where, key, "must be in [0, 1)")

    def _one_of(self, where: str, key: str, choices: Sequence[str]) -> None:
        if getattr(self, key) not in choices:
            raise self._bad(where, key, f"must be one of {', '.join(choices)}")

    def validate(self, where: str) -> None:
        pass


# ---------------------------------------------------------------------- sections

@dataclass
class DataConfig(_Checks):
    SECTION = "data"
    intents: Path
    faq: Path
    products: Path
    orders: Path | None = None
    dialogs: Path | None = None            # held out: never used for training
    faq_heldout: Path | None = None        # held-out FAQ paraphrases {"faq_id", "text"}
    shopping_requests: Path | None = None  # labelled shopping requests {"text", "relevant_ids"}

    def validate(self, where: str) -> None:
        for f in dataclasses.fields(self):
            p = getattr(self, f.name)
            if p is not None and not Path(p).exists():
                raise ConfigError(f"{where}: data.{f.name} points to a missing file: {p}")


@dataclass
class EncoderConfig(_Checks):
    SECTION = "encoder"
    name: str = DEFAULT_ENCODER
    max_length: int = 64
    batch_size: int = 64

    def validate(self, where: str) -> None:
        self._at_least_one(where, "max_length", "batch_size")


@dataclass
class RetrievalConfig(_Checks):
    SECTION = "retrieval"
    exact_max: int = 50_000   # up to this many vectors the index is exact; above it HNSW
    top_k: int = 5

    def validate(self, where: str) -> None:
        self._at_least_one(where, "exact_max", "top_k")


@dataclass
class PolicyConfig(_Checks):
    SECTION = "policy"
    faq_threshold: float | None = None     # None: calibrated on the FAQ paraphrases at build time
    clarify_margin: float = 0.03           # two FAQ candidates closer than this: ask which one
    intent_threshold: float | None = None  # None: calibrated at build/training time
    max_message_chars: int = 2000

    def validate(self, where: str) -> None:
        self._not_negative(where, "clarify_margin")
        self._at_least_one(where, "max_message_chars")


@dataclass
class ServerConfig(_Checks):
    """The web server: where it listens, and the limits every replica enforces (their counters live
    in the store, so N replicas together allow what one would)."""
    SECTION = "server"
    host: str = "127.0.0.1"
    port: int = 7860
    max_body_bytes: int = 64 * 1024          # larger requests get 413 before anything parses them
    client_rate_per_minute: int = 120        # requests per client address (every POST)
    key_rate_per_minute: int = 600           # REST API: requests per API key (a key may set its own)
    conversation_rate_per_minute: int = 30   # messages per conversation (web or API)
    token_idle_ttl_s: int = 4 * 3600         # a conversation token unused this long expires
    token_max_age_s: int = 24 * 3600         # ... and any token after this long
    workers_threads: int = 32                # threads that run turns (sync handlers) in one process
    # Addresses of the load balancers / reverse proxies whose X-Forwarded-For is believed (uvicorn's
    # forwarded_allow_ips, comma-separated; "" believes none), so per-client limits see the customer.
    trusted_proxies: str = ""
    # /metrics: readable by direct connections from loopback and from these addresses/networks
    # (comma-separated, e.g. the Prometheus server "10.0.0.5,10.1.0.0/16"); never through a proxy.
    metrics_allow: str = ""
    metrics_public: bool = False             # true: /metrics readable by anyone who reaches the server

    def validate(self, where: str) -> None:
        if not 0 < self.port < 65536:
            raise self._bad(where, "port", "must be a TCP port (1-65535)")
        self._at_least_one(where, "max_body_bytes", "client_rate_per_minute", "key_rate_per_minute",
                           "conversation_rate_per_minute", "token_idle_ttl_s", "token_max_age_s", "workers_threads")


@dataclass
class StoreConfig(_Checks):
    """Where the service's state lives. No url: the embedded SQLite file in the artifacts folder (one
    process). `postgresql://user:pass@host/db`: PostgreSQL, which several replicas can share."""
    SECTION = "store"
    url: str | None = None
    pool_size: int = 20                      # PostgreSQL connections per process (turn locks hold one each)

    def validate(self, where: str) -> None:
        if self.url is not None and not re.match(r"^(sqlite|postgres(ql)?)(\+\w+)?://", self.url):
            raise self._bad(where, "url", "must be a sqlite:///PATH or postgresql://... URL (or null)")
        self._at_least_one(where, "pool_size")


@dataclass
class FlowsConfig(_Checks):
    """The service flows' business rules."""
    SECTION = "flows"
    reference_date: dt.date | None = None  # "today" for the flows (demo orders don't drift); None: the real date
    return_window_days: int = 30
    restocking_fee: float = 0.15           # opened, non-defective returns
    support_hours: str = ""
    # Trust: how long things stay valid, and how many wrong order number + email pairs are tolerated.
    verification_ttl_s: int = 900          # an order verified in a session stays verified this long
    confirmation_ttl_s: int = 600          # an unanswered "Shall I go ahead? (yes/no)" expires (asked again)
    max_failures_per_order: int = 5        # failed checks on one order number (all sessions) before it locks
    max_failures_per_session: int = 3      # failed checks in one session (all flows) before it locks
    lockout_s: int = 900                   # a lock's cool-down; failures older than this are forgotten
    backoff_s: float = 2.0                 # from the 2nd failure on: wait backoff_s * 2^(n-2) before the next check

    def validate(self, where: str) -> None:
        self._at_least_one(where, "return_window_days", "verification_ttl_s", "confirmation_ttl_s",
                           "max_failures_per_order", "max_failures_per_session", "lockout_s")
        self._fraction(where, "restocking_fee")
        self._not_negative(where, "backoff_s")


@dataclass
class MonitoringConfig(_Checks):
    """Drift alerts in the operator console, the log and /metrics (evaluation/drift.py)."""
    SECTION = "monitoring"
    drift_psi: float = 0.2            # population stability index above this (intents, confidence): drift
    drift_ks_pvalue: float = 0.01     # two-sample KS p-value below this (confidence), with PSI above its level
    drift_distance_psi: float = 0.2   # PSI of the nearest-training-example distances above this: drift
    min_messages: int = 50            # fewer live messages than this: no verdict (too noisy)
    window_hours: float = 24.0        # the live sample: turns of the last this many hours
    check_interval_s: float = 300.0   # how often the server re-checks (0: only on demand in the console)

    def validate(self, where: str) -> None:
        self._positive(where, "drift_psi", "drift_distance_psi", "window_hours")
        self._fraction(where, "drift_ks_pvalue")
        self._at_least_one(where, "min_messages")
        self._not_negative(where, "check_interval_s")


@dataclass
class RetentionConfig(_Checks):
    """How long stored conversations are kept (`python -m service.retention` purges older ones); null keeps forever."""
    SECTION = "retention"
    transcripts_days: float | None = 90
    tickets_days: float | None = 365      # closed tickets only; open ones are never purged
    sessions_days: float | None = 30

    def validate(self, where: str) -> None:
        for key in ("transcripts_days", "tickets_days", "sessions_days"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise self._bad(where, key, "must be a number of days >= 0 or null (keep forever)")


@dataclass
class LoopSettings(_Checks):
    """What every training objective shares: batches, optimiser, schedule, evaluation, checkpoints.

    Batch sizes are global (summed over processes and accumulation steps) so that N processes
    train the same model as one: see `training.loop.BatchPlan`.
    """
    max_length: int | None = None         # default: the encoder's (training) or the teacher's (distil)
    epochs: float = 2.0                   # fractional epochs allowed (the schedule ends mid-epoch)
    batch_size: int = 32                  # global: per process = batch_size / (processes * accumulation)
    eval_batch_size: int = 128            # per process
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4           # encoder (top layer; lower layers get layer_decay^depth of it)
    head_learning_rate: float = 2e-3
    layer_decay: float = 1.0              # layer-wise learning-rate decay (1 = none)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.1
    freeze_embeddings: bool = True        # word embeddings: most of the parameters, few of them seen in small data
    ema_decay: float = 0.99               # 0 = no moving average
    val_fraction: float = 0.1
    min_examples_per_intent: int = 2
    eval_every: int = 0                   # optimizer steps between evaluations (0 = every epoch)
    early_stopping_patience: int = 3      # evaluations without a better macro-F1 before stopping (0 = never)
    checkpoint_every: int = 0             # optimizer steps between checkpoints (0 = at each evaluation)
    keep_checkpoints: int = 2
    log_every: int = 10
    length_grouping: bool = True          # batches of similar length: less padding
    seed: int = 42
    mixed_precision: str = "auto"         # auto (bf16 on a GPU that has it, else fp32), no, fp16, bf16
    num_threads: int = 0                  # CPU threads per process (0 = cores / local processes)
    calibrate_temperature: bool = True
    tensorboard: bool = True

    def validate(self, where: str) -> None:
        self._at_least_one(where, "batch_size", "eval_batch_size", "gradient_accumulation_steps", "keep_checkpoints",
                           "log_every", "min_examples_per_intent")
        self._positive(where, "epochs", "learning_rate", "head_learning_rate")
        self._not_negative(where, "weight_decay", "max_grad_norm", "eval_every", "checkpoint_every",
                           "early_stopping_patience", "num_threads")
        self._fraction(where, "warmup_ratio", "label_smoothing", "val_fraction", "ema_decay")
        if not 0 < self.layer_decay <= 1:
            raise self._bad(where, "layer_decay", "must be in (0, 1]")
        self._one_of(where, "mixed_precision", MIXED_PRECISION)
        self._one_of(where, "scheduler", SCHEDULERS)
        if self.max_length is not None and self.max_length < 8:
            raise self._bad(where, "max_length", "must be at least 8")


@dataclass
class TrainingSettings(LoopSettings):
    """`training:` the teacher: the encoder fine-tuned on intents and FAQ paraphrase pairs."""
    SECTION = "training"
    encoder: str | None = None            # default: encoder.name
    contrastive_weight: float = 0.5       # 0 = intents only
    contrastive_batch_size: int = 32      # global, like batch_size
    contrastive_scale: float = 20.0
    max_pairs_per_faq: int = 20
    intent_pair_weight: float = 0.0       # > 0: batches of same-intent pairs + an in-batch contrastive loss on them
    anchor_weight: float = 0.0            # > 0: KL towards the frozen-embedding logistic regression's predictions
    anchor_temperature: float = 2.0
    head_init: str = "logreg"             # "logreg": fit on frozen embeddings first; "random"
    logreg_c: float = 10.0
    wise_alphas: list[float] = field(default_factory=list)  # also try init + a * (trained - init)
    corrections: bool = True              # merge the store's operator corrections into the data (training/feedback.py)
    corrections_weight: int = 3           # each corrected example is repeated this many times

    def validate(self, where: str) -> None:
        super().validate(where)
        self._at_least_one(where, "contrastive_batch_size", "max_pairs_per_faq", "corrections_weight")
        self._positive(where, "logreg_c", "contrastive_scale", "anchor_temperature")
        self._not_negative(where, "contrastive_weight", "intent_pair_weight", "anchor_weight")
        self._one_of(where, "head_init", ("logreg", "random"))
        if self.anchor_weight > 0 and self.head_init != "logreg":
            raise self._bad(where, "head_init", "must be 'logreg' when anchor_weight > 0 (the anchor is that regression)")
        if self.intent_pair_weight > 0 and self.batch_size < 4:
            raise self._bad(where, "batch_size", "must be at least 4 with intent_pair_weight (it holds pairs)")
        if not all(0 < a <= 1 for a in self.wise_alphas):
            raise self._bad(where, "wise_alphas", "must be numbers in (0, 1]")


@dataclass
class DistillSettings(LoopSettings):
    """`distill:` the student: fewer layers trained to match the teacher's intents and embeddings."""
    SECTION = "distill"
    student_layers: int | None = None     # default: half the teacher's layers (rounded up)
    layer_selection: str = "spread"       # spread | alternate | bottom | top | explicit "0,2,4"
    student_encoder: str | None = None    # any Hugging Face encoder instead of the teacher's own layers
    epochs: float = 4.0
    head_learning_rate: float = 1e-3
    warmup_ratio: float = 0.06
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    early_stopping_patience: int = 0
    val_fraction: float | None = None     # default: the teacher's split (read from its metadata)
    seed: int | None = None               # default: the teacher's
    temperature: float = 2.0              # softening of both distributions in the KL term
    kd_weight: float = 1.0
    ce_weight: float = 0.5                # hard labels (labelled rows only)
    embedding_weight: float = 1.0         # 1 - cos(student, teacher) of the pooled embeddings
    include_faq: bool = True              # FAQ questions and paraphrases as unlabelled texts
    augment_copies: int = 1               # perturbed copies of each training text (unlabelled)
    augment_prob: float = 0.15            # per-word chance of a perturbation in a copy

    def validate(self, where: str) -> None:
        super().validate(where)
        self._at_least_one(where, "student_layers")
        self._positive(where, "temperature")
        self._not_negative(where, "kd_weight", "ce_weight", "embedding_weight", "augment_copies")
        if self.kd_weight + self.ce_weight + self.embedding_weight <= 0:
            raise self._bad(where, "kd_weight", "(with ce_weight and embedding_weight) must leave some loss to train on")
        self._fraction(where, "augment_prob")
        if self.layer_selection not in LAYER_SELECTIONS and not is_layer_list(self.layer_selection):
            raise self._bad(where, "layer_selection", f"must be one of {', '.join(LAYER_SELECTIONS)} or a list like '0,2,4'")


def is_layer_list(text: str) -> bool:
    parts = [p.strip() for p in str(text).split(",")]
    return bool(parts) and all(p.isdigit() for p in parts)


@dataclass
class CompressionSettings(_Checks):
    """`compression:` how the student is made small and fast for serving."""
    SECTION = "compression"
    format: str = "onnx-int8"             # onnx-int8 | onnx-fp32
    per_channel: bool = True              # one int8 scale per output channel: much closer to fp32 than one per tensor
    quantize_embeddings: bool = True      # int8 word-embedding table: a quarter of the size on disk
    optimize: bool = True                 # ONNX Runtime transformer fusions (attention, LayerNorm, GELU)
    exclude: list[str] = field(default_factory=lambda: ["intent_head"])  # node-name parts kept in fp32
    opset: int = 17
    min_agreement: float = 0.97           # int8 vs fp32 intent agreement on the check sample, else serve fp32
    check_samples: int = 512
    threads: int = 0                      # ONNX Runtime threads when serving (0 = its default: the cores)

    def validate(self, where: str) -> None:
        self._one_of(where, "format", COMPRESSION_FORMATS)
        if not 0 <= self.min_agreement <= 1:
            raise self._bad(where, "min_agreement", "must be in [0, 1]")
        self._at_least_one(where, "check_samples")
        self._not_negative(where, "threads")
        if self.opset < 14:
            raise self._bad(where, "opset", "must be at least 14")


@dataclass
class PipelineSettings(_Checks):
    """`pipeline:` which build steps `training.pipeline` (and the app's first run) take."""
    SECTION = "pipeline"
    steps: list[str] = field(default_factory=lambda: list(PIPELINE_STEPS))

    def validate(self, where: str) -> None:
        bad = [s for s in self.steps if s not in PIPELINE_STEPS]
        if bad or not self.steps:
            raise self._bad(where, "steps", f"must be a list of {', '.join(PIPELINE_STEPS)}")
        self.steps = [s for s in PIPELINE_STEPS if s in self.steps]  # always in pipeline order


@dataclass
class GateConfig(_Checks):
    """`gate:` when a candidate version may replace the served one (evaluation/gate.py)."""
    SECTION = "gate"
    tolerance: float = 0.01   # largest allowed drop in held-out dialog resolution (0.01 = one point)

    def validate(self, where: str) -> None:
        self._fraction(where, "tolerance")


SECTIONS: dict[str, type] = {
    "data": DataConfig, "encoder": EncoderConfig, "retrieval": RetrievalConfig, "policy": PolicyConfig,
    "server": ServerConfig, "store": StoreConfig, "flows": FlowsConfig, "retention": RetentionConfig, "monitoring": MonitoringConfig, "training": TrainingSettings, "distill": DistillSettings,
    "compression": CompressionSettings, "pipeline": PipelineSettings, "gate": GateConfig,
}
SCALARS = ("name", "store_name", "artifacts_dir")
PATH_SECTIONS = ("data",)


@dataclass
class Config:
    path: Path
    name: str
    store_name: str
    data: DataConfig
    artifacts_dir: Path
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    gate: GateConfig = field(default_factory=GateConfig)

    @property
    def layout(self) -> ArtifactLayout:
        return ArtifactLayout(self.artifacts_dir)

    @property
    def index_dir(self) -> Path:
        return self.layout.indexes

    @property
    def reports_dir(self) -> Path:
        return self.layout.reports

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------- typing a section

def _coerce(value: Any, hint: Any, name: str, where: str) -> Any:
    """A YAML value checked against a field's type hint; a ConfigError names section.key and the value."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if value is None:
        raise ConfigError(f"{where}: {name} must not be empty")
    want = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path",
            dt.date: "a date (YYYY-MM-DD)"}.get(hint, "a list")
    if typing.get_origin(hint) is list:
        items = value if isinstance(value, list) else [value]
        inner = args[0] if args else str
        if inner is str and isinstance(value, str):
            items = [s.strip() for s in value.split(",") if s.strip()]
        return [_coerce(v, inner, f"{name}[{i}]", where) for i, v in enumerate(items)]
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, float) and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-5" (no dot) as a string
            value = float(value.strip())
        except ValueError:
            pass
    if hint is int and not isinstance(value, bool) and isinstance(value, (int, float)) and float(value).is_integer():
        return int(value)
    if hint is float and not isinstance(value, bool) and isinstance(value, (int, float)):
        return float(value)
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if hint is str and isinstance(value, list) and all(isinstance(v, int) for v in value):
        return ",".join(str(v) for v in value)  # e.g. layer_selection: [0, 2, 5]
    if hint is Path and isinstance(value, str):
        return Path(value)
    if hint is dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            pass
    raise ConfigError(f"{where}: {name} must be {want}, got {value!r}")


def build_section(cls: type, value: Any, key: str, where: str, base: Path | None = None) -> Any:
    """A section's mapping as its dataclass: unknown keys rejected, each value typed, then validated."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in '{key}': {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(sorted(fields))})")
    missing = [n for n, f in fields.items() if n not in value
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: '{key}' is missing required key(s): {', '.join(missing)}")
    kwargs = {}
    for name, raw in value.items():
        typed = _coerce(raw, hints[name], f"{key}.{name}", where)
        if isinstance(typed, Path) and base is not None:
            typed = (base / typed).resolve()
        kwargs[name] = typed
    obj = cls(**kwargs)
    obj.validate(where)
    return obj


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`section.key=value` items (YAML values) applied to a raw config mapping; `name=value` for top-level keys."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. --set training.learning_rate=3e-5")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        section, dot, name = key.partition(".")
        if not dot:
            if section in SCALARS:
                raw[section] = value
                continue
            raise ConfigError(f"--set {item!r}: name the section, e.g. --set training.{section}=... "
                              f"(sections: {', '.join(SECTIONS)})")
        if section not in SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown section '{section}' (sections: {', '.join(SECTIONS)})")
        current = raw.get(section) or {}
        if not isinstance(current, dict):
            raise ConfigError(f"--set {item!r}: '{section}' in the config is not a mapping")
        raw[section] = {**current, name: value}
    return raw


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file not found: {path} (the demo config is {DEFAULT_CONFIG.relative_to(PROJECT_ROOT)})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of sections (name, data, encoder, ...)")
    return raw


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read, override (`--set section.key=value`) and validate a config; every problem is a one-line ConfigError."""
    path = Path(path) if path else DEFAULT_CONFIG
    raw = apply_overrides(read_config_file(path), overrides)
    where = str(path)
    base = path.resolve().parent
    unknown = sorted(set(raw) - set(SECTIONS) - set(SCALARS))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s): {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(sorted(list(SECTIONS) + list(SCALARS)))})")
    if "data" not in raw:
        raise ConfigError(f"{where}: missing the 'data' section (paths to intents, faq and products)")
    for moved in ("compression", "pipeline"):
        if isinstance(raw.get("distill"), dict) and moved in raw["distill"]:
            raise ConfigError(f"{where}: 'distill.{moved}' is now a top-level section: move it out as '{moved}:'")
    sections = {key: build_section(cls, raw.get(key), key, where, base if key in PATH_SECTIONS else None)
                for key, cls in SECTIONS.items()}
    name = str(raw.get("name") or path.stem)
    return Config(
        path=path.resolve(),
        name=name,
        store_name=str(raw.get("store_name") or "our store"),
        artifacts_dir=(base / str(raw.get("artifacts_dir") or f"../artifacts/{name}")).resolve(),
        **sections,
    )
