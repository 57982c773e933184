"""How the assistant is doing, from the store: pure functions over `store.turns()` and `store.ratings()` rows.

Definitions (docs/monitoring.md):
- a **conversation** is a session's turns in the selected range;
- it is **contained** when no turn in it handed the customer to a person (action "handoff");
- it is **resolved** when it is contained, its last turn was an answer (not fallback, out_of_scope or
  clarify) and the customer gave no thumbs down on any of its turns;
- **handoff rate** = handed-off conversations / conversations; **fallback rate** and **out-of-scope
  rate** = such turns / turns; latency percentiles are of the turns' recorded `latency_ms`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

UNANSWERED_ACTIONS = ("fallback", "out_of_scope", "clarify")


def turns_frame(turns: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row a turn: time (UTC), session, action, intent, confidence, latency, feedback, version."""
    cols = ["turn_id", "session_id", "created_at", "action", "intent", "confidence", "latency_ms", "feedback",
            "model_version"]
    df = pd.DataFrame([{c: t.get(c) for c in cols} for t in turns], columns=cols)
    df["time"] = pd.to_datetime(df["created_at"].astype(float), unit="s", utc=True)
    return df.sort_values("created_at", kind="stable").reset_index(drop=True)


def conversation_outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """One row a conversation: start, turns, handed_off, contained, resolved, model_version (of its last turn)."""
    if df.empty:
        return pd.DataFrame(columns=["session_id", "start", "turns", "handed_off", "contained", "resolved",
                                     "model_version"])
    rows = []
    for session_id, g in df.groupby("session_id", sort=False):
        handed_off = bool((g["action"] == "handoff").any())
        last = g["action"].iloc[-1]
        thumbs_down = bool((g["feedback"].fillna(0) < 0).any())
        rows.append({"session_id": session_id, "start": g["time"].iloc[0], "turns": len(g),
                     "handed_off": handed_off, "contained": not handed_off,
                     "resolved": (not handed_off) and last not in UNANSWERED_ACTIONS and not thumbs_down,
                     "model_version": g["model_version"].iloc[-1]})
    return pd.DataFrame(rows)


@dataclass
class Summary:
    turns: int
    conversations: int
    containment_rate: float
    resolution_rate: float
    handoff_rate: float
    fallback_rate: float
    out_of_scope_rate: float
    clarify_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    thumbs_up: int
    thumbs_down: int
    ratings: int
    mean_rating: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(part: float, whole: float) -> float:
    return float(part) / whole if whole else float("nan")


def summarise(df: pd.DataFrame, ratings: Sequence[dict[str, Any]] = ()) -> Summary:
    conv = conversation_outcomes(df)
    n, c = len(df), len(conv)
    latency = df["latency_ms"].dropna().astype(float) if n else pd.Series(dtype=float)
    scores = [float(r["rating"]) for r in ratings if r.get("rating") is not None]
    feedback = df["feedback"].dropna() if n else pd.Series(dtype=float)
    return Summary(
        turns=n, conversations=c,
        containment_rate=_rate(conv["contained"].sum() if c else 0, c),
        resolution_rate=_rate(conv["resolved"].sum() if c else 0, c),
        handoff_rate=_rate(conv["handed_off"].sum() if c else 0, c),
        fallback_rate=_rate((df["action"] == "fallback").sum() if n else 0, n),
        out_of_scope_rate=_rate((df["action"] == "out_of_scope").sum() if n else 0, n),
        clarify_rate=_rate((df["action"] == "clarify").sum() if n else 0, n),
        latency_p50_ms=float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        latency_p95_ms=float(np.percentile(latency, 95)) if len(latency) else float("nan"),
        thumbs_up=int((feedback > 0).sum()), thumbs_down=int((feedback < 0).sum()),
        ratings=len(scores), mean_rating=float(np.mean(scores)) if scores else float("nan"))


def period_for(df: pd.DataFrame) -> str:
    """Hours for a range of up to two days, else days."""
    if df.empty:
        return "h"
    return "h" if (df["time"].max() - df["time"].min()) <= pd.Timedelta(days=2) else "D"


def _bucket(times: pd.Series, freq: str) -> pd.Series:
    return times.dt.floor(freq).dt.tz_localize(None)


