"""The Gradio web chat. Callbacks only move data between the page and `Assistant`; all the
decisions live in `service/` (engine, policy) and all formatting in `webapp/presenters.py`.

Who is talking is decided by the server (`webapp/security.py`): the page's conversation is found
through an HttpOnly cookie the server set, API callers get a token from `/start_conversation` and
pass it to `/respond`. Gradio's `session_hash` (chosen by the client) is never a conversation key.
"""
from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from core.config import Config
from service import smalltalk
from service.engine import Assistant
from service.operator import OperatorConsole
from webapp import presenters
from webapp.security import WebGuard

log = logging.getLogger(__name__)

CSS = """
.product-grid {display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px;}
.product-card {border: 1px solid #d0d7de; border-radius: 10px; padding: 10px; background: #fafbfc;}
.product-title {font-weight: 600; margin-bottom: 4px;}
.product-meta {font-size: 0.9em; color: #444;}
.product-reason {font-size: 0.9em; margin-top: 6px;}
.product-id {font-size: 0.75em; color: #888; margin-top: 4px;}
"""

NO_COOKIE = "This chat needs its session cookie: reload the page (and allow cookies for this site)."
BAD_TOKEN = "Unknown or expired conversation token. Call /start_conversation for a new one."
SLOW_DOWN = "Too many messages in this conversation; wait a few seconds."


def public_reply(reply) -> dict[str, Any]:
    """What crosses the network: the Reply without `debug` (decision, ranking, OOS and FAQ scores)."""
    data = reply.to_dict()
    data.pop("debug", None)
    return data


def _client(request: gr.Request | None) -> str:
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


def build_ui(assistant: Assistant, config: Config | None = None, title: str = "Customer support",
             examples: list[str] | None = None, guard: WebGuard | None = None) -> gr.Blocks:
    """The app's Blocks; `demo.guard` is its `WebGuard`, whose `app_kwargs()` must go to `launch`
    (the middleware that sets the page cookie, caps request sizes and rate-limits)."""
    examples = examples or smalltalk.SUGGESTED_QUESTIONS
    guard = guard or WebGuard()
    # Tickets are reviewable only when the desk is a persistent store (the app always uses one).
    console = OperatorConsole(assistant.desk) if hasattr(assistant.desk, "tickets") else None

    def web_session(request: gr.Request | None) -> str:
        browser = guard.browser_token(request)
        session_id = guard.browsers.session_id(browser) if browser else None
        if session_id is None:
            raise gr.Error(NO_COOKIE)
        return session_id

    def send(message: str, history: list, request: gr.Request):
        reply = assistant.respond(web_session(request), message)
        history = list(history or []) + [
            {"role": "user", "content": presenters.escape_user_text(message)},
            {"role": "assistant", "content": presenters.reply_markdown(reply)},
        ]
        return ("", history, presenters.sources_markdown(reply), presenters.product_cards_html(reply),
                presenters.status_line(reply))

    def restart(request: gr.Request):
        browser = guard.browser_token(request)
        if browser is None or guard.browsers.renew_session(browser) is None:
            raise gr.Error(NO_COOKIE)
        return [], "", "", ""

    def api_start_conversation() -> dict:
        """Start a conversation: returns {"token": ..., "expires_in_s": ...}; pass the token to /respond."""
        return {"token": guard.api.issue(), "expires_in_s": int(guard.api.idle_ttl)}

    def api_respond(token: str, message: str) -> dict:
        """One turn of the conversation `token` (from /start_conversation): the Reply as JSON."""
        session_id = guard.api.session_id(token)
        if session_id is None:
            raise gr.Error(BAD_TOKEN)
        if not guard.token_limiter.allow(token):
            raise gr.Error(SLOW_DOWN)
        return public_reply(assistant.respond(session_id, message))

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}")
        with gr.Tab("Chat"):
            _chat_tab(send, restart, examples)
        if config is not None:
            with gr.Tab("Model"):
                from webapp.model_tab import build_model_tab

                build_model_tab(config)
        with gr.Tab("Operator"):
            _operator_tab(console, guard)
        gr.api(api_start_conversation, api_name="start_conversation")
        gr.api(api_respond, api_name="respond")
    demo.guard = guard
    return demo


