"""Whisper tiny.en (CTranslate2, packaged) on LibriVox read speech, one-shot and streamed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.perception.asr import AsrConfig, Transcriber, load_whisper, normalize_text, word_error_rate
from emo_stream.perception.vad import SAMPLE_RATE, VoiceActivityDetector
from emo_stream.stream.samples import AudioChunk
from emo_stream.stream.sources.media_file import read_audio

MEDIA = Path(__file__).resolve().parents[2] / ".cache" / "media"
KEYS = ("0870", "0880", "0890", "0920", "0930")


def load_wav(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz through the stream's own decoder + resampler (missing file: a clear failure)."""
    return read_audio(path, SAMPLE_RATE)


@pytest.fixture(scope="module")
def references() -> dict[str, str]:
    path = MEDIA / "librivox_transcription.txt"
    if not path.exists():
        pytest.fail(f"{path} missing (scripts/fetch_test_media.sh)")
    refs = {}
    for line in path.read_text().splitlines():
        words, key = line.rsplit("(", 1)
        refs[key.strip(")")[-4:]] = words
    return refs


@pytest.fixture(scope="module")
def whisper():
    """Load the model once for the module; every Transcriber below shares it."""
    return load_whisper(AsrConfig())


def stream_windows(x: np.ndarray, window_s: float = 2.0, hop_s: float = 0.5):
    """(start, end, samples) of the engine's windows over ``x``."""
    dur = x.shape[0] / SAMPLE_RATE
    end = hop_s
    while end <= dur + 1e-9:
        start = max(0.0, end - window_s)
        yield start, end, x[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))]
        end += hop_s


