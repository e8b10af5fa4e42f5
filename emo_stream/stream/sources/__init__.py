"""Inputs behind one interface (:class:`~emo_stream.stream.sources.base.Source`)."""
