"""The customer's page (served at `/`): the chat and nothing else; no model or operator controls.

Callbacks only move data between the page and `Assistant`; all the decisions live in `service/`
(engine, policy) and all formatting in `webapp/presenters.py`. The page's conversation is found
through the HttpOnly cookie the server set (`webapp/security.py`); Gradio's `session_hash` (chosen
by the client) is never a conversation key. Programs use the REST API (`webapp/api.py`) instead.
"""
from __future__ import annotations

import logging

import gradio as gr

from service import smalltalk
from service.engine import Assistant
from webapp import presenters
from webapp.security import WebGuard

log = logging.getLogger(__name__)

CSS = """
.product-grid {display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px;}
.product-card {border: 1px solid #d0d7de; border-radius: 10px; padding: 10px; background: #fafbfc;}
.product-title {font-weight: 600; margin-bottom: 4px;}
.product-meta {font-size: 0.9em; color: #444;}
.product-reason {font-size: 0.9em; margin-top: 6px;}
"""

NO_COOKIE = "This chat needs its session cookie: reload the page (and allow cookies for this site)."


def build_customer_page(assistant: Assistant, guard: WebGuard, title: str = "Customer support",
                        examples: list[str] | None = None) -> gr.Blocks:
    """The chat page's Blocks; mount it with `webapp.server.create_server` (its middleware sets the cookie)."""
    examples = examples or smalltalk.SUGGESTED_QUESTIONS

    def web_session(request: gr.Request | None) -> str:
        browser = guard.browser(request)
        if browser is None:
            raise gr.Error(NO_COOKIE)
        session_id = browser[1].session_id
        if not guard.conversation_limiter.allow(session_id):
            raise gr.Error("Too many messages in this conversation; wait a moment.")
        return session_id

    def send(message: str, history: list, request: gr.Request):
        reply = assistant.respond(web_session(request), message)
        history = list(history or []) + [
            {"role": "user", "content": presenters.escape_user_text(message)},
            {"role": "assistant", "content": presenters.reply_markdown(reply)},
        ]
        return "", history, presenters.sources_markdown(reply), presenters.product_cards_html(reply)

    def restart(request: gr.Request):
        browser = guard.browser(request)
        if browser is None or guard.browsers.renew_session(browser[0]) is None:
            raise gr.Error(NO_COOKIE)
        return [], "", ""

    with gr.Blocks(title=title) as page:
        gr.Markdown(f"## {title}")
        gr.Markdown("Ask about orders, shipping, returns, payments or products. Type **agent** at any time to "
                    "reach a person.")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chat", latex_delimiters=[])
                with gr.Row():
                    box = gr.Textbox(placeholder="Type your message and press Enter", show_label=False,
                                     scale=5, max_lines=6, elem_id="message")
                    send_btn = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                gr.Examples(examples=[[q] for q in examples], inputs=[box], label="Try asking")
                new_chat = gr.Button("New conversation", size="sm")
            with gr.Column(scale=2):
                gr.Markdown("### Where the answer came from")
                sources = gr.Markdown(elem_id="sources")
                gr.Markdown("### Suggested products")
                products = gr.HTML(elem_id="products")
        outputs = [box, chatbot, sources, products]
        box.submit(send, [box, chatbot], outputs, api_name="chat", api_visibility="private")
        send_btn.click(send, [box, chatbot], outputs, api_visibility="private")
        new_chat.click(restart, None, [chatbot, sources, products], api_name="restart", api_visibility="private")
    return page
