"""One deployment's configuration: a YAML file, validated into dataclasses.

Relative paths in the file are resolved against the folder the file lives in, so a config
works from any working directory. Sections owned by other modules (`training`, `distill`,
`flows`) are kept as plain dicts here and validated by those modules.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class DataConfig:
    intents: Path
    faq: Path
    products: Path
    orders: Path | None = None
    dialogs: Path | None = None            # held out: never used for training
    faq_heldout: Path | None = None        # held-out FAQ paraphrases {"faq_id", "text"}
    shopping_requests: Path | None = None  # labelled shopping requests {"text", "relevant_ids"}


@dataclass
class EncoderConfig:
    name: str = DEFAULT_ENCODER
    max_length: int = 64
    batch_size: int = 64


@dataclass
class RetrievalConfig:
    exact_max: int = 50_000   # up to this many vectors the index is exact; above it HNSW
    top_k: int = 5


@dataclass
class PolicyConfig:
    faq_threshold: float | None = None     # None: calibrated on the FAQ paraphrases at build time
    clarify_margin: float = 0.03           # two FAQ candidates closer than this: ask which one
    intent_threshold: float | None = None  # None: calibrated at build/training time
    max_message_chars: int = 2000


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7860


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
    training: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)
    flows: dict[str, Any] = field(default_factory=dict)

    @property
    def index_dir(self) -> Path:
        return self.artifacts_dir / "indexes"

    @property
    def reports_dir(self) -> Path:
        return self.artifacts_dir / "reports"


def _section(raw: dict[str, Any], key: str, cls: type, where: str, base: Path, paths: tuple[str, ...] = ()):
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in '{key}': {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in value:
            continue
        v = value[f.name]
        if f.name in paths and v is not None:
            v = (base / str(v)).resolve()
        kwargs[f.name] = v
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in value]
        raise ConfigError(f"{where}: '{key}' is missing required key(s): {', '.join(missing) or exc}") from None
    _check_types(obj, key, where)
    return obj


def _check_types(obj: Any, key: str, where: str) -> None:
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        t = str(f.type)
        if v is None:
            if "None" not in t:
                raise ConfigError(f"{where}: '{key}.{f.name}' must not be empty")
            continue
        if t.startswith("int") and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise ConfigError(f"{where}: '{key}.{f.name}' must be a positive integer, got {v!r}")
        if t.startswith("float") and not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: '{key}.{f.name}' must be a number, got {v!r}")
        if t.startswith("str") and not isinstance(v, str):
            raise ConfigError(f"{where}: '{key}.{f.name}' must be a string, got {v!r}")


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a config; every problem is a ConfigError with a one-line message."""
    path = Path(path) if path else DEFAULT_CONFIG
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
    where = str(path)
    base = path.resolve().parent
    known = {"name", "store_name", "data", "artifacts_dir", "encoder", "retrieval", "policy", "server",
             "training", "distill", "flows"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown section(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if "data" not in raw:
        raise ConfigError(f"{where}: missing the 'data' section (paths to intents, faq and products)")
    data = _section(raw, "data", DataConfig, where, base, paths=tuple(f.name for f in dataclasses.fields(DataConfig)))
    for f in dataclasses.fields(DataConfig):
        p = getattr(data, f.name)
        if p is not None and not Path(p).exists():
            raise ConfigError(f"{where}: data.{f.name} points to a missing file: {p}")
    for key in ("training", "distill", "flows"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping")
    name = str(raw.get("name") or path.stem)
    return Config(
        path=path.resolve(),
        name=name,
        store_name=str(raw.get("store_name") or "our store"),
        data=data,
        artifacts_dir=(base / str(raw.get("artifacts_dir") or f"../artifacts/{name}")).resolve(),
        encoder=_section(raw, "encoder", EncoderConfig, where, base),
        retrieval=_section(raw, "retrieval", RetrievalConfig, where, base),
        policy=_section(raw, "policy", PolicyConfig, where, base),
        server=_section(raw, "server", ServerConfig, where, base),
        training=dict(raw.get("training") or {}),
        distill=dict(raw.get("distill") or {}),
        flows=dict(raw.get("flows") or {}),
    )
