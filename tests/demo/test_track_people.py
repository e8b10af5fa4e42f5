"""The live demo's state slot keeps each window's other tracked people with its primary state."""

from __future__ import annotations

from emo_stream.demo.track import LatestSink, LatestState


def test_a_window_is_published_whole_at_its_end(make_state) -> None:
    latest = LatestState()
    sink = LatestSink(latest)
    p1, p2 = make_state(person_id="p1", sequence=0), make_state(person_id="p2", sequence=0)
    sink.write(p1)
    sink.write_person(p2)
    assert latest.state is None  # not before the window's people are in
    sink.end_window()
    assert latest.state is p1 and latest.people_of(p1) == (p2,)
    # the next window replaces both; the old primary state no longer gets anyone beside it
    q1 = make_state(person_id="p1", sequence=1, window_end=2.5)
    sink.write(q1)
    sink.end_window()
    assert latest.state is q1 and latest.people_of(q1) == () and latest.people_of(p1) == ()
    assert latest.people_of(None) == () and latest.count == 2


def test_a_window_without_end_window_is_published_by_the_next_one_or_close(make_state) -> None:
    latest = LatestState()
    sink = LatestSink(latest)
    a, b = make_state(sequence=0), make_state(sequence=1, window_end=2.5)
    sink.write(a)
    sink.write(b)
    assert latest.state is a
    sink.close()
    assert latest.state is b
