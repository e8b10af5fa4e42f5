"""Emotion-LLaMA run entirely from an export directory: stage runtimes + an LLM runtime.

:class:`ExportedEmotionLlama` has the inference API of
:class:`~emo_stream.model.emotion_llama.EmotionLlama` (``preprocess``,
``encode``, ``project``, ``label_probabilities``, ``rationale``, ``encoder``,
``config``, ``label_set``), so the ``emotion-llama`` engine's window logic
runs on it unchanged (:mod:`emo_stream.engines.emotion_llama_export`). Under
the hood:

* **preprocessing** is the torch model's own code (``EmotionLlama.preprocess``
  and each encoder's ``preprocess``) run on weightless "shell" encoders built
  from the exported config -- image sizes, normalisation, frame resampling,
  Whisper log-mel -- so it cannot drift from the model;
* **encoders and the projector/fusion** run on the chosen stage backend
  (:data:`~emo_stream.runtime.stage.BACKENDS`: ONNX Runtime with checked
  providers, TensorRT engines, or torch for reference), with the glue the
  torch encoders apply (masks, pooling, HuBERT frame counts, Whisper's valid
  frames) done here once for every backend;
* **the LLM** runs on llama.cpp from the GGUF (or torch) through
  :mod:`emo_stream.runtime.lm`, prompts tokenized by the exported tokenizer.

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
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.preprocess import frames_for_hop
from emo_stream.runtime.artifacts import Manifest, load_manifest
from emo_stream.runtime.lm import LLM_BACKENDS, LanguageModelRuntime
from emo_stream.runtime.stage import BACKENDS, StageRuntime

log = logging.getLogger(__name__)

#: GGUF preference when ``gguf="auto"``: smallest first (what a robot CPU wants).
GGUF_PREFERENCE = ("Q4_K_M", "Q8_0", "Q4_0", "F16")
PRECISIONS = ("fp32", "fp16", "int8")


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


def shell_encoder(cfg: Any) -> Any:
    """An encoder object with its config and preprocessing but no network (nothing allocated).

    Shipped frozen encoders (ViT-S/14 ONNX, Whisper tiny.en CTranslate2) are built whole: they already run
    on ONNX Runtime / CTranslate2 from their package files, so the export has no stage for them.
    """
    from torch import nn

    from emo_stream.model.encoders import SHIPPED_CONFIGS, build_encoder

    if isinstance(cfg, SHIPPED_CONFIGS):
        enc = build_encoder(cfg).eval()
        enc.warm()  # sessions open while the model loads, not in the first window
        return enc

    from emo_stream.model.encoders import (
        AudioEncoder,
        AudioEncoderConfig,
        FaceViewConfig,
        FaceViewEncoder,
        GlobalViewConfig,
        GlobalViewEncoder,
        TemporalViewConfig,
        TemporalViewEncoder,
    )

    cls = {GlobalViewConfig: GlobalViewEncoder, FaceViewConfig: FaceViewEncoder, TemporalViewConfig: TemporalViewEncoder,
           AudioEncoderConfig: AudioEncoder}[type(cfg)]
    enc = cls.__new__(cls)
    nn.Module.__init__(enc)
    enc.config = cfg
    if cls is AudioEncoder:
        if cfg.kind == "hubert":
            from transformers import HubertConfig

            enc.backbone = SimpleNamespace(config=HubertConfig(**cfg.backbone))
            enc.feature_extractor = None
        else:
            enc.feature_extractor = enc._make_whisper_extractor()
    return enc.eval()


def hubert_frames(lengths: np.ndarray, kernels: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """HuBERT feature-extractor output length (``_get_feat_extract_output_lengths``)."""
    n = np.asarray(lengths, dtype=np.int64)
    for k, s in zip(kernels, strides):
        n = (n - int(k)) // int(s) + 1
    return np.maximum(n, 0)


class ExportedEmotionLlama:
    """An exported Emotion-LLaMA on the runtimes of a :class:`RuntimeConfig` (see module docstring)."""

    def __init__(self, export_dir: str | Path, runtime: RuntimeConfig | None = None) -> None:
        from emo_stream.model.llm import load_tokenizer

        self.runtime = runtime or RuntimeConfig()
        self.manifest: Manifest = load_manifest(export_dir)
        self.config = self.manifest.model_config()
        self.model_info: dict[str, Any] = dict(self.manifest.get("model", {}))
        self.random_weights = bool(self.model_info.get("random_weights"))
        self.tokenizer = load_tokenizer(self.manifest.tokenizer_dir())
        from emo_stream.model.emotion_llama import MODALITIES

        self._shells = {n: shell_encoder(self.config.encoder_config(n)) for n in MODALITIES if self.config.encoder_config(n) is not None}
        from emo_stream.model.encoders import SHIPPED_CONFIGS

        self._shipped = {n: e for n, e in self._shells.items() if isinstance(e.config, SHIPPED_CONFIGS)}
        self.synthetic_trained = bool(self.model_info.get("synthetic_trained"))
        for n, enc in self._shipped.items():  # the package file must be the one the projector was trained on
            want = ((self.model_info.get("shipped_encoders") or {}).get(n) or {}).get("sha256")
            got = bytes(enc.weights_sha256.tolist()).hex()
            if want and want != got:
                raise ModelFileError(f"export {self.manifest.root}: the {n} encoder's package file changed since the export "
                                     f"(sha256 {got[:12]}..., export made with {want[:12]}...); reinstall requirements/models.txt")
        self._torch_model: Any = None
        self._record = Path(self.runtime.record_inputs) if self.runtime.record_inputs else None
        self._record_count = 0
        self.stages: dict[str, StageRuntime] = {}
        self.lm: LanguageModelRuntime | None = None
        try:
            self._open_stages()
            self.lm = self._open_lm()
        except BaseException:
            self.close()
            raise
        self.llm = SimpleNamespace(hidden_size=self.config.llm.hidden_size)

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
        wanted = [n for n in wanted if n in self._shells and n not in self._shipped] + ["projector" if self.config.version == "v1" else "fusion"]
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
            raise ModelFileError(f"export {self.manifest.root} has no ONNX stage(s) {missing}; run `emo-stream export onnx --model ... --out {self.manifest.root}`")
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
                self.stages[n] = OrtStageRuntime(path, stage=n, precision=rt.precision, providers=rt.providers,
                                                 allow_cpu_fallback=rt.allow_cpu_fallback, threads=rt.threads)
            else:
                from emo_stream.runtime.tensorrt import TensorRTStageRuntime

                trt = (self.manifest.get("tensorrt") or {}).get("stages", {}).get(n, {}).get(rt.precision)
                if trt is None:
                    raise ModelFileError(f"export {self.manifest.root} has no TensorRT {rt.precision} engine for stage {n}; "
                                         f"run `emo-stream export tensorrt --onnx {self.manifest.root} --precision {rt.precision}`")
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
            quant = next((q for q in GGUF_PREFERENCE if q in variants), next(iter(variants)))
        if quant not in variants:
            raise ModelFileError(f"export {self.manifest.root} has no {quant} GGUF (it has {sorted(variants)})")
        width = int(g.get("projector_output_width", self.config.llm.hidden_size))
        if width != self.config.llm.hidden_size:
            raise ModelFileError(f"GGUF expects {width}-wide projector tokens but the model's projector makes {self.config.llm.hidden_size}")
        path = self.manifest.path(variants[quant]["file"], verify=rt.verify)
        self.gguf_quant = quant
        return LlamaCppLM.load(path, self.tokenizer, score_eos=bool(g.get("score_eos", True)), n_threads=rt.llm_threads,
                               n_ctx=rt.n_ctx, n_gpu_layers=rt.n_gpu_layers, embedding_scale=float(g.get("embedding_scale", 1.0)))

    # -- EmotionLlama-compatible surface -------------------------------------------------
    @property
    def label_set(self) -> Any:
        from emo_stream.labels import get_label_set

        return get_label_set(self.config.label_set)

    @property
    def encoders(self) -> dict[str, Any]:
        return dict(self._shells)

    def encoder(self, name: str) -> Any:
        return self._shells.get(name)

    def to(self, device: Any) -> ExportedEmotionLlama:
        return self

    def eval(self) -> ExportedEmotionLlama:
        return self

    def describe(self) -> dict[str, Any]:
        """What runs where (for logs and the engine's model id)."""
        out = {n: s.info.describe() for n, s in self.stages.items()}
        out["llm"] = self.lm.describe() if self.lm else "none"
        return out

    def preprocess(self, *args: Any, **kwargs: Any) -> Any:
        from emo_stream.model.emotion_llama import EmotionLlama

        return EmotionLlama.preprocess(self, *args, **kwargs)  # uses only self.encoder(name)

    def _run(self, name: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._record is not None:
            d = self._record / name
            d.mkdir(parents=True, exist_ok=True)
            np.savez(d / f"{self._record_count:06d}.npz", **{k: np.asarray(v) for k, v in feeds.items()})
            self._record_count += 1
        return self.stages[name].run(feeds)

    def encode(self, inputs: Any) -> dict[str, Any]:
        """Encoder outputs (``EncoderOutput`` with torch tensors) for the modalities present in ``inputs``."""
        import torch

        from emo_stream.model.encoders import EncoderOutput, masked_mean

        out: dict[str, Any] = dict(inputs.features)
        for name, enc in self._shipped.items():  # frozen encoders that run from their package files
            x = {"global": inputs.global_pixels, "face": inputs.face_pixels, "temporal": inputs.temporal_pixels, "audio": inputs.audio}[name]
            if x is not None and name not in out:
                out[name] = enc(x, inputs.face_mask) if name == "face" else enc(x)
        if inputs.global_pixels is not None and "global" not in out:
            self._need("global")
            tok = torch.from_numpy(self._run("global", {"pixel_values": _f32(inputs.global_pixels)})["tokens"])
            out["global"] = EncoderOutput(tok, torch.ones(tok.shape[:2], dtype=torch.bool), tok[:, 1:].mean(dim=1))
        if inputs.face_pixels is not None and "face" not in out:
            self._need("face")
            px = _f32(inputs.face_pixels)
            if px.ndim == 4:
                px = px[:, None]
            b, f = px.shape[:2]
            feats = torch.from_numpy(self._run("face", {"pixel_values": px.reshape(b * f, *px.shape[2:])})["frame_features"]).view(b, f, -1)
            mask = torch.ones(b, f, dtype=torch.bool) if inputs.face_mask is None else inputs.face_mask.to(torch.bool).cpu()
            out["face"] = EncoderOutput(feats, mask, masked_mean(feats, mask))
        if inputs.temporal_pixels is not None and "temporal" not in out:
            self._need("temporal")
            tok = torch.from_numpy(self._run("temporal", {"pixel_values": _f32(inputs.temporal_pixels)})["tokens"])
            out["temporal"] = EncoderOutput(tok, torch.ones(tok.shape[:2], dtype=torch.bool), tok.mean(dim=1))
        if inputs.audio is not None and "audio" not in out:
            self._need("audio")
            out["audio"] = self._encode_audio(inputs.audio)
        return out

    def _need(self, name: str) -> None:
        if name not in self.stages:
            raise ConfigError(f"this model has no {name} encoder; pass that modality as a precomputed feature")

    def _encode_audio(self, audio: Mapping[str, Any]) -> Any:
        import torch

        from emo_stream.model.encoders import EncoderOutput, masked_mean

        cfg = self.config.audio
        lengths = np.asarray(audio["lengths"].cpu().numpy() if hasattr(audio["lengths"], "cpu") else audio["lengths"], dtype=np.int64)
        info = self._stage_entries["audio"].get("info", {})
        rows: list[np.ndarray] = []
        if cfg.kind == "hubert":
            values = _f32(audio["input_values"])
            k, s = info.get("conv_kernel"), info.get("conv_stride")
            if k is None:
                hc = self._shells["audio"].backbone.config
                k, s = hc.conv_kernel, hc.conv_stride
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
        tt, mm = torch.from_numpy(tokens), torch.from_numpy(mask)
        return EncoderOutput(tt, mm, masked_mean(tt, mm))

    def project(self, encoded: Mapping[str, Any]) -> Any:
        """Encoder outputs -> prompt-slot tokens, on the projector (v1) or fusion (v2) stage."""
        import torch

        from emo_stream.model.projectors import ProjectionOutput, SlotTokens
        from emo_stream.model.prompts import FEATURE_SLOT, VIDEO_SLOT

        given = {n: e for n, e in encoded.items() if e is not None}
        if not given:
            raise ValueError("at least one modality must be given")
        b = next(iter(given.values())).tokens.shape[0]
        present = {n: e.mask.any(dim=1).cpu().numpy() for n, e in given.items()}
        if self.config.version == "v1":
            pc = self.config.projector
            g = given.get("global")
            feeds = {
                "vision_tokens": _f32(g.tokens) if g is not None else np.zeros((b, 1 + pc.num_patches, pc.vision_width), np.float32),
                "present": np.zeros((b, 4), dtype=bool),
            }
            for col, (name, feat, dim) in enumerate((("global", None, 0), ("face", "face_feature", pc.feature_dims[0]),
                                                     ("temporal", "video_feature", pc.feature_dims[1]),
                                                     ("audio", "audio_feature", pc.feature_dims[2]))):
                if feat is not None:
                    e = given.get(name)
                    feeds[feat] = _f32(e.pooled) if e is not None else np.zeros((b, dim), np.float32)
                if name in present:
                    feeds["present"][:, col] = present[name]
            o = self._run("projector", feeds)
            t = {k: torch.from_numpy(np.asarray(v)) for k, v in o.items()}
            return ProjectionOutput(slots={VIDEO_SLOT: SlotTokens(t["video_tokens"], t["video_mask"].bool()),
                                           FEATURE_SLOT: SlotTokens(t["feature_tokens"], t["feature_mask"].bool())})
        fc = self.config.fusion
        feeds = {"present": np.zeros((b, len(fc.modalities)), dtype=bool)}
        for i, (name, width) in enumerate(fc.modalities):
            e = given.get(name)
            if e is None:
                feeds[f"{name}_tokens"] = np.zeros((b, 1, width), np.float32)
                feeds[f"{name}_mask"] = np.zeros((b, 1), dtype=bool)
            else:
                feeds[f"{name}_tokens"] = _f32(e.tokens)
                feeds[f"{name}_mask"] = e.mask.cpu().numpy().astype(bool)
                feeds["present"][:, i] = present[name]
        o = self._run("fusion", feeds)
        t = {k: torch.from_numpy(np.asarray(v)) for k, v in o.items()}
        return ProjectionOutput(slots={VIDEO_SLOT: SlotTokens(t["tokens"], t["mask"].bool())}, attention=t["attention"])

    def prompt(self, task: str = "emotion", subtitle: str = "", label_set: Any = None, instruction: str | None = None) -> str:
        return self.config.render_prompt(task, subtitle, label_set or self.label_set, instruction)

    def label_probabilities(self, projection: Any, subtitle: str = "", label_set: Any = None) -> Any:
        import torch

        from emo_stream.labels import get_label_set

        ls = get_label_set(label_set) if isinstance(label_set, str) else (label_set or self.label_set)
        assert self.lm is not None
        return torch.from_numpy(self.lm.label_probs(self.prompt("emotion", subtitle, ls), projection.slots, ls.labels))

    def rationale(self, projection: Any, subtitle: str = "", max_new_tokens: int | None = None, instruction_index: int = 0) -> list[str]:
        from emo_stream.model.prompts import instruction_for

        prompt = self.prompt("reason", subtitle, instruction=instruction_for("reason", self.label_set, instruction_index))
        assert self.lm is not None
        return self.lm.generate(prompt, projection.slots, max_new_tokens or self.config.max_new_tokens)

    def classify(self, inputs: Any, subtitle: str = "", label_set: Any = None) -> Any:
        return self.label_probabilities(self.project(self.encode(inputs)), subtitle, label_set)

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
