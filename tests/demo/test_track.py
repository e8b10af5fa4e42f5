"""Which state is on screen when: causal lookup, rate, rationale age."""

from __future__ import annotations

import pytest

from emo_stream.demo.track import LatestState, StateTrack


def _states(make_state, n=6, hop=0.5):
    """n states one hop apart; the one with sequence 1 carries a fresh rationale, later ones report its age."""
    return [
        make_state(
            window_start=max(0.0, (i + 1) * hop - 2.0),
            window_end=(i + 1) * hop,
            sequence=i,
            rationale="reason 1" if i == 1 else "",
            rationale_age_s=None if i < 1 else (i - 1) * hop,
        )
        for i in range(n)
    ]


def test_lookup_is_causal_latest_window_end_not_after_t(make_state) -> None:
    track = StateTrack(list(reversed(_states(make_state))))  # order of arrival does not matter
    assert track.at(0.49)[0] is None
    assert track.at(0.5)[0].sequence == 0  # a state is shown from its window end on
    assert track.at(0.99)[0].sequence == 0
    assert track.at(1.0)[0].sequence == 1
    assert track.at(100.0)[0].sequence == 5


def test_stats_rate_latency_and_the_latest_rationale_with_its_age(make_state) -> None:
    track = StateTrack(_states(make_state))
    state, stats = track.at(2.2)
    assert state.sequence == 3
    assert stats.state_rate_hz == pytest.approx(2.0)
    assert stats.latency_ms == pytest.approx(100.0)  # the pipeline latency
    assert stats.rationale == "reason 1"  # written at window end 1.0, still the latest
    assert stats.rationale_age_s == pytest.approx(1.2)
    none, waiting = track.at(0.1, note="x")
    assert none is None and waiting.note == "x" and waiting.rationale is None


def test_latest_state_is_latest_wins_with_a_wall_clock_rate(make_state) -> None:
    now = [100.0]
    holder = LatestState(wall=lambda: now[0])
    assert holder.snapshot(now=0.0)[0] is None
    for i, s in enumerate(_states(make_state, n=4)):
        now[0] = 100.0 + 0.5 * i
        holder.put(s)
    state, stats = holder.snapshot(now=2.3, fps=30.0)
    assert state.sequence == 3 and holder.count == 4
    assert stats.state_rate_hz == pytest.approx(2.0)
    assert stats.rationale == "reason 1" and stats.rationale_age_s == pytest.approx(1.3)
    assert stats.fps == 30.0