def _by_period(df: pd.DataFrame, freq: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(conversations, turns), each with the `period` it falls in (a conversation: where it started)."""
    freq = freq or period_for(df)
    conv = conversation_outcomes(df)
    conv["period"] = _bucket(conv["start"], freq)
    turns = df.assign(period=_bucket(df["time"], freq), fallback=(df["action"] == "fallback").astype(float))
    return conv, turns


def over_time(df: pd.DataFrame, freq: str | None = None) -> pd.DataFrame:
    """Long format for a line plot: period, metric (conversations | handoffs | fallbacks | turns), value."""
    if df.empty:
        return pd.DataFrame(columns=["period", "metric", "value"])
    conv, turns = _by_period(df, freq)
    parts = [conv.groupby("period").size().rename("conversations"),
             conv[conv["handed_off"]].groupby("period").size().rename("handoffs"),
             turns.groupby("period").size().rename("turns"),
             turns[turns["action"] == "fallback"].groupby("period").size().rename("fallbacks")]
    wide = pd.concat(parts, axis=1).fillna(0).reset_index()
    long = wide.melt(id_vars="period", var_name="metric", value_name="value")
    return long.sort_values(["period", "metric"]).reset_index(drop=True)


def rates_over_time(df: pd.DataFrame, freq: str | None = None) -> pd.DataFrame:
    """Long format: period, metric (containment | resolution | handoff | fallback), value in [0, 1]."""
    if df.empty:
        return pd.DataFrame(columns=["period", "metric", "value"])
    conv, turns = _by_period(df, freq)
    wide = pd.concat([conv.groupby("period")["contained"].mean().rename("containment"),
                      conv.groupby("period")["resolved"].mean().rename("resolution"),
                      conv.groupby("period")["handed_off"].mean().rename("handoff"),
                      turns.groupby("period")["fallback"].mean().rename("fallback")], axis=1).reset_index()
    return wide.melt(id_vars="period", var_name="metric", value_name="value").dropna()


def latency_over_time(df: pd.DataFrame, freq: str | None = None) -> pd.DataFrame:
    """Long format: period, metric (p50 | p95), value in ms."""
    d = df.dropna(subset=["latency_ms"])
    if d.empty:
        return pd.DataFrame(columns=["period", "metric", "value"])
    freq = freq or period_for(d)
    d = d.assign(period=_bucket(d["time"], freq), latency_ms=d["latency_ms"].astype(float))
    g = d.groupby("period")["latency_ms"]
    wide = pd.concat([g.quantile(0.5).rename("p50"), g.quantile(0.95).rename("p95")], axis=1).reset_index()
    return wide.melt(id_vars="period", var_name="metric", value_name="value")


def intent_mix(df: pd.DataFrame, top: int = 15) -> pd.DataFrame:
    """intent, turns, share: the most frequent intents (the rest as "(other)")."""
    d = df.dropna(subset=["intent"])
    if d.empty:
        return pd.DataFrame(columns=["intent", "turns", "share"])
    counts = d["intent"].value_counts()
    if len(counts) > top:
        counts = pd.concat([counts.iloc[:top], pd.Series({"(other)": counts.iloc[top:].sum()})])
    out = counts.rename_axis("intent").reset_index(name="turns")
    out["share"] = out["turns"] / out["turns"].sum()
    return out


def action_mix(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=["action", "turns"])
    return df["action"].value_counts().rename_axis("action").reset_index(name="turns")


def rating_counts(ratings: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """rating (1-5, as text for a bar plot), count: every value present, zeros included."""
    counts = {str(k): 0 for k in range(1, 6)}
    for r in ratings:
        key = str(int(r["rating"])) if r.get("rating") is not None else None
        if key in counts:
            counts[key] += 1
    return pd.DataFrame({"rating": list(counts), "count": list(counts.values())})


def model_versions(turns: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({str(t["model_version"]) for t in turns if t.get("model_version")})


def compare_versions(turns: Iterable[dict[str, Any]], ratings: Sequence[dict[str, Any]],
                     versions: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """An A/B comparison: (headers, rows) with one column per version, each summarised over the
    conversations it answered (a split pins a conversation to one version) and its own ratings."""
    df = turns_frame(turns)
    columns = []
    for version in versions:
        mine = df[df["model_version"] == version]
        columns.append(summary_rows(summarise(mine, [r for r in ratings if r.get("model_version") == version])))
    names = [row[0] for row in columns[0]] if columns else []
    return ["measure", *versions], [[name, *(col[i][1] for col in columns)] for i, name in enumerate(names)]


def summary_rows(s: Summary) -> list[list[str]]:
    """The summary as [measure, value] rows for a table."""
    def pct(x: float) -> str:
        return "n/a" if x != x else f"{x:.1%}"

    def ms(x: float) -> str:
        return "n/a" if x != x else f"{x:.1f} ms"

    return [["turns", str(s.turns)], ["conversations", str(s.conversations)],
            ["containment (no handoff)", pct(s.containment_rate)],
            ["resolution (contained, answered, no thumbs down)", pct(s.resolution_rate)],
            ["handoff rate (conversations)", pct(s.handoff_rate)], ["fallback rate (turns)", pct(s.fallback_rate)],
            ["out-of-scope rate (turns)", pct(s.out_of_scope_rate)], ["clarify rate (turns)", pct(s.clarify_rate)],
            ["latency p50", ms(s.latency_p50_ms)], ["latency p95", ms(s.latency_p95_ms)],
            ["thumbs up / down", f"{s.thumbs_up} / {s.thumbs_down}"],
            ["ratings (mean)", f"{s.ratings} ({'n/a' if s.mean_rating != s.mean_rating else f'{s.mean_rating:.2f}'})"]]
