"""The model registry: every build is a candidate version; a gate decides what is served.

    python -m training.models --config configs/demo.yaml list
    python -m training.models --config configs/demo.yaml show v0002
    python -m training.models --config configs/demo.yaml promote v0002 [--force] [--operator NAME]
    python -m training.models --config configs/demo.yaml rollback [--operator NAME]
    python -m training.models --config configs/demo.yaml register     # the current build -> a candidate
    python -m training.models --config configs/demo.yaml adopt        # first time: register + serve it

Layout (see core/layout.py): `<artifacts>/models/v0001/` holds the served model folder (`served/`, or
`student/`/`teacher/` when that is what was built), its `indexes/` (with `oos/` and
`calibration.json`), the evaluation `report/`, `config.yaml` (the config used), `data/faq.jsonl`
(the FAQ its index was built from), the gate's `gate.json`/`gate.md` once it has been through the
gate, and `version.json`: status, parent, created_at, data hash, model fingerprint, events (who
promoted or rolled back, when, forced or not). `<artifacts>/models/SERVED` names the served version
(written atomically) and the store's setting `served_version` says the same to every replica; a
running app (service/live.py) switches within a second of the setting changing, without a restart.

Statuses: `candidate` (registered, never served), `promoted` (passed the gate, or was forced, and
was served), `refused` (the gate said no; `promote --force` still can), `rolled_back` (served, then
rolled back). `rollback` returns to the version served before the current one (skipping versions
already rolled back).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from core.atomic import atomic_write_json, atomic_write_text, share_like_umask, temp_dir_beside
from core.cli import add_config_arguments, config_from_args, run_cli, setup_logging
from core.config import Config
from core.datafiles import INDEX_FILES, file_sha256, training_file_hashes
from core.errors import ArtifactError, ConfigError
from core.layout import VERSION_FILE, ArtifactLayout, is_version_name
from evaluation.gate import fmt_cell
from runtime.folder import read_model_meta
from service.ab import SPLIT_SETTING, Split, check_share, read_split
from service.assembly import SERVED_SETTING

log = logging.getLogger("training.models")

STATUSES = ("candidate", "promoted", "refused", "rolled_back")
PROG = "python -m training.models"
# The headline figures of a version's evaluation report kept in version.json (the report has them all).
SUMMARY_KEYS = ("dialog.resolution", "dialog.task_success", "dialog.faq_hit_at_1", "nlu.accuracy",
                "faq_retrieval.faq_recall_at_1", "efficiency.turn_latency_ms_p50")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Version:
    name: str
    path: Path
    meta: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "candidate"))

    @property
    def layout(self) -> ArtifactLayout:
        return ArtifactLayout(self.path)

    def model_dir(self) -> Path | None:
        return self.layout.served_model_dir()

    def gate(self) -> dict[str, Any] | None:
        path = self.path / "gate.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


# ---------------------------------------------------------------------------------- data hash
def folder_hash(folder: Path, digest: Callable[[Path], str] = file_sha256) -> str:
    """sha256 over every file of a model folder (names and `digest` of the contents): the encoder's
    fingerprint alone misses a retrained head or a changed label map."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(digest(path).encode())
    return "sha256:" + h.hexdigest()


# Keys of the index folder's JSON files that say when, not what (a rebuild of the same indexes is the same build).
VOLATILE_KEYS = frozenset({"built_at", "created_at", "fitted_at", "seconds"})


def _without_timestamps(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_timestamps(v) for k, v in data.items() if k not in VOLATILE_KEYS}
    if isinstance(data, list):
        return [_without_timestamps(v) for v in data]
    return data


def _index_file_digest(path: Path) -> str:
    """A JSON file's content without its timestamps; any other file's bytes."""
    if path.suffix == ".json":
        try:
            data = _without_timestamps(json.loads(path.read_text(encoding="utf-8")))
            return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()
        except (OSError, ValueError):
            pass   # hashed as bytes
    return file_sha256(path)


def indexes_hash(folder: Path) -> str:
    """sha256 over an indexes folder (FAISS files, the lexical index, the fusion model, calibration),
    the JSON files without their timestamps: a new index build (another fusion, new calibration) is a
    new build even when the model and the data are the same."""
    return folder_hash(folder, _index_file_digest)


