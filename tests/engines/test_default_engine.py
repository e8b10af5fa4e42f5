"""The default engine on real media with the real shipped models (no fakes)."""

import re

import numpy as np
import pytest

from emo_stream.config import StreamConfig
from emo_stream.engines import make_engine
from emo_stream.perception.asr import word_error_rate
from emo_stream.stream.pipeline import Pipeline
from emo_stream.stream.sinks import CallbackSink
from emo_stream.stream.sources.factory import open_sources

pytestmark = pytest.mark.slow


def stream(path, **options):
    cfg = StreamConfig().replace(engine={"name": "default", "options": options})
    states = []
    with make_engine(cfg) as engine:
        stats = Pipeline(open_sources(str(path), cfg), engine, [CallbackSink(states.append)], cfg).run()
    return states, stats


def test_astronaut_photo_is_happy(media):
    states, stats = stream(media / "astronaut_3s_noaudio.mp4", rationale="off")
    assert stats.engine_errors == 0 and len(states) == 6
    for s in states:
        assert s.top_label == "happy" and s.confidence >= 0.6
        assert s.modalities == ("video", "face")
        assert s.valence > 0.3
        assert s.model_id.startswith("default/")
        for stage in ("face_detect", "expression", "llm_score", "fusion", "engine"):
            assert stage in s.latency_ms


def test_astronaut_with_speech_uses_every_modality_and_explains(media):
    states, _ = stream(media / "astronaut_speech.mp4", publish_transcript=True)
    assert all(s.top_label == "happy" and s.confidence >= 0.6 for s in states)
    assert all("voice" in s.modalities for s in states[2:])  # speech starts within the first second
    last = states[-1]
    assert last.modalities == ("video", "audio", "face", "voice", "text")
    assert "dashwood" in last.transcript.lower()
    rationales = [s.rationale for s in states if s.rationale]
    assert rationales and all(r.startswith("The person seems") for r in rationales)
    assert states[0].rationale_age_s == 0.0
    assert all(s.arousal is not None and -1 <= s.arousal <= 1 for s in states)


def test_silence_and_no_face_is_flagged_not_an_error(media):
    states, stats = stream(media / "silence_noface_3s.mp4")
    assert stats.engine_errors == 0 and len(states) == 6  # at the hop rate
    for s in states:
        assert "face" not in s.modalities and "voice" not in s.modalities
        assert {"no_face", "no_speech", "no_evidence"} <= set(s.flags)
        assert np.allclose(s.probabilities, 1 / 6) and s.valence is None and s.rationale == ""


def test_librivox_speech_transcript_matches_the_shipped_text(media):
    ref = {}
    for line in (media / "librivox_transcription.txt").read_text().splitlines():
        m = re.match(r"<s> (.*) </s> \(.*-(\d+)\)", line)
        ref[m.group(2)] = m.group(1)
    states, _ = stream(media / "librivox_0880.wav", publish_transcript=True, llm=False, rationale="off")
    hyp = states[-1].transcript
    wer = word_error_rate(ref["0880"], hyp)
    print(f"librivox 0880 WER={wer:.3f} hyp={hyp!r}")
    assert wer <= 0.3
    assert all(s.modalities[:1] == ("audio",) and "face" not in s.modalities for s in states)


def test_megamind_finds_faces_in_most_windows(media):
    states, stats = stream(media / "megamind.avi", rationale="off", llm=False)
    assert len(states) == 23 and stats.engine_errors == 0
    with_face = sum("face" in s.modalities for s in states)
    print(f"megamind: face in {with_face}/{len(states)} windows")
    assert with_face >= 0.6 * len(states)
    assert any("corrupt_input" in s.flags for s in states)


def test_one_engine_serves_two_streams_identically(media):
    """reset() between runs: the second stream of the same clip gives the same states."""
    cfg = StreamConfig().replace(engine={"name": "default", "options": {"rationale": "off"}})
    runs = []
    with make_engine(cfg) as engine:
        for _ in range(2):
            states = []
            Pipeline(open_sources(str(media / "astronaut_speech.mp4"), cfg), engine, [CallbackSink(states.append)], cfg).run()
            runs.append([(s.top_label, round(s.confidence, 4), s.modalities) for s in states])
    assert runs[0] == runs[1] and len(runs[0]) == 15
