"""Engines: window -> emotion evidence.

The built-in engines are imported by name when one is made
(``engines.base.BUILTIN_ENGINES``): importing this package loads none of them.
"""

from emo_stream.engines.base import Engine, EngineOutput, engine_names, make_engine, register_engine

__all__ = ["Engine", "EngineOutput", "engine_names", "make_engine", "register_engine"]
