"""emo_stream.stats: the one percentile helper (issue 15)."""

from emo_stream.stats import percentile, percentiles


def test_percentile_interpolates_and_empty_is_none():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0], 95) == 10.0
    assert percentile([], 50) is None
    assert percentile(iter([1.0, 2.0]), 100) == 2.0  # any iterable, read once


def test_percentiles_keys_suffix_and_rounding():
    assert percentiles([1.0, 2.0, 3.0, 100.0], (50, 95), suffix="_ms", ndigits=1) == {"p50_ms": 2.5, "p95_ms": 85.4}
    assert percentiles([], (50, 99.9)) == {"p50": None, "p99.9": None}
