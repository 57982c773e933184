"""Attendant web chat: `python app.py [--config configs/demo.yaml] [--host H] [--port P]`.

On a fresh clone the first run builds whatever the config's artifacts lack, then serves.
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
    """The Gradio app and the assistant behind it (tests use this too)."""
    from webapp.startup import prepare_assistant
    from webapp.ui import build_ui

    config = load_config(config_path, overrides)
    assistant = prepare_assistant(config, build_missing=build_missing)
    return build_ui(assistant, config, title=f"{config.store_name} support"), assistant, config


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    demo, _, config = create_app(args.config, build_missing=not args.no_build, overrides=args.overrides)
    from webapp.ui import CSS

    host = args.host or config.server.host
    port = args.port or config.server.port
    log.info("serving %s on http://%s:%d", config.store_name, host, port)
    # demo.guard's middleware sets the page's HttpOnly cookie, refuses bodies over 64 KB (413) and
    # rate-limits each client (429) before Gradio parses anything.
    demo.queue(default_concurrency_limit=4).launch(server_name=host, server_port=port, css=CSS, footer_links=["api"],
                                                   app_kwargs=demo.guard.app_kwargs(), max_file_size=demo.guard.max_body_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
