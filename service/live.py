"""The assistant the web app holds: the served version's `Assistant`, switched live.

`LiveAssistant` has the interface the web layer uses (`respond`, `history`, `reset`, `model_version`,
`observers`, and every other attribute of the current `Assistant` by delegation). A watcher thread
reads the store's `served_version` setting (training/models.py writes it on promote and rollback)
every `interval` seconds; when it changes, the new version's assistant is built on that thread, off
the request path, and the reference is swapped in one assignment. A turn takes the reference once,
so turns in flight finish on the old version and the next ones use the new one; every reply carries
the version that made it (`reply.model_version`). Observers live in one list shared by every version's
assistant, so metrics see all turns. The assistants of the last versions are kept (`keep`), so a
rollback is a swap, not a load. Every replica runs its own watcher on the shared store, so all switch.

An A/B split (service/ab.py) is read the same way: while one is set, the conversations whose session
id falls in the candidate's share are answered by the candidate's assistant (loaded off the request
path like a promotion), all their turns, on every replica; the others by the served version.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from service.ab import Split, on_candidate, read_split
from service.assembly import served_setting
from service.engine import Assistant, TurnEvent
from service.reply import Reply

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5   # a settings read is a primary-key lookup; twice a second keeps rollback under 1 s
KEEP_VERSIONS = 2        # built assistants kept warm (the current one and the one before: rollback is a swap)


class LiveAssistant:
    """Serves turns with the current version's `Assistant`; switches when the store says so.

    `load(version)` builds a version's assistant (given the same store every time); `version` is the
    one `current` answers as (None: the unregistered root build). `watch=False` leaves polling to the
    caller (`poll()`), for tests and tools.
    """

    def __init__(self, current: Assistant, version: str | None, load: Callable[[str], Assistant], store: Any, *,
                 interval: float = WATCH_INTERVAL_S, keep: int = KEEP_VERSIONS, watch: bool = True):
        self._load = load
        self._store = store
        self.interval = interval
        self.keep = max(1, keep)
        self._observers: list[Callable[[TurnEvent], None]] = list(current.observers)
        current.observers = self._observers
        self._current = current
        self._version = version
        self._warm: OrderedDict[str | None, Assistant] = OrderedDict({version: current})
        self._failed: dict[str, float] = {}   # version -> when its load failed (retried after a while)
        self._split: tuple[Split, Assistant] | None = None   # one attribute: a turn reads split and assistant together
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self.switches = 0
        self._thread: threading.Thread | None = None
        if watch:
            self._thread = threading.Thread(target=self._watch, name="served-version-watcher", daemon=True)
            self._thread.start()

    # -- what the web layer calls --------------------------------------------------------------
    @property
    def current(self) -> Assistant:
        return self._current

    @property
    def version(self) -> str | None:
        """The registered version being served (None: the root build, no registry)."""
        return self._version

    @property
    def observers(self) -> list[Callable[[TurnEvent], None]]:
        """Called after every turn of every version (one list, shared with each version's assistant)."""
        return self._observers

    @observers.setter
    def observers(self, value: list[Callable[[TurnEvent], None]]) -> None:
        self._observers[:] = list(value)   # in place: the assistants hold this very list

    @property
    def model_version(self) -> str:
        return self._current.model_version

    @property
    def split(self) -> Split | None:
        """The A/B split this server applies now (None: every conversation on the served version)."""
        pair = self._split
        return pair[0] if pair is not None else None

    def assistant_for(self, session_id: str) -> Assistant:
        """The version that answers this conversation: the split's candidate for its share, else the served one."""
        pair = self._split
        if pair is not None and on_candidate(session_id, pair[0]):
            return pair[1]
        return self._current

    def respond(self, session_id: str, message: object) -> Reply:
        assistant = self.assistant_for(session_id)   # one read: this turn runs on this version to the end
        return assistant.respond(session_id, message)

    def history(self, session_id: str) -> list[dict[str, Any]]:
        return self.assistant_for(session_id).history(session_id)

    def reset(self, session_id: str) -> None:
        self.assistant_for(session_id).reset(session_id)

    def __getattr__(self, name: str) -> Any:
        # Everything else (nlu, sessions, transcripts, desk, domain, faq_records...) is the current version's.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._current, name)

    # -- switching -----------------------------------------------------------------------------
    def served_setting(self) -> str | None:
        return served_setting(self._store)

    def poll(self) -> bool:
        """Read the settings; switch when the served one names another version, and follow the A/B
        split. True when the served version switched."""
        with self._poll_lock:
            switched = False
            wanted = self.served_setting()
            if wanted is not None and wanted != self._version:
                assistant = self._assistant_of(wanted)
                if assistant is not None:
                    self.switch_to(wanted, assistant)
                    switched = True
            self._follow_split(read_split(self._store))
            return switched

    def _assistant_of(self, version: str) -> Assistant | None:
        """A version's assistant (kept warm or loaded now), or None when it will not load (logged)."""
        failed_at = self._failed.get(version)
        if failed_at is not None and time.monotonic() - failed_at < 30:
            return None   # a version that would not load is retried every 30 s, not twice a second
        assistant = self._warm.get(version)
        if assistant is None and self._split is not None and self._split[0].version == version:
            assistant = self._split[1]
        if assistant is None:
            t0 = time.perf_counter()
            try:
                assistant = self._load(version)
            except Exception:   # keep serving what is served; the log says why
                log.exception("cannot load version %s; still serving %s", version, self._version)
                self._failed[version] = time.monotonic()
                return None
            log.info("loaded version %s in %.2f s", version, time.perf_counter() - t0)
        self._failed.pop(version, None)
        return assistant

    def _follow_split(self, split: Split | None) -> None:
        if split is not None and split.version == self._version:
            split = None   # the candidate was promoted: everyone is on it now
        current = self._split
        if split is None:
            if current is not None:
                self._split = None
                log.warning("A/B split with %s ended: every conversation on %s", current[0].version, self._version)
            return
        if current is not None and current[0] == split:
            return
        assistant = self._assistant_of(split.version)
        if assistant is None:
            self._split = None   # a candidate that will not load answers nobody
            return
        assistant.observers = self._observers
        self._split = (split, assistant)
        log.warning("A/B split: %s answers %.0f%% of conversations, %s the rest", split.version, split.share * 100,
                    self._version)

    def switch_to(self, version: str | None, assistant: Assistant) -> None:
        """Serve `assistant` (as `version`) from the next turn on."""
        assistant.observers = self._observers
        previous = self._version
        self._warm[version] = assistant
        self._warm.move_to_end(version)
        while len(self._warm) > self.keep:
            self._warm.popitem(last=False)
        self._current, self._version = assistant, version   # turns that already hold the old one finish on it
        self.switches += 1
        log.warning("now serving version %s (was %s)", version, previous)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:   # a store hiccup must not end the watcher
                log.exception("checking the served version failed; retrying")

    def close(self) -> None:
        """Stop the watcher (the assistants stay usable)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