@pytest.fixture(scope="module")
def two_utterances() -> tuple[np.ndarray, list[str]]:
    """0.5 s silence, librivox 0880, 1 s silence, librivox 0930, 1 s silence."""
    a, b = load_wav(MEDIA / "librivox_0880.wav"), load_wav(MEDIA / "librivox_0930.wav")
    gap = np.zeros(SAMPLE_RATE, np.float32)
    return np.concatenate([gap[: SAMPLE_RATE // 2], a, gap, b, gap]), ["0880", "0930"]


def test_librivox_0870_matches_reference(whisper, references) -> None:
    x = load_wav(MEDIA / "librivox_0870.wav")
    asr = Transcriber(model=whisper)
    t = time.perf_counter()
    seg = asr.transcribe(x)
    rtf = (time.perf_counter() - t) / (x.shape[0] / SAMPLE_RATE)
    wer = word_error_rate(references["0870"], seg.text)
    print(f"librivox_0870: WER {wer:.3f}, RTF {rtf:.3f}: {seg.text!r}")
    assert wer < 0.3
    assert seg.avg_logprob > -0.5 and seg.no_speech_prob < 0.3
    assert asr.model_calls == 1


@pytest.mark.slow
def test_librivox_word_error_rates(whisper, references) -> None:
    asr = Transcriber(model=whisper)
    wers = {}
    for key in KEYS:
        seg = asr.transcribe(load_wav(MEDIA / f"librivox_{key}.wav"))
        wers[key] = word_error_rate(references[key], seg.text)
        print(f"librivox_{key}: WER {wers[key]:.3f} {seg.text!r}")
    print(f"mean WER {np.mean(list(wers.values())):.3f}")
    assert np.mean(list(wers.values())) < 0.2
    assert max(wers.values()) < 0.4


@pytest.mark.slow
def test_streaming_transcribes_each_span_once(whisper, references, two_utterances) -> None:
    x, keys = two_utterances
    vad = VoiceActivityDetector()
    asr = Transcriber(model=whisper)
    texts = []
    for start, end, w in stream_windows(x):
        vad.update(start, w)
        asr.update(start, w, vad.closed_spans())
        texts.append((start, end, asr.text_for(start, end)))
    spans = vad.closed_spans()
    assert len(spans) == 2
    assert asr.model_calls == 2  # ~20 overlapping windows, two utterances, two calls
    segs = asr.segments()
    assert [(s.t0, s.t1) for s in segs] == spans
    for seg, key in zip(segs, keys):
        assert word_error_rate(references[key], seg.text) < 0.35, seg.text
    # A window that overlaps an utterance after it finished carries its words (reused, not recomputed).
    after_first = [txt for start, end, txt in texts if start < spans[0][1] and end > spans[0][1] + 0.6]
    assert after_first and all(segs[0].text in txt for txt in after_first)
    # Silence-only windows far from speech have no words.
    assert asr.text_for(spans[0][1] + 0.05, spans[1][0] - 0.05) == ""
    # Handing the same spans over again never re-runs the model.
    asr.update(x.shape[0] / SAMPLE_RATE - 2.0, x[-2 * SAMPLE_RATE :], spans)
    assert asr.model_calls == 2


@pytest.mark.slow
def test_background_worker_keeps_updates_fast(whisper, references, two_utterances) -> None:
    x, keys = two_utterances
    vad = VoiceActivityDetector()
    with Transcriber(AsrConfig(cpu_threads=1), model=whisper, background=True) as asr:
        slowest = 0.0
        for start, _, w in stream_windows(x):
            vad.update(start, w)
            t = time.perf_counter()
            assert asr.update(start, w, vad.closed_spans()) == []
            slowest = max(slowest, time.perf_counter() - t)
        assert asr.wait_idle(timeout=60)
        assert asr.model_calls == 2 and asr.pending == 0 and asr.last_error is None
        texts = [s.text for s in asr.segments()]
    assert slowest < 0.25  # the model never ran on the caller's thread
    assert [word_error_rate(references[k], t) < 0.35 for k, t in zip(keys, texts)] == [True, True]


def test_background_queue_drops_oldest_when_full(whisper) -> None:
    x = load_wav(MEDIA / "librivox_0880.wav")[:SAMPLE_RATE]
    with Transcriber(AsrConfig(queue_size=1, cpu_threads=1), model=whisper, background=True) as asr:
        accepted = [asr.submit(float(i), float(i) + 1.0, x) for i in range(4)]
        assert asr.wait_idle(timeout=60)
        assert asr.dropped >= 2 and asr.model_calls + asr.dropped == 4
        assert accepted[0] is True and not all(accepted)


def test_short_spans_are_not_transcribed(whisper) -> None:
    x = load_wav(MEDIA / "librivox_0880.wav")
    asr = Transcriber(AsrConfig(min_span_s=0.5), model=whisper)
    assert asr.update(0.0, x, [(0.5, 0.8)]) == []
    assert asr.model_calls == 0 and asr.text_for(0.0, 3.0) == ""


def test_word_error_rate_and_normalisation() -> None:
    assert word_error_rate("a b c", "a x c") == pytest.approx(1 / 3)
    assert word_error_rate("a b c", "a b c d") == pytest.approx(1 / 3)
    assert word_error_rate("a b c", "") == 1.0
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("<s> mister john dashwood </s>", "Mr. John Dashwood.") == 0.0
    assert normalize_text("Cold-hearted, isn't it?") == ["cold", "hearted", "isn't", "it"]


def test_missing_faster_whisper_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # what an absent package looks like to import
    with pytest.raises(ImportError, match="faster-whisper"):
        load_whisper(AsrConfig())


def test_config_and_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="compute_type"):
        AsrConfig(compute_type="int4")
    with pytest.raises(ConfigError, match="model_dir"):
        AsrConfig(model_dir=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="min_span_s"):
        AsrConfig(min_span_s=10.0, max_span_s=8.0)
    with pytest.raises(ModelFileError, match="model.bin"):
        AsrConfig(model_dir=str(tmp_path)).resolved_model_dir()
    assert (AsrConfig().resolved_model_dir() / "model.bin").is_file()


# ---------------------------------------------------------------- partials, slivers, warm-up
def voice_stream(x: np.ndarray, transcriber: Transcriber, stop_s: float | None = None, chunk: int = 512):
    """Feed ``x`` through the engine's own VoiceAnalyzer (real VAD + prosody) in 32-ms chunks, as the audio worker does.

    Stops before the end-of-stream flush when ``stop_s`` is given (the span is still open then).
    """
    from emo_stream.perception.prosody import ProsodyTracker
    from emo_stream.perception.workers import VoiceAnalyzer
    from emo_stream.threads import StageClock

    voice = VoiceAnalyzer(VoiceActivityDetector(), ProsodyTracker(), StageClock())
    voice.transcriber = transcriber
    n = x.shape[0] if stop_s is None else int(stop_s * SAMPLE_RATE)
    for i in range(0, n, chunk):
        voice.analyze(AudioChunk(i / SAMPLE_RATE, x[i : min(i + chunk, n)], SAMPLE_RATE))
    return voice


@pytest.mark.slow
def test_partial_words_arrive_before_a_long_span_closes(whisper, references) -> None:
    """librivox 0870 is one 6.9-s utterance: without partials it has no words until it ends."""
    x = load_wav(MEDIA / "librivox_0870.wav")
    runs = []
    for _ in range(2):  # inline (lossless) mode twice: partials are cut in audio time, so the results repeat
        asr = Transcriber(AsrConfig(partial_every_s=2.0), model=whisper)
        voice = voice_stream(x, asr, stop_s=6.5)
        open_segs = asr.segments()
        assert asr.partial_calls == 3 and asr.model_calls == 3  # at 2, 4 and 6 s of open speech
        assert len(open_segs) == 1 and open_segs[0].partial and open_segs[0].t1 <= 6.5 + 1e-6
        early = asr.segments(ended_by=3.0)  # a window ending at 3.0 s sees the 2-s partial, not later ones
        assert len(early) == 1 and early[0].partial and early[0].t1 <= 3.0 and early[0].text
        ref = normalize_text(references["0870"])
        hyp = normalize_text(early[0].text)
        assert 2 <= len(hyp) < len(ref) and word_error_rate(ref[: len(hyp)], hyp) < 0.5, early[0].text
        # The rest of the clip, then the end of stream: the final transcript replaces the partial.
        for i in range(int(6.5 * SAMPLE_RATE), x.shape[0], 512):
            voice.analyze(AudioChunk(i / SAMPLE_RATE, x[i : i + 512], SAMPLE_RATE))
        voice.finish()
        final = asr.segments()
        assert len(final) == 1 and not final[0].partial and asr.model_calls == 4
        assert word_error_rate(references["0870"], final[0].text) < 0.3
        assert asr.segments(ended_by=3.0) == early  # a window that ended mid-utterance still answers the same
        runs.append([(s.t0, s.t1, s.text, s.partial) for s in (*asr._partials, *final)])
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_background_partials_are_latest_wins_and_finals_go_first(whisper, references) -> None:
    x = load_wav(MEDIA / "librivox_0870.wav")
    with Transcriber(AsrConfig(cpu_threads=1, partial_every_s=2.0), model=whisper, background=True) as asr:
        voice_stream(x, asr).finish()  # feeding is fast; the worker is still on the first partial
        assert asr.wait_idle(timeout=120) and asr.last_error is None and asr.pending == 0
        # Each of the 3 partial jobs either ran or was superseded (by a newer one or by the final): no backlog.
        assert asr.partial_calls + asr.partials_replaced == 3 and asr.partials_replaced >= 1
        assert asr.model_calls == asr.partial_calls + 1
        final = asr.segments()
    assert len(final) == 1 and not final[0].partial
    assert word_error_rate(references["0870"], final[0].text) < 0.3


def test_sliver_joins_the_next_span_in_one_call(whisper) -> None:
    x = load_wav(MEDIA / "librivox_0880.wav")  # speech 0.16-2.99 s
    asr = Transcriber(AsrConfig(partial_every_s=0.0), model=whisper)
    asr.update(0.0, x, [(0.16, 0.7), (0.75, 2.99)])
    assert asr.model_calls == 1 and [(s.t0, s.t1) for s in asr.segments()] == [(0.16, 2.99)]


@pytest.mark.slow
def test_sliver_waits_for_an_open_span_and_is_flushed_alone_at_the_end(whisper) -> None:
    x = load_wav(MEDIA / "librivox_0880.wav")
    asr = Transcriber(AsrConfig(partial_every_s=0.0), model=whisper)
    asr.update(0.0, x[: int(1.5 * SAMPLE_RATE)], [(0.16, 0.7)], open_span=(0.75, 1.5))
    assert asr.model_calls == 0  # held: the span that follows will take it along
    assert len(asr.flush()) == 1 and asr.model_calls == 1  # the stream ended first: transcribed alone
    assert [(s.t0, s.t1) for s in asr.segments()] == [(0.16, 0.7)]
    lone = Transcriber(AsrConfig(partial_every_s=0.0), model=whisper)
    lone.update(0.0, x, [(0.16, 0.7)])  # audio already 2.3 s past it, no speech after: no wait
    assert lone.model_calls == 1


def test_sliver_waits_through_the_vad_hang_over_and_joins_its_follower(whisper) -> None:
    # Megamind: the follower closed (no open span any more) before the VAD reported it
    # as finished; the sliver used to be transcribed alone in that gap (two calls in a row).
    x = load_wav(MEDIA / "librivox_0880.wav")  # speech 0.16-2.99 s
    asr = Transcriber(AsrConfig(partial_every_s=0.0), model=whisper)
    asr.update(0.0, x[: int(1.5 * SAMPLE_RATE)], [(0.16, 0.7)], open_span=(0.75, 1.5))
    asr.update(1.5, x[int(1.5 * SAMPLE_RATE) : int(2.5 * SAMPLE_RATE)], [(0.16, 0.7)], open_span=None)
    assert asr.model_calls == 0  # the follower's end is not reported yet: keep holding
    asr.update(2.5, x[int(2.5 * SAMPLE_RATE) :], [(0.16, 0.7), (0.75, 2.99)])
    assert asr.model_calls == 1 and [(s.t0, s.t1) for s in asr.segments()] == [(0.16, 2.99)]


@pytest.mark.slow
def test_warm_up_happens_at_load() -> None:
    model = load_whisper(AsrConfig(cpu_threads=1), warm_up=True)
    assert model.emo_stream_warmup_s > 0.0
    assert not hasattr(load_whisper(AsrConfig(cpu_threads=1)), "emo_stream_warmup_s")


def test_partial_and_sliver_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="partial_every_s"):
        AsrConfig(partial_every_s=0.1)
    with pytest.raises(ConfigError, match="sliver_s"):
        AsrConfig(sliver_s=9.0)
    with pytest.raises(ConfigError, match="merge_gap_s"):
        AsrConfig(merge_gap_s=-1.0)
    assert AsrConfig(partial_every_s=0.0).partial_every_s == 0.0
