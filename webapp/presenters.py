"""Turn a Reply into what the web page shows: escaped chat text, a sources note, product cards.

Everything that came from a customer or a data file is HTML-escaped here, so no message,
FAQ answer or product title is ever rendered as markup.
"""
from __future__ import annotations

import html
import re

from service.reply import Reply

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")
MAX_ECHO_CHARS = 2000


def escape_user_text(text: object) -> str:
    """A customer's message as literal text: no HTML, no markdown links or images."""
    s = "" if text is None else str(text)
    if len(s) > MAX_ECHO_CHARS:
        s = s[:MAX_ECHO_CHARS] + f" … ({len(s):,} characters in all)"
    s = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in s)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(s, quote=False)) or " "


def reply_markdown(reply: Reply) -> str:
    """The assistant's text for the chat bubble; our own line breaks and bullets stay readable."""
    return html.escape(reply.text, quote=False)


def sources_markdown(reply: Reply) -> str:
    if reply.action == "answer_faq" and reply.sources:
        s = reply.sources[0]
        return f"**Answer from the FAQ:** {html.escape(s.question, quote=False)}  \n`{s.faq_id}` · match {s.score:.2f}"
    if reply.action == "clarify" and reply.sources:
        return "**Possible FAQ matches:**\n" + "\n".join(
            f"- {html.escape(s.question, quote=False)} (`{s.faq_id}`, {s.score:.2f})" for s in reply.sources)
    if reply.handoff:
        return "**Handed to a person.** A member of the support team will reply in this chat."
    return ""


def product_cards_html(reply: Reply) -> str:
    if not reply.products:
        return ""
    cards = []
    for p in reply.products:
        e = lambda v: html.escape(str(v), quote=True)  # noqa: E731 - local shorthand
        cards.append(
            f'<div class="product-card" data-product-id="{e(p.id)}">'
            f'<div class="product-title">{e(p.title)}</div>'
            f'<div class="product-meta">{e(p.brand)} · {e(p.category.replace("_", " "))} · <b>${p.price:,.2f}</b></div>'
            f'<div class="product-reason">{e(p.reason)}</div>'
            f'<div class="product-id">{e(p.id)}</div></div>')
    return '<div class="product-grid">' + "".join(cards) + "</div>"


def status_line(reply: Reply) -> str:
    if reply.intent is None:
        return ""
    return f"intent `{reply.intent}` · confidence {reply.confidence:.2f} · action `{reply.action}`"
