"""The synthetic learnability set: what it writes, and that the stream's sources read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emo_stream.errors import ConfigError
from emo_stream.stream.samples import AudioChunk, VideoFrame
from emo_stream.stream.sources.media_file import MediaFileSource
from emo_stream.train import synthetic
from emo_stream.train.dataset import read_manifest


@pytest.mark.slow
def test_set_layout_and_labels(synthetic_set: Any) -> None:
    root = synthetic_set.root
    train, test = read_manifest(root / "train.jsonl"), read_manifest(root / "test.jsonl")
    assert synthetic_set.n_clips == 60 and len(train) == 42 and len(test) == 18
    assert set(train.label_counts().values()) == {7} and set(test.label_counts().values()) == {3}
    assert not {s.id for s in train} & {s.id for s in test}
    for s in train:
        assert s.subtitle and s.reason and s.grain == "fine" and s.media.is_file()
        assert s.meta["voice"] in synthetic.VOICES and 0 < s.meta["seconds"] <= 2.0
    info = json.loads((root / "synthetic.json").read_text())
    assert "expression-LIKE" in info["what"] and len(info["clips"]) == 60
    assert {c["face"] for c in info["clips"]} >= {"astronaut"} and len({c["face"] for c in info["clips"]}) > 3


@pytest.mark.slow
def test_clips_decode_through_the_stream_sources(synthetic_set: Any) -> None:
    s = read_manifest(synthetic_set.root / "test.jsonl").samples[0]
    with MediaFileSource(s.media) as src:
        assert src.streams == {"video", "audio"}
        frames, audio = [], 0
        for x in src.samples():
            if isinstance(x, VideoFrame):
                frames.append(x)
            elif isinstance(x, AudioChunk):
                audio += x.samples.size
    assert frames[0].image.shape == (64, 64, 3) and abs(len(frames) / 15.0 - s.meta["seconds"]) < 0.15
    assert abs(audio / 16000 - s.meta["seconds"]) < 0.15


def test_every_known_emotion_has_a_style_and_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emo_stream.labels import LABEL_SETS, canonical

    for ls in LABEL_SETS.values():
        assert {canonical(x) for x in ls.labels} <= set(synthetic.STYLES)
    with pytest.raises(ConfigError, match="per_label must be >= 2"):
        synthetic.make_synthetic_set(tmp_path / "a", per_label=1, progress=False)
    with pytest.raises(ConfigError, match="unknown emotion label 'bored'"):
        synthetic.make_synthetic_set(tmp_path / "b", labels=["bored"], progress=False)
    with pytest.raises(ConfigError, match="'disgust' is not in label set 'mer2023'"):
        synthetic.make_synthetic_set(tmp_path / "b", labels=["disgust"], progress=False)
    monkeypatch.setattr(synthetic.shutil, "which", lambda name: None)
    with pytest.raises(synthetic.SyntheticSetError, match="espeak-ng"):
        synthetic.make_synthetic_set(tmp_path / "c", progress=False)
