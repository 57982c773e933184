"""The operator console's "Monitoring" tab: how the assistant is doing, from the store.

Plots and a summary for a date range and model version (evaluation/monitoring.py), the drift check
(evaluation/drift.py), the clusters of unanswered questions with a "Draft FAQ entry" button that fills an
editable new-FAQ form, saved as a `new_faq` correction once an operator wrote its answer
(evaluation/unanswered.py, service/corrections.py), and the explanation of one turn
(evaluation/explain.py). Every callback starts with `ctx.require(request)`; the work is in those
modules, the callbacks only wire it. Customer messages are the stored, redacted ones, shown as text.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import gradio as gr

from evaluation import monitoring as mon
from service.review import day_bounds
from webapp import presenters

log = logging.getLogger(__name__)

ALL_VERSIONS = "(all versions)"
DEFAULT_DAYS = 7
RECENT_TURNS = 50


def parse_range(since: str, until: str, now: float | None = None) -> tuple[float, float | None]:
    """'YYYY-MM-DD' (UTC) bounds; an empty start is DEFAULT_DAYS ago, an empty end is open. The end day is included."""
    now = time.time() if now is None else now
    days = [(text or "").strip() or None for text in (since, until)]
    try:
        start, end = day_bounds(*days)   # the review queue's date filter, the same UTC days
    except ValueError:
        raise gr.Error(f"Dates are YYYY-MM-DD (UTC), got {' to '.join(repr(d or '') for d in days)}.") from None
    return (now - DEFAULT_DAYS * 86400 if start is None else start), end


def _version(choice: str | None) -> str | None:
    return None if not choice or choice == ALL_VERSIONS else choice


def _drift_markdown(report: Any) -> str:
    if not report.enough:
        return f"**Drift:** {report.summary()}."
    head = "### ⚠️ Drift alert" if report.alert else "### No drift"
    rows = ["| signal | PSI (corrected) | level | test | p-value | fired | detail |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {s.name} | {s.psi_corrected:.3f} (raw {s.psi:.3f}) | {s.level:g} | {s.test} | {s.p_value:.2g} | "
             f"{'**yes**' if s.fired else 'no'} | {s.detail} |" for s in report.signals]
    return "\n".join([head, report.summary(), "", *rows])


def build_monitoring_tab(ctx: Any) -> None:
    """Call inside an open gr.Tab of the logged-in panel (webapp/console.py)."""
    with gr.Row():
        since = gr.Textbox(label="From (YYYY-MM-DD, UTC)", placeholder=f"last {DEFAULT_DAYS} days", scale=2)
        until = gr.Textbox(label="To (YYYY-MM-DD, UTC, included)", placeholder="now", scale=2)
        version = gr.Dropdown(label="Model version", choices=[ALL_VERSIONS], value=ALL_VERSIONS, scale=2,
                              allow_custom_value=True)
        refresh = gr.Button("Refresh", variant="primary", scale=1, elem_id="monitoring-refresh")
    summary = gr.Dataframe(headers=["measure", "value"], datatype="str", interactive=False, label="Summary")
    with gr.Row():
        volume = gr.LinePlot(x="period", y="value", color="metric", title="Conversations and turns over time",
                             elem_id="monitoring-volume")
        rates = gr.LinePlot(x="period", y="value", color="metric", title="Containment, resolution, handoff, fallback",
                            y_lim=[0, 1])
    with gr.Row():
        latency = gr.LinePlot(x="period", y="value", color="metric", title="Turn latency (ms)")
        intents = gr.BarPlot(x="intent", y="turns", title="Intent mix", x_label_angle=-45, sort="-y")
        ratings = gr.BarPlot(x="rating", y="count", title="Ratings (1-5)")

    gr.Markdown("#### Drift against the training data")
    check = gr.Button("Check drift", size="sm")
    drift = gr.Markdown()

    gr.Markdown("#### Unanswered questions (fallback, out of scope, clarification, thumbs down)")
    find = gr.Button("Find unanswered questions", size="sm")
    clusters = gr.Dataframe(headers=["#", "messages", "draft question", "examples", "why"], datatype="str",
                            interactive=False, label="Candidate FAQ entries, largest first", wrap=True,
                            elem_id="unanswered-clusters")
    clusters_state = gr.State([])
    with gr.Row():
        pick = gr.Number(label="Cluster #", value=1, precision=0, minimum=1, scale=1)
        draft = gr.Button("Draft FAQ entry", scale=1, elem_id="draft-faq")
    # The draft is an editable form: a new FAQ entry is stored only with an answer an operator wrote.
    question = gr.Textbox(label="Question", elem_id="faq-question")
    paraphrases = gr.Textbox(label="Paraphrases (one a line)", lines=4, elem_id="faq-paraphrases")
    answer = gr.Textbox(label="Answer", lines=3, elem_id="faq-answer")
    save = gr.Button("Save as a new FAQ correction", elem_id="save-faq")
    drafted = gr.Markdown(elem_id="faq-drafted")

    gr.Markdown("#### Why did it answer that? (one turn)")
    recent = gr.Dataframe(headers=["turn", "time (UTC)", "action", "intent", "message"], datatype="str",
                          interactive=False, label="Recent turns (newest first)", wrap=True)
    with gr.Row():
        turn_id = gr.Textbox(label="Turn id", placeholder="t-…", scale=3, elem_id="explain-turn-id")
        explain = gr.Button("Explain", scale=1, elem_id="explain-button")
    explanation = gr.Markdown(elem_id="explanation")

    def do_refresh(since_text: str, until_text: str, choice: str, request: gr.Request):
        ctx.require(request)
        start, end = parse_range(since_text, until_text)
        store = ctx.store
        turns = store.turns(since=start, until=end, model_version=_version(choice))
        df = mon.turns_frame(turns)
        versions = [ALL_VERSIONS] + mon.model_versions(store.turns(since=start, until=end))
        s = mon.summarise(df, store.ratings(since=start, until=end, model_version=_version(choice)))
        rows = [[t["turn_id"], time.strftime("%Y-%m-%d %H:%M", time.gmtime(t["created_at"])), t["action"] or "",
                 t["intent"] or "", (t["user_text"] or "")[:200]] for t in reversed(turns[-RECENT_TURNS:])]
        return (mon.summary_rows(s), mon.over_time(df), mon.rates_over_time(df), mon.latency_over_time(df),
                mon.intent_mix(df), mon.rating_counts(store.ratings(since=start, until=end,
                                                                     model_version=_version(choice))),
                gr.update(choices=versions, value=choice if choice in versions else ALL_VERSIONS), rows)

    def do_check(since_text: str, until_text: str, choice: str, request: gr.Request):
        ctx.require(request)
        from evaluation.drift import reference_for, run_check
        from webapp.metrics import active

        if ctx.assistant is None or ctx.config is None:
            return "Drift needs the served assistant and its config."
        start, end = parse_range(since_text, until_text) if (since_text or until_text) else (None, None)
        reference = reference_for(ctx.assistant, ctx.config.data.intents)
        report = run_check(ctx.store, ctx.assistant, reference, ctx.config.monitoring, since=start, until=end,
                           model_version=_version(choice) or ctx.assistant.model_version)
        metrics = active()
        if metrics is not None and report.enough:
            metrics.set_drift(report.scores(), report.alert)
        return _drift_markdown(report)

    def do_find(since_text: str, until_text: str, choice: str, request: gr.Request):
        ctx.require(request)
        from evaluation.unanswered import find_unanswered

        if ctx.assistant is None:
            return [], [], "Clustering needs the served assistant's encoder."
        start, end = parse_range(since_text, until_text)
        found = find_unanswered(ctx.store.turns(since=start, until=end, model_version=_version(choice)),
                                ctx.assistant.nlu.embedder)
        rows = [[str(n), str(c.size), c.question, " | ".join(c.examples[1:6]),
                 ", ".join(f"{k} {v}" for k, v in sorted(c.reasons.items()))] for n, c in enumerate(found, 1)]
        state = [{"question": c.question, "examples": c.examples, "size": c.size} for c in found]
        note = (f"{len(found)} group(s) of unanswered questions ({sum(c.size for c in found)} messages), largest "
                "first: pick one by its number, then Draft FAQ entry." if found
                else "No unanswered questions in this range.")
        return rows, state, note

    def do_draft(number: float, state: list[dict], request: gr.Request):
        ctx.require(request)
        from evaluation.unanswered import Cluster, draft_faq

        n = int(number or 0)
        if not state or not 1 <= n <= len(state):
            return gr.update(), gr.update(), "Find unanswered questions first, then pick a cluster number from the list."
        c = state[n - 1]
        payload = draft_faq(Cluster(c["question"], c["size"], list(c["examples"])))
        return (payload["question"], "\n".join(payload["paraphrases"]),
                f"Draft from cluster {n} ({c['size']} messages): edit it, write the answer, then save.")

    def do_save(question_text: str, paraphrase_lines: str, answer_text: str, request: gr.Request):
        author = ctx.require(request)
        from evaluation.unanswered import NEW_FAQ
        from service.corrections import CorrectionError, Pack, apply_correction

        if ctx.config is None:
            return "Saving needs the deployment config (its FAQ and intents)."
        payload = {"question": question_text or "", "answer": answer_text or "",
                   "paraphrases": [line.strip() for line in (paraphrase_lines or "").splitlines() if line.strip()]}
        try:
            correction = apply_correction(ctx.store, NEW_FAQ, payload, author, Pack.from_config(ctx.config))
        except CorrectionError as exc:
            return f"Not saved: {exc}"
        return f"Saved new FAQ correction #{correction}: it goes through the corrections review and the next build."

    def do_explain(turn: str, request: gr.Request):
        ctx.require(request)
        from evaluation.drift import reference_for
        from evaluation.explain import explain_turn, explanation_markdown

        turn = (turn or "").strip()
        if not turn:
            return "Enter a turn id (from the recent turns above, a ticket or the API's `turn_id`)."
        found = ctx.store.turns(turn_id=turn) if turn.startswith("t-") else []
        if not found:
            return f"No turn with id {presenters.escape_text(turn[:40])}."
        if ctx.assistant is None:
            return "Explanations need the served assistant."
        reference = reference_for(ctx.assistant, ctx.config.data.intents) if ctx.config is not None else None
        return explanation_markdown(explain_turn(found[0], ctx.assistant, reference))

    filters = [since, until, version]
    refresh.click(do_refresh, filters, [summary, volume, rates, latency, intents, ratings, version, recent],
                  api_visibility="private")
    check.click(do_check, filters, [drift], api_visibility="private")
    # One at a time in one queue (webapp/server.py otherwise runs several events at once): a draft asked
    # for while the clustering still runs waits for its clusters instead of reading the empty list.
    find.click(do_find, filters, [clusters, clusters_state, drafted], api_visibility="private",
               concurrency_id="unanswered", concurrency_limit=1)
    draft.click(do_draft, [pick, clusters_state], [question, paraphrases, drafted], api_visibility="private",
                concurrency_id="unanswered", concurrency_limit=1)
    save.click(do_save, [question, paraphrases, answer], [drafted], api_visibility="private")
    explain.click(do_explain, [turn_id], [explanation], api_visibility="private")

