"""The operator console's "Versions" tab: the model registry, each version's gate report, promote and
roll back (training/models.py does the work; the running app switches within a second, service/live.py).

Promotion from here always goes through the gate (`--force` exists only on the command line, where it
is logged); who pressed the button is recorded in the version's events and the log. Nothing is shown
before the operator asks (a component's initial value would be in the page for anyone to read), and
every callback starts with `ctx.require(request)`.
"""
from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from core.errors import AttendantError
from webapp import presenters

log = logging.getLogger(__name__)

HEADERS = ["", "version", "status", "created (UTC)", "parent", "model", "held-out resolution", "gate"]


def _rows(registry: Any) -> list[list[str]]:
    from training.models import version_rows

    out = []
    for r in version_rows(registry):
        res = r["resolution"]
        out.append(["served" if r["served"] else "", r["version"], r["status"], str(r["created_at"] or ""),
                    r["parent"] or "", r["model"] or "", "" if res is None else f"{res:.3f}", r["gate"]])
    return out


def _served_line(registry: Any, live: Any) -> str:
    served = registry.served_name()
    running = getattr(live, "version", None)
    text = f"Served version: **{served or 'none registered'}**"
    if running is not None and running != served:
        text += f" (this server still answers with {running}; it switches within a second)"
    return text


def split_view(registry: Any, store: Any) -> tuple[str, list[str], list[list[str]]]:
    """The A/B split's state and, while one runs, each side's figures since it started."""
    from datetime import datetime

    from evaluation.monitoring import compare_versions

    split = registry.split()
    if split is None:
        return "No A/B split is running.", ["measure"], []
    served = registry.served_name()
    try:
        since = datetime.fromisoformat(split.since).timestamp()
    except ValueError:
        since = None
    headers, rows = compare_versions(store.turns(since=since), store.ratings(since=since), [served, split.version])
    text = (f"A/B split since {presenters.escape_text(split.since)}: **{presenters.escape_text(split.version)}** "
            f"answers {split.share:.0%} of conversations, {presenters.escape_text(served)} the rest.")
    return text, headers, rows


def version_report(registry: Any, name: str) -> str:
    """A version's summary and its gate report as Markdown (customer text escaped)."""
    from evaluation.gate import render_gate_markdown

    v = registry.get(name)
    meta = v.meta
    lines = [f"### {v.name}: {meta.get('status')}", "",
             f"Created {meta.get('created_at')}, parent {meta.get('parent') or '-'}, model "
             f"{(meta.get('model') or {}).get('kind')}, data hash `{str(meta.get('data_hash', ''))[7:23]}`, "
             f"{meta.get('corrections', 0)} correction(s) in its data.", ""]
    summary = meta.get("report_summary") or {}
    if summary:
        lines += ["| evaluation (at build) | value |", "|---|---|"]
        lines += [f"| {k} | {value:.3f} |" if isinstance(value, float) else f"| {k} | {value} |"
                  for k, value in summary.items()] + [""]
    events = meta.get("events") or []
    if events:
        lines += ["Events: " + "; ".join(
            f"{e.get('at')} {e.get('event')} by {presenters.escape_text(e.get('by'))}"
            + (" (forced, gate skipped)" if e.get("forced") else "") for e in events), ""]
    gate = v.gate()
    lines.append(render_gate_markdown(gate, escape=presenters.escape_user_text) if gate
                 else "Not through the gate yet (promote runs it).")
    return "\n".join(lines)


