"""The customer's page (served at `/`): the chat and nothing else; no model or operator controls.

Callbacks only move data between the page and `Assistant`; all the decisions live in `service/`
(engine, policy) and all formatting in `webapp/presenters.py`. The page's conversation is found
through the HttpOnly cookie the server set (`webapp/security.py`); Gradio's `session_hash` (chosen
by the client) is never a conversation key. Programs use the REST API (`webapp/api.py`) instead.

One turn on the page: the browser shows the customer's message at once and keeps a copy of it
(`ECHO_JS`, no server call), the server runs the turn and returns the whole conversation rebuilt
from the stored history (so a reload shows the same thing), and if that call fails the message goes
back into the box with a plain-words error (`FAILED_JS`). Quick replies are the Chatbot's
`options`; thumbs are its `like` event; a 1-5 rating is offered after a handoff and at "New
conversation".
"""
from __future__ import annotations

import json
import logging
from typing import Any

import gradio as gr

from service import smalltalk
from service.engine import Assistant
from service.pii import redact
from service.reply import Reply
from webapp import presenters
from webapp.metrics import record_feedback
from webapp.security import WebGuard

log = logging.getLogger(__name__)

MAX_COMMENT_CHARS = 2000
NO_COOKIE = "This chat needs its session cookie: reload the page (and allow cookies for this site)."
TYPING = "The assistant is typing…"
UNREACHABLE = ("Your message was not sent: we couldn't reach the support server. It is still in the box; "
               "check your connection and press Send to try again.")

# Colours chosen for WCAG AA contrast on white (4.5:1 or more for text); widths never exceed the
# viewport (the page is as wide as the screen up to 820 px; long words wrap), so a 390 px phone shows
# the chat without sideways scrolling.
CSS = """
.gradio-container {width: 100% !important; max-width: min(820px, 100vw) !important; margin: 0 auto !important;
  --button-primary-background-fill: #b93a0b; --button-primary-background-fill-hover: #8f2d08;
  --button-primary-border-color: #b93a0b; --button-primary-text-color: #ffffff;
  --button-primary-text-color-hover: #ffffff;}
#chat button[aria-label="Clear"] {display: none !important;}  /* it would only blank the screen, not the chat */
#chat {min-width: 0;}
/* A long unbroken word (a pasted link, a tracking code) wraps inside its bubble instead of widening the page. */
#chat .message, #chat .message-content, #chat .prose {overflow-wrap: anywhere; word-break: break-word; min-width: 0;}
#chat .options {flex-wrap: wrap; gap: 6px;}
#chat .option {white-space: normal; text-align: left; max-width: 100%;}
.att-cards {list-style: none; display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr));
            gap: 8px; margin: 8px 0 0 0 !important; padding: 0 !important;}
.att-card {border: 1px solid #8c959f; border-radius: 10px; padding: 8px 10px; background: #ffffff;
           color: #1f2328; display: flex; flex-direction: column; gap: 2px; margin: 0 !important;}
.att-card::before {content: none !important;}
/* Bold card and table headings in the system sans: the theme's bundled Source Sans Pro 600 face draws
   some capitals ("A", "B") from another font. */
.att-card-title, .att-card-price, .att-compare caption, .att-compare th {
  font-family: ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif !important;}
.att-card-title {font-weight: 600;}
.att-card-price {font-weight: 600; color: #0b5e2a;}
.att-card-reason {font-size: 0.92em; color: #3d444d;}
#att-live:empty, #status:empty {display: none;}
.att-error {color: #a40e26; font-weight: 600; margin: 0;}
.att-note {color: #3d444d; margin: 0;}
/* The side-by-side comparison card: as wide as the bubble, whole words kept (long ones still wrap),
   headings at the bubble's size (the prose style makes table headings larger). */
.att-compare {width: 100%; border-collapse: collapse; margin: 8px 0 0 0 !important; font-size: 0.95em;
              background: #ffffff; color: #1f2328;}
.att-compare caption {caption-side: top; text-align: left; padding: 0 0 4px 0;}
.att-compare caption, .att-compare th {font-size: 1em !important; font-weight: 600 !important;
                                       text-transform: none !important; color: #1f2328;}
.att-compare th, .att-compare td {border: 1px solid #8c959f; padding: 4px 6px; text-align: left; vertical-align: top;
                                  color: #1f2328; background: #ffffff; overflow-wrap: break-word; word-break: normal;}
.att-compare thead th {background: #eef1f4;}
#message textarea {font-size: 16px;}  /* 16 px: phones do not zoom into the box */
@media (max-width: 600px) {
  .gradio-container {padding: 4px !important;}
  #composer {flex-wrap: nowrap !important;}
  #send {min-width: 64px !important; flex-grow: 0 !important;}
}
"""

