"""Schema-driven fuzzing of the REST API (schemathesis): every operation in /api/v1/openapi.json, with
valid and invalid requests generated from the schema, against the whole web app in process (the
middleware, CORS and the Gradio mounts included; the demo assistant behind it).

Cases are made live where the schema says they are valid: a real API key in `Authorization` and, for
the conversation endpoints, a fresh real conversation's id and token (a location that the generator
made invalid on purpose is left as generated). Checks: never a 5xx, status codes, content types,
headers and bodies as the schema documents them, and every error in the API's one JSON shape.
Deterministic (`derandomize=True`) and small, so it runs in well under a minute.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation

API = "/api/v1"
RELAXED = ["server.client_rate_per_minute=1000000", "server.key_rate_per_minute=1000000",
           "server.conversation_rate_per_minute=1000000"]


@pytest.fixture(scope="module")
def fuzz_server(service_config, demo_nlu, built_indexes, tmp_path_factory):
    """The whole web app (`create_server`) on the demo pack, with a fresh store and one live API key."""
    from core.config import load_config
    from service.assembly import build_assistant, open_store
    from webapp.apikeys import create_key
    from webapp.server import create_server

    config = load_config(service_config.path, RELAXED)
    store = open_store(config, tmp_path_factory.mktemp("fuzz") / "store.sqlite")
    assistant = build_assistant(config, nlu=demo_nlu, store=store)
    app = create_server(assistant, config)
    key = create_key(store, "fuzzing")
    return SimpleNamespace(app=app, key=key, key_id=key.split(".")[1], guard=app.state.guard, store=store)


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_asgi(API + "/openapi.json", fuzz_server.app)


# Spelled out (schemathesis' own pytest loader, `from_fixture`, does not run on pytest 9); the first
# test fails when the schema gains an operation this list lacks.
OPERATIONS = [("POST", API + "/conversations"), ("POST", API + "/conversations/{conversation_id}/messages"),
              ("GET", API + "/conversations/{conversation_id}/messages"),
              ("DELETE", API + "/conversations/{conversation_id}"), ("GET", API + "/health"),
              ("POST", API + "/conversations/{conversation_id}/turns/{turn_id}/feedback"),
              ("POST", API + "/conversations/{conversation_id}/rating")]
WITH_CREDENTIALS = [op for op in OPERATIONS if op != ("GET", API + "/health")]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def error_shape(ctx, response, case) -> None:
    """Every error under /api/v1 is `{"error": {"code": str, "message": str}}` (a HEAD has no body)."""
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str), body
    assert body["error"]["code"] and body["error"]["message"], body


def make_live(case, server) -> None:
    """A real key and, on the conversation endpoints, a new real conversation (each case its own: a
    DELETE ends one), wherever the generator did not make that location invalid on purpose."""
    negative = case.meta is not None and case.meta.generation.mode.is_negative

    def valid_at(location: ParameterLocation) -> bool:
        return not negative or not case.meta.is_negative_at(location)

    token, session_id = server.guard.api.issue_with_session({"key": server.key_id})
    if valid_at(ParameterLocation.HEADER):
        headers = case.headers.copy()
        if case.path == API + "/conversations":
            headers["authorization"] = f"Bearer {server.key}"
        if "{conversation_id}" in case.path:
            headers["x-conversation-token"] = token
        case.headers = headers
    if "{conversation_id}" in case.path and valid_at(ParameterLocation.PATH):
        case.path_parameters = {**(case.path_parameters or {}), "conversation_id": session_id}


def fuzz(operation, mode: GenerationMode, max_examples: int):
    """Run the decorated check on `max_examples` generated cases of `operation` (Hypothesis, derandomized)."""
    def wrap(check):
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            check(case)
        return run
    return wrap


def test_every_operation_is_fuzzed(fuzz_server):
    paths = fuzz_server.app.openapi()["paths"]
    assert {(method.upper(), path) for path, ops in paths.items() for method in ops} == set(OPERATIONS)


# (GET /health takes no parameters: nothing to make invalid.)
LIVE = [pytest.param(method, path, mode, id=f"{method} {path.removeprefix(API)}-{mode.value}")
        for method, path in OPERATIONS for mode in MODES if (path, mode) != (API + "/health", GenerationMode.NEGATIVE)]


@pytest.mark.parametrize("method,path,mode", LIVE)
def test_live_requests_conform_to_the_schema(api_schema, fuzz_server, method, path, mode):
    @fuzz(api_schema[path][method], mode, max_examples=15)
    def run(case):
        make_live(case, fuzz_server)
        case.call_and_validate(additional_checks=[error_shape])

    run()


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("method,path", WITH_CREDENTIALS, ids=[f"{m} {p.removeprefix(API)}" for m, p in WITH_CREDENTIALS])
def test_made_up_credentials_are_refused_never_a_server_error(api_schema, method, path, mode):
    """The generated requests untouched (made-up keys, ids and tokens): refused, in the error shape."""
    @fuzz(api_schema[path][method], mode, max_examples=8)
    def run(case):
        response = case.call()
        assert response.status_code in (401, 404, 413, 422), (response.status_code, response.text)
        error_shape(None, response, case)

    run()
