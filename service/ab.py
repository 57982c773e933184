"""An A/B split: a share of conversations answered by a candidate version, the rest by the served one.

The split lives in the store (setting `ab_split`, JSON `{"version", "share", "since", "by"}`), written
by `python -m training.models split V --share 0.1` and cleared by `split --stop`, a promotion or a
rollback; every replica's `LiveAssistant` reads it with the served version. Which side a conversation
is on depends only on its session id (a hash), so a conversation stays with one version from its
first turn to its last, on any replica, and every turn records the version that answered it: the
console compares resolution and ratings per version (evaluation/monitoring.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SPLIT_SETTING = "ab_split"
MAX_SHARE = 0.5   # a candidate is a trial: it never answers most conversations (promote it instead)


@dataclass(frozen=True)
class Split:
    version: str        # the candidate answering `share` of the conversations
    share: float        # in (0, MAX_SHARE]
    since: str = ""     # ISO time the split started
    by: str = ""

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "share": self.share, "since": self.since, "by": self.by})


def check_share(share: float) -> float:
    share = float(share)
    if not 0 < share <= MAX_SHARE:
        raise ValueError(f"the candidate's share must be in (0, {MAX_SHARE}] (e.g. 0.1 for one conversation in ten)")
    return share


def read_split(store: Any) -> Split | None:
    """The store's split, or None (none set, or a value that does not parse: logged, never raised,
    so a bad setting cannot stop the served version from answering)."""
    row = store.get_setting(SPLIT_SETTING)
    if row is None or not row[0]:
        return None
    try:
        data = json.loads(row[0])
        return Split(str(data["version"]), check_share(data["share"]), str(data.get("since", "")),
                     str(data.get("by", "")))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the store's %s setting %r: %s", SPLIT_SETTING, row[0][:200], exc)
        return None


def bucket(session_id: str) -> float:
    """A session's place in [0, 1): the same on every replica and every turn."""
    digest = hashlib.sha256(str(session_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def on_candidate(session_id: str, split: Split | None) -> bool:
    return split is not None and bucket(session_id) < split.share
