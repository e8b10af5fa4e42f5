"""The whole Emotion-LLaMA model: encoders -> projector (v1) or conv-attention fusion (v2) -> LLaMA.

``EmotionLlamaConfig`` describes everything (JSON-serialisable), ``EmotionLlama``
is the ``nn.Module``, ``build_emotion_llama(config)`` the factory. Named configs:

* :meth:`EmotionLlamaConfig.emotion_llama_7b` -- Emotion-LLaMA as published:
  EVA-CLIP-g global view, MAE face view, VideoMAE temporal view, HuBERT-large
  audio, the linear projector and LLaMA-2-7B with LoRA r=64 on q/v;
* :meth:`EmotionLlamaConfig.emotion_llama_v2_7b` -- the v2 shape: Whisper-large-v3
  audio and the conv-attention fusion;
* :meth:`EmotionLlamaConfig.tiny` -- the same graph at toy width for tests.

An encoder config may be ``None``: that modality is then supplied as a
precomputed feature (Emotion-LLaMA trains on cached ``.npy`` features) or is
absent. Frozen/trainable split as in Emotion-LLaMA: encoders and ``ln_vision``
frozen; projector (or fusion) and LoRA trainable; the LLM's own weights frozen.

Weights are saved as a directory: ``config.json`` (this config), ``model.safetensors``
(every tensor of the module; nothing is pickled) and ``tokenizer/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.labels import LabelSet, get_label_set
from emo_stream.model.configs.emotion_llama import (
    MODALITIES as MODALITIES,
)

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.emotion_llama import (
    SMALL_PROMPT_TEMPLATE as SMALL_PROMPT_TEMPLATE,
)
from emo_stream.model.configs.emotion_llama import (
    V1_FEATURE_OF as V1_FEATURE_OF,
)
from emo_stream.model.configs.emotion_llama import (
    EmotionLlamaConfig as EmotionLlamaConfig,
)
from emo_stream.model.configs.emotion_llama import (
    _from_dict as _from_dict,
)
from emo_stream.model.configs.emotion_llama import (
    _tuplify as _tuplify,
)
from emo_stream.model.configs.emotion_llama import (
    _union_member as _union_member,
)
from emo_stream.model.encoders import (
    AudioEncoder,
    EncoderOutput,
    FaceViewEncoder,
    GlobalViewEncoder,
    ShippedViTEncoder,
    ShippedWhisperEncoder,
    TemporalViewEncoder,
    build_encoder,
    center_square_box,
)
from emo_stream.model.llm import EmotionLlamaLM, build_word_tokenizer
from emo_stream.model.projectors import (
    ConvAttentionFusion,
    EmotionLlamaProjector,
    ProjectionOutput,
    build_projector,
)
from emo_stream.model.prompts import (
    instruction_for,
)
from emo_stream.preprocess import resample_linear as resample_linear  # numpy, shared with the exported runtime

FORMAT = "emo_stream.emotion_llama"
FORMAT_VERSION = 1


@dataclass
class ModalityInputs:
    """Preprocessed inputs for a batch; None = modality absent for the whole batch.

    Attributes:
        global_pixels: (B, 3, S, S) one frame per sample.
        face_pixels: (B, F, 3, S, S) face crops; ``face_mask`` (B, F) marks real ones.
        temporal_pixels: (B, K, 3, S, S) clip.
        audio: the audio encoder's ``preprocess`` output.
        features: precomputed encoder outputs, used instead of running that encoder.
    """

    global_pixels: Tensor | None = None
    face_pixels: Tensor | None = None
    face_mask: Tensor | None = None
    temporal_pixels: Tensor | None = None
    audio: Mapping[str, Tensor] | None = None
    features: dict[str, EncoderOutput] = field(default_factory=dict)


class EmotionLlama(nn.Module):
    """Encoders + projector/fusion + LLaMA (see module docstring)."""

    def __init__(
        self,
        config: EmotionLlamaConfig,
        tokenizer: Any = None,
        llm: EmotionLlamaLM | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
    ):
        """Build the modules of ``config``; ``llm`` / ``encoders`` (already loaded) are used instead of new ones."""
        super().__init__()
        self.config = config
        given = dict(encoders or {})
        unknown = set(given) - set(MODALITIES)
        if unknown:
            raise ConfigError(f"unknown encoder name(s) {sorted(unknown)}; expected {MODALITIES}")
        mods = {}
        for name in MODALITIES:
            cfg = config.encoder_config(name)
            if name in given:
                if cfg is None or getattr(given[name], "config", None) != cfg:
                    raise ConfigError(f"the {name} encoder passed in does not match config.{name}")
                mods[name] = given[name]
            elif cfg is not None:
                mods[name] = build_encoder(cfg)
        self.encoders = nn.ModuleDict(mods)
        for p in self.encoders.parameters():
            p.requires_grad_(False)
        head = config.projector if config.version == "v1" else config.fusion
        assert head is not None  # EmotionLlamaConfig checked it: v1 has a projector, v2 a fusion
        self.projector = build_projector(head)
        if isinstance(self.projector, EmotionLlamaProjector):
            # Frozen in Emotion-LLaMA (freeze_vit freezes ln_vision with the ViT).
            for p in self.projector.ln_vision.parameters():
                p.requires_grad_(False)
        self.llm = llm if llm is not None else EmotionLlamaLM(config.llm, tokenizer=tokenizer)

    @property
    def label_set(self) -> LabelSet:
        return get_label_set(self.config.label_set)

    @property
    def device(self) -> torch.device:
        return self.llm.device

    def encoder(self, name: str) -> nn.Module | None:
        return self.encoders[name] if name in self.encoders else None

    # -- preprocessing ----------------------------------------------------------
    def preprocess(
        self,
        frames: Sequence[np.ndarray] = (),
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        face_images: Sequence[np.ndarray] | None = None,
        face_boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
        face_crop_fraction: float = 0.6,
    ) -> ModalityInputs:
        """One sample's raw data -> :class:`ModalityInputs` (batch of 1), per view as Emotion-LLaMA's pipeline prepares it.

        ``frames``: BGR uint8 frames in time order. The global view takes the
        frame its config names (Emotion-LLaMA: the *first*). Face crops come
        from ``face_images`` if given, else ``frames`` cropped to ``face_boxes``
        (None entries: no face in that frame), else a centred square of
        ``face_crop_fraction`` of the shorter side as a stand-in (Emotion-LLaMAv2
        drops the face detector altogether). The face view encodes every crop;
        the temporal view samples its clip from the same face crops when its
        config says ``crop="face"`` (the original's OpenFace crops; no face ->
        no temporal view), else from the whole frames. ``audio``: mono float samples.
        """
        inp = ModalityInputs()
        frames = list(frames)
        g, f, t, a = (self.encoder(n) for n in MODALITIES)
        if face_images is not None:
            crops: list[np.ndarray] = [c for c in face_images if c is not None and c.size]
            crop_boxes: list[tuple[int, int, int, int] | None] | None = None
        elif face_boxes is not None:
            pairs = [(fr, bx) for fr, bx in zip(frames, face_boxes) if bx is not None]
            crops, crop_boxes = [p[0] for p in pairs], [p[1] for p in pairs]
        else:
            crops = frames
            crop_boxes = [center_square_box(fr.shape[0], fr.shape[1], face_crop_fraction) for fr in frames]
        if frames and isinstance(g, (GlobalViewEncoder, ShippedViTEncoder)):
            inp.global_pixels = g.preprocess([frames[g.config.frame_index(len(frames))]])
        if isinstance(t, (TemporalViewEncoder, ShippedViTEncoder)):
            if t.config.crop == "face":
                if crops:
                    inp.temporal_pixels = t.preprocess(crops, crop_boxes).unsqueeze(0)
            elif frames:
                inp.temporal_pixels = t.preprocess(frames).unsqueeze(0)
        if isinstance(f, (FaceViewEncoder, ShippedViTEncoder)) and crops:
            inp.face_pixels = f.preprocess(crops, crop_boxes).unsqueeze(0)
        if audio is not None and isinstance(a, (AudioEncoder, ShippedWhisperEncoder)):
            wave = np.asarray(audio, dtype=np.float32).reshape(-1)
            if sample_rate != a.config.sample_rate:
                wave = resample_linear(wave, sample_rate, a.config.sample_rate)
            if wave.size and np.any(wave != 0):
                inp.audio = a.preprocess([wave])
        return inp

    # -- forward pieces -----------------------------------------------------------
    @torch.no_grad()
    def encode(self, inputs: ModalityInputs) -> dict[str, EncoderOutput]:
        """Run the encoders that have inputs; precomputed ``features`` pass through."""
        out: dict[str, EncoderOutput] = dict(inputs.features)
        dev = self.device
        runs = {
            "global": (inputs.global_pixels, lambda e, x: e(x.to(dev))),
            "face": (inputs.face_pixels, lambda e, x: e(x.to(dev), None if inputs.face_mask is None else inputs.face_mask.to(dev))),
            "temporal": (inputs.temporal_pixels, lambda e, x: e(x.to(dev))),
            "audio": (inputs.audio, lambda e, x: e({k: v.to(dev) for k, v in x.items()})),
        }
        for name, (x, run) in runs.items():
            if name in out or x is None:
                continue
            enc = self.encoder(name)
            if enc is None:
                raise ConfigError(f"this model has no {name} encoder; pass that modality as a precomputed feature")
            out[name] = run(enc, x)
        return out

    def project(self, encoded: Mapping[str, EncoderOutput | None]) -> ProjectionOutput:
        """Encoder outputs -> prompt-slot tokens (v1 projector or v2 fusion)."""
        present = {n: e.mask.any(dim=1) for n, e in encoded.items() if e is not None}
        if isinstance(self.projector, EmotionLlamaProjector):
            g = encoded.get("global")
            feats = {V1_FEATURE_OF[n]: e.pooled for n, e in encoded.items() if e is not None and n in V1_FEATURE_OF}
            pres = {V1_FEATURE_OF.get(n, n): v for n, v in present.items()}
            return self.projector(None if g is None else g.tokens, feats, pres)
        assert isinstance(self.projector, ConvAttentionFusion)
        inputs = {n: (e.tokens, e.mask) for n, e in encoded.items() if e is not None and n in self.projector.config.names}
        return self.projector(inputs, {n: v for n, v in present.items() if n in inputs})

    def prompt(self, task: str = "emotion", subtitle: str = "", label_set: LabelSet | None = None, instruction: str | None = None) -> str:
        return self.config.render_prompt(task, subtitle, label_set or self.label_set, instruction)

    def _batched(self, projection: ProjectionOutput) -> int:
        return next(iter(projection.slots.values())).tokens.shape[0]

    @torch.no_grad()
    def label_probabilities(self, projection: ProjectionOutput, subtitle: str = "", label_set: LabelSet | str | None = None) -> Tensor:
        """(B, C) probabilities over the label set's labels (see :mod:`.llm` for the scoring)."""
        ls = get_label_set(label_set) if isinstance(label_set, str) else (label_set or self.label_set)
        prefix = self.llm.build_prefix(self.prompt("emotion", subtitle, ls), projection.slots)
        return self.llm.label_log_probs(prefix, ls.labels).exp()

    @torch.no_grad()
    def rationale(self, projection: ProjectionOutput, subtitle: str = "", max_new_tokens: int | None = None, instruction_index: int = 0) -> list[str]:
        """Greedy ``[reason]`` answers, one per sample."""
        prompt = self.prompt("reason", subtitle, instruction=instruction_for("reason", self.label_set, instruction_index))
        prefix = self.llm.build_prefix(prompt, projection.slots)
        ids = self.llm.generate(prefix, max_new_tokens or self.config.max_new_tokens)
        return [self.llm.decode(x) for x in ids]

    @torch.no_grad()
    def classify(self, inputs: ModalityInputs, subtitle: str = "", label_set: LabelSet | str | None = None) -> Tensor:
        """encode -> project -> label probabilities."""
        return self.label_probabilities(self.project(self.encode(inputs)), subtitle, label_set)

    # -- persistence ---------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` to ``directory``."""
        from safetensors.torch import save_model

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        (d / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        save_model(self, str(d / "model.safetensors"), metadata={"format": FORMAT})
        if self.llm.tokenizer is not None:
            self.llm.tokenizer.save_pretrained(str(d / "tokenizer"))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> EmotionLlama:
        """Load a directory written by :meth:`save_pretrained` (or by the checkpoint importer)."""
        from emo_stream.model.llm import load_tokenizer

        d = Path(directory)
        missing = [n for n in ("config.json", "model.safetensors") if not (d / n).is_file()]
        if missing:
            raise ModelFileError(
                f"Emotion-LLaMA weights dir {d} lacks {', '.join(missing)}. Create it with "
                "emo_stream.model.checkpoint_import.import_emotion_llama(checkpoint, llama_dir, out_dir) "
                "or EmotionLlama.save_pretrained()."
            )
        try:
            meta = json.loads((d / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{d / 'config.json'} is not readable JSON ({exc})") from None
        if meta.get("format") != FORMAT:
            raise ModelFileError(f"{d / 'config.json'} is not an emo_stream Emotion-LLaMA config (format {meta.get('format')!r})")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelFileError(f"{d} was written by a newer emo_stream (format_version {meta['format_version']})")
        config = EmotionLlamaConfig.from_dict(meta["config"])
        tokenizer = load_tokenizer(d / "tokenizer") if (d / "tokenizer").is_dir() else None
        try:
            from transformers.initialization import no_init_weights
        except ImportError:  # older transformers
            from contextlib import nullcontext as no_init_weights  # type: ignore[assignment]
        with no_init_weights():
            # every tensor comes from model.safetensors: a GGUF-backed LLM is not read again
            llm = EmotionLlamaLM(config.llm, tokenizer=tokenizer, load_gguf=False)
            model = cls(config, tokenizer=tokenizer, llm=llm)
        load_weights(model, d / "model.safetensors")
        return model.to(device).eval()


def load_weights(model: nn.Module, path: Path) -> None:
    """Copy tensors from a safetensors file into ``model`` one at a time (peak memory: model + one tensor).

    Every tensor of the model must be in the file and every tensor of the file
    must belong to the model; otherwise one :class:`ModelFileError` lists both.
    """
    from safetensors import safe_open

    target = model.state_dict(keep_vars=True)
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file ({exc})") from None
    with handle as fh:
        keys = set(fh.keys())
        loaded_ptrs = set()
        unexpected = sorted(keys - set(target))
        for name in sorted(keys & set(target)):
            t = fh.get_tensor(name)
            dst = target[name]
            if tuple(t.shape) != tuple(dst.shape):
                raise ModelFileError(f"{path}: tensor {name} has shape {tuple(t.shape)}, the model expects {tuple(dst.shape)}")
            with torch.no_grad():
                dst.data.copy_(t)
            loaded_ptrs.add(dst.data_ptr())
    # save_model drops aliases of shared tensors; those are loaded through their twin.
    missing = sorted(n for n in set(target) - keys if target[n].data_ptr() not in loaded_ptrs)
    if missing or unexpected:
        raise ModelFileError(
            f"{path} does not match the model: missing {len(missing)} {missing[:6]}{' ...' if len(missing) > 6 else ''}; "
            f"unexpected {len(unexpected)} {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}"
        )


def build_emotion_llama(config: EmotionLlamaConfig, tokenizer: Any = None) -> EmotionLlama:
    """Randomly initialised model for ``config``.

    With no ``tokenizer`` and a tiny-vocabulary LLM (test configs), the local
    word-level tokenizer of :func:`~emo_stream.model.llm.build_word_tokenizer`
    is used; a real-size model needs the LLaMA-2 tokenizer passed in.
    """
    if tokenizer is None and int(config.llm.llama["vocab_size"]) < 32000:
        tokenizer = build_word_tokenizer()
        if len(tokenizer) > int(config.llm.llama["vocab_size"]):
            raise ConfigError(f"test tokenizer has {len(tokenizer)} tokens, more than the LLM vocab {config.llm.llama['vocab_size']}")
    return EmotionLlama(config, tokenizer=tokenizer)


@dataclass(frozen=True)
class ParameterReport:
    """Parameter counts of a configuration (computed on the meta device: no weights allocated)."""

    total: int
    trainable: int
    llm_base: int
    lora: int
    projector: int
    projector_trainable: int
    encoders: dict[str, int]

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / self.total

    @property
    def lora_percent_of_llm(self) -> float:
        """LoRA / (LLM + LoRA): what peft's ``print_trainable_parameters`` shows for the LLM alone."""
        return 100.0 * self.lora / (self.llm_base + self.lora)

    def summary(self) -> str:
        enc = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in self.encoders.items())
        return (
            f"trainable {self.trainable:,} of {self.total:,} ({self.trainable_percent:.3f}%); "
            f"LoRA {self.lora:,} = {self.lora_percent_of_llm:.4f}% of LLM+LoRA ({self.llm_base + self.lora:,}); "
            f"projector {self.projector_trainable:,} trainable of {self.projector:,}; encoders (frozen): {enc}"
        )


def trainable_parameter_report(config: EmotionLlamaConfig | None = None) -> ParameterReport:
    """Count parameters of ``config`` (default: the real 7B Emotion-LLaMA) on ``torch.device('meta')``."""
    config = config or EmotionLlamaConfig.emotion_llama_7b()
    with torch.device("meta"):
        model = EmotionLlama(config, tokenizer=None)
    lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    llm_all = sum(p.numel() for p in model.llm.parameters())
    return ParameterReport(
        total=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        llm_base=llm_all - lora,
        lora=lora,
        projector=sum(p.numel() for p in model.projector.parameters()),
        projector_trainable=sum(p.numel() for p in model.projector.parameters() if p.requires_grad),
        encoders={n: sum(p.numel() for p in e.parameters()) for n, e in model.encoders.items()},
    )
