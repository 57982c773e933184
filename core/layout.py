"""Where a deployment's artifacts live, in one place.

    <artifacts_dir>/
      teacher/   fine-tuned model (training.train)         student/  distilled model (training.distill)
      served/    compressed student (training.compress)    indexes/  FAISS indexes, calibration, oos/
      runs/<model>/  checkpoints, logs, results.json       reports/  evaluation reports, latest/
      attendant.sqlite  sessions, transcripts, tickets, orders
      models/v0001/ ...  the registry (training.models): each version a layout of its own (served/,
                         indexes/, report/, gate.json, config.yaml, version.json); models/SERVED names
                         the served one. teacher/ student/ served/ indexes/ above are then the build's
                         workspace, and the app serves the version SERVED (or the store) names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TEACHER, STUDENT, SERVED = "teacher", "student", "served"
MODEL_KINDS = (TEACHER, STUDENT, SERVED)
# The model the app serves: the first of these that has been built.
SERVING_PREFERENCE = (SERVED, STUDENT, TEACHER)
MODEL_META_FILE = "attendant.json"
MODELS_DIR = "models"
SERVED_POINTER = "SERVED"          # under models/: the served version's name, one line
VERSION_FILE = "version.json"      # in each version folder
VERSION_NAME = re.compile(r"^v\d{4,}$")


def is_version_name(name: str) -> bool:
    return bool(VERSION_NAME.match(str(name)))


@dataclass(frozen=True)
class ArtifactLayout:
    root: Path

    def model(self, kind: str) -> Path:
        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
        return self.root / kind

    @property
    def teacher(self) -> Path:
        return self.root / TEACHER

    @property
    def student(self) -> Path:
        return self.root / STUDENT

    @property
    def served(self) -> Path:
        return self.root / SERVED

    @property
    def indexes(self) -> Path:
        return self.root / "indexes"

    @property
    def oos(self) -> Path:
        return self.indexes / "oos"   # calibrated for the encoder the indexes were built with

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def store(self) -> Path:
        return self.root / "attendant.sqlite"

    def run_dir(self, output_dir: Path) -> Path:
        """Checkpoints and logs of the run that writes `output_dir`."""
        return self.root / "runs" / Path(output_dir).name

    def served_model_dir(self) -> Path | None:
        """The trained model the app serves, if any has been built."""
        for kind in SERVING_PREFERENCE:
            folder = self.root / kind
            if (folder / MODEL_META_FILE).is_file():
                return folder
        return None

    # -- the model registry (training.models writes it; the service only reads it) ---------------
    @property
    def models(self) -> Path:
        return self.root / MODELS_DIR

    @property
    def served_pointer(self) -> Path:
        return self.models / SERVED_POINTER

    def version_dir(self, version: str) -> Path:
        if not is_version_name(version):
            raise ValueError(f"not a version name: {version!r} (expected e.g. v0001)")
        return self.models / version

    def version_layout(self, version: str) -> "ArtifactLayout":
        """A version folder is laid out like the root: served/ (or student/, teacher/), indexes/."""
        return ArtifactLayout(self.version_dir(version))

    def versions(self) -> list[str]:
        """Registered versions (folders holding a version.json), oldest first."""
        if not self.models.is_dir():
            return []
        names = [p.name for p in self.models.iterdir()
                 if p.is_dir() and is_version_name(p.name) and (p / VERSION_FILE).is_file()]
        return sorted(names, key=lambda n: int(n[1:]))

    def read_served_pointer(self) -> str | None:
        """The version models/SERVED names, when it names a registered version."""
        try:
            name = self.served_pointer.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return name if is_version_name(name) and (self.models / name / VERSION_FILE).is_file() else None
