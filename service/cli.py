"""Shared command-line plumbing: one-line errors instead of tracebacks, logging set-up."""
from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

from service.errors import AttendantError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run an entry point; an AttendantError becomes `error: ...` on stderr and exit code 2."""
    try:
        code = main(argv)
    except AttendantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