# Gradio's `js` for the page (runs once on load). It labels what Gradio leaves unlabelled, and it owns
# the turn's live line (#att-live, a polite live region: "typing", errors): when the connection drops
# Gradio neither finishes nor fails the event (it shows a "connection lost" toast and later reloads
# the page's state), so the unsent message is kept in sessionStorage and put back in the box.
PAGE_JS = """
() => {
  const live = (html) => { const el = document.getElementById('att-live'); if (el) el.innerHTML = html; };
  window.attTyping = () => live(""" + json.dumps(f'<p class="att-note">{TYPING}</p>') + """);
  window.attDone = () => { live(''); window.attPending = null; sessionStorage.removeItem('att-unsent'); };
  window.attFailed = (text) => {
    window.attPending = null;
    if (text) sessionStorage.setItem('att-unsent', text);
    live(""" + json.dumps(f'<p class="att-error">{UNREACHABLE}</p>') + """);
    window.attRestore(true);
  };
  window.attRestore = (force) => {
    const box = document.querySelector('#message textarea');
    const text = sessionStorage.getItem('att-unsent');
    if (!box || !text || (!force && window.attRestoredInto === box) || box.value) return;
    window.attRestoredInto = box;
    box.value = text;
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  const mark = () => {
    const box = document.querySelector('#message textarea');
    if (box) box.setAttribute('aria-label', 'Your message');
    const log = document.querySelector('#chat [role=log]');
    if (log) log.setAttribute('aria-label', 'Conversation');
    // Gradio gives the suggested questions role=list with buttons as its children (a list may hold
    // only list items): a labelled group of buttons says what it is.
    document.querySelectorAll('#chat .examples[role=list]').forEach(g => {
      g.setAttribute('role', 'group');
      g.setAttribute('aria-label', 'Suggested questions');
    });
    // Gradio labels each bubble with its Markdown source (backslash escapes, card markup): read the text.
    document.querySelectorAll('#chat [data-testid=user], #chat [data-testid=bot]').forEach(m => {
      const who = m.dataset.testid === 'user' ? 'You: ' : 'Assistant: ';
      const text = who + (m.innerText || '').replace(/\\s+/g, ' ').trim().slice(0, 500);
      if (m.getAttribute('aria-label') !== text) m.setAttribute('aria-label', text);
    });
    if (window.attPending != null) {
      const lost = Array.from(document.querySelectorAll('[data-testid=toast-body]'))
        .some(t => /connection/i.test(t.innerText || ''));
      if (lost) {
        window.attFailed(window.attPending);
        const rows = document.querySelectorAll('#chat .message-row.user-row');
        if (rows.length) rows[rows.length - 1].style.display = 'none';   // its echo: it was not sent
      }
    }
    window.attRestore(false);
  };
  mark();
  new MutationObserver(mark).observe(document.body, {childList: true, subtree: true, characterData: true});
}
"""

# Show the customer's message at once, literally (the same escaping as presenters.escape_text), keep a
# copy (the hidden `pending` box for the server, `attPending` for a dropped connection) and say
# "typing"; the server's answer replaces the whole conversation.
ECHO_JS = """
(text, chat) => {
  const t = (text || '').trim();
  if (!t) return [text, chat, ''];
  const esc = t.replace(/[&<>]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;'}[c]))
               .replace(/([\\\\`*_{}\\[\\]()#+!|~>\\-.:$="'])/g, '\\\\$1');
  const shown = (chat || []).map(m => ({...m, options: []}));
  shown.push({role: 'user', content: [{type: 'text', text: esc}], metadata: null, options: []});
  window.attPending = text;
  if (window.attTyping) window.attTyping();
  return ['', shown, text];
}
"""

# A quick reply clicked: "typing" at once (its words come back from the server in `picked`).
PICK_JS = "(chat) => { window.attPending = ''; if (window.attTyping) window.attTyping(); return [chat]; }"
PICK_FAILED_JS = "() => { if (window.attFailed) window.attFailed(null); }"

# The server answered: nothing pending, no "typing".
DONE_JS = "() => { if (window.attDone) window.attDone(); }"

# The server refused the turn (an error it raised): the message goes back in the box, its echo goes.
FAILED_JS = """
(pending, chat) => {
  const shown = (chat || []).slice();
  if (pending && shown.length && shown[shown.length - 1].role === 'user') shown.pop();
  if (window.attFailed) window.attFailed(null);
  sessionStorage.removeItem('att-unsent');
  return [pending || '', shown, ''];
}
"""


