"""How long conversations are kept, and the command that deletes what is older.

`python -m service.retention --config PATH [--dry-run] [--transcripts-days N] [--tickets-days N]
[--sessions-days N]` deletes from the store transcript lines older than `transcripts_days`, closed
tickets closed more than `tickets_days` ago, and conversation sessions idle for more than
`sessions_days`, and expired tokens; it prints how many of each it deleted (or, with --dry-run,
would delete).
Open tickets, and the sessions waiting on them, are never deleted. Run it daily (cron, a systemd
timer); it is safe to run at any time, also while the app is serving.

The limits come from the config's `retention` section when it has one, else the defaults below;
the command-line flags override both. A limit of `None` (YAML `null`) keeps that kind forever.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from core.cli import add_config_arguments, config_from_args, run_cli
from core.errors import ConfigError

DEFAULT_TRANSCRIPTS_DAYS = 90
DEFAULT_TICKETS_DAYS = 365
DEFAULT_SESSIONS_DAYS = 30
DAY = 86400.0


@dataclass(frozen=True)
class RetentionLimits:
    """Days to keep each kind of record (None: forever)."""
    transcripts_days: float | None = DEFAULT_TRANSCRIPTS_DAYS
    tickets_days: float | None = DEFAULT_TICKETS_DAYS
    sessions_days: float | None = DEFAULT_SESSIONS_DAYS

    def __post_init__(self) -> None:
        for name in ("transcripts_days", "tickets_days", "sessions_days"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"retention.{name} must be a number of days >= 0 or null (keep forever), "
                                  f"got {value!r}")

    @classmethod
    def from_config(cls, config: Any) -> "RetentionLimits":
        """The config's `retention` section (any object with these attributes), else the defaults."""
        section = getattr(config, "retention", None)
        if section is None:
            return cls()
        return cls(**{name: getattr(section, name, getattr(cls, name))
                      for name in ("transcripts_days", "tickets_days", "sessions_days")})


def cutoffs(limits: RetentionLimits, now: float | None = None) -> dict[str, float | None]:
    """The epoch time before which each kind is deleted (None: never)."""
    now = time.time() if now is None else now

    def before(days: float | None) -> float | None:
        return None if days is None else now - float(days) * DAY

    return {"transcripts_before": before(limits.transcripts_days),
            "closed_tickets_before": before(limits.tickets_days),
            "sessions_before": before(limits.sessions_days)}


def purge(store: Any, limits: RetentionLimits | None = None, *, dry_run: bool = False,
          now: float | None = None) -> dict[str, int]:
    """Delete (or with `dry_run` count) what is older than `limits`; returns counts per kind:
    {"transcripts": n, "tickets": n, "sessions": n}."""
    return store.purge(**cutoffs(limits or RetentionLimits(), now), dry_run=dry_run)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.retention",
                                description="Delete transcripts, closed tickets and sessions older than the "
                                            "retention limits.")
    add_config_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    for kind, default in (("transcripts", DEFAULT_TRANSCRIPTS_DAYS), ("tickets", DEFAULT_TICKETS_DAYS),
                          ("sessions", DEFAULT_SESSIONS_DAYS)):
        p.add_argument(f"--{kind}-days", type=float, default=None, metavar="DAYS",
                       help=f"keep {kind} this many days (default: the config's retention.{kind}_days, "
                            f"else {default})")
    args = p.parse_args(argv)
    config = config_from_args(args)
    limits = RetentionLimits.from_config(config)
    overrides = {f"{kind}_days": getattr(args, f"{kind}_days") for kind in ("transcripts", "tickets", "sessions")}
    limits = RetentionLimits(**{k: v if overrides[k] is None else overrides[k]
                                for k, v in vars(limits).items()})
    from service.assembly import open_store

    store = open_store(config)
    try:
        counts = purge(store, limits, dry_run=args.dry_run)
        # Expired conversation, browser and operator tokens (the server's limits; operator sessions
        # expire sooner on their own) are never used again: delete them too.
        tokens = 0 if args.dry_run else store.purge_tokens(time.time(), idle_ttl=config.server.token_idle_ttl_s,
                                                           max_age=config.server.token_max_age_s)
    finally:
        store.close()
    verb = "would delete" if args.dry_run else "deleted"

    def kept(days: float | None) -> str:
        return "kept forever" if days is None else f"older than {days:g} days"

    print(f"{verb} {counts['transcripts']} transcript lines ({kept(limits.transcripts_days)}), "
          f"{counts['tickets']} closed tickets ({kept(limits.tickets_days)}), "
          f"{counts['sessions']} sessions ({kept(limits.sessions_days)}) from {store.location}"
          + (f"; deleted {tokens} expired tokens" if tokens else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
