"""The operator console (served at `/operator`): log in, review and close handed-over
conversations, read the model's evaluation report. Customers never see any of it.

The operator session is bound to the browser's HttpOnly cookie (server side, in the store), not to a
gr.State: Gradio keeps State under the client's session_hash, which is no secret.
"""
from __future__ import annotations

import gradio as gr

from core.config import Config
from service.operator import OperatorConsole
from webapp import presenters
from webapp.security import WebGuard

NO_COOKIE = "This console needs its session cookie: reload the page (and allow cookies for this site)."


def _client(request: gr.Request | None) -> str:
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


def build_operator_console(console: OperatorConsole | None, guard: WebGuard, config: Config | None = None,
                           title: str = "Operator console") -> gr.Blocks:
    with gr.Blocks(title=title) as page:
        gr.Markdown(f"## {title}")
        with gr.Tab("Tickets"):
            _tickets(console, guard)
        if config is not None:
            with gr.Tab("Model"):
                from webapp.model_tab import build_model_tab

                build_model_tab(config)
    return page


def _tickets(console: OperatorConsole | None, guard: WebGuard) -> None:
    if console is None:
        gr.Markdown("This assistant keeps no ticket store, so there is nothing to review here.")
        return
    if not console.enabled:
        gr.Markdown(f"The operator console is off ({console.disabled_reason}). "
                    "`python -m service.operator tickets` works from a terminal meanwhile.")
        return
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
            guard.browsers.set_data(browser, {**entry.data, "operator": result.token})
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
        browser = guard.browser_token(request)
        entry = guard.browsers.entry(browser)
        if entry is not None:
            console.logout(entry.data.pop("operator", None))
            guard.browsers.set_data(browser, entry.data)
        return gr.update(visible=False), "Logged out.", [], []

    login.click(do_login, [password], [panel, message, tickets, password], api_visibility="private")
    logout.click(do_logout, None, [panel, message, tickets, transcript], api_visibility="private")
    refresh.click(do_refresh, None, [tickets], api_visibility="private")
    show.click(do_show, [ticket_id], [transcript], api_visibility="private")
    close.click(do_close, [ticket_id, note], [message, tickets], api_visibility="private")
