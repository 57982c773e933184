"""The operator console's "Review" tab: the review queue and the correction forms.

Conversations ranked by need (service/review.py holds the ranking and its weights), filterable by
date, action and model version; one conversation's turns with what the customer said, what the
assistant did and why (the policy's reason, the top intents, the FAQ candidates with their scores);
and a form per correction kind (service/corrections.py checks, redacts and stores them). Callbacks only
wire components to those modules; each starts with `ctx.require(request)`. Everything shown is escaped.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import gradio as gr

from core.errors import AttendantError
from service import corrections as corr
from service import review
from webapp import presenters

log = logging.getLogger(__name__)

ANY = "(any)"
QUEUE_ROWS = 50
TURN_LIMIT = 20_000          # most recent turns read for the queue
HEADERS = ["rank", "conversation", "need", "why", "turns", "rating", "last turn (UTC)", "model versions"]
_SERVER_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
ACTIONS = ["answer_faq", "clarify", "recommend", "small_talk", "out_of_scope", "fallback", "handoff"]


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(float(ts or 0), dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else ""


def queue_rows(needs: list[review.ConversationNeed]) -> list[list[str]]:
    rows = []
    for rank, n in enumerate(needs[:QUEUE_ROWS], 1):
        why = ", ".join(s.replace("_", " ") + (f" x{c}" if c > 1 else "") for s, c in n.signals.most_common())
        rows.append([str(rank), n.session_id, f"{n.score:g}", why, str(len(n.turns)),
                     "" if n.rating is None else str(n.rating), _when(n.last_at), ", ".join(n.model_versions)])
    safe = presenters.ticket_rows(rows)   # inert cells: markup characters become look-alikes
    for row, original in zip(safe, rows):
        if _SERVER_ID.match(original[1]):  # server-made ids stay as they are, so they can be copied
            row[1] = original[1]
    return safe


def turn_markdown(n: int, why: dict[str, Any], corrected: list[dict[str, Any]]) -> str:
    """One turn for the operator: every value escaped (customer words, reply, ids)."""
    e = presenters.escape_text
    conf = why.get("confidence")
    lines = [f"#### Turn {n} · {e(why['turn_id'])}" + (" · needs review: " + e(", ".join(why["signals"]))
                                                         if why["signals"] else ""),
             f"**Customer:** {presenters.escape_user_text(why['customer'])}",
             f"**Assistant** ({e(why['action'])}): {presenters.escape_user_text(why['reply'])}",
             f"**Why:** {e(why['reason'] or 'no reason recorded')} · intent {e(why['intent'])}"
             + (f" ({conf:.2f})" if isinstance(conf, (int, float)) else "")
             + (" · thumbs down" if why.get("feedback") == -1 else " · thumbs up" if why.get("feedback") == 1 else ""),
             "**Top intents:** " + (", ".join(f"{e(i)} {p:.2f}" for i, p in why["top_intents"]) or "none recorded"),
             "**FAQ candidates:** " + ("; ".join(f"{e(f)} {s:.3f} ({e(q)})" if q else f"{e(f)} {s:.3f}"
                                                 for f, s, q in why["faq_candidates"]) or "none recorded")]
    if why.get("oos_score") is not None:
        lines.append(f"**Out-of-scope score:** {float(why['oos_score']):.3f}")
    for c in corrected:
        lines.append(f"*Corrected ({e(c['kind'])}) by {e(c['author'])}, {_when(c['created_at'])}: "
                     f"{e(correction_summary(c))}*")
    return "\n\n".join(lines)


def correction_summary(c: dict[str, Any]) -> str:
    p = c.get("payload") or {}
    return {"intent": f"intent {p.get('intent')}", "faq": f"FAQ {p.get('faq_id')}",
            "paraphrase": f"'{p.get('text')}' added to {p.get('faq_id')}",
            "new_faq": f"new FAQ: {p.get('question')}", "out_of_scope": "out of scope"}.get(c.get("kind"), "")


def correction_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = [[str(c["id"]), c["kind"], str(c.get("turn_id") or ""), correction_summary(c), c["author"], _when(c["created_at"])]
           for c in reversed(rows[-QUEUE_ROWS:])]
    return presenters.ticket_rows(out)


def build_review_tab(ctx: Any) -> None:
    """The Review tab's components and callbacks (inside an open gr.Tab of the operator console)."""
    if ctx.config is None:
        gr.Markdown("The review queue needs the deployment's config (the pack's intents and FAQ).")
        return
    try:
        pack = corr.Pack.from_config(ctx.config)
    except AttendantError as exc:
        gr.Markdown(f"The review queue cannot read the pack: {presenters.escape_text(exc)}")
        return
    store = ctx.store
    faq_choices = [(f"{fid}: {r.get('question', '')}", fid) for fid, r in sorted(pack.faqs.items())]

    gr.Markdown("Conversations ranked by need: thumbs down 5, rating of 1-2 4, handoff 3, fallback 3, "
                "out of scope 2, clarification 2, intent confidence under 0.5 1 (per turn; corrected turns "
                "no longer count).")
    with gr.Row():
        since = gr.Textbox(label="From (YYYY-MM-DD, UTC)", scale=1)
        until = gr.Textbox(label="To (YYYY-MM-DD, UTC)", scale=1)
        action = gr.Dropdown(choices=[ANY, *ACTIONS], value=ANY, label="Action", scale=1)
        version = gr.Textbox(label="Model version", placeholder="any", scale=1)
    refresh = gr.Button("Refresh queue", size="sm", elem_id="review-refresh")
    status = gr.Markdown(elem_id="review-status")
    queue = gr.Dataframe(headers=HEADERS, interactive=False, label="Review queue", datatype="str",
                         elem_id="review-queue")
    with gr.Row():
        conversation = gr.Textbox(label="Conversation", placeholder="a conversation id from the queue", scale=3,
                                  elem_id="review-conversation")
        show = gr.Button("Show conversation", scale=1, elem_id="review-show")
    turns_view = gr.Markdown(elem_id="review-turns")
    gr.Markdown("### Correct a turn")
    turn = gr.Dropdown(label="Turn", choices=[], value=None, elem_id="review-turn")
    kind = gr.Radio(choices=[(desc, k) for k, desc in corr.KINDS.items()], value=corr.INTENT, label="Correction",
                    elem_id="review-kind")
    # value=None: Gradio's dropdowns otherwise start on their first choice, and an untouched form
    # would store that intent or FAQ entry as if the operator had picked it.
    with gr.Row():
        intent = gr.Dropdown(choices=sorted(pack.intents), value=None, label="Right intent (set the right intent)")
        faq = gr.Dropdown(choices=faq_choices, value=None, label="FAQ entry (right FAQ, or where the wording goes)")
    wording = gr.Textbox(label="Wording to add (empty: the customer's message)")
    with gr.Row():
        question = gr.Textbox(label="New FAQ: question")
        answer = gr.Textbox(label="New FAQ: answer", lines=3)
        paraphrases = gr.Textbox(label="New FAQ: other wordings, one a line", lines=3)
    apply = gr.Button("Apply correction", variant="primary", elem_id="review-apply")
    result = gr.Markdown(elem_id="review-result")
    recent = gr.Dataframe(headers=["id", "kind", "turn", "what", "by", "when"], interactive=False,
                          label="Recent corrections", datatype="str")

    def do_refresh(since_s: str, until_s: str, action_s: str, version_s: str, current: str, request: gr.Request):
        ctx.require(request)
        try:
            lo, hi = review.day_bounds(since_s or None, until_s or None)
        except ValueError:
            return gr.update(), "Dates are YYYY-MM-DD (e.g. 2026-12-01).", gr.update(), gr.update()
        turns = store.turns(since=lo, until=hi, model_version=(version_s or "").strip() or None, limit=None)
        turns = turns[-TURN_LIMIT:]
        rows = store.corrections()
        needs = review.rank_conversations(turns, store.ratings(since=lo, until=hi),
                                          corrected=corr.corrected_turn_ids(rows),
                                          action=None if action_s in (None, "", ANY) else action_s,
                                          model_version=(version_s or "").strip() or None)
        note = (f"{len(needs)} conversation(s) need review ({len(turns)} turn(s) read)." if needs
                else "Nothing needs review for these filters.")
        top = current or (needs[0].session_id if needs else "")
        return queue_rows(needs), note, top, correction_rows(rows)

    def do_show(session_id: str, request: gr.Request):
        ctx.require(request)
        session_id = (session_id or "").strip()
        turns = store.turns(session_id=session_id) if session_id else []
        if not turns:
            return "No turns recorded for this conversation.", gr.update(choices=[], value=None), gr.update()
        rows = store.corrections()
        by_turn: dict[str, list[dict[str, Any]]] = {}
        for c in rows:
            if c.get("turn_id"):
                by_turn.setdefault(c["turn_id"], []).append(c)
        questions = {fid: str(r.get("question", "")) for fid, r in pack.with_new_faqs(rows).faqs.items()}
        whys = [review.explain_turn(t, questions) for t in turns]
        text = "\n\n---\n\n".join(turn_markdown(i, w, by_turn.get(w["turn_id"], [])) for i, w in enumerate(whys, 1))
        choices = [(f"{i}. {presenters.ticket_rows([[w['customer'][:60]]])[0][0]}", w["turn_id"])
                   for i, w in enumerate(whys, 1)]
        needy = [w["turn_id"] for w in whys if w["signals"] and w["turn_id"] not in by_turn]
        value = needy[0] if needy else whys[0]["turn_id"]
        faqs = [(f"{fid}: {q}", fid) for fid, q in sorted(questions.items())]
        return text, gr.update(choices=choices, value=value), gr.update(choices=faqs)

    def do_apply(session_id: str, turn_id: str, kind_s: str, intent_s: str, faq_s: str, wording_s: str,
                 question_s: str, answer_s: str, paraphrases_s: str, request: gr.Request):
        author = ctx.require(request)
        payload: dict[str, Any] = {"intent": intent_s, "faq_id": faq_s, "text": wording_s, "question": question_s,
                                   "answer": answer_s, "paraphrases": paraphrases_s}
        session_id, turn_id = (session_id or "").strip(), (turn_id or "").strip()
        on_turn = {"session_id": session_id, "turn_id": turn_id} if session_id and turn_id else {}
        try:
            cid = corr.apply_correction(store, kind_s, payload, author, pack, **on_turn)
        except AttendantError as exc:
            return f"Not stored: {presenters.escape_text(exc)}", gr.update()
        return (f"Stored correction #{cid} ({presenters.escape_text(corr.KINDS[kind_s])}) by "
                f"{presenters.escape_text(author)}.", correction_rows(store.corrections()))

    refresh.click(do_refresh, [since, until, action, version, conversation], [queue, status, conversation, recent],
                  api_visibility="private")
    show.click(do_show, [conversation], [turns_view, turn, faq], api_visibility="private")
    apply.click(do_apply, [conversation, turn, kind, intent, faq, wording, question, answer, paraphrases],
                [result, recent], api_visibility="private")
