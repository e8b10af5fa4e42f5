"""A source that wraps another one: the one base (issue 15) for pacing a file
(:class:`~emo_stream.stream.sources.pacing.PacedSource`), showing samples to the
demo's window (``demo.live.TeeSource``) and cutting a clip to a time range
(``train.features.ClipSource``).

What a wrapper must forward is easy to get partly wrong (one forgot ``paced``,
another copied ``stats`` once instead of reading it): the inner source's
counters, streams, clock and timing flags, open and close. Here they are
forwarded once; a wrapper overrides only what it changes.
"""

from __future__ import annotations

from collections.abc import Iterator

from emo_stream.stream.samples import Sample
from emo_stream.stream.sources.base import Source, SourceStats


class WrappedSource(Source):
    """Forwards everything to ``inner``; subclasses override :meth:`samples` (and
    whatever else they change, e.g. ``name`` or ``paced``)."""

    def __init__(self, inner: Source) -> None:
        # No Source.__init__: the counters are the inner source's (one set, read live).
        self.inner = inner
        self.name = inner.name
        self.live = inner.live
        self.clock = inner.clock
        self.paced = getattr(inner, "paced", False)

    @property
    def stats(self) -> SourceStats:  # type: ignore[override]
        return self.inner.stats

    @property
    def streams(self) -> frozenset[str]:
        return self.inner.streams

    def open(self) -> None:
        self.inner.open()

    def samples(self) -> Iterator[Sample]:
        yield from self.inner.samples()

    def close(self) -> None:
        self.inner.close()
