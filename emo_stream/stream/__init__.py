"""Streaming machinery: sources -> timeline -> scheduler, samples and sinks. The wiring
(sources -> scheduler -> engine -> sinks) is emo_stream.pipeline, a layer above the engines."""
