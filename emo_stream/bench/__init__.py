"""Benchmarks: ``emo-stream bench`` (see :mod:`emo_stream.bench.cli`)."""
