"""One FastAPI app with two faces and an API:

    /                the customer's chat page (Gradio)
    /operator        the operator console (Gradio): login, tickets, the model report
    /api/v1/...      the REST API (webapp/api.py), OpenAPI schema at /api/v1/openapi.json
    /widget.js       the embeddable chat widget a store pastes into its own pages

Every request passes `GuardMiddleware` (body cap, per-client limit, page cookie) and, under
/api/v1, `ApiCors`. Nothing that matters lives only in this process (the store holds sessions,
tokens, counters and keys), so several replicas can serve one PostgreSQL store.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse

from core.config import Config
from service.engine import Assistant
from service.operator import OperatorConsole
from webapp.api import ApiCors, api_router, install_error_handlers
from webapp.console import build_operator_console
from webapp.customer import CSS, PAGE_JS, build_customer_page
from webapp.security import GuardMiddleware, WebGuard

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
CHAT_CONCURRENCY = 8   # page turns running at once per process (the rest wait in Gradio's queue)


def create_server(assistant: Assistant, config: Config, *, store: Any | None = None,
                  console: OperatorConsole | None = None) -> FastAPI:
    """The whole web app for `assistant`; `store` defaults to the assistant's session store."""
    store = store if store is not None else assistant.sessions
    guard = WebGuard(store, config.server)
    if console is None and hasattr(store, "tickets"):
        console = OperatorConsole(store)
    threads = config.server.workers_threads

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread

        # Sync API handlers run in AnyIO's thread pool; its size is how many turns run at once.
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    app = FastAPI(title=f"{config.store_name} support API", version="1",
                  description="Conversations with the store's support assistant. See webapp/api.py.",
                  openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs", redoc_url=None, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(api_router(assistant, guard, store))

    @app.get("/widget.js", include_in_schema=False)
    def widget_script():
        return FileResponse(STATIC / "widget.js", media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=300"})

    # Prometheus /metrics (loopback or server.metrics_allow only) and the drift check: webapp/metrics.py.
    from webapp.metrics import install_monitoring
    install_monitoring(app, assistant, config, store)

    @app.get("/operator", include_in_schema=False)
    def operator_without_slash():
        return RedirectResponse("/operator/", status_code=307)

    title = f"{config.store_name} support"
    operator = build_operator_console(console, guard, config, title=f"{title}: operator console",
                                      assistant=assistant)
    customer = build_customer_page(assistant, guard, title=title)
    for blocks in (operator, customer):
        blocks.queue(default_concurrency_limit=CHAT_CONCURRENCY)
    # Mounted last and in this order: "/" would otherwise catch /operator and /api/v1.
    gr.mount_gradio_app(app, operator, path="/operator", footer_links=[], max_file_size=guard.max_body_bytes)
    gr.mount_gradio_app(app, customer, path="", css=CSS, js=PAGE_JS, footer_links=[],
                        max_file_size=guard.max_body_bytes)
    # The last added runs first: CORS headers go on every API answer, the guard's refusals included
    # (a browser shows a 429 without them as a network error); the guard still runs before anything
    # parses a body (ApiCors reads headers only).
    app.add_middleware(GuardMiddleware, guard=guard)
    app.add_middleware(ApiCors, store=store)
    app.state.guard, app.state.assistant, app.state.store = guard, assistant, store
    return app
