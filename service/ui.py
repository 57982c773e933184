"""The Gradio web chat. Callbacks only move data between the page and `Assistant`; all the
decisions live in `service/` (engine, policy) and all formatting in `service/presenters.py`."""
from __future__ import annotations

import uuid

import gradio as gr

from service import presenters, smalltalk
from service.engine import Assistant

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


def build_ui(assistant: Assistant, title: str = "Customer support", examples: list[str] | None = None) -> gr.Blocks:
    examples = examples or smalltalk.SUGGESTED_QUESTIONS

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
        gr.Markdown(f"## {title}\nAsk about orders, shipping, returns, payments or products. "
                    "Type **agent** at any time to reach a person.")
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
        gr.api(api_respond, api_name="respond")
    return demo
