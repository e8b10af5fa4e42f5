"""Lossless-vs-paced agreement pairs states by window, not by position (issue 14 item 4)."""

from emo_stream.bench.cli import _agreement
from emo_stream.bench.stream import window_key


def test_a_dropped_window_does_not_shift_the_pairing():
    lossless = {window_key(t): lab for t, lab in [(0.5, "sad"), (1.0, "sad"), (1.5, "happy"), (2.0, "happy")]}
    paced = {window_key(t): lab for t, lab in [(0.5, "sad"), (1.5, "happy"), (2.0, "happy")]}  # 1.0 dropped
    assert _agreement(lossless, paced) == 1.0  # by position it was 1/3


def test_people_in_one_window_pair_with_themselves():
    a = {window_key(1.0, "p1"): "happy", window_key(1.0, "p2"): "sad"}
    b = {window_key(1.0, "p2"): "sad", window_key(1.0, "p1"): "angry"}
    assert _agreement(a, b) == 0.5
    assert _agreement(a, {}) is None