def build_versions_tab(ctx: Any) -> None:
    """The Versions tab's components and callbacks (inside an open gr.Tab of the operator console)."""
    if ctx.config is None:
        gr.Markdown("The versions view needs the deployment's config.")
        return
    from training.models import Registry

    def registry() -> Registry:
        return Registry(ctx.config, ctx.store)

    gr.Markdown("Every build is a candidate version. **Promote** compares it with the served version on the "
                "held-out dialogs and on every corrected turn (it takes a minute); it is served only if it "
                "passes. **Roll back** serves the previous version again. Running servers switch within a "
                "second, without a restart.")
    refresh = gr.Button("Refresh", size="sm", elem_id="versions-refresh")
    served = gr.Markdown(elem_id="versions-served")
    table = gr.Dataframe(headers=HEADERS, interactive=False, label="Versions (newest first)", datatype="str",
                         elem_id="versions-table")
    with gr.Row():
        name = gr.Textbox(label="Version", placeholder="v0002", scale=2, elem_id="versions-name")
        show = gr.Button("Show report", scale=1, elem_id="versions-show")
        promote = gr.Button("Promote (gated)", variant="primary", scale=1, elem_id="versions-promote")
        rollback = gr.Button("Roll back", variant="stop", scale=1, elem_id="versions-rollback")
    message = gr.Markdown(elem_id="versions-message")
    report = gr.Markdown(elem_id="versions-report")
    gr.Markdown("**A/B split**: a candidate answers a share of the conversations (each conversation stays "
                "with one version) and the served version the rest; their figures side by side below.")
    with gr.Row():
        share = gr.Number(value=0.1, minimum=0.01, maximum=0.5, step=0.05, label="Candidate's share", scale=1,
                          elem_id="versions-share")
        start_split = gr.Button("Start A/B split with the version above", scale=2, elem_id="versions-split-start")
        stop_split = gr.Button("Stop A/B split", scale=1, elem_id="versions-split-stop")
    split_line = gr.Markdown(elem_id="versions-split")
    split_table = gr.Dataframe(headers=["measure"], interactive=False, label="A/B split: each version since it "
                               "started", datatype="str", elem_id="versions-split-table")

    def listing() -> tuple[str, list[list[str]], str, Any]:
        reg = registry()
        text, headers, rows = split_view(reg, ctx.store)
        return _served_line(reg, ctx.assistant), _rows(reg), text, gr.Dataframe(value=rows, headers=headers)

    def do_refresh(request: gr.Request):
        ctx.require(request)
        return listing()

    def do_start_split(version: str, fraction: float, request: gr.Request):
        operator = ctx.require(request)
        try:
            split = registry().start_split(version, float(fraction or 0), by=f"{operator} (console)")
            text = f"{split.version} now answers {split.share:.0%} of conversations."
        except AttendantError as exc:
            text = str(exc)
        return (presenters.escape_text(text), *listing())

    def do_stop_split(request: gr.Request):
        operator = ctx.require(request)
        ended = registry().stop_split(by=f"{operator} (console)")
        text = f"A/B split with {ended.version} ended." if ended else "No A/B split was running."
        return (presenters.escape_text(text), *listing())

    def do_show(version: str, request: gr.Request):
        ctx.require(request)
        try:
            return version_report(registry(), version)
        except AttendantError as exc:
            return presenters.escape_text(exc)

    def do_promote(version: str, request: gr.Request):
        operator = ctx.require(request)
        log.info("operator %s asks to promote %r from the console", operator, version)
        try:
            reg = registry()
            result = reg.promote(version, by=f"{operator} (console)")
            text = (f"{result['version']} promoted: the gate passed." if result["promoted"] else
                    f"{result['version']} refused by the gate: " + "; ".join(result["gate"]["reasons"]))
            details = version_report(reg, result["version"])
        except AttendantError as exc:
            text, details = presenters.escape_text(exc), ""
        return (presenters.escape_text(text), details, *listing())

    def do_rollback(request: gr.Request):
        operator = ctx.require(request)
        try:
            result = registry().rollback(by=f"{operator} (console)")
            text = f"Rolled back from {result['from']} to {result['to']}."
        except AttendantError as exc:
            text = str(exc)
        return (presenters.escape_text(text), *listing())

    views = [served, table, split_line, split_table]
    refresh.click(do_refresh, None, views, api_visibility="private")
    show.click(do_show, [name], [report], api_visibility="private")
    promote.click(do_promote, [name], [message, report, *views], api_visibility="private")
    rollback.click(do_rollback, None, [message, *views], api_visibility="private")
    start_split.click(do_start_split, [name, share], [message, *views], api_visibility="private")
    stop_split.click(do_stop_split, None, [message, *views], api_visibility="private")
