"""The one YAML/JSON reader refuses hostile or broken files with one ConfigError, never a hang or a traceback."""

import os

import pytest

from emo_stream.errors import ConfigError
from emo_stream.structured_files import parse_json_text, parse_yaml_text, read_json, read_yaml

# Nine levels of nine-fold aliases: 9**9 (~387 million) strings once anything walks it.
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


def test_plain_yaml_and_ordinary_anchors_still_work():
    assert parse_yaml_text("a: 1\nb: [x, 2.5]\n") == {"a": 1, "b": ["x", 2.5]}
    merged = parse_yaml_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
    assert merged["other"] == {"x": 1, "y": 3}  # a merge key may be overridden
    assert parse_yaml_text("") is None


@pytest.mark.parametrize(
    "text, msg",
    [
        (ALIAS_BOMB, "expands to more than .* alias bomb"),
        ("a: &a [*a]\n", "recursive YAML alias"),
        ("[" * 65 + "]" * 65, "nested more than 64 levels"),
        ("[" * 50000 + "]" * 50000, "nested more than 64 levels"),
        ("hop_s: 1\nlength_s: 2\nhop_s: 3\n", r"key 'hop_s' appears twice .*lines 1 and 3"),
        ("a: [1\n", r"not valid YAML: .*line 2"),
        ("a: !!python/object/apply:os.system [ls]\n", "not valid YAML"),
    ],
)
def test_hostile_yaml_is_refused_in_one_line(text, msg):
    with pytest.raises(ConfigError, match=msg) as info:
        parse_yaml_text(text, "engine.options")
    assert "\n" not in str(info.value) and str(info.value).startswith("engine.options")


def test_depth_limit_is_inclusive():
    assert parse_yaml_text("[" * 64 + "]" * 64) is not None
    assert parse_json_text("[" * 64 + "]" * 64) is not None


@pytest.mark.parametrize(
    "text, msg",
    [
        ('{"a": NaN}', "NaN is not allowed"),
        ('{"a": -Infinity}', "Infinity is not allowed"),
        ('{"a": 1, "a": 2}', "appears twice"),
        ("[" * 100000 + "]" * 100000, "nested more than 64 levels"),
        ("[" * 65 + "]" * 65, "nested more than 64 levels"),
        ('{"a": [1, 2}', r"not valid JSON: .*line 1, column 12"),
    ],
)
def test_bad_json_is_refused_in_one_line(text, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_json_text(text, "manifest line 3")


def test_files_non_utf8_directories_fifos_and_size(tmp_path):
    good = tmp_path / "ok.json"
    good.write_text('{"clips": [1, 2]}', encoding="utf-8-sig")  # a BOM is tolerated
    assert read_json(good) == {"clips": [1, 2]}
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin.yaml is not UTF-8 text \(byte 0xe9 at offset 9\)"):
        read_yaml(latin, what="config file")
    with pytest.raises(ConfigError, match="is a directory"):
        read_yaml(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):  # opening it would block forever
        read_yaml(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("- 1\n" * 300)
    with pytest.raises(ConfigError, match="1200 bytes; more than the 1000-byte limit"):
        read_yaml(big, max_bytes=1000)
    assert read_yaml(big, max_bytes=2000) == [1] * 300
