import dataclasses
import typing
from pathlib import Path

import pytest

from emo_stream.config import StreamConfig, build_dataclass
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
        ("window:\n  frames_per_window: 2.5\n", "window.frames_per_window must be an integer, got 2.5"),
        ("window:\n  frames_per_window: 8.0\n", "must be an integer"),
        ("window:\n  frames_per_window: true\n", "must be an integer"),
        ("window:\n  emit_partial: 'false'\n", r"window.emit_partial must be true or false, got 'false' \(a string\)"),
        ("window:\n  emit_partial: 0\n", "must be true or false"),
        ("window:\n  hop_s: 0.000001\n", r"window.hop_s must be in \[0.05, 60\]"),
        ("window:\n  hop_s: 1e-9\n", r"window.hop_s must be in \[0.05"),  # YAML 1.1 reads this as a string
        ("window:\n  hop_s: .nan\n", "window.hop_s must be a finite number"),
        ("window:\n  hop_s: 'inf'\n", "window.hop_s must be a number"),
        ("window:\n  length_s: [1]\n", "window.length_s must be a number"),
        ("buffers:\n  history_s: .inf\n", "buffers.history_s must be a finite number, got inf"),
        ("buffers:\n  history_s: 1.0e6\n", r"buffers.history_s must be in \(0, 300"),
        ("buffers:\n  max_pending_windows: 0\n", r"buffers.max_pending_windows must be in \[1, 64\]"),
        ("source:\n  max_frame_side: 8\n", "source.max_frame_side must be in"),
        ("source:\n  max_frame_side: 640.5\n", "source.max_frame_side must be an integer"),
        ("source:\n  realtime: yes please\n", "source.realtime must be true or false"),
        ("engine:\n  name: 3\n", "engine.name must be a string, got 3"),
        ("engine:\n  options: [a]\n", "engine.options must be a mapping"),
        ("engine:\n  options: {1: x}\n", "engine.options key 1 must be a string"),
        ("audio:\n  sample_rate: 16000.0\n", "audio.sample_rate must be an integer"),
        ("audio:\n  sample_rate: 4000\n", r"audio.sample_rate must be in \[8000, 192000\]"),
        ("audio:\n  sample_rate: 384000\n", r"audio.sample_rate must be in \[8000, 192000\]"),
        ("window:\n  hop_s: 0.5\n  hop_s: 1.0\n", "key 'hop_s' appears twice"),
        ("window:\n  frame_selection: random\n", "frame_selection must be one of"),
        ("engine:\n  label_set: nope\n", "unknown label set"),
        ("buffers:\n  history_s: 1.0\n", "history_s .* must be >="),
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


@pytest.mark.parametrize("rate", [8000, 12345, 22050, 44100, 96000, 192000])
def test_any_sane_sample_rate_is_accepted(rate):
    # Engines that need 16 kHz resample; the config only refuses non-rates.
    assert StreamConfig.from_dict({"audio": {"sample_rate": rate}}).audio.sample_rate == rate


def test_exponent_strings_and_ints_are_numbers():
    cfg = StreamConfig.from_dict({"window": {"hop_s": "1e-1", "length_s": 1}})
    assert cfg.window.hop_s == 0.1 and isinstance(cfg.window.length_s, float)


def test_hostile_yaml_files_fail_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    levels = "".join(f"    {n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
    bomb.write_text("engine:\n  options:\n    a: &a [x, x, x, x, x, x, x, x, x]\n" + levels)  # 9**9 values
    with pytest.raises(ConfigError, match="alias bomb"):
        StreamConfig.from_yaml(bomb)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"engine:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"config file .*latin.yaml is not UTF-8 text \(byte 0xe9 at offset 19\)"):
        StreamConfig.from_yaml(latin)
    deep = tmp_path / "deep.yaml"
    deep.write_text("engine:\n  options:\n    x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        StreamConfig.from_yaml(deep)


@dataclasses.dataclass(frozen=True)
class _Inner:
    gain: float = 1.0


@dataclasses.dataclass(frozen=True)
class _Options:
    """The shape of engine options an engine validates with build_dataclass."""

    mode: typing.Literal["fast", "full"] = "fast"
    publish_transcript: bool = False
    threads: int | None = None
    weights: tuple[float, ...] = ()
    pair: tuple[int, str] = (0, "")
    names: list[str] = dataclasses.field(default_factory=list)
    per_view: typing.Mapping[str, float] = dataclasses.field(default_factory=dict)
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    path: Path | None = None


def test_builder_converts_what_it_accepts():
    o = build_dataclass(
        _Options,
        {
            "mode": "full",
            "threads": None,
            "weights": [1, 2.5],
            "pair": [3, "x"],
            "names": ("a",),
            "per_view": {"face": 2},
            "inner": {"gain": 2},
            "path": "m.onnx",
        },
        where="engine.options",
    )
    assert o.weights == (1.0, 2.5) and o.pair == (3, "x") and o.names == ["a"]
    assert o.per_view == {"face": 2.0} and o.inner == _Inner(2.0) and o.path == Path("m.onnx")
    assert build_dataclass(_Options, {}, "engine.options") == _Options()


@pytest.mark.parametrize(
    "options, msg",
    [
        ({"publish_transcript": "false"}, r"^engine.options.publish_transcript must be true or false, got 'false' \(a string\)$"),
        ({"mode": "maybe"}, r"engine.options.mode must be one of \['fast', 'full'\], got 'maybe'"),
        ({"threads": 2.0}, "engine.options.threads must be an integer, got 2.0"),
        ({"weights": [1, float("nan")]}, r"engine.options.weights\[1\] must be a finite number"),
        ({"pair": [1, "a", 2]}, "engine.options.pair must be a list of 2 items, got 3"),
        ({"per_view": {"face": "x"}}, "engine.options.per_view.face must be a number"),
        ({"inner": {"gain": float("inf")}}, "engine.options.inner.gain must be a finite number"),
        ({"inner": {"gian": 1}}, r"unknown key\(s\) engine.options.inner.gian"),
        ({"typo": 1}, r"unknown key\(s\) engine.options.typo; valid: \["),
        ("fast", "engine.options must be a mapping, got 'fast' \\(a string\\)"),
    ],
)
def test_builder_names_the_key_path(options, msg):
    with pytest.raises(ConfigError, match=msg):
        build_dataclass(_Options, options, where="engine.options")


def test_builder_reports_missing_required_keys():
    @dataclasses.dataclass(frozen=True)
    class Needs:
        model: str

    with pytest.raises(ConfigError, match=r"missing key\(s\) engine.options.model"):
        build_dataclass(Needs, {}, "engine.options.")
