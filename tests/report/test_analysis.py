"""Segments, spans and shares of a state stream; reading JSONL defensively."""

from __future__ import annotations

import pytest

from emo_stream.labels import get_label_set
from emo_stream.report.analysis import (
    UNIFORM,
    ReportError,
    check_consistent,
    covers,
    hop_of,
    load_states,
    modality_spans,
    overview,
    segments,
    sort_states,
)
from emo_stream.state import EmotionState


def test_covers_tile_the_stream_without_overlap(stream) -> None:
    states = stream()
    assert hop_of(states) == pytest.approx(0.5)
    cov = covers(states)
    assert cov[0] == (0.0, 0.5) and cov[-1] == (9.5, 10.0)
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(cov, cov[1:]))


def test_segments_are_runs_of_the_same_top_label(stream) -> None:
    segs = segments(stream())
    assert [(s.label, s.start, s.end, s.states) for s in segs] == [
        ("happy", 0.0, 4.0, 8),
        ("sad", 4.0, 7.0, 6),
        ("neutral", 7.0, 10.0, 6),
    ]
    happy = segs[0]
    assert happy.mean_valence == pytest.approx(0.6) and 0.6 <= happy.mean_confidence <= 0.65
    assert happy.rationales == ("because 0", "because 4")  # sampled: at most two, distinct
    assert happy.modality_share["face"] == 1.0 and happy.modality_share["voice"] == 0.5


def test_face_and_speech_spans(stream) -> None:
    states = stream()
    assert modality_spans(states, "face") == [(0.0, 5.0)]
    assert modality_spans(states, "voice") == [(2.0, 8.0)]
    assert modality_spans(states, "text") == []


def test_overview_shares_and_latency(stream) -> None:
    ov = overview(stream())
    assert ov.label_time_share == pytest.approx({"happy": 0.4, "sad": 0.3, "neutral": 0.3})
    assert next(iter(ov.label_time_share)) == "happy"
    assert ov.modality_share["face"] == pytest.approx(0.5) and ov.modality_share["voice"] == pytest.approx(0.6)
    assert ov.latency_p50_ms == pytest.approx(19.5) and ov.sequence_gaps == 0 and ov.rationales == 5


def test_uniform_states_form_their_own_segment_and_order_does_not_matter(stream) -> None:
    states = stream(n=6)
    flat = EmotionState.build(label_set=get_label_set("mer2023"), probabilities=[1] * 6, window_start=1.5, window_end=3.5,
                              sequence=6, model_id="synthetic", modalities=["video"])  # fmt: skip
    ordered = sort_states([states[3], flat, *states[:3], *states[4:]])
    assert [s.sequence for s in ordered] == [0, 1, 2, 3, 4, 5, 6]
    assert [s.label for s in segments(ordered)] == ["happy", UNIFORM]


def test_a_single_state_is_a_stream(stream) -> None:
    one = stream(n=1)
    assert hop_of(one) == pytest.approx(0.5)
    assert [(s.label, s.start, s.end) for s in segments(one)] == [("happy", 0.0, 0.5)]


def test_mixed_label_sets_or_clocks_are_refused(stream) -> None:
    a = stream(n=2)
    b = EmotionState.build(label_set=get_label_set("merr"), probabilities=[1] * 9, window_start=0, window_end=1, sequence=0, model_id="x")
    with pytest.raises(ReportError, match="label sets"):
        check_consistent([*a, b])
    with pytest.raises(ReportError, match="clocks"):
        check_consistent([*a, *stream(n=2, clock="monotonic")])


def test_load_states_reads_jsonl_and_names_bad_lines(stream, write_jsonl, tmp_path) -> None:
    p = write_jsonl(stream(n=3))
    assert len(load_states(p)) == 3
    bad = write_jsonl(stream(n=2), "bad.jsonl")
    bad.write_text(bad.read_text() + "\n{not json}\n")
    with pytest.raises(ReportError, match=r"bad\.jsonl:4 is not an EmotionState"):
        load_states(bad)
    invalid = tmp_path / "invalid.jsonl"
    invalid.write_text('{"schema": 1, "stamp": 1.0}\n')
    with pytest.raises(ReportError, match=":1 is not an EmotionState"):
        load_states(invalid)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ReportError, match="no states"):
        load_states(tmp_path / "empty.jsonl")
    with pytest.raises(ReportError, match="not found"):
        load_states(tmp_path / "missing.jsonl")
    with pytest.raises(ReportError, match="directory"):
        load_states(tmp_path)
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ReportError, match="binary.jsonl"):
        load_states(tmp_path / "binary.jsonl")
