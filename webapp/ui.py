"""The Gradio web chat. Callbacks only move data between the page and `Assistant`; all the
decisions live in `service/` (engine, policy) and all formatting in `service/presenters.py`."""
from __future__ import annotations

import uuid

import gradio as gr

from core.config import Config
from service import smalltalk
from service.engine import Assistant
from service.operator import PASSWORD_ENV, OperatorConsole
from webapp import presenters

CSS = """
.product-grid {display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px;}
.product-card {border: 1px solid #d0d7de; border-radius: 10px; padding: 10px; background: #fafbfc;}
.product-title {font-weight: 600; margin-bottom: 4px;}
.product-meta {font-size: 0.9em; color: #444;}
.product-reason {font-size: 0.9em; margin-top: 6px;}
.product-id {font-size: 0.75em; color: #888; margin-top: 4px;}
"""


def _session_id(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or uuid.uuid4().hex


def build_ui(assistant: Assistant, config: Config | None = None, title: str = "Customer support",
             examples: list[str] | None = None) -> gr.Blocks:
    examples = examples or smalltalk.SUGGESTED_QUESTIONS
    # Tickets are reviewable only when the desk is a persistent store (the app always uses one).
    console = OperatorConsole(assistant.desk) if hasattr(assistant.desk, "tickets") else None

    def send(message: str, history: list, request: gr.Request):
        reply = assistant.respond(_session_id(request), message)
        history = list(history or []) + [
            {"role": "user", "content": presenters.escape_user_text(message)},
            {"role": "assistant", "content": presenters.reply_markdown(reply)},
        ]
        return ("", history, presenters.sources_markdown(reply), presenters.product_cards_html(reply),
                presenters.status_line(reply))

    def restart(request: gr.Request):
        assistant.reset(_session_id(request))
        return [], "", "", ""

    def api_respond(session_id: str, message: str) -> dict:
        """JSON access for integrations and tests: one turn, the whole Reply."""
        return assistant.respond(session_id or uuid.uuid4().hex, message).to_dict()

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}")
        with gr.Tab("Chat"):
            _chat_tab(send, restart, examples)
        if config is not None:
            with gr.Tab("Model"):
                from webapp.model_tab import build_model_tab

                build_model_tab(config)
        with gr.Tab("Operator"):
            _operator_tab(console)
        gr.api(api_respond, api_name="respond")
    return demo


def _chat_tab(send, restart, examples: list[str]) -> None:
    gr.Markdown("Ask about orders, shipping, returns, payments or products. Type **agent** at any time to reach "
                "a person.")
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chat")
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
    box.submit(send, [box, chatbot], outputs, api_name="chat")
    send_btn.click(send, [box, chatbot], outputs, api_visibility="private")
    new_chat.click(restart, None, [chatbot, sources, products, status], api_visibility="private")


def _operator_tab(console: OperatorConsole | None) -> None:
    if console is None:
        gr.Markdown("This assistant keeps no ticket store, so there is nothing to review here.")
        return
    if not console.enabled:
        gr.Markdown(f"The operator console is off. Start the app with `{PASSWORD_ENV}` set to enable it; "
                    "`python -m service.operator tickets` works from a terminal meanwhile.")
        return
    authed = gr.State(False)
    with gr.Row():
        password = gr.Textbox(label="Operator password", type="password", scale=3)
        login = gr.Button("Log in", scale=1)
    message = gr.Markdown()
    with gr.Column(visible=False) as panel:
        refresh = gr.Button("Refresh", size="sm")
        tickets = gr.Dataframe(headers=["ticket", "status", "opened", "reason", "turns"], interactive=False,
                               label="Open tickets")
        ticket_id = gr.Textbox(label="Ticket", placeholder="T-00001")
        transcript = gr.Chatbot(label="Conversation (redacted)", height=320)
        note = gr.Textbox(label="Closing note")
        with gr.Row():
            show = gr.Button("Show conversation")
            close = gr.Button("Close ticket", variant="primary")

    def do_login(attempt: str):
        ok = console.check_password(attempt)
        return (ok, gr.update(visible=ok), "" if ok else "Wrong password.",
                console.ticket_rows() if ok else [], "")

    def guarded(fn):
        def wrapper(ok: bool, *args):
            if not ok:
                raise gr.Error("Log in first.")
            return fn(*args)
        return wrapper

    login.click(do_login, [password], [authed, panel, message, tickets, password], api_visibility="private")
    refresh.click(guarded(console.ticket_rows), [authed], [tickets], api_visibility="private")
    show.click(guarded(console.transcript), [authed, ticket_id], [transcript], api_visibility="private")
    close.click(guarded(lambda t, n: (console.close(t, n), console.ticket_rows())), [authed, ticket_id, note],
                [message, tickets], api_visibility="private")
