"""``emotion-llama-export``: the Emotion-LLaMA engine running entirely from an export directory.

The window logic (frames -> global/face/temporal views, audio span, absent
modalities, face detector, rationale cadence, flags, latencies) is the
``emotion-llama`` engine's (:class:`~emo_stream.engines.emotion_llama.EmotionLlamaEngine`),
unchanged; the model under it is :class:`~emo_stream.runtime.exported.ExportedEmotionLlama`:
encoders and projector/fusion on ONNX Runtime (or TensorRT, or torch), the LLM
on llama.cpp from the GGUF (or torch). No torch weights are read unless a
torch backend is asked for.

Options (``engine.options``), besides the ``emotion-llama`` engine's
``rationale_every``, ``max_new_tokens``, ``subtitle``, ``face_detector``,
``face_crop_fraction`` and ``threads``:

========================  ==============================================================
``export``                export directory (``emo-stream export onnx/gguf --out DIR``); required
``runtime``               stage backend: ``onnxruntime`` (default), ``tensorrt`` or ``torch``
``precision``             ``fp32`` (default), ``fp16`` or ``int8`` (which exported files)
``providers``             ONNX Runtime providers in preference order, list or "cuda,cpu"
                          (default cpu); the first one must really be used ...
``allow_cpu_fallback``    ... unless this is true (default false)
``ort_threads``           ONNX Runtime intra-op threads per stage (default: ORT's)
``llm``                   ``llama.cpp`` (default) or ``torch``
``gguf``                  ``auto`` (default: Q4_K_M, else Q8_0, else F16) or a quant name
``llm_threads``           llama.cpp threads (default: all cores)
``n_gpu_layers``          llama.cpp layers on the GPU (default 0; -1 = all)
``n_ctx``                 llama.cpp context (default 2048, capped at the model's)
``device``                torch device for torch backends / CUDA device for TensorRT
``weights``               model dir for torch backends (default: the export's source)
``verify``                check files' sha256 against the manifest at start (default true)
``record_inputs``         directory to save every stage's inputs (TensorRT INT8 calibration data)
``prefetch``              real time: encode the next window's older temporal frames between windows
                          (default true; see below)
========================  ==============================================================

Temporal prefetch (real time only): a sliding window's temporal view reads older frames that
an earlier window usually encoded already (the ``stride`` layout), except where the grid does not
line up (the first windows, which grow to the full length) -- there the window paid for one more
ViT image (~55 ms on 2 cores) at cut time. After each state the engine works out which frames the
next window will select whatever arrives later (:func:`~emo_stream.stream.frame_selection.settled_uniform_picks`,
from the frames :meth:`observe` saw) and encodes the ones its temporal view reads on a background
worker (latest wins, lower priority), so the cut finds them in the image cache. Same numbers either
way: the cache holds exactly what the window would compute. Lossless mode never prefetches (the
next window follows at once; work moved there would only compete with it).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.config import StreamConfig, WindowConfig
from emo_stream.engines.base import Engine, register_engine
from emo_stream.engines.emotion_llama import EmotionLlamaEngine, _valid_image
from emo_stream.errors import ConfigError
from emo_stream.perception.workers import LatestWins
from emo_stream.stream.frame_selection import settled_uniform_picks
from emo_stream.stream.samples import Sample, VideoFrame
from emo_stream.stream.scheduler import Window
from emo_stream.threads import StageClock

ENGINE_NAME = "emotion-llama-export"

_OWN_OPTIONS: dict[str, Any] = {
    "export": str,
    "runtime": str,
    "precision": str,
    "providers": (list, str),
    "allow_cpu_fallback": bool,
    "ort_threads": int,
    "llm": str,
    "gguf": str,
    "llm_threads": int,
    "n_gpu_layers": int,
    "n_ctx": int,
    "weights": str,
    "verify": bool,
    "record_inputs": str,
    "prefetch": bool,
}
#: Frames kept for the temporal prefetch at most (~40 s at 25 fps; process() keeps only the next window's).
_RECENT_MAX = 1024
#: Options of the emotion-llama engine this one passes through.
_PASSED = ("rationale_every", "max_new_tokens", "subtitle", "face_detector", "face_crop_fraction", "threads", "device")


def runtime_config(options: Mapping[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """Split engine options into (export dir, :class:`RuntimeConfig`, options for the base engine)."""
    from emo_stream.runtime.exported import RuntimeConfig

    unknown = sorted(set(options) - set(_OWN_OPTIONS) - set(_PASSED))
    if unknown:
        raise ConfigError(f"unknown {ENGINE_NAME} option(s) {unknown}; valid: {sorted(set(_OWN_OPTIONS) | set(_PASSED))}")
    for key, want in _OWN_OPTIONS.items():
        if key in options:
            value = options[key]
            types = want if isinstance(want, tuple) else (want,)
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ConfigError(f"engine.options.{key} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
    if "export" not in options:
        raise ConfigError(f"{ENGINE_NAME} needs engine.options.export: an export directory (emo-stream export onnx/gguf --out DIR)")
    device = str(options.get("device", "cpu"))
    rt = RuntimeConfig(
        stages=options.get("runtime", "onnxruntime"),
        precision=options.get("precision", "fp32"),
        providers=tuple(options["providers"]) if isinstance(options.get("providers"), list) else options.get("providers", "cpu"),
        allow_cpu_fallback=options.get("allow_cpu_fallback", False),
        threads=options.get("ort_threads"),
        llm=options.get("llm", "llama.cpp"),
        gguf=options.get("gguf", "auto"),
        llm_threads=options.get("llm_threads"),
        n_gpu_layers=options.get("n_gpu_layers", 0),
        n_ctx=options.get("n_ctx", 2048),
        device=device,
        weights=options.get("weights"),
        verify=options.get("verify", True),
        record_inputs=options.get("record_inputs"),
    )
    passed = {k: options[k] for k in _PASSED if k in options}
    passed.pop("device", None)  # the exported model is not moved by the base engine
    return str(options["export"]), rt, passed


class EmotionLlamaExportEngine(EmotionLlamaEngine):
    """Windows -> label probabilities with an exported Emotion-LLaMA (see module docstring)."""

    def __init__(self, config: StreamConfig, face_cropper: Any = None) -> None:
        from emo_stream.runtime.exported import ExportedEmotionLlama

        export_dir, rt, passed = runtime_config(config.engine.options)
        model = ExportedEmotionLlama(export_dir, rt)
        try:
            base_cfg = config.replace(engine={"options": passed})
            super().__init__(base_cfg, model=model, face_cropper=face_cropper)
        except BaseException:
            model.close()
            raise
        self._random = model.random_weights
        # A model trained on `make-synthetic-set` clips only: every state says so (no real-world accuracy).
        self._synthetic = bool(getattr(model, "synthetic_trained", False))
        quant = getattr(model, "gguf_quant", None)
        llm = f"{rt.llm}-{quant}" if quant else rt.llm
        self.model_id = f"emotion-llama/{model.config.version}/{Path(export_dir).resolve().name}/{rt.stages}-{rt.precision}+{llm}/{self.label_set.id}"
        self.runtimes = model.describe()
        # Temporal prefetch (module doc): on only in real time, once prepare() says so.
        self._window_cfg = config.window
        self._prefetch_wanted = bool(config.engine.options.get("prefetch", True))
        self._prefetch_on = False
        self._recent: list[VideoFrame] = []
        self._recent_lock = threading.Lock()
        self._clock = StageClock()
        self._prefetcher: LatestWins[list[np.ndarray], int] | None = None

    def prepare(self, *, realtime: bool) -> None:
        with self._recent_lock:
            self._recent = []
        w = self._window_cfg
        self._prefetch_on = realtime and self._prefetch_wanted and w.frame_selection == "uniform" and model_reads_whole_frames(self.model, w.frames_per_window)
        if self._prefetch_on and self._prefetcher is None:
            self._prefetcher = LatestWins("emo-temporal-prefetch", self.model.prefetch_temporal, self._clock, "temporal_prefetch", nice=5)

    def observe(self, sample: Sample) -> None:
        if self._prefetch_on and isinstance(sample, VideoFrame) and _valid_image(sample.image):
            with self._recent_lock:  # O(1) on the pump thread; pruned by process(), bounded if it is not called
                self._recent.append(sample)
                if len(self._recent) > _RECENT_MAX:
                    del self._recent[: _RECENT_MAX // 2]

    def process(self, window: Any) -> Any:
        out = super().process(window)
        if self._synthetic:
            for o in (out, *out.people):
                if "synthetic_trained" not in o.flags:
                    o.flags.append("synthetic_trained")
        if self._prefetch_on and self._prefetcher is not None:
            images = self.next_temporal_frames(window)
            if images:
                self._prefetcher.submit(images, window.end)
        return out

    def next_temporal_frames(self, window: Window) -> list[np.ndarray]:
        """The frames the next window's temporal view will read that exist already and will be selected
        whatever arrives later (module doc); older frames than the next window's start are forgotten."""
        w = self._window_cfg
        with self._recent_lock:
            next_start, _ = next_window_span(window, w)
            self._recent = [f for f in self._recent if f.t >= next_start]
            seen = list(self._recent)
        picks = next_window_picks(seen, window, w)
        idx = self.model.temporal_frame_indices(w.frames_per_window) or []
        return [picks[i].image for i in idx if i < len(picks)]

    def cpu_seconds(self) -> dict[str, float]:
        return self._clock.seconds() if self._prefetcher is not None else {}

    def close(self) -> None:
        if getattr(self, "_prefetcher", None) is not None:
            self._prefetcher.close()  # type: ignore[union-attr]
            self._prefetcher = None
        model = getattr(self, "model", None)
        if model is not None and hasattr(model, "close"):
            model.close()
        super().close()


