"""Emotion-LLaMA run entirely from an export directory: stage runtimes + an LLM runtime, numpy throughout.

:class:`ExportedEmotionLlama` has the inference API of
:class:`~emo_stream.model.emotion_llama.EmotionLlama` (``preprocess``,
``encode``, ``project``, ``label_probabilities``, ``rationale``, ``encoder``,
``config``, ``label_set``), so the ``emotion-llama`` engine's window logic
runs on it unchanged (:mod:`emo_stream.engines.emotion_llama_export`). It is
what a robot without torch runs (``pip install emo-stream[robot]``): with the
default backends nothing here imports torch or transformers.

* **preprocessing** is :mod:`emo_stream.preprocess` (numpy; the same functions
  the torch encoders call, so pixels and waves are identical by construction)
  driven by the exported config -- image sizes, normalisation, frame sampling,
  HuBERT waves, Whisper log-mel; the shipped frozen encoders (ViT-S/14 ONNX,
  Whisper tiny.en CTranslate2) are their torch-free view objects
  (:mod:`emo_stream.model.shipped`), which run from the package files, so
  the export has no stage for them;
* **encoders and the projector/fusion** run on the chosen stage backend
  (:data:`~emo_stream.runtime.stage.BACKENDS`: ONNX Runtime with checked
  providers, TensorRT engines, or torch for reference), with the glue the
  torch encoders apply (masks, pooling, HuBERT frame counts, Whisper's valid
  frames) done here once for every backend;
* **the LLM** runs on llama.cpp from the GGUF (or torch) through
  :mod:`emo_stream.runtime.lm`, prompts tokenized from the export's
  ``tokenizer.json`` by the ``tokenizers`` package
  (:mod:`emo_stream.runtime.tokenizer`; ids identical to transformers').

Outputs are numpy: :class:`ExportedInputs`, :class:`Encoded`, :class:`Projection`
(the torch model's ``ModalityInputs`` / ``EncoderOutput`` / ``ProjectionOutput``
with arrays) and (B, C) probabilities; torch tensors passed in (parity tests,
precomputed features) are converted.

HuBERT runs one utterance at a time at its own length, like the torch encoder
(padding would change its normalisation and conv edges); audio shorter than the
exported graph's minimum (0.1 s) is zero-padded, its padded frames masked.

``record_inputs=DIR`` saves every stage call's inputs as ``DIR/<stage>/NNNNNN.npz``:
the cached features ``emo-stream export tensorrt --precision int8 --calib DIR``
calibrates with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.model.configs.encoders import SHIPPED_CONFIGS
from emo_stream.preprocess import (
    center_square_box,
    clean_wave,
    conv_receptive_field,
    frames_for_hop,
    hubert_frames,
    hubert_inputs,
    images_to_pixels,
    resample_linear,
    whisper_log_mel,
)
from emo_stream.runtime.artifacts import Manifest, load_manifest
from emo_stream.runtime.lm import LLM_BACKENDS, LanguageModelRuntime
from emo_stream.runtime.stage import BACKENDS, StageRuntime

log = logging.getLogger(__name__)

#: The model's modalities, in the order the engine encodes them.
MODALITIES = ("global", "face", "temporal", "audio")
#: HuBERT's conv feature extractor when a config does not say (transformers' ``HubertConfig`` defaults).
HUBERT_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
HUBERT_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)

#: GGUF preference when ``gguf="auto"``: smallest first (what a robot CPU wants).
GGUF_PREFERENCE = ("Q4_K_M", "Q8_0", "Q4_0", "F16")
PRECISIONS = ("fp32", "fp16", "int8")


def choose_gguf(variants: Mapping[str, Any]) -> str:
    """``gguf=auto``: the first variant in :data:`GGUF_PREFERENCE` (fastest first)
    whose parity with the torch model, recorded by the export, is within its bound;
    if none is, the one closest to torch (smallest recorded label-probability
    difference). Preference order alone once picked a Q4_K_M 0.24 away from
    torch over a Q8_0 0.11 away (issue 17). Variants without a parity record
    count as within bound (older exports, which recorded none).
    """

    def diff(name: str) -> float:
        par = (variants[name] or {}).get("parity") or {}
        d = par.get("label_prob_max_abs_diff")
        return float(d) if d is not None else 0.0

    def within(name: str) -> bool:
        par = (variants[name] or {}).get("parity") or {}
        d, bound = par.get("label_prob_max_abs_diff"), par.get("bound")
        return d is None or bound is None or float(d) <= float(bound)

    ordered = [q for q in GGUF_PREFERENCE if q in variants] + [q for q in variants if q not in GGUF_PREFERENCE]
    if not ordered:
        raise ModelFileError("the export lists no GGUF variants")
    good = [q for q in ordered if within(q)]
    return good[0] if good else min(ordered, key=lambda q: (diff(q), ordered.index(q)))


@dataclass(frozen=True)
class RuntimeConfig:
    """Which runtime runs which stage of an exported model.

    Attributes:
        stages: backend of the encoders and projector/fusion: "onnxruntime",
            "tensorrt" or "torch".
        precision: which exported variant: "fp32", "fp16" or "int8".
        providers: ONNX Runtime execution providers in preference order
            (short names allowed: cuda, tensorrt, cpu).
        allow_cpu_fallback: run anyway when ONNX Runtime cannot use the first
            provider asked for (otherwise that is an error).
        threads: ONNX Runtime intra-op threads per stage (None: ORT's default).
        llm: "llama.cpp" (GGUF) or "torch".
        gguf: "auto" or a quantization name (F16, Q8_0, Q4_K_M).
        llm_threads / n_gpu_layers / n_ctx: llama.cpp settings.
        device: torch device for the torch backends; CUDA device index for TensorRT.
        weights: model dir for the torch backends (default: the export's source).
        verify: check every file's sha256 against the manifest when opening it.
        record_inputs: directory to save every stage's inputs (calibration data).
    """

    stages: str = "onnxruntime"
    precision: str = "fp32"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    allow_cpu_fallback: bool = False
    threads: int | None = None
    llm: str = "llama.cpp"
    gguf: str = "auto"
    llm_threads: int | None = None
    n_gpu_layers: int = 0
    n_ctx: int = 2048
    device: str = "cpu"
    weights: str | None = None
    verify: bool = True
    record_inputs: str | None = None

    def __post_init__(self) -> None:
        if self.stages not in BACKENDS:
            raise ConfigError(f"stage runtime must be one of {', '.join(BACKENDS)}, got {self.stages!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.llm not in LLM_BACKENDS:
            raise ConfigError(f"llm runtime must be one of {', '.join(LLM_BACKENDS)}, got {self.llm!r}")
        from emo_stream.runtime.onnxruntime import normalize_providers

        object.__setattr__(self, "providers", tuple(normalize_providers(self.providers)))


@dataclass
class ExportedInputs:
    """One batch's preprocessed inputs as numpy arrays (fields as the torch model's ``ModalityInputs``)."""

    global_pixels: np.ndarray | None = None
    face_pixels: np.ndarray | None = None
    face_mask: np.ndarray | None = None
    temporal_pixels: np.ndarray | None = None
    audio: dict[str, np.ndarray] | None = None
    features: dict[str, Any] = field(default_factory=dict)


@dataclass
class Encoded:
    """An encoder's output as numpy: (B, T, D) tokens, (B, T) bool mask, (B, D) mean of the valid tokens."""

    tokens: np.ndarray
    mask: np.ndarray
    pooled: np.ndarray


@dataclass
class Slot:
    """Tokens for one prompt slot: (B, T, H) values and a (B, T) bool mask (``SlotTokens`` with arrays)."""

    tokens: np.ndarray
    mask: np.ndarray


@dataclass
class Projection:
    """Projected tokens per prompt slot, in prompt order (``ProjectionOutput`` with arrays)."""

    slots: dict[str, Slot]
    attention: np.ndarray | None = None

    @property
    def tokens(self) -> np.ndarray:
        return np.concatenate([s.tokens for s in self.slots.values()], axis=1)

    @property
    def mask(self) -> np.ndarray:
        return np.concatenate([s.mask for s in self.slots.values()], axis=1)


class ImageView:
    """An exported visual view's preprocessing (global, face or temporal config), numpy out.

    The torch encoders' ``preprocess``: the temporal view samples ``frame_indices``, the others
    take every image given; then :func:`~emo_stream.preprocess.images_to_pixels`.
    """

    def __init__(self, config: Any) -> None:
        self.config = config

    def preprocess(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> np.ndarray:
        c = self.config
        images = list(images)
        if hasattr(c, "frame_indices"):  # temporal view
            if not images:
                raise ValueError("temporal view needs at least one frame")
            idx = c.frame_indices(len(images))
            images = [images[i] for i in idx]
            boxes = None if boxes is None else [boxes[i] for i in idx]
        return images_to_pixels(images, c.image_size, c.image_mean, c.image_std, boxes, c.interpolation)


class AudioView:
    """An exported audio encoder's preprocessing (HuBERT waves or Whisper log-mel), numpy out."""

    def __init__(self, config: Any, conv: tuple[Sequence[int], Sequence[int]]) -> None:
        self.config = config
        self.conv = conv  # HuBERT's conv kernels and strides (the shortest input it takes)

    def preprocess(self, waves: Sequence[np.ndarray], sample_rate: int = 16000) -> dict[str, np.ndarray]:
        """As ``AudioEncoder.preprocess``: ``input_values`` + ``lengths`` (HuBERT) or ``input_features`` + ``lengths``."""
        c = self.config
        if sample_rate != c.sample_rate:
            raise ValueError(f"audio must be resampled to {c.sample_rate} Hz first (got {sample_rate})")
        clean = [clean_wave(w) for w in waves]
        if not clean:
            raise ValueError("no audio given")
        if c.kind == "hubert":
            values, lengths = hubert_inputs(clean, c.normalize, conv_receptive_field(*self.conv))
            return {"input_values": values, "lengths": lengths}
        chunk = int(c.chunk_samples)
        clipped = [a[:chunk] for a in clean]
        feats = whisper_log_mel(clipped, int(c.backbone["num_mel_bins"]), chunk)
        return {"input_features": feats, "lengths": np.asarray([max(1, a.size) for a in clipped], dtype=np.int64)}


def masked_mean_np(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``x`` (B, T, D) over the tokens where ``mask`` (B, T) is True; 0 if none (``masked_mean``)."""
    w = mask.astype(x.dtype)[..., None]
    return (x * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)


def _as_encoded(e: Any) -> Encoded:
    if isinstance(e, Encoded):
        return e
    return Encoded(_f32(e.tokens), _np_bool(e.mask), _f32(e.pooled))


class ExportedEmotionLlama:
    """An exported Emotion-LLaMA on the runtimes of a :class:`RuntimeConfig` (see module docstring)."""

    #: What :meth:`preprocess` returns; the engine builds per-modality inputs of this type.
    inputs_type = ExportedInputs

    def __init__(self, export_dir: str | Path, runtime: RuntimeConfig | None = None) -> None:
        from emo_stream.runtime.tokenizer import load_export_tokenizer

        self.runtime = runtime or RuntimeConfig()
        self.manifest: Manifest = load_manifest(export_dir)
        self.config = self.manifest.model_config()
        self.model_info: dict[str, Any] = dict(self.manifest.get("model", {}))
        self.random_weights = bool(self.model_info.get("random_weights"))
        self.synthetic_trained = bool(self.model_info.get("synthetic_trained"))
        self.tokenizer = load_export_tokenizer(self.manifest.tokenizer_dir())
        self._torch_model: Any = None
        self._record = Path(self.runtime.record_inputs) if self.runtime.record_inputs else None
        self._record_count = 0
        self._stage_entries: dict[str, Any] = {}
        self.stages: dict[str, StageRuntime] = {}
        self.lm: LanguageModelRuntime | None = None
        configs = {n: self.config.encoder_config(n) for n in MODALITIES}
        self._views: dict[str, Any] = {}
        self._shipped: dict[str, Any] = {}
        try:
            for n, c in configs.items():
                if isinstance(c, SHIPPED_CONFIGS):
                    from emo_stream.model.shipped import shipped_view

                    self._shipped[n] = self._views[n] = shipped_view(c)
            self._check_shipped()
            self._open_stages()
            for n, c in configs.items():
                if c is not None and n not in self._views:
                    self._views[n] = AudioView(c, self._hubert_conv()) if n == "audio" else ImageView(c)
            for view in self._shipped.values():
                view.warm()  # sessions open while the model loads, not in the first window
            self.lm = self._open_lm()
        except BaseException:
            self.close()
            raise
        self.llm = SimpleNamespace(hidden_size=self.config.llm.hidden_size)

    def _check_shipped(self) -> None:
        """A shipped encoder's package file must be the one the projector was trained on."""
        for n, view in self._shipped.items():
            want = ((self.model_info.get("shipped_encoders") or {}).get(n) or {}).get("sha256")
            got = view.sha256_hex
            if want and want != got:
                raise ModelFileError(
                    f"export {self.manifest.root}: the {n} encoder's package file changed since the export "
                    f"(sha256 {got[:12]}..., export made with {want[:12]}...); reinstall requirements/models.txt"
                )

    def _hubert_conv(self) -> tuple[Sequence[int], Sequence[int]]:
        """HuBERT's conv kernels and strides: the exported stage's info, else the config's, else transformers' defaults."""
        info = (self._stage_entries.get("audio") or {}).get("info", {})
        bb = self.config.audio.backbone
        return (info.get("conv_kernel") or bb.get("conv_kernel") or HUBERT_CONV_KERNEL, info.get("conv_stride") or bb.get("conv_stride") or HUBERT_CONV_STRIDE)

    # -- opening ----------------------------------------------------------------------
    def _source_model(self) -> Any:
        """The torch model for torch backends: ``weights``, else the export's source (dir or seeded tiny)."""
        if self._torch_model is None:
            from emo_stream.export.common import TINY_MODELS, build_tiny
            from emo_stream.model.emotion_llama import EmotionLlama

            src = self.runtime.weights or self.model_info.get("source")
            if src in TINY_MODELS and not self.runtime.weights:
                model = build_tiny(TINY_MODELS[src], int(self.model_info.get("seed", 0)))
            elif src and Path(src).is_dir():
                model = EmotionLlama.from_pretrained(src)
            else:
                raise ModelFileError(f"a torch runtime needs the source weights; {src!r} is not a model directory here (set the `weights` option)")
            from emo_stream.export.common import model_fingerprint

            fp = self.model_info.get("fingerprint")
            if fp and model_fingerprint(model) != fp:
                raise ModelFileError(f"weights {src} are not the model this export was made from (fingerprint mismatch)")
            self._torch_model = model.to(self.runtime.device).eval()
        return self._torch_model

    def _open_stages(self) -> None:
        rt = self.runtime
        onnx = self.manifest.get("onnx") or {}
        stage_entries = onnx.get("stages") or {}
        wanted = ["global", "face", "temporal", "audio"]
        wanted = [n for n in wanted if self.config.encoder_config(n) is not None and n not in self._shipped] + [
            "projector" if self.config.version == "v1" else "fusion"
        ]
        if rt.stages == "torch":
            from emo_stream.export.stages import stage_specs
            from emo_stream.runtime.stage import TorchStageRuntime

            specs = stage_specs(self._source_model())
            for n in wanted:
                s = specs[n]
                self.stages[n] = TorchStageRuntime(n, s.module, s.input_names, s.output_names, rt.device)
            self._stage_entries = {n: specs[n].describe() for n in wanted}
            return
        missing = [n for n in wanted if n not in stage_entries]
        if missing:
            raise ModelFileError(
                f"export {self.manifest.root} has no ONNX stage(s) {missing}; run `emo-stream export onnx --model ... --out {self.manifest.root}`"
            )
        self._stage_entries = {n: stage_entries[n] for n in wanted}
        for n in wanted:
            if rt.stages == "onnxruntime":
                from emo_stream.runtime.onnxruntime import OrtStageRuntime

                variant = stage_entries[n]["variants"].get(rt.precision)
                if variant is None:
                    raise ModelFileError(f"export {self.manifest.root} has no {rt.precision} ONNX for stage {n}; re-export with --precision {rt.precision}")
                path = self.manifest.path(variant["file"], verify=rt.verify)
                if variant.get("data_file"):
                    self.manifest.path(variant["data_file"], verify=rt.verify)
                self.stages[n] = OrtStageRuntime(
                    path, stage=n, precision=rt.precision, providers=rt.providers, allow_cpu_fallback=rt.allow_cpu_fallback, threads=rt.threads
                )
            else:
                from emo_stream.runtime.tensorrt import TensorRTStageRuntime

                trt = (self.manifest.get("tensorrt") or {}).get("stages", {}).get(n, {}).get(rt.precision)
                if trt is None:
                    raise ModelFileError(
                        f"export {self.manifest.root} has no TensorRT {rt.precision} engine for stage {n}; "
                        f"run `emo-stream export tensorrt --onnx {self.manifest.root} --precision {rt.precision}`"
                    )
                dev = int(rt.device.split(":")[1]) if rt.device.startswith("cuda:") else 0
                self.stages[n] = TensorRTStageRuntime(self.manifest.path(trt["file"], verify=rt.verify), stage=n, precision=rt.precision, device=dev)

    def _open_lm(self) -> LanguageModelRuntime:
        rt = self.runtime
        if rt.llm == "torch":
            from emo_stream.runtime.lm import TorchLM

            return TorchLM(self._source_model().llm)
        from emo_stream.runtime.lm import LlamaCppLM

        g = self.manifest.get("gguf") or {}
        variants = g.get("variants") or {}
        if not variants:
            raise ModelFileError(f"export {self.manifest.root} has no GGUF; run `emo-stream export gguf --model ... --out {self.manifest.root} --quant Q8_0`")
        quant = rt.gguf
        if quant == "auto":
            quant = choose_gguf(variants)
        if quant not in variants:
            raise ModelFileError(f"export {self.manifest.root} has no {quant} GGUF (it has {sorted(variants)})")
        width = int(g.get("projector_output_width", self.config.llm.hidden_size))
        if width != self.config.llm.hidden_size:
            raise ModelFileError(f"GGUF expects {width}-wide projector tokens but the model's projector makes {self.config.llm.hidden_size}")
        path = self.manifest.path(variants[quant]["file"], verify=rt.verify)
        self.gguf_quant = quant
        return LlamaCppLM.load(
            path,
            self.tokenizer,
            score_eos=bool(g.get("score_eos", True)),
            n_threads=rt.llm_threads,
            n_ctx=rt.n_ctx,
            n_gpu_layers=rt.n_gpu_layers,
            embedding_scale=float(g.get("embedding_scale", 1.0)),
        )

    # -- EmotionLlama-compatible surface -------------------------------------------------
    @property
    def label_set(self) -> Any:
        from emo_stream.labels import get_label_set

        return get_label_set(self.config.label_set)

    @property
    def encoders(self) -> dict[str, Any]:
        return dict(self._views)

    def encoder(self, name: str) -> Any:
        """The view of a modality (its ``config`` and numpy ``preprocess``), None if the model has none."""
        return self._views.get(name)

    def to(self, device: Any) -> ExportedEmotionLlama:
        return self

    def eval(self) -> ExportedEmotionLlama:
        return self

    def describe(self) -> dict[str, Any]:
        """What runs where (for logs and the engine's model id)."""
        out: dict[str, Any] = {n: s.info.describe() for n, s in self.stages.items()}
        for n, view in self._shipped.items():
            out[n] = f"{n}: shipped {view.config.encoder_type}"
        out["llm"] = self.lm.describe() if self.lm else "none"
        return out

    def preprocess(
        self,
        frames: Sequence[np.ndarray] = (),
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        face_images: Sequence[np.ndarray] | None = None,
        face_boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
        face_crop_fraction: float = 0.6,
    ) -> ExportedInputs:
        """One sample -> :class:`ExportedInputs` (batch of 1), view by view as ``EmotionLlama.preprocess``
        (which documents the choices: global frame, face crops or the centred stand-in, temporal clip)."""
        inp = ExportedInputs()
        frames = list(frames)
        g, f, t, a = (self._views.get(n) for n in MODALITIES)
        if face_images is not None:
            crops: list[np.ndarray] = [c for c in face_images if c is not None and c.size]
            crop_boxes: list[tuple[int, int, int, int] | None] | None = None
        elif face_boxes is not None:
            pairs = [(fr, bx) for fr, bx in zip(frames, face_boxes) if bx is not None]
            crops, crop_boxes = [q[0] for q in pairs], [q[1] for q in pairs]
        else:
            crops = frames
            crop_boxes = [center_square_box(fr.shape[0], fr.shape[1], face_crop_fraction) for fr in frames]
        if frames and g is not None:
            inp.global_pixels = g.preprocess([frames[g.config.frame_index(len(frames))]])
        if t is not None:
            if t.config.crop == "face":
                if crops:
                    inp.temporal_pixels = t.preprocess(crops, crop_boxes)[None]
            elif frames:
                inp.temporal_pixels = t.preprocess(frames)[None]
        if f is not None and crops:
            inp.face_pixels = f.preprocess(crops, crop_boxes)[None]
        if audio is not None and a is not None:
            wave = np.asarray(audio, dtype=np.float32).reshape(-1)
            if sample_rate != a.config.sample_rate:
                wave = resample_linear(wave, sample_rate, a.config.sample_rate)
            if wave.size and np.any(wave != 0):
                inp.audio = a.preprocess([wave])
        return inp

    def _run(self, name: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._record is not None:
            d = self._record / name
            d.mkdir(parents=True, exist_ok=True)
            arrays: dict[str, Any] = {k: np.asarray(v) for k, v in feeds.items()}  # Any: numpy's savez stubs also match **kwds to allow_pickle
            np.savez(d / f"{self._record_count:06d}.npz", **arrays)
            self._record_count += 1
        return self.stages[name].run(feeds)

    def encode(self, inputs: Any) -> dict[str, Encoded]:
        """Encoder outputs (:class:`Encoded`, numpy) for the modalities present in ``inputs``."""
        out: dict[str, Encoded] = {n: _as_encoded(e) for n, e in (inputs.features or {}).items()}
        face_mask = None if inputs.face_mask is None else _np_bool(inputs.face_mask)
        for name, view in self._shipped.items():  # frozen encoders that run from their package files
            x = {"global": inputs.global_pixels, "face": inputs.face_pixels, "temporal": inputs.temporal_pixels, "audio": inputs.audio}[name]
            if x is None or name in out:
                continue
            if name == "audio":
                tok, m = view.encode_numpy(_f32(x["input_features"]), _np_int(x["lengths"]))
            else:
                tok, m = view.encode_numpy(_f32(x), face_mask if name == "face" else None)
            pooled = tok[:, 1:].mean(axis=1) if name == "global" else masked_mean_np(tok, m)
            out[name] = Encoded(np.ascontiguousarray(tok, dtype=np.float32), m, pooled)
        if inputs.global_pixels is not None and "global" not in out:
            self._need("global")
            tok = self._run("global", {"pixel_values": _f32(inputs.global_pixels)})["tokens"]
            out["global"] = Encoded(tok, np.ones(tok.shape[:2], dtype=bool), tok[:, 1:].mean(axis=1))
        if inputs.face_pixels is not None and "face" not in out:
            self._need("face")
            px = _f32(inputs.face_pixels)
            if px.ndim == 4:
                px = px[:, None]
            b, f = px.shape[:2]
            feats = self._run("face", {"pixel_values": px.reshape(b * f, *px.shape[2:])})["frame_features"].reshape(b, f, -1)
            mask = np.ones((b, f), dtype=bool) if face_mask is None else face_mask
            out["face"] = Encoded(feats, mask, masked_mean_np(feats, mask))
        if inputs.temporal_pixels is not None and "temporal" not in out:
            self._need("temporal")
            tok = self._run("temporal", {"pixel_values": _f32(inputs.temporal_pixels)})["tokens"]
            out["temporal"] = Encoded(tok, np.ones(tok.shape[:2], dtype=bool), tok.mean(axis=1))
        if inputs.audio is not None and "audio" not in out:
            self._need("audio")
            out["audio"] = self._encode_audio(inputs.audio)
        return out

    def _need(self, name: str) -> None:
        if name not in self.stages:
            raise ConfigError(f"this model has no {name} encoder; pass that modality as a precomputed feature")

    def _encode_audio(self, audio: Mapping[str, Any]) -> Encoded:
        cfg = self.config.audio
        lengths = _np_int(audio["lengths"])
        info = self._stage_entries["audio"].get("info", {})
        rows: list[np.ndarray] = []
        if cfg.kind == "hubert":
            values = _f32(audio["input_values"])
            k, s = self._hubert_conv()
            min_len = int(info.get("min_samples", 1))
            n = hubert_frames(lengths, k, s)
            for i in range(values.shape[0]):
                x = values[i : i + 1, : int(lengths[i])]
                if x.shape[1] < min_len:
                    x = np.pad(x, ((0, 0), (0, min_len - x.shape[1])))
                rows.append(self._run("audio", {"input_values": np.ascontiguousarray(x)})["frames"][0])
        else:
            frames = self._run("audio", {"input_features": _f32(audio["input_features"])})["frames"]
            rows = list(frames)
            p = int(cfg.backbone["max_source_positions"])
            n = frames_for_hop(lengths, 320, p)  # log-mel hop 160, then a stride-2 conv
        t = max(int(n.max()), max(r.shape[0] for r in rows))
        d = rows[0].shape[-1]
        tokens = np.zeros((len(rows), t, d), dtype=np.float32)
        mask = np.zeros((len(rows), t), dtype=bool)
        for i, r in enumerate(rows):
            tokens[i, : r.shape[0]] = r
            mask[i, : min(int(n[i]), r.shape[0])] = True
        tokens *= mask[..., None]
        return Encoded(tokens, mask, masked_mean_np(tokens, mask))

    def project(self, encoded: Mapping[str, Any]) -> Projection:
        """Encoder outputs -> prompt-slot tokens, on the projector (v1) or fusion (v2) stage."""
        from emo_stream.model.prompts import FEATURE_SLOT, VIDEO_SLOT

        given = {n: _as_encoded(e) for n, e in encoded.items() if e is not None}
        if not given:
            raise ValueError("at least one modality must be given")
        b = next(iter(given.values())).tokens.shape[0]
        present = {n: e.mask.any(axis=1) for n, e in given.items()}
        if self.config.version == "v1":
            pc = self.config.projector
            g = given.get("global")
            feeds = {
                "vision_tokens": g.tokens if g is not None else np.zeros((b, 1 + pc.num_patches, pc.vision_width), np.float32),
                "present": np.zeros((b, 4), dtype=bool),
            }
            for col, (name, feat, dim) in enumerate(
                (
                    ("global", None, 0),
                    ("face", "face_feature", pc.feature_dims[0]),
                    ("temporal", "video_feature", pc.feature_dims[1]),
                    ("audio", "audio_feature", pc.feature_dims[2]),
                )
            ):
                if feat is not None:
                    e = given.get(name)
                    feeds[feat] = e.pooled if e is not None else np.zeros((b, dim), np.float32)
                if name in present:
                    feeds["present"][:, col] = present[name]
            o = {k: np.asarray(v) for k, v in self._run("projector", feeds).items()}
            return Projection(
                slots={
                    VIDEO_SLOT: Slot(o["video_tokens"], o["video_mask"].astype(bool)),
                    FEATURE_SLOT: Slot(o["feature_tokens"], o["feature_mask"].astype(bool)),
                }
            )
        fc = self.config.fusion
        feeds = {"present": np.zeros((b, len(fc.modalities)), dtype=bool)}
        for i, (name, width) in enumerate(fc.modalities):
            e = given.get(name)
            if e is None:
                feeds[f"{name}_tokens"] = np.zeros((b, 1, width), np.float32)
                feeds[f"{name}_mask"] = np.zeros((b, 1), dtype=bool)
            else:
                feeds[f"{name}_tokens"] = e.tokens
                feeds[f"{name}_mask"] = e.mask
                feeds["present"][:, i] = present[name]
        o = {k: np.asarray(v) for k, v in self._run("fusion", feeds).items()}
        return Projection(slots={VIDEO_SLOT: Slot(o["tokens"], o["mask"].astype(bool))}, attention=o["attention"])

    def empty_projection(self) -> Projection:
        """All slots empty (no modality in the window): the LLM reads the text prompt only."""
        from emo_stream.model.prompts import split_prompt

        h = self.config.llm.hidden_size
        return Projection(slots={s: Slot(np.zeros((1, 0, h), np.float32), np.zeros((1, 0), dtype=bool)) for s in split_prompt(self.config.template).slots})

    def prompt(self, task: str = "emotion", subtitle: str = "", label_set: Any = None, instruction: str | None = None) -> str:
        return self.config.render_prompt(task, subtitle, label_set or self.label_set, instruction)

    def label_probabilities(self, projection: Any, subtitle: str = "", label_set: Any = None) -> np.ndarray:
        """(B, C) float64 probabilities over the label set's labels."""
        from emo_stream.labels import get_label_set

        ls = get_label_set(label_set) if isinstance(label_set, str) else (label_set or self.label_set)
        assert self.lm is not None
        probs = self.lm.label_probs(self.prompt("emotion", subtitle, ls), self._lm_slots(projection), ls.labels)
        return np.asarray(probs, dtype=np.float64)

    def _lm_slots(self, projection: Any) -> Mapping[str, Any]:
        """The slots as the LLM runtime takes them: arrays for llama.cpp, torch tensors for the torch LLM."""
        if self.runtime.llm != "torch":
            return projection.slots
        import torch

        from emo_stream.model.projectors import SlotTokens

        dev = self.runtime.device
        return {n: SlotTokens(torch.as_tensor(s.tokens).to(dev), torch.as_tensor(s.mask).to(dev)) for n, s in projection.slots.items()}

    def rationale(self, projection: Any, subtitle: str = "", max_new_tokens: int | None = None, instruction_index: int = 0) -> list[str]:
        from emo_stream.model.prompts import instruction_for

        prompt = self.prompt("reason", subtitle, instruction=instruction_for("reason", self.label_set, instruction_index))
        assert self.lm is not None
        return self.lm.generate(prompt, self._lm_slots(projection), max_new_tokens or self.config.max_new_tokens)

    def classify(self, inputs: Any, subtitle: str = "", label_set: Any = None) -> np.ndarray:
        return self.label_probabilities(self.project(self.encode(inputs)), subtitle, label_set)

    def encode_images(self, inputs: Any) -> int:
        """Encode every image the shipped ViT views of ``inputs`` need (global frame, face crops, temporal
        frames) in one go, into the runner's image cache, so the views' :meth:`encode` calls find them there.
        Why: one call sees all of a window's new images and runs them two at a time (``ViTS14Runner``);
        view by view, each new image ran alone. Returns the images handed over (cached ones included)."""
        by_runner: dict[int, tuple[Any, list[np.ndarray]]] = {}
        for name, px in (("global", inputs.global_pixels), ("face", inputs.face_pixels), ("temporal", inputs.temporal_pixels)):
            view = self._shipped.get(name)
            if view is None or px is None:
                continue
            x = _f32(px)
            runner = view.runner
            by_runner.setdefault(id(runner), (runner, []))[1].append(x.reshape(-1, *x.shape[-3:]))
        n = 0
        for runner, arrays in by_runner.values():
            images = np.concatenate(arrays)
            runner.tokens(images)
            n += len(images)
        return n

    def temporal_frame_indices(self, n_frames: int) -> list[int] | None:
        """Which of a window's ``n_frames`` frames the temporal view reads, where it reads whole frames on the
        shipped ViT (whose image cache :meth:`prefetch_temporal` can fill); None otherwise."""
        view = self._shipped.get("temporal")
        if view is None or getattr(view.config, "crop", None) != "frame":
            return None
        return list(view.config.frame_indices(n_frames))

    def prefetch_temporal(self, images: Sequence[np.ndarray]) -> int:
        """Encode whole frames a later window's temporal view will read, into the shipped ViT's image cache
        (the same preprocessing as the view, so the window finds them by content). Returns the images given."""
        view = self._shipped.get("temporal")
        if view is None or not images:
            return 0
        view.runner.tokens(view.runner.pixels(list(images), None, view.config))
        return len(images)

    def close(self) -> None:
        for s in self.stages.values():
            s.close()
        self.stages = {}
        if self.lm is not None:
            self.lm.close()
            self.lm = None
        self._torch_model = None


def _f32(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


def _np_bool(x: Any) -> np.ndarray:
    a = x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()
    return np.ascontiguousarray(a, dtype=bool)


def _np_int(x: Any) -> np.ndarray:
    a = x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()
    return np.asarray(a, dtype=np.int64)
