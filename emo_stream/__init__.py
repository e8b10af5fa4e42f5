"""emo_stream: real-time multimodal emotion perception for robots.

The public contracts live in small top-level modules: :mod:`emo_stream.state`
(the one output, ``EmotionState``), :mod:`emo_stream.labels` (label sets and the
mapping between them) and :mod:`emo_stream.config` (validated configuration).
Streaming machinery is in :mod:`emo_stream.stream`, engines in
:mod:`emo_stream.engines`.
"""

__version__ = "0.1.0"
