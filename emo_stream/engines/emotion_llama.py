"""``emotion-llama``: the torch Emotion-LLaMA model (v1 or v2) as a streaming engine.

Per window:

1. **preprocess** (``EmotionLlama.preprocess``, per view as Emotion-LLaMA's
   pipeline does it) -- the first selected frame becomes the global view; face
   crops from ``face_detector`` (or an injected ``face_cropper``) when
   configured, else a centred square of ``face_crop_fraction`` of each frame as
   a stand-in (Emotion-LLaMAv2 works without a face detector; the state then
   does *not* claim a face), feed the face view and, sampled as 8 segments x 2
   consecutive crops, the temporal clip. The audio
   span (resampled to 16 kHz if needed) feeds the audio encoder. No frames / no
   audio / all-zero audio -> that modality is absent and masked out.
2. **encode** -- one encoder per modality (each timed separately).
3. **project** -- v1 projector or v2 conv-attention fusion.
4. **llm_score** -- label probabilities by scoring each label's answer after
   the prompt, the prompt computed once and its KV cache shared by all labels.
5. **llm_rationale** -- every ``rationale_every`` windows, a greedy ``[reason]``
   answer (off by default: it costs tens of LLM steps).

Valence/arousal are the circumplex expectation under the probabilities
(:func:`emo_stream.labels.valence_arousal`).

Options (``engine.options``):

========================  ==============================================================
``weights``               directory written by ``EmotionLlama.save_pretrained`` or
                          ``import_emotion_llama`` (required unless ``tiny``)
``tiny``                  true: a randomly initialised tiny model (fixed ``seed``) for
                          tests and demos; states carry the flag ``random_weights``
``version``               "v1" or "v2" (tiny only; default v1)
``seed``                  tiny model seed (default 0)
``device``                torch device (default "cpu")
``rationale_every``       generate a rationale every N windows (0 = never; default 0)
``max_new_tokens``        rationale length cap (default: the model's)
``subtitle``              a fixed transcript to put in the prompt (default none)
``face_detector``         "none" (default), "retinaface" or "haar" (emo_stream.perception.face)
``face_crop_fraction``    centre-crop stand-in size (default 0.6)
``threads``               torch intra-op threads (default: torch's; for an export, only
                          when its torch backends are in use)
========================  ==============================================================
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from emo_stream.config import StreamConfig, build_dataclass
from emo_stream.engines.base import Engine, EngineFeatures, EngineOutput, register_engine
from emo_stream.errors import ConfigError
from emo_stream.labels import get_label_set, normalize, valence_arousal
from emo_stream.stream.scheduler import Window


@dataclass(frozen=True)
class EmotionLlamaOptions:
    """``engine.options`` of the emotion-llama engine, built by
    :func:`~emo_stream.config.build_dataclass` (the one options builder: unknown
    keys and wrong types are named). ``None`` means "not given": the engine keeps
    the option's own default (and, for ``threads``, torch's thread count)."""

    weights: str | None = None
    tiny: bool | None = None
    version: Literal["v1", "v2"] | None = None
    seed: int | None = None
    device: str | None = None
    rationale_every: int | None = None
    max_new_tokens: int | None = None
    subtitle: str | None = None
    face_detector: Literal["none", "retinaface", "haar"] | None = None
    face_crop_fraction: float | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.weights is not None:
            raise ConfigError("engine.options.version applies to tiny models only (a weights dir knows its version)")
        if (self.rationale_every is not None and self.rationale_every < 0) or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise ConfigError("rationale_every must be >= 0 and max_new_tokens >= 1")
        if self.face_crop_fraction is not None and not 0 < self.face_crop_fraction <= 1:
            raise ConfigError("face_crop_fraction must be in (0, 1]")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads must be >= 1")


FaceCropper = Callable[[np.ndarray], "np.ndarray | None"]


def _options(raw: Mapping[str, Any], need_source: bool = True) -> dict[str, Any]:
    """The given options, validated (:class:`EmotionLlamaOptions`), as a dict of only the keys given."""
    opts = build_dataclass(EmotionLlamaOptions, raw, "engine.options")
    out = {k: v for k in raw if (v := getattr(opts, k)) is not None}
    if need_source and bool(out.get("tiny")) == ("weights" in out):
        raise ConfigError("emotion-llama needs exactly one of engine.options.weights (a weights dir) or engine.options.tiny: true")
    return out


def _float64(x: Any) -> np.ndarray:
    """A row of probabilities as float64 numpy (torch tensors from the torch model, arrays from an export)."""
    if hasattr(x, "detach"):
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _valid_image(img: Any) -> bool:
    return isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 0 and img.shape[1] > 0


class EmotionLlamaEngine(Engine):
    """Windows -> Emotion-LLaMA label probabilities (see module docstring)."""

    def __init__(self, config: StreamConfig, model: Any = None, face_cropper: FaceCropper | None = None) -> None:
        opts = _options(config.engine.options, need_source=model is None)
        self.opts = opts
        self.label_set = get_label_set(config.engine.label_set)
        device = opts.get("device", "cpu")
        # A model given with its own numpy ``inputs_type`` (the exported runtime) runs without torch: torch is
        # imported only to build a torch model here, so a robot install streams an export (issue 15).
        self._inputs_type: Any = getattr(model, "inputs_type", None)
        if "threads" in opts and (model is None or "torch" in sys.modules):
            import torch

            torch.set_num_threads(opts["threads"])
        if model is not None:
            self.model = model
            name = "custom"
            self._random = False
        else:
            name = self._build_torch_model(opts, device)
        self.model = self.model.to(device).eval()
        if self._inputs_type is None:
            from emo_stream.model.emotion_llama import ModalityInputs

            self._inputs_type = ModalityInputs
        if not self.model.encoders:
            raise ConfigError(
                "this Emotion-LLaMA weights dir has no encoders, so it cannot read video or audio; "
                "re-run import_emotion_llama with encoder_dirs / eva_checkpoint"
            )
        self.model_id = f"emotion-llama/{self.model.config.version}/{name}/{self.label_set.id}"
        self._cropper = face_cropper
        if self._cropper is None and opts.get("face_detector", "none") != "none":
            self._cropper = self._make_detector_cropper(opts["face_detector"])
        self._windows = 0
        self._last_rationale = ""
        self._last_rationale_stamp: float | None = None

    def _build_torch_model(self, opts: Mapping[str, Any], device: str) -> str:
        """The torch model of ``tiny`` / ``weights`` into ``self.model``; returns its name for the model id."""
        import torch

        from emo_stream.model.emotion_llama import EmotionLlama, EmotionLlamaConfig, build_emotion_llama

        if opts.get("tiny"):
            seed = opts.get("seed", 0)
            version = opts.get("version", "v1")
            with torch.random.fork_rng(devices=[]):  # a fixed seed without disturbing the caller's RNG
                torch.manual_seed(seed)
                self.model = build_emotion_llama(EmotionLlamaConfig.tiny(version, label_set=self.label_set.id))
            self._random = True
            return f"tiny-{version}-random-seed{seed}"
        self.model = EmotionLlama.from_pretrained(opts["weights"], device=device)
        self._random = False
        return str(opts["weights"]).rstrip("/").split("/")[-1] or "weights"

    def _no_grad(self) -> AbstractContextManager[Any]:
        """torch's inference mode around a torch model's steps; nothing for a numpy model."""
        if "torch" not in sys.modules or not hasattr(self.model, "parameters"):
            return nullcontext()
        import torch

        return torch.inference_mode()

    def _make_detector_cropper(self, backend: str) -> FaceCropper:
        from emo_stream.perception.face import FaceDetectorConfig, crop_face, make_face_detector, select_primary

        detector = make_face_detector(FaceDetectorConfig(backend=backend))
        face_enc = self.model.encoder("face")
        size = face_enc.config.image_size if face_enc is not None else 224

        def cropper(image: np.ndarray) -> np.ndarray | None:
            box = select_primary(detector.detect(image), image.shape)
            return None if box is None else crop_face(image, box, size=size)

        return cropper

    def features(self, window: Window) -> EngineFeatures:
        """Steps 1-2 (preprocess, encode): ``{modality: EncoderOutput}``, what :meth:`process` projects."""
        lat: dict[str, float] = {}
        flags = list(window.flags)
        if self._random:
            flags += ["random_weights", "not_an_emotion_model"]
        modalities = set(window.modalities)
        t = time.perf_counter()

        frames = [f.image for f in window.frames if _valid_image(f.image)]
        if len(frames) < len(window.frames):
            flags.append("bad_frame")
        face_images = None
        if self._cropper is not None and frames:
            crops = []
            for img in frames:
                try:
                    c = self._cropper(img)
                except ValueError:
                    c = None
                if c is not None and _valid_image(c):
                    crops.append(c)
            face_images = crops
            if crops:
                modalities.add("face")
            else:
                flags.append("no_face")
        elif frames and self.model.encoder("face") is not None:
            flags.append("face_view_center_crop")
        audio = None
        sr = 16000
        if window.audio is not None and window.audio.samples.size:
            audio = np.asarray(window.audio.samples, dtype=np.float32)
            sr = window.audio.sample_rate
            if not np.all(np.isfinite(audio)):
                flags.append("nan_input")
                audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
        try:
            inputs = self.model.preprocess(frames, audio, sr, face_images=face_images, face_crop_fraction=self.opts.get("face_crop_fraction", 0.6))
        except ValueError:
            flags.append("bad_input")
            inputs = self._inputs_type()
        now = time.perf_counter()
        lat["preprocess"] = (now - t) * 1e3

        encoded: dict[str, Any] = {}
        parts = {
            "global": {"global_pixels": inputs.global_pixels},
            "face": {"face_pixels": inputs.face_pixels, "face_mask": inputs.face_mask},
            "temporal": {"temporal_pixels": inputs.temporal_pixels},
            "audio": {"audio": inputs.audio},
        }
        with self._no_grad():
            if hasattr(self.model, "encode_images"):  # the exported runtime: a window's new images together
                t = time.perf_counter()
                self.model.encode_images(inputs)
                lat["encode_images"] = (time.perf_counter() - t) * 1e3
            for name, kwargs in parts.items():
                if next(iter(kwargs.values())) is None or self.model.encoder(name) is None:
                    continue
                t = time.perf_counter()
                encoded.update(self.model.encode(self._inputs_type(**kwargs)))
                lat[f"encode_{name}"] = (time.perf_counter() - t) * 1e3
            if not encoded:
                flags.append("no_modalities")
        return EngineFeatures(features=encoded, modalities=modalities, flags=flags, latency_ms=lat)

    def process(self, window: Window) -> EngineOutput:
        feats = self.features(window)
        encoded, modalities, flags, lat = feats.features, feats.modalities, feats.flags, feats.latency_ms
        signals: dict[str, float] = {}
        with self._no_grad():
            t = time.perf_counter()
            projection = self.model.project(encoded) if encoded else self._empty_projection()
            lat["project"] = (time.perf_counter() - t) * 1e3
            subtitle = self.opts.get("subtitle", "")
            if subtitle:
                modalities.add("text")
            t = time.perf_counter()
            probs = _float64(self.model.label_probabilities(projection, subtitle, self.label_set)[0])
            lat["llm_score"] = (time.perf_counter() - t) * 1e3
            rationale, stamp = "", None
            every = self.opts.get("rationale_every", 0)
            if every and self._windows % every == 0:
                t = time.perf_counter()
                rationale = self.model.rationale(projection, subtitle, self.opts.get("max_new_tokens"))[0]
                lat["llm_rationale"] = (time.perf_counter() - t) * 1e3
                stamp = window.end
                self._last_rationale, self._last_rationale_stamp = rationale, stamp
        self._windows += 1
        signals["multimodal_tokens"] = float(projection.mask.sum())
        p = normalize(probs)
        v, a = valence_arousal(p, self.label_set)
        return EngineOutput(
            probabilities=p,
            valence=v,
            arousal=a,
            modalities=modalities,
            rationale=rationale,
            rationale_stamp=stamp,
            latency_ms=lat,
            flags=list(dict.fromkeys(flags)),
            signals=signals,
        )

    def _empty_projection(self) -> Any:
        """All slots empty: the LLM reads the text prompt only."""
        if hasattr(self.model, "empty_projection"):  # the exported runtime's (numpy)
            return self.model.empty_projection()
        import torch

        from emo_stream.model.projectors import ProjectionOutput, SlotTokens
        from emo_stream.model.prompts import split_prompt

        h = self.model.llm.hidden_size
        slots = {s: SlotTokens(torch.zeros(1, 0, h), torch.zeros(1, 0, dtype=torch.bool)) for s in split_prompt(self.model.config.template).slots}
        return ProjectionOutput(slots=slots)

    def close(self) -> None:
        self.model = None


@register_engine("emotion-llama")
def _make(config: StreamConfig) -> Engine:
    return EmotionLlamaEngine(config)
