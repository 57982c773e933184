"""A read-only "Model" tab: the latest evaluation report's tables and plots.

Call `build_model_tab(config)` inside an open `gr.Blocks` / `gr.Tab` context. It reads
`config.reports_dir/latest` (written by `python -m evaluation`); the reload button
re-reads it, so a new evaluation shows up without restarting the app. No callback changes anything.

The tab is public, so it shows metrics only: no absolute server paths (file names at most) and
no example messages (failed dialog turns, missed FAQ paraphrases and product requests are left
out; the report folder on the server has them all).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr

from core.config import PROJECT_ROOT, Config
from core.errors import AttendantError

log = logging.getLogger(__name__)

MAX_ROWS = 30   # rows per table in the tab (report.md and the CSVs have them all)


MESSAGE_LISTS = {"failed_turns": "failed dialog turns", "faq_misses": "FAQ paraphrases not ranked first",
                 "product_misses": "requests with no relevant product"}


def _public_path(value: Any) -> Any:
    """An absolute path becomes its file name; anything else is returned as is."""
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")) and "\n" not in value:
        return Path(value).name or value
    if isinstance(value, dict):
        return {k: _public_path(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public_path(v) for v in value]
    return value


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    """A copy of a report fit for the public tab: no example messages, no absolute paths."""
    out = dict(report)
    out["meta"] = _public_path(dict(report.get("meta", {})))
    sections = {}
    for name, sec in report.get("sections", {}).items():
        sec = dict(sec)
        notes = list(sec.get("notes") or [])
        for key, what in MESSAGE_LISTS.items():
            items = sec.pop(key, None)
            if items:
                count = sec.get("failed_turn_count", len(items)) if key == "failed_turns" else len(items)
                notes.append(f"{count} {what}: the examples are in the report folder on the server, not shown here.")
        if notes:
            sec["notes"] = notes
        if sec.get("source"):
            sec["source"] = _public_path(sec["source"])
        sections[name] = sec
    out["sections"] = sections
    return out


def _scrub(text: str, config: Config) -> str:
    """Last line of defence: server folders that may still appear in rendered text."""
    for root in sorted({str(config.reports_dir), str(PROJECT_ROOT), str(Path.home())}, key=len, reverse=True):
        if root and root != "/":
            text = text.replace(root + os.sep, "").replace(root, ".")
    return text


def _no_report(config: Config) -> str:
    return (f"No evaluation report yet for **{config.name}**.\n\nWrite one with:\n\n"
            f"```\npython -m evaluation --config {_public_path(str(config.path))}\n```")


def _images(report_dir: Path, report: dict[str, Any]) -> list[tuple[Any, str]]:
    """(image, caption) pairs; images are loaded here so Gradio never needs file access to the reports folder."""
    from PIL import Image

    files = [(p.get("file"), p.get("title") or p.get("file")) for p in report.get("plots", [])]
    if (report_dir / "compare.png").is_file():
        files.append(("compare.png", "comparison"))
    out = []
    for name, caption in files:
        path = report_dir / str(name)
        if path.is_file():
            try:
                with Image.open(path) as im:
                    out.append((im.copy(), caption))
            except OSError as exc:
                log.warning("cannot read plot %s: %s", path, exc)
    return out


def load_latest(config: Config) -> tuple[str, list[tuple[Any, str]]]:
    """Markdown for the tab and its plots, from the latest report (or a how-to when there is none)."""
    from evaluation.report import latest_report_dir, load_report, render_markdown

    report_dir = latest_report_dir(config.reports_dir)
    if report_dir is None:
        return _no_report(config), []
    try:
        report = load_report(report_dir)
    except AttendantError as exc:
        log.warning("the latest report cannot be read: %s", exc)
        return "The latest report cannot be read (the server log says why).", []
    text = f"Report folder: `{report_dir.name}`\n\n" + render_markdown(public_report(report), max_rows=MAX_ROWS,
                                                                        images=False)
    compare = report_dir / "compare.json"
    if compare.is_file():
        try:
            from evaluation.report import render_comparison

            data = json.loads(compare.read_text(encoding="utf-8"))
            text += "\n\n" + render_comparison({"meta": _public_path(data["a"])}, {"meta": _public_path(data["b"])},
                                                 data["rows"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot read %s: %s", compare, exc)
    return _scrub(text, config), _images(report_dir, report)


def build_model_tab(config: Config) -> None:
    """Render the latest report (read-only) inside the current Gradio Blocks/Tab context."""
    text, images = load_latest(config)
    with gr.Row():
        gr.Markdown("### Latest evaluation report")
        reload = gr.Button("Reload", size="sm", scale=0)
    with gr.Row():
        with gr.Column(scale=3):
            body = gr.Markdown(text, elem_id="model-report")
        with gr.Column(scale=2):
            gallery = gr.Gallery(images, label="Plots", columns=1, height="auto", object_fit="contain",
                                 interactive=False, elem_id="model-plots")
    reload.click(lambda: load_latest(config), None, [body, gallery], api_visibility="private")
