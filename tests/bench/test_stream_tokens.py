"""Tokens per window in the bench (issue 17): what the LLM read, from the states' own signal."""

import pytest

from emo_stream.bench.markdown import _stream_rows
from emo_stream.bench.stream import measure_stream
from emo_stream.config import StreamConfig
from emo_stream.engines import make_engine


def _cfg(engine: dict) -> StreamConfig:
    return StreamConfig.from_dict({"window": {"length_s": 1.0, "hop_s": 0.5}, "engine": engine})


@pytest.mark.slow
def test_emotion_llama_windows_report_their_multimodal_tokens(media):
    cfg = _cfg({"name": "emotion-llama", "options": {"tiny": True}})
    with make_engine(cfg) as engine:
        r = measure_stream("tiny", engine, media / "astronaut_speech.mp4", cfg, max_states=3)
    tokens = r.multimodal_tokens
    assert r.states >= 3 and tokens and 0 < tokens["min"] <= tokens["p50"] <= tokens["max"]
    row = next(line for line in _stream_rows(r.as_dict()) if "multimodal tokens" in line)
    assert f"{tokens['min']:.0f} / {tokens['p50']:.0f} / {tokens['max']:.0f}" in row


def test_an_engine_without_an_llm_reports_no_tokens_and_no_row(media):
    cfg = _cfg({"name": "baseline"})
    with make_engine(cfg) as engine:
        r = measure_stream("baseline", engine, media / "astronaut_speech.mp4", cfg, max_states=2)
    assert r.multimodal_tokens == {}
    assert not any("multimodal tokens" in line for line in _stream_rows(r.as_dict()))
