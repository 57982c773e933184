"""Per-session conversation state, kept apart from the logic that changes it.

`SessionState` is plain data (JSON-serialisable) so any store can persist it; the in-memory
store here serves a single process, and a persistent store can replace it behind the same
two methods.

What is saved holds no raw personal data the flows collected: a verified order is kept as its
number and the time its verification expires (never the email it was verified with), and a new
delivery address only inside a pending confirmation, until the write or the flow ends.

State read back is checked field by field (`from_dict`): a malformed field (a history that is not
a list of turns, a flow without its slots...) is reset to its default with a log line, so one bad
saved session can never make every later turn of that customer fail.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

FLOW_STAGES = ("slots", "confirm", "done")   # done: written, the turn not yet saved by the engine


@dataclass
class SessionState:
    session_id: str
    history: list[dict[str, Any]] = field(default_factory=list)   # redacted turns
    failed_turns: int = 0              # consecutive turns we could not handle
    handoff: bool = False
    handoff_reason: str | None = None
    ticket_id: str | None = None
    pending_clarify: list[str] = field(default_factory=list)      # FAQ ids we asked the customer to pick from
    last_products: list[str] = field(default_factory=list)
    flow: dict[str, Any] | None = None                            # the active flow's name, slots and step
    suspended_flows: list[dict[str, Any]] = field(default_factory=list)
    verified_orders: dict[str, float] = field(default_factory=dict)  # order id -> when its verification expires
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SessionState":
        """The state saved by `to_dict`, each field checked: a malformed one is reset (and logged)."""
        if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
            raise ValueError("a session state is a mapping with a string session_id")
        state = cls(data["session_id"])
        for name, check in _CHECKS.items():
            if name not in data:
                continue
            value = data[name]
            if check(value):
                setattr(state, name, value)
            else:
                log.warning("session %s: saved %s was malformed; reset it", state.session_id, name)
        return state


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_turn(v: Any) -> bool:
    return isinstance(v, dict) and isinstance(v.get("role"), str) and isinstance(v.get("text"), str)


def is_flow_state(v: Any) -> bool:
    """A saved flow: its name, slots (JSON scalars), attempts (counts) and stage."""
    return (isinstance(v, dict) and isinstance(v.get("name"), str) and isinstance(v.get("slots"), dict)
            and all(isinstance(k, str) and (x is None or isinstance(x, (str, int, float, bool)))
                    for k, x in v["slots"].items())
            and isinstance(v.get("attempts"), dict)
            and all(isinstance(k, str) and type(x) is int for k, x in v["attempts"].items())
            and v.get("stage") in FLOW_STAGES)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "history": lambda v: isinstance(v, list) and all(_is_turn(t) for t in v),
    "failed_turns": lambda v: type(v) is int and v >= 0,
    "handoff": lambda v: isinstance(v, bool),
    "handoff_reason": lambda v: v is None or isinstance(v, str),
    "ticket_id": lambda v: v is None or isinstance(v, str),
    "pending_clarify": _is_str_list,
    "last_products": _is_str_list,
    "flow": lambda v: v is None or is_flow_state(v),
    "suspended_flows": lambda v: isinstance(v, list) and all(is_flow_state(f) for f in v),
    # a list here is the old format (order ids without an expiry): dropped, the customer is asked again
    "verified_orders": lambda v: isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items()),
    "updated_at": _number,
}


class _SessionLock:
    """A lock that can be weakly referenced (a bare `threading.Lock` cannot)."""
    __slots__ = ("_lock", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)

    def locked(self) -> bool:
        return self._lock.locked()


class SessionLocks:
    """One lock per session id, for as long as someone holds or waits on it: the map keeps weak
    references, so it never grows with the number of sessions ever seen (`with locks[sid]: ...`)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, _SessionLock] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()

    def __getitem__(self, session_id: str) -> _SessionLock:
        with self._guard:
            lock = self._locks.get(session_id)
            if lock is None:
                lock = self._locks[session_id] = _SessionLock()
            return lock

    def __len__(self) -> int:
        return len(self._locks)


class SessionStore(Protocol):
    def load(self, session_id: str) -> SessionState: ...

    def save(self, state: SessionState) -> None: ...


class InMemorySessionStore:
    """Keeps up to `max_sessions` sessions, evicting the least recently used."""

    def __init__(self, max_sessions: int = 10_000, max_history: int = 200):
        self._sessions: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.max_sessions = max_sessions
        self.max_history = max_history

    def load(self, session_id: str) -> SessionState:
        with self._lock:
            data = self._sessions.get(session_id)
        return SessionState.from_dict(data) if data else SessionState(session_id)

    def save(self, state: SessionState) -> None:
        state.history = state.history[-self.max_history:]
        state.updated_at = time.time()
        with self._lock:
            self._sessions[state.session_id] = state.to_dict()
            if len(self._sessions) > self.max_sessions:
                oldest = min(self._sessions, key=lambda k: self._sessions[k]["updated_at"])
                del self._sessions[oldest]