def data_fingerprint(config: Config, store: Any = None) -> dict[str, Any]:
    """What the build learned from: the training files (intents, FAQ, products; never the held-out
    ones) and the operators' corrections in the store. {"hash", "files": {name: sha256}, "corrections": n}."""
    # the training dialogs too: the FAQ fusion (and learned cut-offs) learn from them
    files = training_file_hashes(config, INDEX_FILES)
    corrections: list[dict[str, Any]] = []
    if store is not None and hasattr(store, "corrections"):
        corrections = [{"id": c.get("id"), "kind": c.get("kind"), "payload": c.get("payload")}
                       for c in store.corrections()]
    h = hashlib.sha256(json.dumps({"files": files, "corrections": corrections}, sort_keys=True,
                                  default=str).encode("utf-8"))
    return {"hash": "sha256:" + h.hexdigest(), "files": files, "corrections": len(corrections)}


# ---------------------------------------------------------------------------------- the registry
class Registry:
    """The versions of one config's artifacts. `store`: where `served_version` is shared (default:
    the config's own store, opened on first use)."""

    def __init__(self, config: Config, store: Any = None):
        self.config = config
        self.layout = config.layout
        self._store = store

    # -- reading ---------------------------------------------------------------------------------
    @property
    def store(self) -> Any:
        if self._store is None:
            from service.assembly import open_store

            self._store = open_store(self.config)
        return self._store

    def names(self) -> list[str]:
        return self.layout.versions()

    def versions(self) -> list[Version]:
        return [self.get(n) for n in self.names()]

    def get(self, name: str) -> Version:
        name = str(name).strip()
        if not is_version_name(name):
            raise ConfigError(f"{name!r} is not a version name (e.g. v0001); list them with "
                              f"`{PROG} --config {self.config.path} list`")
        path = self.layout.version_dir(name)
        try:
            meta = json.loads((path / VERSION_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ArtifactError(f"no version {name} in {self.layout.models}; list them with "
                                f"`{PROG} --config {self.config.path} list`") from None
        return Version(name, path, meta)

    def served_name(self) -> str | None:
        """The served version: the store's setting when it names a registered version (what every
        replica follows), else models/SERVED; None when nothing is registered as served."""
        from service.assembly import served_version_name

        return served_version_name(self.config, self.store)

    def served(self) -> Version | None:
        name = self.served_name()
        return self.get(name) if name else None

    # -- writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One registry change at a time (two `promote`s racing would both read the same served version)."""
        self.layout.models.mkdir(parents=True, exist_ok=True)
        with open(self.layout.models / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _save(self, version: Version) -> None:
        atomic_write_json(version.path / VERSION_FILE, version.meta)

    def _event(self, version: Version, event: str, by: str, **extra: Any) -> None:
        version.meta.setdefault("events", []).append({"at": now_iso(), "event": event, "by": by, **extra})

    def set_served(self, name: str) -> None:
        """Point models/SERVED (atomically) and the store's shared setting at `name`."""
        atomic_write_text(self.layout.served_pointer, name + "\n")
        self.store.set_setting(SERVED_SETTING, name)
        log.info("serving %s (models/SERVED and the store setting %r updated)", name, SERVED_SETTING)

    def _next_name(self) -> str:
        used = [int(p.name[1:]) for p in self.layout.models.iterdir() if is_version_name(p.name)] \
            if self.layout.models.is_dir() else []
        return f"v{max(used, default=0) + 1:04d}"

    def find(self, content_hash: str, data_hash: str, index_hash: str | None = None) -> Version | None:
        """The version holding this very model (every file the same) built from this data, with these
        indexes (a version registered before indexes were hashed never matches a given `index_hash`)."""
        for v in self.versions():
            if (v.meta.get("model") or {}).get("content_hash") == content_hash and v.meta.get("data_hash") == data_hash \
                    and (index_hash is None or v.meta.get("indexes_hash") == index_hash):
                return v
        return None

    def register(self, source: ArtifactLayout | None = None, *, report_dir: Path | None = None,
                 by: str = "pipeline", serve_if_first: bool = True) -> tuple[Version | None, bool]:
        """The build in `source` (default: the config's artifacts folder) as a new candidate version.

        Returns (version, created). A build already registered (same model files, data hash and indexes)
        is not copied again: (that version, False). No trained model: (None, False) (the app then
        serves the pretrained encoder from the root layout, as without a registry). With no served
        version yet and `serve_if_first`, the new version is served at once (a fresh clone's first
        build must serve something): the gate has nothing to compare it with.
        """
        source = source or self.layout
        model_dir = source.served_model_dir()
        if model_dir is None:
            log.info("no trained model in %s: nothing to register", source.root)
            return None, False
        meta = read_model_meta(model_dir, config_path=self.config.path)
        fingerprint = str(meta.get("fingerprint") or "")
        self._check_indexes(source, fingerprint)
        data = data_fingerprint(self.config, self.store)
        content = folder_hash(model_dir)
        index_content = indexes_hash(source.indexes)
        with self.locked():
            existing = self.find(content, data["hash"], index_content)
            if existing is not None:
                log.info("this build is already registered as %s (%s)", existing.name, existing.status)
                return existing, False
            parent = self.served_name()
            name = self._next_name()
            final = self.layout.version_dir(name)
            tmp = temp_dir_beside(final)
            try:
                shutil.copytree(model_dir, tmp / model_dir.name)
                shutil.copytree(source.indexes, tmp / "indexes")
                if self.config.path.is_file():
                    shutil.copy2(self.config.path, tmp / "config.yaml")
                (tmp / "data").mkdir()
                from retrieval.build import faq_source

                # The FAQ its index was built from (with operators' corrections when merged): answers by id.
                faq = faq_source(self.config)
                shutil.copy2(faq, tmp / "data" / "faq.jsonl")
                if (faq.parent / "manifest.json").is_file() and faq.parent != Path(self.config.data.faq).parent:
                    shutil.copy2(faq.parent / "manifest.json", tmp / "data" / "corrections_manifest.json")
                self._ensure_oos(tmp, model_dir, fingerprint)
                report_dir = report_dir or self._report_of(source, fingerprint)
                summary = None
                if report_dir is not None and Path(report_dir).is_dir():
                    shutil.copytree(report_dir, tmp / "report", symlinks=False)
                    summary = _report_summary(Path(report_dir))
                info = {
                    "version": name, "status": "candidate", "created_at": now_iso(), "parent": parent,
                    "model": {"kind": model_dir.name, "fingerprint": fingerprint, "content_hash": content,
                              "runtime": meta.get("runtime"),
                              "base_encoder": meta.get("base_encoder"),
                              "source_fingerprint": (meta.get("source") or {}).get("fingerprint")},
                    "data_hash": data["hash"], "data_files": data["files"], "corrections": data["corrections"],
                    "indexes_hash": index_content,
                    "config": "config.yaml", "config_path": str(self.config.path),
                    "report": "report" if summary is not None else None, "report_summary": summary,
                    "events": [{"at": now_iso(), "event": "registered", "by": by}],
                }
                atomic_write_json(tmp / VERSION_FILE, info)
                share_like_umask(tmp)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            version = Version(name, final, info)
            log.info("registered %s (candidate; parent %s) in %s", name, parent or "none", final)
            if parent is None and serve_if_first:
                self._event(version, "promoted", by, first=True,
                            note="first version: served without a gate (nothing to compare it with)")
                version.meta["status"] = "promoted"
                self._save(version)
                self.set_served(name)
            return version, True

    def _ensure_oos(self, folder: Path, model_dir: Path, fingerprint: str) -> None:
        """A version is complete when registered: out-of-scope detection calibrated for its model
        (the build's own when it fits; else calibrated now), so serving never writes into it."""
        from service.assembly import fit_oos_detector, folder_config, load_nlu
        from service.oos import OOSDetector

        oos_dir = folder / "indexes" / "oos"
        try:
            detector = OOSDetector.load(oos_dir, expected_fingerprint=fingerprint)
            labels = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
            if list(detector.labels) == list(labels):
                return
        except (ArtifactError, OSError, ValueError):
            pass
        log.info("calibrating out-of-scope detection for the new version")
        vconfig = folder_config(self.config, folder)
        shutil.rmtree(oos_dir, ignore_errors=True)
        fit_oos_detector(vconfig, load_nlu(vconfig)).save(oos_dir)

    def _check_indexes(self, source: ArtifactLayout, fingerprint: str) -> None:
        try:
            calibration = json.loads((source.indexes / "calibration.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            calibration = {}
        built_with = str(calibration.get("encoder_fingerprint") or "")
        missing = [k for k in ("faq", "products") if not (source.indexes / k).is_dir()]
        if missing or not built_with or built_with != fingerprint:
            raise ArtifactError(f"the indexes in {source.indexes} are missing or were built with another model; "
                                f"build them with `python -m training.pipeline --config {self.config.path} "
                                f"--steps index` before registering")

    @staticmethod
    def _report_of(source: ArtifactLayout, fingerprint: str) -> Path | None:
        """The latest evaluation report, when it is of this model."""
        from evaluation.report import latest_report_dir, load_report

        latest = latest_report_dir(source.reports)
        if latest is None:
            return None
        try:
            evaluated = str((load_report(latest).get("meta") or {}).get("encoder_fingerprint") or "")
        except ArtifactError:
            return None
        return latest.resolve() if evaluated and fingerprint.startswith(evaluated) else None

    # -- promote / roll back ---------------------------------------------------------------------
    def previously_fixed(self) -> set[str]:
        """Regression turns (dialog ids) some promoted version got right: none of them may break again."""
        fixed: set[str] = set()
        for v in self.versions():
            if any(e.get("event") == "promoted" for e in v.meta.get("events", [])):
                fixed.update(str(i) for i in (v.meta.get("regression_passed") or []))
        return fixed

    def promote(self, name: str, *, force: bool = False, by: str = "cli",
                tolerance: float | None = None) -> dict[str, Any]:
        """Gate `name` against the served version and serve it when it passes (or with `force`, which
        skips the gate and is recorded). Returns {"version", "promoted", "forced", "gate": summary|None}."""
        with self.locked():
            version = self.get(name)
            served = self.served()
            if served is not None and served.name == version.name:
                raise ArtifactError(f"{name} is already the served version")
            if version.model_dir() is None:
                raise ArtifactError(f"{name} has no model folder ({version.path}); it cannot be served")
            gate_summary = None
            if force:
                log.warning("%s promoted by %s with --force: the gate was skipped", name, by)
                self._event(version, "promoted", by, forced=True, previous=served.name if served else None)
            else:
                from evaluation.gate import run_gate

                result = run_gate(self.config, version.path, served.path if served else None, store=self.store,
                                  tolerance=tolerance, previously_fixed=self.previously_fixed(),
                                  names=(version.name, served.name if served else None))
                gate_summary = result.summary()
                version.meta["gate"] = {**gate_summary, "file": "gate.json"}
                if not result.passed:
                    version.meta["status"] = "refused"
                    self._event(version, "refused", by, reasons=result.reasons)
                    self._save(version)
                    log.warning("%s refused by the gate: %s", name, "; ".join(result.reasons))
                    return {"version": name, "promoted": False, "forced": False, "gate": gate_summary}
                version.meta["regression_passed"] = result.candidate_passed_regression
                self._event(version, "promoted", by, forced=False, previous=served.name if served else None)
            version.meta["status"] = "promoted"
            self._save(version)
            self.set_served(name)
            self._end_split(by, f"{name} promoted")
            return {"version": name, "promoted": True, "forced": force, "gate": gate_summary}

    def rollback_target(self) -> Version | None:
        """The version served before the current one (the latest promotion of another version that
        has not been rolled back)."""
        current = self.served_name()
        promotions = []
        for v in self.versions():
            for e in v.meta.get("events", []):
                if e.get("event") in ("promoted", "restored"):
                    promotions.append((str(e.get("at")), v.name))
        for _, name in sorted(promotions, reverse=True):
            v = self.get(name)
            if name != current and v.status != "rolled_back":
                return v
        return None

    def rollback(self, *, by: str = "cli") -> dict[str, Any]:
        """Serve the previous promoted version again; the current one becomes `rolled_back`."""
        with self.locked():
            current = self.served()
            if current is None:
                raise ArtifactError(f"no version is served, so there is nothing to roll back; see "
                                    f"`{PROG} --config {self.config.path} list`")
            target = self.rollback_target()
            if target is None:
                raise ArtifactError(f"{current.name} is the only version ever served: nothing to roll back to "
                                    f"(promote another with `{PROG} --config {self.config.path} promote V`)")
            current.meta["status"] = "rolled_back"
            self._event(current, "rolled_back", by, to=target.name)
            self._save(current)
            target.meta["status"] = "promoted"
            self._event(target, "restored", by, previous=current.name)
            self._save(target)
            self.set_served(target.name)
            self._end_split(by, f"rolled back to {target.name}")
            log.warning("rolled back from %s to %s by %s", current.name, target.name, by)
            return {"from": current.name, "to": target.name}

    # -- A/B split (service/ab.py) -----------------------------------------------------------------
    def split(self) -> Split | None:
        """The A/B split every replica applies now, or None."""
        return read_split(self.store)

    def start_split(self, name: str, share: float, *, by: str = "cli") -> Split:
        """Let candidate `name` answer `share` of the conversations (new ones and running ones whose
        session falls in that share); replaces any split running."""
        with self.locked():
            version = self.get(name)
            if name == self.served_name():
                raise ArtifactError(f"{name} is the served version; an A/B split tries a candidate against it")
            if version.model_dir() is None:
                raise ArtifactError(f"{name} has no model folder ({version.path}); it cannot answer anyone")
            try:
                share = check_share(share)
            except ValueError as exc:
                raise ConfigError(f"--share {share}: {exc}") from None
            self._end_split(by, f"replaced by a split with {name}")
            split = Split(name, share, now_iso(), by)
            self.store.set_setting(SPLIT_SETTING, split.to_json())
            self._event(version, "split_started", by, share=share, served=self.served_name())
            self._save(version)
            log.warning("A/B split: %s answers %.0f%% of conversations (by %s)", name, share * 100, by)
            return split

    def stop_split(self, *, by: str = "cli") -> Split | None:
        """End the split (every conversation back on the served version); the split that ended, or None."""
        with self.locked():
            return self._end_split(by, "stopped")

    def _end_split(self, by: str, why: str) -> Split | None:
        current = read_split(self.store)
        if current is None:
            return None
        self.store.set_setting(SPLIT_SETTING, "")
        try:
            version = self.get(current.version)
            self._event(version, "split_ended", by, why=why, since=current.since)
            self._save(version)
        except ArtifactError:   # the version folder is gone: the setting is cleared all the same
            pass
        log.warning("A/B split with %s ended (%s)", current.version, why)
        return current


def _report_summary(report_dir: Path) -> dict[str, Any] | None:
    try:
        report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    summary = report.get("summary") or {}
    return {k: summary[k] for k in SUMMARY_KEYS if k in summary}


# ---------------------------------------------------------------------------------- the command line
def version_rows(registry: Registry) -> list[dict[str, Any]]:
    """One row per version, newest first: what `list` prints and the console's Versions tab shows."""
    served = registry.served_name()
    rows = []
    for v in reversed(registry.versions()):
        gate = v.meta.get("gate") or {}
        summary = v.meta.get("report_summary") or {}
        rows.append({"version": v.name, "served": v.name == served, "status": v.status,
                     "created_at": v.meta.get("created_at"), "parent": v.meta.get("parent"),
                     "model": (v.meta.get("model") or {}).get("kind"),
                     "resolution": (gate.get("candidate") or {}).get("resolution", summary.get("dialog.resolution")),
                     "gate": "-" if not gate else ("passed" if gate.get("passed") else "refused"),
                     "data_hash": str(v.meta.get("data_hash", ""))[7:19]})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The model registry: list versions, show one, promote a candidate (gated by "
                               "evaluation against the served version), roll back; the running app switches live.")
    add_config_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="every version, newest first (* = served)")
    show = sub.add_parser("show", help="one version's version.json and gate report")
    show.add_argument("version")
    promote = sub.add_parser("promote", help="gate a version against the served one; serve it if it passes")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="skip the gate (logged and recorded in version.json)")
    promote.add_argument("--tolerance", type=float, default=None,
                         help="largest allowed drop in held-out resolution (default: the config's gate.tolerance)")
    for p in (promote, sub.add_parser("rollback", help="serve the previously promoted version again")):
        p.add_argument("--operator", default=os.environ.get("USER") or "cli", help="who does it (for the log)")
    sub.add_parser("register", help="register the current build (the artifacts folder's model + indexes) "
                                    "as a candidate version")
    sub.add_parser("adopt", help="first time: register the current build and serve it (what the first "
                                 "pipeline run does)")
    split = sub.add_parser("split", help="A/B: let a candidate answer a share of the conversations (--stop ends it)")
    split.add_argument("version", nargs="?", help="the candidate version")
    split.add_argument("--share", type=float, default=0.1, help="share of conversations it answers (default 0.1)")
    split.add_argument("--stop", action="store_true", help="end the split: every conversation on the served version")
    split.add_argument("--operator", default=os.environ.get("USER") or "cli", help="who does it (for the log)")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    config = config_from_args(args)
    registry = Registry(config)
    if args.command == "list":
        rows = version_rows(registry)
        if not rows:
            print(f"no versions in {config.layout.models} yet; `{PROG} --config {config.path} adopt` registers "
                  f"the current build (the app serves it from {config.artifacts_dir} meanwhile)")
            return 0
        print(f"  {'version':8s} {'status':11s} {'created_at':25s} {'parent':7s} {'model':8s} {'resolution':10s} gate")
        for r in rows:
            print(f"{'*' if r['served'] else ' '} {r['version']:8s} {r['status']:11s} {fmt_cell(r['created_at']):25s} "
                  f"{fmt_cell(r['parent']):7s} {fmt_cell(r['model']):8s} {fmt_cell(r['resolution']):10s} {r['gate']}")
        split = registry.split()
        if split is not None:
            print(f"A/B split since {split.since}: {split.version} answers {split.share:.0%} of conversations")
        return 0
    if args.command == "split":
        if args.stop:
            ended = registry.stop_split(by=args.operator)
            print(f"A/B split with {ended.version} ended" if ended else "no A/B split was running")
            return 0
        if not args.version:
            raise ConfigError(f"name the candidate (`{PROG} --config {config.path} split vNNNN --share 0.1`) "
                              f"or pass --stop")
        started = registry.start_split(args.version, args.share, by=args.operator)
        print(f"{started.version} now answers {started.share:.0%} of conversations; the running app follows within "
              f"a second; compare them in the console's Monitoring tab (model version filter) or Versions tab")
        return 0
    if args.command == "show":
        v = registry.get(args.version)
        print(json.dumps({**v.meta, "served": v.name == registry.served_name(), "path": str(v.path)}, indent=2))
        gate_md = v.path / "gate.md"
        if gate_md.is_file():
            print()
            print(gate_md.read_text(encoding="utf-8"))
        return 0
    if args.command == "promote":
        result = registry.promote(args.version, force=args.force, by=args.operator, tolerance=args.tolerance)
        gate = result["gate"]
        if result["promoted"]:
            how = "forced, gate skipped" if result["forced"] else "gate passed"
            print(f"{result['version']} promoted ({how}); the running app switches within a second")
        else:
            print(f"{result['version']} refused by the gate: {'; '.join(gate['reasons'])}")
        if gate:
            print(f"gate report: {registry.get(args.version).path / 'gate.md'}")
        return 0 if result["promoted"] else 1
    if args.command == "rollback":
        result = registry.rollback(by=args.operator)
        print(f"rolled back from {result['from']} to {result['to']}; the running app switches within a second")
        return 0
    if args.command in ("register", "adopt"):
        version, created = registry.register(by=args.command, serve_if_first=args.command == "adopt")
        if version is None:
            raise ArtifactError(f"no trained model in {config.artifacts_dir} to register; build one with "
                                f"`python -m training.pipeline --config {config.path}`")
        served = registry.served_name()
        state = "served" if served == version.name else version.status
        print(f"{version.name} {'registered' if created else 'already registered'} ({state})")
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
