"""Streaming machinery: sources -> timeline -> scheduler -> engine -> sinks."""
