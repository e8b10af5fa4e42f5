"""The baseline engine's options go through the one validated builder (issue 13)."""

from __future__ import annotations

import pytest

from emo_stream.config import StreamConfig
from emo_stream.engines.baseline import SignalStatsEngine
from emo_stream.errors import ConfigError


def test_no_options_builds():
    assert SignalStatsEngine(StreamConfig()).model_id.startswith("baseline-signal-stats/")


@pytest.mark.parametrize("options", [{"x": 1}, {"asr": "off"}, {"export": "/some/model"}])
def test_any_option_is_refused_by_name(options):
    """It takes none: an option meant for another engine must not look as if it took effect."""
    cfg = StreamConfig().replace(engine={"name": "baseline", "options": options})
    with pytest.raises(ConfigError, match=f"engine.options.{next(iter(options))}"):
        SignalStatsEngine(cfg)
