"""Command-line pieces every subcommand shares: ``KEY=VALUE`` lists and the stream
config from ``--config`` plus overrides.

Their own module (below the applications, above the config) so that ``demo``,
``bench`` and ``train`` build their config exactly as ``run`` does without
importing ``emo_stream.cli``, which imports them to register their subcommands.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from emo_stream.config import StreamConfig
from emo_stream.errors import ConfigError
from emo_stream.structured_files import parse_yaml_text


def parse_assignments(items: Sequence[str], flag: str, key_name: str = "KEY", parse: Callable[[str], object] = str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": parse("1"), "b": parse("x")}``; malformed items are a one-line error."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects {key_name}=VALUE, got {item!r}")
        out[key.strip()] = parse(value)
    return out


def _option_value(text: str) -> Any:
    """An ``--option`` value, parsed as YAML with the limits of every other YAML read."""
    return parse_yaml_text(text, "--option value")


def config_from_args(args: argparse.Namespace) -> StreamConfig:
    """The stream config from ``--config`` plus command-line overrides (shared by run, demo ...)."""
    cfg = StreamConfig.from_yaml(args.config) if args.config else StreamConfig()
    window = {k: v for k, v in (("length_s", args.window), ("hop_s", args.hop)) if v is not None}
    engine = {k: v for k, v in (("name", args.engine), ("label_set", args.label_set)) if v is not None}
    options = {**cfg.engine.options, **parse_assignments(args.option, "--option", parse=_option_value)}
    if getattr(args, "weights", None):
        options["weights"] = args.weights
    if getattr(args, "export", None):
        # Exported artifacts run on the same engine logic through ONNX Runtime / llama.cpp.
        options["export"] = str(args.export)
        if engine.get("name", cfg.engine.name) in ("default", "emotion-llama"):
            engine["name"] = "emotion-llama-export"
    if options != dict(cfg.engine.options):
        engine["options"] = options
    source = {"realtime": True} if getattr(args, "realtime", False) else {}
    if window:
        # Keep the history long enough for the requested window.
        length = window.get("length_s", cfg.window.length_s) + window.get("hop_s", cfg.window.hop_s)
        cfg = cfg.replace(buffers={"history_s": max(cfg.buffers.history_s, length)})
    return cfg.replace(window=window, engine=engine, source=source)
