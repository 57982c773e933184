"""Attendant: `python app.py [--config configs/demo.yaml] [--host H] [--port P] [--set store.url=...]`.

On a fresh clone the first run builds whatever the config's artifacts lack, then serves the customer
chat at `/`, the operator console at `/operator` and the REST API at `/api/v1` (webapp/server.py).
Several replicas can share one PostgreSQL store (`store.url`); see docs/scaling.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from core.cli import add_config_arguments, run_cli, setup_logging
from core.config import load_config

log = logging.getLogger("attendant")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="Serve the Attendant customer-service web chat.")
    p.add_argument("--host", default=None, help="address to listen on (default: the config's server.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: the config's server.port, 7860)")
    p.add_argument("--no-build", action="store_true",
                   help="fail with an error instead of building missing artifacts")
    add_config_arguments(p)
    return p.parse_args(argv)


def create_app(config_path: str | None = None, build_missing: bool = True, overrides: Sequence[str] = ()):
    """The web app (FastAPI: customer page, operator console, REST API) and the assistant behind it."""
    from webapp.server import create_server
    from webapp.startup import prepare_assistant

    config = load_config(config_path, overrides)
    assistant = prepare_assistant(config, build_missing=build_missing)
    return create_server(assistant, config), assistant, config


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    app, _, config = create_app(args.config, build_missing=not args.no_build, overrides=args.overrides)
    import uvicorn

    host = args.host or config.server.host
    port = args.port or config.server.port
    log.info("serving %s on http://%s:%d (customer chat at /, operator console at /operator, REST API at /api/v1)",
             config.store_name, host, port)
    proxies = config.server.trusted_proxies.strip()
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False,
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
