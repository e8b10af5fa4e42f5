"""The default engine on real media with the real shipped models (no fakes)."""

import re

import numpy as np
import pytest

from emo_stream.config import StreamConfig
from emo_stream.engines import make_engine
from emo_stream.engines.default import DefaultEngineOptions
from emo_stream.errors import ConfigError
from emo_stream.perception.asr import word_error_rate
from emo_stream.pipeline import Pipeline
from emo_stream.runtime.llama_cpp import SCORING_GGUF_TYPE
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
        assert f"+smollm2-135m-{SCORING_GGUF_TYPE.lower()}/" in s.model_id  # the type scoring loaded, not the shipped Q4_1
        # perception ran on the workers as samples arrived; the cut waited for them (lossless)
        for stage in ("perception_wait", "face", "fusion", "engine"):
            assert stage in s.latency_ms
        assert s.signals["llm_age_s"] == 0.0  # lossless: scored inline on every changed clue text
    assert "llm_score" in states[0].latency_ms  # the first clue text is scored; unchanged text is not re-scored


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


@pytest.mark.parametrize(
    "options, message",
    [
        ({"publish_transcript": "false"}, "engine.options.publish_transcript"),
        ({"llm": "maybe"}, "engine.options.llm"),
        ({"face_fps": "fast"}, "engine.options.face_fps"),
        ({"face_frame": 2}, "engine.options.face_frame"),
        ({"face_fps": 0}, "face_fps"),
    ],
)
def test_options_go_through_the_one_validated_builder(options, message):
    with pytest.raises(ConfigError, match=message):
        DefaultEngineOptions.from_mapping(options)


def test_yaml_off_means_off_for_asr_and_rationale():
    opts = DefaultEngineOptions.from_mapping({"asr": False, "rationale": True, "llm_threads": 1})
    assert (opts.asr, opts.rationale, opts.llm_threads) == ("off", "auto", 1)


def test_any_configured_sample_rate_reaches_voice_and_asr_at_16k(media):
    """audio.sample_rate 44100: the engine resamples once for VAD, prosody and Whisper."""
    cfg = StreamConfig().replace(
        audio={"sample_rate": 44100}, engine={"name": "default", "options": {"llm": False, "rationale": "off", "publish_transcript": True}}
    )
    states = []
    with make_engine(cfg) as engine:
        stats = Pipeline(open_sources(str(media / "astronaut_speech.mp4"), cfg), engine, [CallbackSink(states.append)], cfg).run()
    assert stats.engine_errors == 0 and len(states) == 15
    assert all("voice" in s.modalities for s in states[2:])
    assert "dashwood" in states[-1].transcript.lower()


def test_paced_stream_never_waits_for_the_llm_and_says_how_old_its_evidence_is(media):
    """Real time: perception on workers, LLM scores from the latest-wins worker with their age."""
    cfg = StreamConfig().replace(
        window={"hop_s": 0.25}, source={"realtime": True, "speed": 2.0}, engine={"name": "default", "options": {"rationale": "off", "asr": "off"}}
    )
    states = []
    with make_engine(cfg) as engine:
        stats = Pipeline(open_sources(str(media / "astronaut_speech.mp4"), cfg), engine, [CallbackSink(states.append)], cfg).run()
    assert stats.mode == "realtime" and stats.engine_errors == 0 and states
    assert all("llm_score" not in s.latency_ms and "face_analyse" not in s.latency_ms for s in states)  # never on the window thread
    ages = [s.signals["llm_age_s"] for s in states if "llm_age_s" in s.signals]
    assert ages and all(a >= 0 for a in ages)
    assert all(s.top_label == "happy" for s in states if "face" in s.modalities)
    for stage in ("face", "voice", "llm_score", "window", "capture"):
        assert stats.stage_cpu_s.get(stage, 0) > 0, stage