def build_customer_page(assistant: Assistant, guard: WebGuard, title: str = "Customer support",
                        examples: list[str] | None = None) -> gr.Blocks:
    """The chat page's Blocks; mount it with `webapp.server.create_server` (its middleware sets the cookie)."""
    examples = examples or smalltalk.SUGGESTED_QUESTIONS
    store = getattr(assistant, "transcripts", None)          # the transcript store: thumbs and ratings
    catalogue: dict[str, dict] = getattr(getattr(assistant, "recommender", None), "products", None) or {}

    def browser_session(request: gr.Request | None) -> tuple[str, str]:
        browser = guard.browser(request)
        if browser is None:
            raise gr.Error(NO_COOKIE)
        return browser[0], browser[1].session_id

    def feedback_values(session_id: str) -> list[str | None]:
        """The thumbs already given, one entry per assistant message (Chatbot `feedback_value`)."""
        if store is None or not hasattr(store, "transcript"):
            return []
        shown = {1: "Like", -1: "Dislike"}
        return [shown.get(r.get("feedback")) for r in store.transcript(session_id) if r["role"] == "assistant"]

    def conversation(session_id: str, reply: Reply | None = None, typed: str | None = None) -> list[dict[str, Any]]:
        """The whole conversation from the stored history; the live turn (when given) with its cards,
        quick replies and the customer's words as typed."""
        history = assistant.history(session_id)
        messages = presenters.chat_messages(history, catalogue)
        at = next((i for i, h in enumerate(history) if reply is not None and h.get("turn_id") == reply.turn_id
                   and h.get("role") == "assistant"), None)
        if reply is not None and at is not None:
            messages[at] = {"role": "assistant", "content": presenters.reply_content(reply),
                            "options": presenters.quick_replies(reply)}
            if typed is not None and at > 0 and messages[at - 1]["role"] == "user":
                messages[at - 1]["content"] = presenters.escape_user_text(presenters.user_display(typed, catalogue))
        elif history and history[-1].get("role") == "assistant":
            # After a reload: the quick replies the stored text still implies (yes/no, continue, a person).
            last = history[-1]
            replay = Reply(str(last.get("text") or ""), action=str(last.get("action") or ""),
                           handoff=last.get("action") == "handoff")
            messages[-1]["options"] = presenters.quick_replies(replay)
        return messages

    def restore(request: gr.Request):
        browser = guard.browser(request)
        if browser is None:
            return [], f'<p class="att-error">{presenters.escape_text(NO_COOKIE)}</p>'
        session_id = browser[1].session_id
        return gr.update(value=conversation(session_id), feedback_value=feedback_values(session_id)), ""

    def send(message: str, shown: list, request: gr.Request):
        """One turn; returns the whole conversation (`shown`, what the page had, is not trusted or used)."""
        if not (message or "").strip():
            return "", gr.skip(), "", gr.skip(), gr.skip()
        _, session_id = browser_session(request)
        if not guard.conversation_limiter.allow(session_id):
            raise gr.Error("Too many messages in this conversation; wait a moment.")
        reply = assistant.respond(session_id, message)
        if reply.handoff:   # a person takes over: ask how the assistant did
            return "", conversation(session_id, reply, message), "", gr.update(visible=True), session_id
        return "", conversation(session_id, reply, message), "", gr.skip(), gr.skip()

    def picked(evt: gr.SelectData, chat: list, request: gr.Request):
        """A quick reply or an example clicked: its value is the customer's next message."""
        value = evt.value.get("text", "") if isinstance(evt.value, dict) else str(evt.value or "")
        shown = [{**m, "options": []} for m in (chat or [])]
        words = presenters.user_display(value, catalogue)
        shown.append({"role": "user", "content": presenters.escape_user_text(words)})
        return value, shown

    def thumbs(evt: gr.LikeData, request: gr.Request):
        """Thumbs on message i: message i of the page is history entry i (presenters.chat_messages)."""
        _, session_id = browser_session(request)
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        history = assistant.history(session_id)
        entry = history[index] if isinstance(index, int) and 0 <= index < len(history) else None
        if store is None or entry is None or entry.get("role") != "assistant" or not entry.get("turn_id"):
            return gr.skip()
        value = 1 if evt.liked is True else -1 if evt.liked is False else 0
        if store.set_turn_feedback(session_id, entry["turn_id"], value) and value:
            record_feedback("thumb", value)
        return '<p class="att-note" role="status">Thanks for the feedback.</p>' if value else ""

    def restart(request: gr.Request):
        token, session_id = browser_session(request)
        had_turns = bool(assistant.history(session_id))
        if guard.browsers.renew_session(token) is None:
            raise gr.Error(NO_COOKIE)
        note = '<p class="att-note" role="status">New conversation started.</p>'
        if had_turns:   # offer to rate the one that just ended
            return gr.update(value=[], feedback_value=[]), note, gr.update(visible=True), session_id, None, ""
        return gr.update(value=[], feedback_value=[]), note, gr.update(visible=False), None, None, ""

    def rate(rating: Any, comment: str, target: str | None, request: gr.Request):
        browser_session(request)
        if rating in (None, ""):
            return '<p class="att-error" role="alert">Pick a rating from 1 to 5 first.</p>', gr.skip(), gr.skip()
        if target and store is not None:
            store.add_feedback(target, int(rating), redact((comment or "")[:MAX_COMMENT_CHARS]),
                               model_version=getattr(assistant, "model_version", None))
            record_feedback("rating", int(rating))
        return ('<p class="att-note" role="status">Thank you for rating this conversation.</p>',
                gr.update(visible=False), None)

    def skip_rating():
        return gr.update(visible=False), None

    with gr.Blocks(title=title) as page:
        gr.Markdown(f"# {presenters.escape_text(title)}\n"
                    "Ask about orders, shipping, returns, payments or products. A person is one click away.",
                    elem_id="intro")
        chat = gr.Chatbot(label="Conversation", show_label=False, elem_id="chat", height="min(62vh, 620px)",
                          latex_delimiters=[], feedback_options=("Like", "Dislike"), buttons=[],
                          group_consecutive_messages=False, examples=[{"text": q} for q in examples],
                          placeholder="Hi! How can we help today? Pick a question below or type your own.")
        with gr.Row(elem_id="composer", equal_height=True):
            box = gr.Textbox(label="Your message", show_label=False, placeholder="Type your message and press Enter",
                             scale=5, lines=1, max_lines=6, elem_id="message", autofocus=True)
            send_btn = gr.Button("Send", variant="primary", scale=1, min_width=64, elem_id="send")
        # The turn's live line (typing, connection errors), written by PAGE_JS; never a server output.
        gr.HTML('<div id="att-live" role="status" aria-live="polite"></div>', elem_id="live", padding=False)
        status = gr.HTML("", elem_id="status", padding=False)      # notes from the server (thanks, new chat)
        new_chat = gr.Button("New conversation", size="sm", variant="secondary", elem_id="new-conversation")
        # A Column carries the id: Gradio 6's Group writes its elem_id on two nested divs (a duplicate id).
        with gr.Column(visible=False, elem_id="rating") as rating_box, gr.Group():
            stars = gr.Radio([("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5)],
                             label="How helpful was this conversation? (1 = not at all, 5 = very)", elem_id="stars")
            comment = gr.Textbox(label="Anything you'd like to add? (optional)", lines=2, max_lines=6,
                                 max_length=MAX_COMMENT_CHARS, elem_id="rating-comment")
            with gr.Row():
                rate_btn = gr.Button("Send rating", variant="primary", size="sm", elem_id="send-rating")
                skip_btn = gr.Button("No thanks", size="sm", elem_id="skip-rating")
        pending = gr.Textbox(visible=False)      # the message in flight, kept for a failed turn
        rate_target = gr.State(None)             # the conversation the rating is for (server-side)

        # `chat` and `restart` keep their API names: tests/webapp/test_trust_web.py calls them raw.
        turn_outputs = [pending, chat, status, rating_box, rate_target]
        turn_args = {"api_visibility": "private", "show_progress": "minimal", "show_progress_on": [chat]}
        for n, trigger in enumerate((box.submit, send_btn.click)):
            echo = trigger(None, [box, chat], [box, chat, pending], js=ECHO_JS, api_visibility="private")
            turn = echo.then(send, [pending, chat], turn_outputs, api_name="chat" if n == 0 else None, **turn_args)
            turn.success(None, None, None, js=DONE_JS, api_visibility="private")
            turn.failure(None, [pending, chat], [box, chat, pending], js=FAILED_JS, api_visibility="private")
        for select in (chat.option_select, chat.example_select):
            choice = select(picked, [chat], [pending, chat], js=PICK_JS, api_visibility="private",
                            show_progress="hidden")
            choice.failure(None, None, None, js=PICK_FAILED_JS, api_visibility="private")
            turn = choice.success(send, [pending, chat], turn_outputs, **turn_args)
            turn.success(None, None, None, js=DONE_JS, api_visibility="private")
            turn.failure(None, [pending, chat], [box, chat, pending], js=FAILED_JS, api_visibility="private")
        chat.like(thumbs, None, [status], api_visibility="private", show_progress="hidden")
        new_chat.click(restart, None, [chat, status, rating_box, rate_target, stars, comment],
                       api_name="restart", api_visibility="private")
        rate_btn.click(rate, [stars, comment, rate_target], [status, rating_box, rate_target], api_visibility="private")
        skip_btn.click(skip_rating, None, [rating_box, rate_target], api_visibility="private")
        page.load(restore, None, [chat, status], api_visibility="private", show_progress="hidden")
    return page
