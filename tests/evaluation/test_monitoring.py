"""evaluation/monitoring.py: the console's aggregations over stored turns (pure functions)."""
from __future__ import annotations

import math

from evaluation import monitoring as mon

DAY = 86400.0
T0 = 1_780_000_000.0   # a fixed instant: the tests never read the clock


def turn(session: str, at: float, action: str, intent: str | None = "faq_shipping", *, feedback: int | None = None,
         latency: float = 10.0, version: str = "v1") -> dict:
    return {"turn_id": f"t-{session}-{at}", "session_id": session, "created_at": at, "action": action,
            "intent": intent, "confidence": 0.9, "latency_ms": latency, "feedback": feedback, "model_version": version,
            "user_text": "hello", "details": {}}


def scripted() -> list[dict]:
    return [
        # resolved: answered, no thumbs down
        turn("a", T0, "small_talk", "greet"), turn("a", T0 + 1, "answer_faq", latency=20.0),
        # contained but not resolved: ends in a fallback
        turn("b", T0 + 2, "answer_faq"), turn("b", T0 + 3, "fallback", "other_intent", latency=30.0),
        # handed off: neither contained nor resolved
        turn("c", T0 + DAY, "fallback"), turn("c", T0 + DAY + 1, "handoff", "human", latency=40.0),
        # contained, answered, but a thumbs down: not resolved
        turn("d", T0 + DAY + 2, "answer_faq", feedback=-1, version="v2"),
        # resolved, with a thumbs up
        turn("e", T0 + 2 * DAY, "recommend", "shopping", feedback=1, version="v2", latency=100.0),
    ]


def test_outcomes_follow_the_definitions():
    conv = mon.conversation_outcomes(mon.turns_frame(scripted())).set_index("session_id")
    assert conv["contained"].to_dict() == {"a": True, "b": True, "c": False, "d": True, "e": True}
    assert conv["resolved"].to_dict() == {"a": True, "b": False, "c": False, "d": False, "e": True}
    assert conv.loc["a", "turns"] == 2 and conv.loc["e", "model_version"] == "v2"


def test_summary_rates_percentiles_and_ratings():
    s = mon.summarise(mon.turns_frame(scripted()), [{"rating": 5}, {"rating": 2}])
    assert (s.turns, s.conversations) == (8, 5)
    assert s.containment_rate == 4 / 5 and s.resolution_rate == 2 / 5 and s.handoff_rate == 1 / 5
    assert s.fallback_rate == 2 / 8 and s.out_of_scope_rate == 0
    assert s.latency_p50_ms == 15.0 and 40.0 < s.latency_p95_ms <= 100.0   # 10,10,10,10,20,30,40,100
    assert (s.thumbs_up, s.thumbs_down, s.ratings, s.mean_rating) == (1, 1, 2, 3.5)
    assert dict(mon.summary_rows(s))["containment (no handoff)"] == "80.0%"


def test_empty_range_gives_empty_frames_not_errors():
    df = mon.turns_frame([])
    s = mon.summarise(df)
    assert s.turns == 0 and math.isnan(s.containment_rate)
    assert mon.over_time(df).empty and mon.rates_over_time(df).empty and mon.intent_mix(df).empty
    assert mon.latency_over_time(df).empty
    assert mon.rating_counts([])["count"].sum() == 0


def test_series_over_time_by_day():
    df = mon.turns_frame(scripted())
    assert mon.period_for(df) == "h"           # exactly two days: hourly
    daily = mon.over_time(df, "D")
    conversations = daily[daily["metric"] == "conversations"]["value"].tolist()
    assert conversations == [2, 2, 1]          # a+b on day 0, c+d on day 1, e on day 2
    handoffs = daily[daily["metric"] == "handoffs"]["value"].tolist()
    assert handoffs == [0, 1, 0]
    rates = mon.rates_over_time(df, "D")
    day1 = rates[(rates["metric"] == "containment")]["value"].tolist()
    assert day1 == [1.0, 0.5, 1.0]
    lat = mon.latency_over_time(df, "D")
    assert set(lat["metric"]) == {"p50", "p95"}


def test_intent_mix_ratings_and_versions():
    df = mon.turns_frame(scripted())
    mix = mon.intent_mix(df, top=2)
    assert mix["intent"].tolist()[0] == "faq_shipping" and mix["turns"].tolist()[0] == 4
    assert mix["intent"].tolist()[-1] == "(other)" and abs(mix["share"].sum() - 1) < 1e-9
    counts = mon.rating_counts([{"rating": 5}, {"rating": 5}, {"rating": 1}])
    assert dict(zip(counts["rating"], counts["count"])) == {"1": 1, "2": 0, "3": 0, "4": 0, "5": 2}
    assert mon.model_versions(scripted()) == ["v1", "v2"]
