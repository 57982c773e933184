"""Shared command-line plumbing: one-line errors instead of tracebacks, logging set-up."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Callable, Sequence

from core.errors import AttendantError

if TYPE_CHECKING:
    from core.config import Config


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


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments every command shares: --config, --set section.key=value (repeatable), --verbose."""
    parser.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                        help="override one config value (a YAML value), e.g. --set training.learning_rate=3e-5; "
                             "repeatable")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def config_from_args(args: argparse.Namespace) -> "Config":
    """The config named by --config with the --set overrides applied (ConfigError if anything is wrong)."""
    from core.config import load_config

    return load_config(args.config, getattr(args, "overrides", ()) or ())
