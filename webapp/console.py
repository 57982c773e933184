"""The operator console (served at `/operator`): log in, then tickets, the model report and the other
operator views (each a tab, built by a `build_*_tab(ctx)` function in its own module). Customers
never see any of it.

The operator session is bound to the browser's HttpOnly cookie (server side, in the store), not to a
gr.State: Gradio keeps State under the client's session_hash, which is no secret. Every callback of
every view starts with `ctx.require(request)`: the panel being hidden is no protection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.config import Config
from service.operator import ACCOUNT, OperatorConsole
from webapp import presenters
from webapp.security import WebGuard

NO_COOKIE = "This console needs its session cookie: reload the page (and allow cookies for this site)."
LOGIN_FIRST = "Log in first (operator sessions end after 30 minutes without use)."


def _client(request: gr.Request | None) -> str:
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


@dataclass
class ConsoleContext:
    """What every operator view needs: the login check, the store, the served assistant, the config."""
    console: OperatorConsole
    guard: WebGuard
    config: Config | None = None
    assistant: Any = None        # service.engine.Assistant (or whatever serves turns), when known

    @property
    def store(self) -> Any:
        return self.console.store

    def operator_ok(self, request: gr.Request | None) -> bool:
        browser = self.guard.browser(request)
        return browser is not None and self.console.session_valid(browser[1].data.get("operator"))

    def require(self, request: gr.Request | None) -> str:
        """The operator's name for the audit trail; raises (a message on the page) when not logged in."""
        if not self.operator_ok(request):
            raise gr.Error(LOGIN_FIRST)
        return ACCOUNT


def build_operator_console(console: OperatorConsole | None, guard: WebGuard, config: Config | None = None,
                           title: str = "Operator console", assistant: Any = None) -> gr.Blocks:
    with gr.Blocks(title=title) as page:
        gr.Markdown(f"## {title}")
        if console is None:
            gr.Markdown("This assistant keeps no ticket store, so there is nothing to review here.")
            return page
        if not console.enabled:
            gr.Markdown(f"The operator console is off ({console.disabled_reason}). "
                        "`python -m service.operator tickets` works from a terminal meanwhile.")
            return page
        ctx = ConsoleContext(console, guard, config, assistant)
        with gr.Row():
            password = gr.Textbox(label="Operator password", type="password", scale=3)
            login = gr.Button("Log in", scale=1)
        message = gr.Markdown()
        with gr.Column(visible=False) as panel:
            logout = gr.Button("Log out", size="sm")
            with gr.Tab("Tickets"):
                tickets, transcript = _tickets(ctx, message)
            with gr.Tab("Review"):
                from webapp.review_tab import build_review_tab

                build_review_tab(ctx)
            with gr.Tab("Monitoring"):
                from webapp.monitoring_tab import build_monitoring_tab

                build_monitoring_tab(ctx)
            with gr.Tab("Versions"):
                from webapp.versions_tab import build_versions_tab

                build_versions_tab(ctx)
            if config is not None:
                with gr.Tab("Model"):
                    from webapp.model_tab import build_model_tab

                    build_model_tab(config)

        def do_login(attempt: str, request: gr.Request):
            browser = guard.browser(request)
            if browser is None:
                return gr.update(visible=False), NO_COOKIE, [], ""
            result = console.login(attempt, client=_client(request))
            if result.ok:
                token, entry = browser
                console.logout(entry.data.get("operator"))
                guard.browsers.set_data(token, {**entry.data, "operator": result.token})
            return (gr.update(visible=result.ok), "" if result.ok else result.message,
                    _ticket_rows(console) if result.ok else [], "")

        def do_logout(request: gr.Request):
            browser = guard.browser(request)
            if browser is not None:
                token, entry = browser
                console.logout(entry.data.pop("operator", None))
                guard.browsers.set_data(token, entry.data)
            return gr.update(visible=False), "Logged out.", [], []

        login.click(do_login, [password], [panel, message, tickets, password], api_visibility="private")
        logout.click(do_logout, None, [panel, message, tickets, transcript], api_visibility="private")
    return page


def _ticket_rows(console: OperatorConsole) -> list[list[str]]:
    return presenters.ticket_rows(console.ticket_rows())


def _tickets(ctx: ConsoleContext, message: gr.Markdown) -> tuple[gr.Dataframe, gr.Chatbot]:
    console = ctx.console
    refresh = gr.Button("Refresh", size="sm")
    tickets = gr.Dataframe(headers=["ticket", "status", "opened", "reason", "turns"], interactive=False,
                           label="Open tickets", datatype="str")
    ticket_id = gr.Textbox(label="Ticket", placeholder="T-00001")
    transcript = gr.Chatbot(label="Conversation (redacted)", height=320, latex_delimiters=[])
    note = gr.Textbox(label="Closing note")
    with gr.Row():
        show = gr.Button("Show conversation")
        close = gr.Button("Close ticket", variant="primary")

    def do_refresh(request: gr.Request):
        ctx.require(request)
        return _ticket_rows(console)

    def do_show(ticket: str, request: gr.Request):
        ctx.require(request)
        return presenters.transcript_messages(console.transcript(ticket))

    def do_close(ticket: str, closing_note: str, request: gr.Request):
        ctx.require(request)
        return presenters.escape_user_text(console.close(ticket, closing_note)), _ticket_rows(console)

    refresh.click(do_refresh, None, [tickets], api_visibility="private")
    show.click(do_show, [ticket_id], [transcript], api_visibility="private")
    close.click(do_close, [ticket_id, note], [message, tickets], api_visibility="private")
    return tickets, transcript
