"""Where a deployment's artifacts live, in one place.

    <artifacts_dir>/
      teacher/   fine-tuned model (training.train)         student/  distilled model (training.distill)
      served/    compressed student (training.compress)    indexes/  FAISS indexes, calibration, oos/
      runs/<model>/  checkpoints, logs, results.json       reports/  evaluation reports, latest/
      attendant.sqlite  sessions, transcripts, tickets, orders
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEACHER, STUDENT, SERVED = "teacher", "student", "served"
MODEL_KINDS = (TEACHER, STUDENT, SERVED)
# The model the app serves: the first of these that has been built.
SERVING_PREFERENCE = (SERVED, STUDENT, TEACHER)
MODEL_META_FILE = "attendant.json"


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