def next_window_span(window: Window, config: WindowConfig) -> tuple[float, float]:
    """(start, end) of the window after ``window``: it ends one hop later and starts ``length_s`` before
    that, never before this one's start (the first windows grow from the stream's start, as the scheduler
    cuts them)."""
    next_end = window.end + config.hop_s
    return max(window.start, next_end - config.length_s), next_end


def next_window_picks(seen: Sequence[VideoFrame], window: Window, config: WindowConfig) -> list[VideoFrame]:
    """The leading frames the window after ``window`` will select (the scheduler's uniform selection of
    ``config.frames_per_window``), from the frames ``seen`` so far (time order), whatever arrives later."""
    next_start, next_end = next_window_span(window, config)
    arrived = [f for f in seen if next_start <= f.t < next_end]
    return settled_uniform_picks(arrived, config.frames_per_window, next_start, next_end)


def model_reads_whole_frames(model: Any, frames_per_window: int) -> bool:
    """Whether ``model``'s temporal view reads whole frames that :meth:`prefetch_temporal` can encode ahead."""
    fn = getattr(model, "temporal_frame_indices", None)
    return callable(fn) and bool(fn(frames_per_window)) and callable(getattr(model, "prefetch_temporal", None))


@register_engine(ENGINE_NAME)
def _make(config: StreamConfig) -> Engine:
    return EmotionLlamaExportEngine(config)
