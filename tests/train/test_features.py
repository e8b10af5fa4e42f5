"""Feature extraction: the stream's own path, the cache format, resumability and staleness checks (real media)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from emo_stream.config import StreamConfig
from emo_stream.engines.base import Engine, EngineOutput
from emo_stream.errors import ConfigError
from emo_stream.labels import get_label_set
from emo_stream.train.dataset import DatasetError, Sample, read_manifest, write_manifest
from emo_stream.train.features import (
    ClipSource,
    FeatureCache,
    FeatureSettings,
    collate,
    encoder_fingerprints,
    extract_features,
)


@pytest.fixture(scope="module")
def tiny() -> Any:
    from emo_stream.train.config import ModelSection
    from emo_stream.train.trainer import build_model

    return build_model(ModelSection(tiny="v1", seed=0))


@pytest.fixture()
def manifest(media: Path, tmp_path: Path) -> Any:
    samples = [
        Sample(id="astro", label="happy", media=media / "astronaut_speech.mp4", start=0.5, end=2.5, subtitle="hello"),
        Sample(id="mega", label="surprise", media=media / "megamind.avi", start=1.0, end=2.0),
        Sample(id="voice", label="neutral", media=media / "librivox_0870.wav", end=1.5),
    ]
    return read_manifest(write_manifest(tmp_path / "m.jsonl", samples, "mer2023"))


class _Spy(Engine):
    """Records the windows the stream cuts."""

    def __init__(self) -> None:
        self.model_id, self.label_set = "spy", get_label_set("mer2023")
        self.windows: list = []

    def process(self, window: Any) -> EngineOutput:
        self.windows.append(window)
        return EngineOutput(probabilities=np.full(6, 1 / 6))


def test_cached_features_are_what_the_stream_feeds_the_model(tiny: Any, manifest: Any, tmp_path: Path) -> None:
    """Cut the clip with the real Pipeline, encode the window directly with the model, compare with the cache."""
    from emo_stream.pipeline import Pipeline
    from emo_stream.stream.sources.factory import open_sources

    settings = FeatureSettings()
    s = extract_features(manifest, tiny, tmp_path / "cache", settings, progress=False)
    assert (s.samples, s.encoded, s.windows, s.reused) == (3, 3, 3, 0)
    cache = FeatureCache(tmp_path / "cache")
    sample = manifest.samples[0]
    cfg = settings.window_config()
    spy = _Spy()
    Pipeline([ClipSource(src, sample.start, sample.end) for src in open_sources(str(sample.media), cfg)], spy, [], cfg).run()
    (w,) = spy.windows
    assert 0.45 <= w.start <= 0.55 and 2.4 <= w.end <= 2.55 and len(w.frames) == 8
    with torch.no_grad():
        direct = tiny.encode(tiny.preprocess([f.image for f in w.frames], w.audio.samples, w.audio.sample_rate))
    cached = cache.load(cache.windows("astro")[0])
    assert set(cached) == {"global", "face", "temporal", "audio"}
    for m, e in direct.items():
        assert torch.allclose(cached[m]["pooled"], e.pooled[0], atol=1e-6), m
    assert torch.allclose(cached["global"]["tokens"], direct["global"].tokens[0], atol=1e-6)
    assert "tokens" not in cached["face"]  # v1 reads utterance vectors only
    # the audio-only clip has only the audio modality; flags come from the engine
    voice = cache.windows("voice")[0]
    assert voice.modalities == ("audio",)
    assert "face_view_center_crop" in cache.windows("mega")[0].flags


def test_collate_pads_and_masks(tiny: Any, manifest: Any, tmp_path: Path) -> None:
    extract_features(manifest, tiny, tmp_path / "cache", progress=False)
    cache = FeatureCache(tmp_path / "cache")
    items = [cache.load(cache.windows(i)[0]) for i in ("astro", "voice")]
    enc = collate(items)
    assert enc["global"].tokens.shape == (2, 17, 24) and enc["global"].mask[1].sum() == 0
    assert enc["audio"].pooled.shape == (2, 16) and bool(enc["audio"].mask[:, 0].all())
    proj = tiny.project(enc)  # the projector masks the absent global view of the audio-only row
    assert proj.mask[1].sum() == 1 and proj.mask[0].sum() == proj.mask.shape[1]


def test_resumable_and_identical_to_one_shot(tiny: Any, manifest: Any, tmp_path: Path) -> None:
    one = tmp_path / "one"
    extract_features(manifest, tiny, one, FeatureSettings(shard_size=2), progress=False)
    two = tmp_path / "two"
    s1 = extract_features(manifest, tiny, two, FeatureSettings(shard_size=2), progress=False, limit=1)
    assert s1.encoded == 1 and len(FeatureCache(two).entries) == 1
    # a crash while appending the index leaves a torn line; a stray shard the index does not list is overwritten
    with open(two / "index.jsonl", "a") as fh:
        fh.write('{"id": "mega", "ke')
    (two / "shards" / "shard-00001.safetensors").write_bytes(b"garbage")
    s2 = extract_features(manifest, tiny, two, FeatureSettings(shard_size=2), progress=False)
    assert (s2.reused, s2.encoded) == (1, 2)
    a, b = FeatureCache(one), FeatureCache(two)
    for sid in ("astro", "mega", "voice"):
        fa, fb = a.load(a.windows(sid)[0]), b.load(b.windows(sid)[0])
        assert fa.keys() == fb.keys()
        for m in fa:
            for k in fa[m]:
                assert torch.equal(fa[m][k], fb[m][k])
    assert all(json.loads(x) for x in (two / "index.jsonl").read_text().splitlines())
    assert extract_features(manifest, tiny, two, FeatureSettings(shard_size=2), progress=False).encoded == 0


def test_other_encoders_or_settings_are_refused(tiny: Any, manifest: Any, tmp_path: Path) -> None:
    from emo_stream.train.config import ModelSection
    from emo_stream.train.trainer import build_model

    extract_features(manifest, tiny, tmp_path / "c", progress=False)
    other = build_model(ModelSection(tiny="v1", seed=1))
    assert encoder_fingerprints(other) != encoder_fingerprints(tiny)
    with pytest.raises(ConfigError, match="other encoders"):
        FeatureCache(tmp_path / "c").check_model(other)
    with pytest.raises(ConfigError, match="--overwrite"):
        extract_features(manifest, other, tmp_path / "c", progress=False)
    assert extract_features(manifest, other, tmp_path / "c", progress=False, overwrite=True).encoded == 3
    FeatureCache(tmp_path / "c").check_model(other)
    # a reused LLM init does not change the encoders (llm_init_std keeps the cached features valid)
    same = build_model(ModelSection(tiny="v1", seed=1, llm_init_std=0.2))
    FeatureCache(tmp_path / "c").check_model(same)
    with pytest.raises(DatasetError, match="not a feature cache"):
        FeatureCache(tmp_path)


def test_stream_windows_and_precomputed_features(tiny: Any, media: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "face.npy", np.arange(16, dtype=np.float32))
    np.save(tmp_path / "aud.npy", np.ones((3, 16), np.float32))
    samples = [
        Sample(id="s", label="happy", media=media / "astronaut_speech.mp4", end=3.0, features={"face": tmp_path / "face.npy"}),
        Sample(id="p", label="sad", features={"audio": tmp_path / "aud.npy"}),
    ]
    m = read_manifest(write_manifest(tmp_path / "m.jsonl", samples, "mer2023"))
    stream = StreamConfig().replace(window={"length_s": 2.0, "hop_s": 1.0, "emit_partial": False})
    extract_features(m, tiny, tmp_path / "c", FeatureSettings(windows="stream", stream=stream), progress=False)
    c = FeatureCache(tmp_path / "c")
    ws = c.windows("s")
    assert [(round(w.start, 2), round(w.end, 2)) for w in ws] == [(0.0, 2.0), (1.0, 3.0)]
    f = c.load(ws[1])
    assert torch.equal(f["face"]["pooled"], torch.arange(16, dtype=torch.float32))  # the given feature replaces the encoder's
    (p,) = c.windows("p")
    assert p.modalities == ("audio",) and "precomputed" in p.flags
    assert torch.equal(c.load(p)["audio"]["pooled"], torch.ones(16))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 2, 2), np.float32))
    m2 = read_manifest(write_manifest(tmp_path / "m2.jsonl", [Sample(id="b", label="sad", features={"audio": bad})], "mer2023"))
    with pytest.raises(DatasetError, match=r"sample 'b' \(line 2\): feature file .* must hold"):
        extract_features(m2, tiny, tmp_path / "c2", progress=False)
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros(1024, np.float32))  # a real MERR HuBERT feature for a tiny (16-d) model
    m3 = read_manifest(write_manifest(tmp_path / "m3.jsonl", [Sample(id="w", label="sad", features={"audio": wide})], "mer2023"))
    with pytest.raises(DatasetError, match=r"has width 1024, this model's projector reads 16"):
        extract_features(m3, tiny, tmp_path / "c3", progress=False)


def test_unreadable_media_names_the_sample(tiny: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    m = read_manifest(write_manifest(tmp_path / "m.jsonl", [Sample(id="x", label="sad", media=bad)], "mer2023"))
    with pytest.raises(DatasetError, match=r"sample 'x' \(line 2\): .*not a readable media file"):
        extract_features(m, tiny, tmp_path / "c", progress=False)


def _synthetic_window() -> Any:
    from emo_stream.stream.samples import VideoFrame
    from emo_stream.stream.scheduler import Window
    from emo_stream.stream.timeline import AudioSpan

    rng = np.random.default_rng(0)
    frames = tuple(VideoFrame(t=k * 0.1, image=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), index=k) for k in range(4))
    audio = AudioSpan(samples=(rng.standard_normal(32000) * 0.1).astype(np.float32), start=0.0, sample_rate=16000, coverage=0.1)
    return Window(
        index=0, start=0.0, end=2.0, frames=frames, n_frames=4, audio=audio, streams_expected=frozenset({"video", "audio"})
    )  # coverage 0.1: flagged audio_gap


def test_engine_features_seam_is_what_process_projects(tiny: Any) -> None:
    """The trainer's seam (Engine.features) must be exactly the head's input: process == head(features)."""
    from emo_stream.engines.emotion_llama import EmotionLlamaEngine

    cfg = StreamConfig.from_dict({"engine": {"name": "emotion-llama", "label_set": "mer2023", "options": {}}})
    engine = EmotionLlamaEngine(cfg, model=tiny)
    window = _synthetic_window()
    feats = engine.features(window)
    assert set(feats.features) == {"global", "face", "temporal", "audio"}
    assert "audio_gap" in feats.flags and "face_view_center_crop" in feats.flags
    with torch.inference_mode():
        head = tiny.label_probabilities(tiny.project(feats.features), "", engine.label_set)[0].double().numpy()
    out = engine.process(window)
    np.testing.assert_allclose(out.probabilities, head / head.sum(), rtol=1e-6, atol=1e-9)
    assert out.flags == list(dict.fromkeys(feats.flags))


def test_engine_features_default_for_engines_without_learned_features() -> None:
    window = _synthetic_window()
    feats = _Spy().features(window)
    assert feats.features == {}
    assert feats.flags == ["audio_gap"] and feats.modalities == window.modalities
    assert _Spy().windows == []  # the default does not run the engine
