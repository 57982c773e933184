"""Shared plumbing for the evaluators: a result record and CSV output.

Each evaluator is a small class in the style of sentence-transformers' `evaluation/`: built from
its data, then called with the thing to evaluate; the call returns a flat dict of metrics and,
given an output folder, writes a CSV. `run()` returns the full result (metrics plus the detail
that the report and the plots need).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from core.errors import DataError
from core.jsonl import read_jsonl


@dataclass
class EvalResult:
    """What one evaluator found: headline metrics, tables for the report, CSV rows."""

    name: str
    metrics: dict[str, float | int | None]
    details: dict[str, Any] = field(default_factory=dict)
    csv_header: list[str] = field(default_factory=list)
    csv_rows: list[list[Any]] = field(default_factory=list)
    arrays: dict[str, Any] = field(default_factory=dict)   # raw values for the plots; not in report.json

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, **self.details}


class Evaluator:
    """Base class: subclasses implement `run(target) -> EvalResult`."""

    name: str = "evaluator"

    @property
    def csv_file(self) -> str:
        return f"{self.name}_results.csv"

    def run(self, target: Any) -> EvalResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, target: Any, output_path: str | Path | None = None) -> dict[str, float | int | None]:
        result = self.run(target)
        if output_path is not None:
            self.write_csv(result, output_path)
        return result.metrics

    def write_csv(self, result: EvalResult, output_path: str | Path) -> Path:
        out = Path(output_path)
        out.mkdir(parents=True, exist_ok=True)
        path = out / self.csv_file
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(result.csv_header)
            for row in result.csv_rows:
                writer.writerow([_csv_cell(v) for v in row])
        return path


def _csv_cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else round(v, 6)
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return "" if v is None else v


def finite(x: float | None) -> float | None:
    """NaN (sklearn's `zero_division=np.nan`) becomes None, so report.json stays valid JSON."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def ratio(num: int, den: int) -> float | None:
    """num / den, or None when nothing was counted (a metric with no cases is undefined, not 0)."""
    return None if den == 0 else num / den


def read_records(path: str | Path, required: Sequence[str], what: str) -> list[dict[str, Any]]:
    """The rows of a JSON Lines data file (core.jsonl.read_jsonl); an empty file is a DataError too."""
    rows = read_jsonl(path, required, what)
    if not rows:
        raise DataError(f"{path}: no {what}s in the file")
    return rows


def batched(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
