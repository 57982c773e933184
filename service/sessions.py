"""Per-session conversation state, kept apart from the logic that changes it.

`SessionState` is plain data (JSON-serialisable) so any store can persist it; the in-memory
store here serves a single process, and a persistent store can replace it behind the same
two methods.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


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
    verified_orders: list[str] = field(default_factory=list)      # orders whose email the customer confirmed
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SessionState":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


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
