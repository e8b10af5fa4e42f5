"""The exported model end to end: runtimes picked from config, parity with torch, a real clip streamed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from emo_stream.config import StreamConfig
from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.runtime.exported import ExportedEmotionLlama, RuntimeConfig

pytest.importorskip("llama_cpp")


def _window_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    audio = (rng.standard_normal(21000) * 0.1).astype(np.float32)
    return frames, audio


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


#: Tolerances of the exported runtime against the torch model (fp32 ONNX Runtime vs torch on CPU: the
#: same maths in another kernel order; llama.cpp F16 weights vs torch fp32 for the probabilities).
ENCODER_ATOL = 1e-4
PROB_ATOL = 1e-2


@pytest.mark.slow
def test_exported_pipeline_matches_torch(export_v1, sharp_model):
    frames, audio = _window_inputs()
    ref_in = sharp_model.preprocess(frames, audio, 16000)
    ref_enc = sharp_model.encode(ref_in)
    ref_proj = sharp_model.project(ref_enc)
    ref_p = sharp_model.label_probabilities(ref_proj).numpy()
    ex = ExportedEmotionLlama(export_v1, RuntimeConfig(precision="fp32", gguf="F16", threads=1, llm_threads=1))
    try:
        assert ex.describe()["llm"] == "llama.cpp model.F16.gguf"
        assert all("onnxruntime fp32" in ex.describe()[s] for s in ("global", "face", "temporal", "audio", "projector"))
        inp = ex.preprocess(frames, audio, 16000)  # numpy preprocessing: the very arrays the torch model feeds
        for key in ("global_pixels", "face_pixels", "temporal_pixels"):
            assert isinstance(getattr(inp, key), np.ndarray)
            np.testing.assert_array_equal(getattr(inp, key), _np(getattr(ref_in, key)))
        np.testing.assert_array_equal(inp.audio["input_values"], _np(ref_in.audio["input_values"]))
        np.testing.assert_array_equal(inp.audio["lengths"], _np(ref_in.audio["lengths"]))
        enc = ex.encode(inp)
        assert set(enc) == set(ref_enc)
        for name, e in enc.items():
            assert isinstance(e.tokens, np.ndarray)
            np.testing.assert_array_equal(e.mask, _np(ref_enc[name].mask))
            np.testing.assert_allclose(e.tokens, _np(ref_enc[name].tokens), atol=ENCODER_ATOL, rtol=0)
            np.testing.assert_allclose(e.pooled, _np(ref_enc[name].pooled), atol=ENCODER_ATOL, rtol=0)
        proj = ex.project(enc)
        np.testing.assert_allclose(proj.tokens, _np(ref_proj.tokens), atol=ENCODER_ATOL, rtol=0)
        np.testing.assert_array_equal(proj.mask, _np(ref_proj.mask))
        p = ex.label_probabilities(proj)
        assert isinstance(p, np.ndarray) and p.dtype == np.float64 and p.shape == ref_p.shape
        assert np.abs(p - ref_p).max() < PROB_ATOL
        # an absent modality goes through the exported projector as zeros + present False
        no_audio = {k: v for k, v in ref_enc.items() if k != "audio"}  # torch outputs are accepted too
        a, b = ex.project(no_audio), sharp_model.project(no_audio)
        np.testing.assert_array_equal(a.mask, _np(b.mask))
        np.testing.assert_allclose(a.tokens, _np(b.tokens), atol=ENCODER_ATOL, rtol=0)
        assert ex.rationale(proj, max_new_tokens=3)[0] is not None
        # a window without any modality: empty slots, the LLM reads the text prompt alone
        empty = ex.empty_projection()
        assert empty.tokens.shape[1] == 0 and ex.label_probabilities(empty).shape == ref_p.shape
    finally:
        ex.close()


@pytest.mark.slow
def test_v2_whisper_export_preprocesses_and_fuses_like_torch(tmp_path):
    """tiny-v2: Whisper log-mel in numpy (emo_stream.preprocess) and the fusion stage, against the torch model."""
    from emo_stream.export.common import build_tiny
    from emo_stream.export.gguf_export import export_gguf
    from emo_stream.export.onnx_export import export_onnx

    model = build_tiny("v2")
    out = tmp_path / "tiny-v2"
    export_onnx("tiny-v2", out, precisions=("fp32",), threads=1)
    export_gguf("tiny-v2", out, quants=("F16",), threads=1)
    frames, audio = _window_inputs(2)
    ref_in = model.preprocess(frames, audio, 16000)
    ex = ExportedEmotionLlama(out, RuntimeConfig(gguf="F16", threads=1, llm_threads=1))
    try:
        inp = ex.preprocess(frames, audio, 16000)
        # transformers' extractor runs its torch STFT in float32; ours is float64 (its numpy path: 1e-7)
        np.testing.assert_allclose(inp.audio["input_features"], _np(ref_in.audio["input_features"]), atol=1e-4, rtol=0)
        np.testing.assert_array_equal(inp.audio["lengths"], _np(ref_in.audio["lengths"]))
        enc, ref_enc = ex.encode(inp), model.encode(ref_in)
        np.testing.assert_array_equal(enc["audio"].mask, _np(ref_enc["audio"].mask))
        np.testing.assert_allclose(enc["audio"].tokens, _np(ref_enc["audio"].tokens), atol=1e-3, rtol=0)
        proj, ref_proj = ex.project(enc), model.project(ref_enc)
        np.testing.assert_allclose(proj.tokens, _np(ref_proj.tokens), atol=1e-3, rtol=0)
        np.testing.assert_allclose(proj.attention, _np(ref_proj.attention), atol=1e-3, rtol=0)
        p, ref_p = ex.label_probabilities(proj), model.label_probabilities(ref_proj).numpy()
        assert np.abs(p - ref_p).max() < PROB_ATOL
    finally:
        ex.close()


@pytest.mark.slow
def test_torch_backends_reproduce_the_model_exactly(export_v1, sharp_model):
    frames, audio = _window_inputs(1)
    ex = ExportedEmotionLlama(export_v1, RuntimeConfig(stages="torch", llm="torch"))
    try:
        p = ex.classify(ex.preprocess(frames, audio, 16000))
        ref = sharp_model.classify(sharp_model.preprocess(frames, audio, 16000)).numpy()
        np.testing.assert_allclose(p, ref, atol=1e-6)
    finally:
        ex.close()


@pytest.mark.slow
def test_runtime_config_errors(export_v1):
    with pytest.raises(ConfigError, match="stage runtime"):
        RuntimeConfig(stages="tvm")
    with pytest.raises(ConfigError, match="llm runtime"):
        RuntimeConfig(llm="vllm")
    with pytest.raises(ModelFileError, match="no Q2_K GGUF"):
        ExportedEmotionLlama(export_v1, RuntimeConfig(gguf="Q2_K"))


def _engine_config(export_dir, **options):
    return StreamConfig.from_dict(
        {"engine": {"name": "emotion-llama-export", "label_set": "merr", "options": {"export": str(export_dir), "llm_threads": 1, "ort_threads": 1, **options}}}
    )


@pytest.mark.slow
def test_engine_streams_a_real_clip_from_the_export(export_v1, media):
    from emo_stream.engines.emotion_llama_export import EmotionLlamaExportEngine
    from emo_stream.pipeline import Pipeline
    from emo_stream.state import EmotionState
    from emo_stream.stream.sinks import CallbackSink
    from emo_stream.stream.sources.factory import open_sources

    cfg = _engine_config(export_v1, gguf="Q8_0", precision="int8", rationale_every=5, max_new_tokens=4)
    states: list[EmotionState] = []
    engine = EmotionLlamaExportEngine(cfg)
    assert engine.model_id == "emotion-llama/v1/tiny-v1/onnxruntime-int8+llama.cpp-Q8_0/merr"
    assert engine.runtimes["audio"].startswith("audio: onnxruntime int8") and engine.runtimes["llm"] == "llama.cpp model.Q8_0.gguf"
    with engine:
        stats = Pipeline(open_sources(str(media / "astronaut_speech.mp4"), cfg), engine, [CallbackSink(states.append)], cfg).run()
    assert len(states) == 15 and stats.engine_errors == 0
    for s in states:
        assert s.label_set == "merr" and s.top_label in s.labels and abs(sum(s.probabilities) - 1) < 1e-6
        assert set(s.modalities) >= {"video", "audio"} and "random_weights" not in s.flags
        assert {"encode_global", "encode_audio", "project", "llm_score"} <= set(s.latency_ms)
    assert sum("llm_rationale" in s.latency_ms for s in states) == 3  # every 5th window, generated by llama.cpp


@pytest.mark.slow
def test_engine_refuses_incomplete_or_tampered_exports(export_v1, tmp_path):
    from emo_stream.engines.base import make_engine
    from emo_stream.engines.emotion_llama_export import EmotionLlamaExportEngine

    with pytest.raises(ConfigError, match="needs engine.options.export"):
        EmotionLlamaExportEngine(StreamConfig.from_dict({"engine": {"name": "emotion-llama-export"}}))
    with pytest.raises(ConfigError, match="unknown emotion-llama-export option"):
        EmotionLlamaExportEngine(_engine_config(export_v1, tiny=True))
    with pytest.raises(ConfigError, match="allow_cpu_fallback must be bool"):
        EmotionLlamaExportEngine(_engine_config(export_v1, allow_cpu_fallback="yes"))
    copy = tmp_path / "copy"
    shutil.copytree(export_v1, copy)
    f = copy / "onnx" / "projector.fp32.onnx"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256 of onnx/projector.fp32.onnx does not match"):
        make_engine(_engine_config(copy))
    (copy / "manifest.json").unlink()
    with pytest.raises(ModelFileError, match="not a complete export"):
        make_engine(_engine_config(copy))


def test_auto_gguf_prefers_the_fastest_variant_within_its_parity_bound() -> None:
    from emo_stream.runtime.exported import choose_gguf

    def v(diff, bound=0.02):
        return {"parity": {"label_prob_max_abs_diff": diff, "bound": bound}}

    # The small model's int8 export: no variant within 0.02 -> the one closest to torch, not Q4_K_M.
    assert choose_gguf({"Q8_0": v(0.109), "Q4_0": v(0.809), "Q4_K_M": v(0.238)}) == "Q8_0"
    assert choose_gguf({"Q8_0": v(0.01), "Q4_K_M": v(0.015)}) == "Q4_K_M"  # both fine: the faster one
    assert choose_gguf({"Q8_0": v(0.01), "Q4_K_M": v(0.3)}) == "Q8_0"
    assert choose_gguf({"F16": {}, "Q4_0": {}}) == "Q4_0"  # no parity recorded: preference order
