"""Hand a conversation to a human: a ticket that holds the reason and the redacted transcript."""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Ticket:
    ticket_id: str
    session_id: str
    reason: str
    transcript: list[dict[str, Any]]
    status: str = "open"
    created_at: float = field(default_factory=time.time)


class HandoffDesk(Protocol):
    def open_ticket(self, session_id: str, reason: str, transcript: list[dict[str, Any]]) -> str: ...


class InMemoryHandoffDesk:
    """Tickets for a single process; a persistent desk replaces it behind `open_ticket`."""

    def __init__(self):
        self.tickets: dict[str, Ticket] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def open_ticket(self, session_id: str, reason: str, transcript: list[dict[str, Any]]) -> str:
        with self._lock:
            ticket_id = f"T-{next(self._ids):05d}"
            self.tickets[ticket_id] = Ticket(ticket_id, session_id, reason, list(transcript))
        return ticket_id
