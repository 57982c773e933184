"""service/ab.py: which conversations an A/B split sends to the candidate, and a setting that is wrong."""
from __future__ import annotations

import pytest

from service.ab import MAX_SHARE, SPLIT_SETTING, Split, bucket, check_share, on_candidate, read_split


class Settings:
    def __init__(self, value=None):
        self.value = value

    def get_setting(self, key):
        assert key == SPLIT_SETTING
        return None if self.value is None else (self.value, 0.0)


def test_a_conversation_always_lands_on_the_same_side():
    split = Split("v0002", 0.2)
    ids = [f"session-{i}" for i in range(4000)]
    first = [on_candidate(s, split) for s in ids]
    assert first == [on_candidate(s, split) for s in ids]             # every turn, every replica
    assert 0.17 < sum(first) / len(ids) < 0.23                          # about the share
    assert all(0 <= bucket(s) < 1 for s in ids[:100])
    assert not any(on_candidate(s, None) for s in ids[:100])            # no split: nobody on a candidate
    # a larger share keeps everyone the smaller one had (raising the share does not move conversations back)
    wider = Split("v0002", 0.4)
    assert all(on_candidate(s, wider) for s, on in zip(ids, first) if on)


def test_the_setting_round_trips_and_a_bad_one_is_ignored(caplog):
    split = Split("v0003", 0.1, "2026-12-03T10:00:00+00:00", "alice")
    assert read_split(Settings(split.to_json())) == split
    assert read_split(Settings()) is None and read_split(Settings("")) is None
    for bad in ("{not json", '{"share": 0.1}', '{"version": "v0003", "share": 0.9}', '{"version": "v3", "share": "x"}'):
        assert read_split(Settings(bad)) is None
    assert "ignoring the store's ab_split setting" in caplog.text


@pytest.mark.parametrize("share", [0, -0.1, MAX_SHARE + 0.01, 1])
def test_a_share_outside_the_range_is_refused(share):
    with pytest.raises(ValueError, match="share"):
        check_share(share)
