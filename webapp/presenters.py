"""Turn a Reply into what the web page shows: escaped chat text, a sources note, product cards.

Everything that came from a customer or a data file is HTML-escaped here, so no message,
FAQ answer or product title is ever rendered as markup.
"""
from __future__ import annotations

import html
import re

from service.reply import Reply

# Every ASCII punctuation mark that Markdown gives a meaning (emphasis, links, images, lists,
# headings, tables, autolinks "http:" / "www.", maths "$") is backslash-escaped; "&" and ";" are left
# to html.escape, which runs first.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>\-.:$=\"'])")
MAX_ECHO_CHARS = 2000


def escape_text(text: object) -> str:
    """Any text as literal characters in a Markdown/HTML view: no HTML, no links, images or markup."""
    s = "" if text is None else str(text)
    s = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in s)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(s, quote=False)) or " "


def escape_user_text(text: object) -> str:
    """A customer's message as literal text: no HTML, no markdown links or images."""
    s = "" if text is None else str(text)
    if len(s) > MAX_ECHO_CHARS:
        s = s[:MAX_ECHO_CHARS] + f" … ({len(s):,} characters in all)"
    return escape_text(s)


def reply_markdown(reply: Reply) -> str:
    """The assistant's text for the chat bubble, shown literally: a reply may repeat what the
    customer wrote (an address, an order note), so nothing in it may become a link or an image.
    Line breaks stay (the chat shows them)."""
    return escape_text(reply.text)


def transcript_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """A stored transcript for the operator's chat view: every message shown as literal text."""
    return [{"role": m.get("role", "user") if m.get("role") in ("user", "assistant") else "assistant",
             "content": escape_user_text(m.get("content"))} for m in messages]


_MARKUP_LOOKALIKES = str.maketrans({"<": "‹", ">": "›", "[": "⟦", "]": "⟧", "`": "'", "*": "∗", "_": " ",
                                    "!": "ǃ", "&": "＆"})


def ticket_rows(rows: list[list[str]]) -> list[list[str]]:
    """Ticket list cells that are inert whether the table shows them as text or as Markdown/HTML:
    the characters that start markup become look-alikes (the reason may one day carry customer words)."""
    return [[str(c).translate(_MARKUP_LOOKALIKES) for c in row] for row in rows]


def sources_markdown(reply: Reply) -> str:
    """Where an answer came from, in the customer's terms: FAQ question titles, never ids or scores."""
    if reply.action == "answer_faq" and reply.sources:
        return f"**Answer from our help pages:** {escape_text(reply.sources[0].question)}"
    if reply.action == "clarify" and reply.sources:
        return "**Possibly related help pages:**\n" + "\n".join(f"- {escape_text(s.question)}" for s in reply.sources)
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
            f'<div class="product-reason">{e(p.reason)}</div></div>')
    return '<div class="product-grid">' + "".join(cards) + "</div>"
