"""API keys for channel integrations (a website widget, a messaging bridge).

`python -m webapp.apikeys --config PATH create NAME [--origin https://shop.example ...] [--rate-per-minute N]`
prints the key once (`att.<key id>.<secret>`); the store keeps only the secret's SHA-256 digest.
`list` shows the keys (never a secret), `revoke KEY_ID` ends one at once on every replica, and the
conversations started with it stop working too.

A key with origins may be used from those web pages only (the browser's `Origin` header must be one
of them; CORS allows exactly those): that is a widget's key, visible in the store's page source and
harmless elsewhere. A key without origins is for servers: a request that carries an `Origin` is refused.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hmac
import re
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from core.cli import add_config_arguments, config_from_args, run_cli
from core.errors import AttendantError
from webapp.security import digest

PREFIX = "att"
_KEY = re.compile(r"^att\.([0-9a-f]{16})\.([A-Za-z0-9_-]{20,100})$")


def normalise_origin(origin: str) -> str:
    """`https://Shop.example:443/` -> `https://shop.example`; AttendantError for anything but an origin."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username:
        raise AttendantError(f"{origin!r} is not a web origin (scheme://host[:port], e.g. https://shop.example)")
    default = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


def create_key(store: Any, name: str, origins: Sequence[str] = (), rate_per_minute: int | None = None,
               now: float | None = None) -> str:
    """A new key (the full secret string, shown once)."""
    name = name.strip()
    if not name or len(name) > 80:
        raise AttendantError("a key needs a name of 1-80 characters (the channel it is for)")
    if rate_per_minute is not None and rate_per_minute < 1:
        raise AttendantError("--rate-per-minute must be at least 1")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    store.add_api_key(key_id, name, digest(secret), sorted({normalise_origin(o) for o in origins}),
                      rate_per_minute, time.time() if now is None else now)
    return f"{PREFIX}.{key_id}.{secret}"


def check_key(store: Any, presented: object) -> dict[str, Any] | None:
    """The live key record a presented key string belongs to, or None (malformed, unknown, wrong secret, revoked)."""
    if not isinstance(presented, str):
        return None
    m = _KEY.match(presented.strip())
    if m is None:
        return None
    record = store.api_key(m.group(1))
    if record is None or record.get("revoked_at") is not None:
        return None
    return record if hmac.compare_digest(record["secret_hash"], digest(m.group(2))) else None


def live_key(store: Any, key_id: str) -> dict[str, Any] | None:
    record = store.api_key(key_id)
    return record if record is not None and record.get("revoked_at") is None else None


def origin_allowed(record: dict[str, Any], origin: str | None) -> bool:
    """No Origin header (a server, curl): allowed. From a browser: only the key's own origins."""
    if origin is None:
        return True
    try:
        return normalise_origin(origin) in record["origins"]
    except AttendantError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m webapp.apikeys", description="Create, list and revoke REST API keys.")
    add_config_arguments(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create", help="make a key and print it (once)")
    create.add_argument("name", help="what the key is for, e.g. 'website widget' or 'whatsapp bridge'")
    create.add_argument("--origin", action="append", default=[],
                        help="a web page origin allowed to use the key (repeat); none: server-to-server only")
    create.add_argument("--rate-per-minute", type=int, default=None,
                        help="requests per minute for this key (default: the config's server.key_rate_per_minute)")
    sub.add_parser("list", help="list keys (ids, names, origins; never secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    args = p.parse_args(argv)
    from service.assembly import open_store

    store = open_store(config_from_args(args))
    if args.cmd == "create":
        print(create_key(store, args.name, args.origin, args.rate_per_minute))
    elif args.cmd == "list":
        for k in store.api_keys():
            state = "revoked" if k["revoked_at"] else "active"
            made = dt.datetime.fromtimestamp(k["created_at"]).strftime("%Y-%m-%d %H:%M")
            print(f"{k['key_id']}  {state:7}  {made}  {k['name']}  origins={','.join(k['origins']) or '-'}"
                  f"  rate={k['rate_per_minute'] or 'default'}")
    elif not store.revoke_api_key(args.key_id, time.time()):
        raise AttendantError(f"no active key {args.key_id}; see `python -m webapp.apikeys list`")
    else:
        print(f"revoked {args.key_id}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
