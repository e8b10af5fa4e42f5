"""The ``emotion-llama`` engine on synthetic windows (tiny random model, fixed seed)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from emo_stream.config import StreamConfig
from emo_stream.engines.base import make_engine
from emo_stream.engines.emotion_llama import EmotionLlamaEngine
from emo_stream.errors import ConfigError
from emo_stream.labels import get_label_set
from emo_stream.state import EmotionState
from emo_stream.stream.samples import VideoFrame
from emo_stream.stream.scheduler import Window
from emo_stream.stream.timeline import AudioSpan


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # Tiny models on a small shared CPU: a one-thread pool is ~30x faster than a contended two-thread one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(label_set: str = "merr", **options) -> StreamConfig:
    return StreamConfig.from_dict({"engine": {"name": "emotion-llama", "label_set": label_set, "options": {"tiny": True, **options}}})


def _window(i: int, frames: int = 4, audio: str = "speech", seed: int = 0) -> Window:
    rng = np.random.default_rng(seed + i)
    fr = tuple(VideoFrame(t=i * 0.5 + k * 0.1, image=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), index=k) for k in range(frames))
    span = None
    if audio != "none":
        samples = (rng.standard_normal(32000) * 0.1).astype(np.float32) if audio != "silence" else np.zeros(32000, np.float32)
        if audio == "nan":
            samples[100:200] = np.nan
        span = AudioSpan(samples=samples, start=i * 0.5, sample_rate=16000, coverage=1.0)
    return Window(index=i, start=i * 0.5, end=i * 0.5 + 2.0, frames=fr, n_frames=frames, audio=span, streams_expected=frozenset({"video", "audio"}))


@pytest.fixture(scope="module")
def engine() -> EmotionLlamaEngine:
    return EmotionLlamaEngine(_config(rationale_every=2, max_new_tokens=4))


def _check(out, label_set) -> None:
    p = np.asarray(out.probabilities)
    assert p.shape == (len(label_set),)
    assert np.all(np.isfinite(p)) and np.all(p >= 0) and abs(p.sum() - 1) < 1e-9
    assert -1 <= out.valence <= 1 and -1 <= out.arousal <= 1


def test_registered_and_built_by_name() -> None:
    eng = make_engine(_config("mer2023"))
    assert isinstance(eng, EmotionLlamaEngine)
    assert eng.model_id == "emotion-llama/v1/tiny-v1-random-seed0/mer2023"


def test_processes_windows_into_valid_states(engine) -> None:
    ls = get_label_set("merr")
    cases = [
        _window(0),
        _window(1, audio="none"),
        _window(2, frames=0),
        _window(3, audio="silence"),
        _window(4, audio="nan"),
        _window(5, frames=0, audio="none"),
    ]
    outs = [engine.process(w) for w in cases]
    for w, out in zip(cases, outs):
        _check(out, ls)
        EmotionState.build(
            label_set=ls,
            probabilities=out.probabilities,
            window_start=w.start,
            window_end=w.end,
            sequence=w.index,
            model_id=engine.model_id,
            valence=out.valence,
            arousal=out.arousal,
            modalities=out.modalities,
            rationale=out.rationale,
            latency_ms=out.latency_ms,
            flags=out.flags,
            signals=out.signals,
        )
        assert "random_weights" in out.flags
    full, no_audio, no_video, silent, nan_audio, nothing = outs
    assert {"encode_global", "encode_face", "encode_temporal", "encode_audio", "project", "llm_score"} <= set(full.latency_ms)
    assert "encode_audio" not in no_audio.latency_ms and "encode_audio" not in silent.latency_ms
    assert "encode_global" not in no_video.latency_ms
    assert full.modalities == {"video", "audio"} and no_video.modalities == {"audio"}
    assert "no_audio" in no_audio.flags and "nan_input" in nan_audio.flags and "no_modalities" in nothing.flags
    assert "face_view_center_crop" in full.flags
    assert full.signals["multimodal_tokens"] > no_audio.signals["multimodal_tokens"] > 0
    assert nothing.signals["multimodal_tokens"] == 0
    assert not np.allclose(full.probabilities, nothing.probabilities)  # the inputs reach the LLM
    # rationale on windows 0, 2, 4 (every 2nd processed window)
    assert [bool(o.rationale_stamp) for o in outs] == [True, False, True, False, True, False]
    assert full.rationale_stamp == cases[0].end and "llm_rationale" in full.latency_ms


def test_fixed_seed_is_reproducible_and_seed_matters() -> None:
    w = _window(0)
    a = EmotionLlamaEngine(_config("mer2023")).process(w)
    b = EmotionLlamaEngine(_config("mer2023")).process(w)
    c = EmotionLlamaEngine(_config("mer2023", seed=1)).process(w)
    assert len(a.probabilities) == 6
    assert np.array_equal(a.probabilities, b.probabilities)
    assert not np.allclose(a.probabilities, c.probabilities)


def test_v2_and_face_cropper() -> None:
    calls = []

    def cropper(img: np.ndarray):
        calls.append(img.shape)
        return img[8:40, 16:48].copy() if len(calls) % 2 else None

    eng = EmotionLlamaEngine(_config("mer2023", version="v2"), face_cropper=cropper)
    out = eng.process(_window(0))
    _check(out, get_label_set("mer2023"))
    assert len(calls) == 4 and "face" in out.modalities and "face_view_center_crop" not in out.flags
    assert eng.model_id.startswith("emotion-llama/v2/")
    none = EmotionLlamaEngine(_config("mer2023"), face_cropper=lambda img: None).process(_window(1))
    assert "no_face" in none.flags and "face" not in none.modalities


def test_weights_dir_option(tmp_path) -> None:
    from emo_stream.model.emotion_llama import EmotionLlamaConfig, build_emotion_llama

    torch.manual_seed(3)
    model = build_emotion_llama(EmotionLlamaConfig.tiny("v1", label_set="merr"))
    model.save_pretrained(tmp_path / "w")
    cfg = StreamConfig.from_dict({"engine": {"name": "emotion-llama", "label_set": "merr", "options": {"weights": str(tmp_path / "w")}}})
    eng = EmotionLlamaEngine(cfg)
    w = _window(0)
    out = eng.process(w)
    direct = model.eval().classify(model.preprocess([f.image for f in w.frames], w.audio.samples))[0].double().numpy()
    np.testing.assert_allclose(out.probabilities, direct / direct.sum(), rtol=1e-6, atol=1e-9)
    assert "random_weights" not in out.flags and eng.model_id == "emotion-llama/v1/w/merr"


@pytest.mark.parametrize(
    "options, match",
    [
        ({"tiny": True, "colour": 1}, "unknown"),
        ({"tiny": True, "weights": "x"}, "exactly one"),
        ({}, "exactly one"),
        ({"tiny": True, "rationale_every": -1}, "rationale_every"),
        ({"tiny": True, "version": "v3"}, "version"),
        ({"tiny": True, "seed": "0"}, "seed"),
        ({"tiny": True, "face_detector": "dlib"}, "face_detector"),
    ],
)
def test_options_are_validated(options, match) -> None:
    cfg = StreamConfig.from_dict({"engine": {"name": "emotion-llama", "options": options}})
    with pytest.raises(ConfigError, match=match):
        EmotionLlamaEngine(cfg)


def test_missing_weights_dir_is_a_model_file_error(tmp_path) -> None:
    from emo_stream.errors import ModelFileError

    cfg = StreamConfig.from_dict({"engine": {"name": "emotion-llama", "options": {"weights": str(tmp_path / "none")}}})
    with pytest.raises(ModelFileError, match="import_emotion_llama"):
        EmotionLlamaEngine(cfg)
