"""JSON Lines reading and writing: one reader for every data file of the project.

A bad line is a DataError naming the file, the line and what was expected, never a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from core.atomic import atomic_write_text
from core.errors import DataError

MAX_BAD_LINES_SHOWN = 3


def read_jsonl(path: str | Path, required: Sequence[str] = (), what: str = "record", *,
               numbered: bool = False) -> list[Any]:
    """The objects of a JSON Lines file (blank lines skipped); each must be a mapping holding `required`.

    With `numbered`, each item is `(line_number, object)` so callers can point at a line later.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found ({what}s, JSON Lines)")
    rows: list[Any] = []
    bad: list[str] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    bad.append(f"line {number}: not valid JSON ({exc.msg})")
                    continue
                if not isinstance(obj, dict):
                    bad.append(f"line {number}: expected a JSON object, got {type(obj).__name__}")
                    continue
                missing = [k for k in required if k not in obj]
                if missing:
                    bad.append(f"line {number}: {what} without {', '.join(repr(k) for k in missing)}")
                    continue
                rows.append((number, obj) if numbered else obj)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (expected JSON Lines of {what}s)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if bad:
        more = f" (and {len(bad) - MAX_BAD_LINES_SHOWN} more)" if len(bad) > MAX_BAD_LINES_SHOWN else ""
        raise DataError(f"{path}: {'; '.join(bad[:MAX_BAD_LINES_SHOWN])}{more}")
    return rows


def jsonl_text(rows: Iterable[Any]) -> str:
    """Rows as JSON Lines text (UTF-8 kept as is), one object a line."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write rows as JSON Lines, atomically."""
    return atomic_write_text(Path(path), jsonl_text(rows))