def _chat_tab(send, restart, examples: list[str]) -> None:
    gr.Markdown("Ask about orders, shipping, returns, payments or products. Type **agent** at any time to reach "
                "a person.")
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chat", latex_delimiters=[])
            with gr.Row():
                box = gr.Textbox(placeholder="Type your message and press Enter", show_label=False,
                                 scale=5, max_lines=6, elem_id="message")
                send_btn = gr.Button("Send", variant="primary", scale=1, elem_id="send")
            gr.Examples(examples=[[q] for q in examples], inputs=[box], label="Try asking")
            status = gr.Markdown(elem_id="status")
            new_chat = gr.Button("New conversation", size="sm")
        with gr.Column(scale=2):
            gr.Markdown("### Where the answer came from")
            sources = gr.Markdown(elem_id="sources")
            gr.Markdown("### Suggested products")
            products = gr.HTML(elem_id="products")
    outputs = [box, chatbot, sources, products, status]
    box.submit(send, [box, chatbot], outputs, api_name="chat", api_visibility="private")
    send_btn.click(send, [box, chatbot], outputs, api_visibility="private")
    new_chat.click(restart, None, [chatbot, sources, products, status], api_visibility="private")


def _operator_tab(console: OperatorConsole | None, guard: WebGuard) -> None:
    if console is None:
        gr.Markdown("This assistant keeps no ticket store, so there is nothing to review here.")
        return
    if not console.enabled:
        gr.Markdown(f"The operator console is off ({console.disabled_reason}). "
                    "`python -m service.operator tickets` works from a terminal meanwhile.")
        return
    # The operator session is bound to the browser's HttpOnly cookie (server side), not to a
    # gr.State: Gradio keeps State under the client's session_hash, which is no secret.
    with gr.Row():
        password = gr.Textbox(label="Operator password", type="password", scale=3)
        login = gr.Button("Log in", scale=1)
    message = gr.Markdown()
    with gr.Column(visible=False) as panel:
        with gr.Row():
            refresh = gr.Button("Refresh", size="sm")
            logout = gr.Button("Log out", size="sm")
        tickets = gr.Dataframe(headers=["ticket", "status", "opened", "reason", "turns"], interactive=False,
                               label="Open tickets", datatype="str")
        ticket_id = gr.Textbox(label="Ticket", placeholder="T-00001")
        transcript = gr.Chatbot(label="Conversation (redacted)", height=320, latex_delimiters=[])
        note = gr.Textbox(label="Closing note")
        with gr.Row():
            show = gr.Button("Show conversation")
            close = gr.Button("Close ticket", variant="primary")

    def rows() -> list[list[str]]:
        return presenters.ticket_rows(console.ticket_rows())

    def do_login(attempt: str, request: gr.Request):
        browser = guard.browser_token(request)
        if browser is None:
            return gr.update(visible=False), NO_COOKIE, [], ""
        result = console.login(attempt, client=_client(request))
        entry = guard.browsers.entry(browser)
        if result.ok and entry is not None:
            console.logout(entry.data.get("operator"))
            entry.data["operator"] = result.token
        return (gr.update(visible=result.ok), "" if result.ok else result.message,
                rows() if result.ok else [], "")

    def operator_ok(request: gr.Request | None) -> bool:
        entry = guard.browsers.entry(guard.browser_token(request))
        return entry is not None and console.session_valid(entry.data.get("operator"))

    def require_operator(request: gr.Request | None) -> None:
        if not operator_ok(request):
            raise gr.Error("Log in first (operator sessions end after 30 minutes without use).")

    def do_refresh(request: gr.Request):
        require_operator(request)
        return rows()

    def do_show(ticket: str, request: gr.Request):
        require_operator(request)
        return presenters.transcript_messages(console.transcript(ticket))

    def do_close(ticket: str, closing_note: str, request: gr.Request):
        require_operator(request)
        return presenters.escape_user_text(console.close(ticket, closing_note)), rows()

    def do_logout(request: gr.Request):
        entry = guard.browsers.entry(guard.browser_token(request))
        if entry is not None:
            console.logout(entry.data.pop("operator", None))
        return gr.update(visible=False), "Logged out.", [], []

    login.click(do_login, [password], [panel, message, tickets, password], api_visibility="private")
    logout.click(do_logout, None, [panel, message, tickets, transcript], api_visibility="private")
    refresh.click(do_refresh, None, [tickets], api_visibility="private")
    show.click(do_show, [ticket_id], [transcript], api_visibility="private")
    close.click(do_close, [ticket_id, note], [message, tickets], api_visibility="private")
