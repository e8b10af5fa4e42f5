from pathlib import Path

import pytest

from emo_stream.config import StreamConfig
from emo_stream.errors import ConfigError


def test_defaults_are_valid_and_match_the_shipped_yaml():
    repo = Path(__file__).resolve().parents[1]
    assert StreamConfig.from_yaml(repo / "configs" / "default.yaml") == StreamConfig()


def test_yaml_overrides_and_coerces_ints(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("window:\n  length_s: 3\n  hop_s: 1\nengine:\n  label_set: merr\n")
    cfg = StreamConfig.from_yaml(p)
    assert cfg.window.length_s == 3.0 and isinstance(cfg.window.length_s, float)
    assert cfg.engine.label_set == "merr"
    assert cfg.window.frames_per_window == 8  # untouched default


@pytest.mark.parametrize(
    "yaml_text, msg",
    [
        ("window:\n  hop: 0.5\n", "unknown key.*window.hop"),
        ("window:\n  hop_s: -1\n", "hop_s must be in"),
        ("window:\n  frames_per_window: 2.5\n", "must be int"),
        ("window:\n  frame_selection: random\n", "frame_selection must be one of"),
        ("engine:\n  label_set: nope\n", "unknown label set"),
        ("buffers:\n  history_s: 1.0\n", "history_s .* must be >="),
        ("audio:\n  sample_rate: 12345\n", "not a supported rate"),
        ("window: 3\n", "must be a mapping"),
        ("- a\n- b\n", "mapping at the top level"),
        ("window: {length_s: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_fail_with_the_key_named(tmp_path, yaml_text, msg):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match=msg):
        StreamConfig.from_yaml(p)


def test_missing_file_and_replace():
    with pytest.raises(ConfigError, match="not found"):
        StreamConfig.from_yaml("/nonexistent.yaml")
    cfg = StreamConfig().replace(window={"hop_s": 1.0})
    assert cfg.window.hop_s == 1.0 and cfg.window.length_s == 2.0
    with pytest.raises(ConfigError):
        StreamConfig().replace(window={"hop_s": 0})
