"""Turn a Reply into what the web page shows: escaped chat text, quick replies, product cards.

Everything that came from a customer or a data file is HTML-escaped here, so no message,
FAQ answer or product title is ever rendered as markup. Nothing internal reaches the customer's
page: no FAQ or product ids, intents, scores or decision reasons (those are for the operator).
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


# ------------------------------------------------------------------ the customer's chat page
TALK_TO_PERSON = "I want to talk to a person"
# What the engine's `_recommend` understands (a product id and "similar"), worded so that the NLU reads
# it as a product search (measured on the demo pack: other wordings fell back to "not sure" at times).
SIMILAR_REQUEST = "something similar to {product_id}"
_SIMILAR_SENT = re.compile(r"^\s*something similar to (P\d{3,6})\s*$", re.I)
_CONFIRMATION = re.compile(r"\(yes/no\b", re.I)                # flows end a confirmation with "(yes/no)"
_SUSPENDED = re.compile(r'say "continue"', re.I)               # a flow put aside (service/flows/base.py)
MAX_QUICK_REPLY_CHARS = 60


def _short(text: str, limit: int = MAX_QUICK_REPLY_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def quick_replies(reply: Reply) -> list[dict[str, str]]:
    """Buttons under the assistant's latest message (Gradio Chatbot `options`): clicking one sends
    its `value` as the customer's message, so typing the same words does the same. Labels are the
    words a customer would use; no value carries anything a customer could not have typed."""
    options: list[dict[str, str]] = []
    # Clarification candidates (the question itself: the policy takes a close re-ask of a candidate as
    # the pick) and the questions offered after "I can't help with that".
    options += [{"label": _short(q), "value": q} for q in reply.suggestions if q.strip()]
    if _CONFIRMATION.search(reply.text or ""):
        options += [{"label": "Yes", "value": "yes"}, {"label": "No", "value": "no"}]
    if _SUSPENDED.search(reply.text or ""):
        options.append({"label": "Continue where we left off", "value": "continue"})
    for p in reply.products:
        options.append({"label": _short(f"Similar to {p.title}"), "value": SIMILAR_REQUEST.format(product_id=p.id)})
    if not reply.handoff:
        options.append({"label": "Talk to a person", "value": TALK_TO_PERSON})
    return options


def user_display(text: object, product_titles: dict[str, dict] | None = None) -> str:
    """A customer's message as the page shows it: a "similar items" request the page sent on the
    customer's behalf names the product, not its catalogue id."""
    s = "" if text is None else str(text)
    m = _SIMILAR_SENT.match(s)
    if m:
        product = (product_titles or {}).get(m.group(1).upper())
        return f"Show me items similar to {product['title']}" if product else "Show me similar items"
    return s


def product_cards(reply: Reply) -> str:
    """Compact cards for the assistant's message: name, price, the one-line reason. Text only (no ids,
    no scores); their "similar items" action is the quick reply of the same name under the message."""
    e = lambda v: html.escape(str(v), quote=True)  # noqa: E731 - local shorthand
    cards = [f'<li class="att-card"><span class="att-card-title">{e(p.title)}</span>'
             f'<span class="att-card-price">${p.price:,.2f}</span>'
             f'<span class="att-card-reason">{e(p.reason)}</span></li>' for p in reply.products]
    return '<ul class="att-cards" aria-label="Suggested products">' + "".join(cards) + "</ul>"


# compare_rows labels come from attribute keys ("Screen in", "Ram gb"); the values carry the units already.
_LABEL_UNIT = re.compile(r"\s+(?:in|cm|mm|gb|tb|kg|g|h|db|l|qt|w|mah|cups|hz)$", re.I)
_LABEL_ACRONYMS = {"cpu": "CPU", "ram": "RAM", "os": "OS", "ssd": "SSD", "hdr": "HDR", "usb": "USB"}


def comparison_label(label: object) -> str:
    """A row label as a customer reads it: "Ram gb" -> "RAM", "Screen in" -> "Screen"."""
    words = _LABEL_UNIT.sub("", str(label).strip()).split() or [str(label)]
    words = [_LABEL_ACRONYMS.get(w.lower(), w) for w in words]
    return " ".join(words)


def comparison_card(reply: Reply) -> str:
    """The side-by-side card of a comparison: a table with the products as columns (their titles as
    the column headers) and one row per attribute (`reply.debug["comparison"]`, from
    retrieval.compare.compare_rows, in the products' order). Text only: no ids, every value escaped.
    One line of HTML: a blank line would end the Markdown's HTML block."""
    e = lambda v: html.escape(str(v), quote=True)  # noqa: E731 - local shorthand
    titles = [p.title for p in reply.products]
    rows = [(label, list(values)) for label, values in (reply.debug.get("comparison") or [])
            if len(values) == len(titles)]
    head = '<th scope="col">Feature</th>' + "".join(f'<th scope="col">{e(t)}</th>' for t in titles)
    body = "".join(f'<tr><th scope="row">{e(comparison_label(label))}</th>'
                   + "".join(f"<td>{e(v)}</td>" for v in values) + "</tr>" for label, values in rows)
    return (f'<table class="att-compare"><caption>Side by side: {e(" and ".join(titles))}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def reply_content(reply: Reply) -> str:
    """The assistant's bubble: its text shown literally; a product suggestion as its first line
    and the cards (the text's one line per product is the same list, for the API and transcripts);
    a comparison as its first line, the side-by-side card and its closing lines (the text's "- label:
    a vs b" lines are what the card shows)."""
    if reply.action == "compare" and len(reply.products) >= 2 and reply.debug.get("comparison"):
        intro, *rest = (reply.text or "").split("\n")
        after = [line for line in rest if line.strip() and not line.startswith("- ")]
        return "\n\n".join([escape_text(intro), comparison_card(reply), *map(escape_text, after)])
    if reply.products:
        intro = (reply.text or "").split("\n", 1)[0]
        return escape_text(intro) + "\n\n" + product_cards(reply)
    return reply_markdown(reply)


def chat_messages(history: list[dict], product_titles: dict[str, dict] | None = None) -> list[dict]:
    """A conversation's stored history (`Assistant.history`) as Chatbot messages, one per entry, in
    order: message i of the page is history entry i (the thumbs find their turn that way)."""
    out = []
    for h in history:
        if h.get("role") == "user":
            out.append({"role": "user", "content": escape_user_text(user_display(h.get("text"), product_titles))})
        else:
            out.append({"role": "assistant", "content": escape_text(h.get("text"))})
    return out

