"""Screenshots of the customer's chat page, desktop and phone, taken from the real page in Chromium.

    python docs/make_screenshots.py                      # starts `python app.py` (configs/demo.yaml) on a free port
    python docs/make_screenshots.py --url http://127.0.0.1:7860     # or uses a running app

Each view gets its own browser (so its own conversation), runs a short scripted conversation and
writes docs/screenshots/desktop.png (1280x900) and docs/screenshots/phone.png (390x844), reduced to
a 256-colour palette so that they stay small enough to commit. The conversations are real: they are
stored in that app's store like any other (no order is changed). Needs Chromium (`/usr/bin/chromium`,
or `--chromium PATH`) and the `playwright` Python package (a dev dependency).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.processes import stop  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
VIEWS = {
    # name: (viewport, the customer's messages)
    # Product cards, then the side-by-side card of two of them (demo pack titles).
    "desktop": ({"width": 1280, "height": 900}, ["a cheap laptop for a student",
                                                  "what's the difference between the Arbor Cloudbook 11 and "
                                                  "the Arbor Cloudbook 14?"]),
    # Quick replies: a cancellation's confirmation, Yes / No as buttons (left unanswered: nothing changes).
    "phone": ({"width": 390, "height": 844}, ["I'd like to cancel order HC-104319", "samuel.adeyemi@example.com"]),
}
log = logging.getLogger("make_screenshots")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python docs/make_screenshots.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running app's base URL (default: start `python app.py` for the run)")
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"), help="config for the started app")
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for desktop.png and phone.png")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium", help="Chromium binary")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for a started app (first run builds)")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def started_app(config: str, timeout: float) -> Iterator[str]:
    """`python app.py --config CONFIG` on a free port until the page answers; stopped afterwards."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "app.py", "--config", config, "--port", str(port)], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"error: app.py exited with {proc.returncode}; run `python app.py --config {config}` "
                                 "to see why")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit(f"error: app.py did not answer within {timeout:.0f} s; try --timeout")
                time.sleep(2)
        yield url
    finally:
        stop(proc)


def converse(page, messages: list[str]) -> None:
    """Type each message and wait for the assistant's answer (and the end of the turn)."""
    for text in messages:
        before = page.locator("#chat [data-testid=bot]").count()
        box = page.locator("#message textarea")
        box.fill(text)
        box.press("Enter")
        page.wait_for_function(f"document.querySelectorAll('#chat [data-testid=bot]').length > {before}",
                               timeout=120_000)
        page.wait_for_function("!(document.getElementById('att-live')?.innerText || '').includes('typing')",
                               timeout=120_000)
    page.wait_for_timeout(500)     # the last bubble's scroll settles


def shrink(path: Path) -> None:
    """A 256-colour palette PNG: a fraction of the size, no visible change for a UI screenshot."""
    try:
        from PIL import Image
    except ImportError:      # Pillow comes with Gradio; without it the full-colour file stays
        return
    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def take(url: str, out: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            for name, (viewport, messages) in VIEWS.items():
                context = browser.new_context(viewport=viewport, is_mobile=name == "phone",
                                              has_touch=name == "phone", device_scale_factor=1)
                page = context.new_page()
                page.goto(url, wait_until="domcontentloaded")
                page.locator("#message textarea").wait_for(timeout=120_000)
                converse(page, messages)
                path = out / f"{name}.png"
                page.screenshot(path=str(path))
                shrink(path)
                written.append(path)
                context.close()
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not os.path.exists(args.chromium):
        raise SystemExit(f"error: no Chromium at {args.chromium}; install it (apt-get install chromium) or pass "
                         "--chromium PATH")
    out = Path(args.out)
    if args.url:
        written = take(args.url.rstrip("/"), out, args.chromium)
    else:
        with started_app(args.config, args.timeout) as url:
            written = take(url, out, args.chromium)
    for path in written:
        log.info("wrote %s (%d KB)", path, path.stat().st_size // 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
