"""Engines: window -> emotion evidence. Importing this package registers the built-ins."""

from emo_stream.engines import baseline, default, emotion_llama, emotion_llama_export  # noqa: F401
from emo_stream.engines.base import Engine, EngineOutput, engine_names, make_engine, register_engine

__all__ = ["Engine", "EngineOutput", "engine_names", "make_engine", "register_engine"]
