"""Audio: HuBERT (Emotion-LLaMA) or a Whisper encoder (Emotion-LLaMAv2)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.model.encoders.common import (
    _HOW,
    EncoderOutput,
    _check_transformer,
    _config_kwargs,
    _read_config_json,
    canonical_mapping,
    check_pretrained_dir,
    load_state_dict_dir,
    masked_mean,
)


def _hubert_large_backbone() -> dict[str, Any]:
    return dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)


def _whisper_large_v3_backbone() -> dict[str, Any]:
    return dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                num_mel_bins=128, max_source_positions=1500,
                decoder_layers=1, decoder_attention_heads=20, decoder_ffn_dim=64, vocab_size=51866)


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Speech encoder on 16 kHz mono audio.

    Attributes:
        kind: ``"hubert"`` (Emotion-LLaMA) or ``"whisper"`` (Emotion-LLaMAv2's encoder).
        backbone: ``HubertConfig`` or ``WhisperConfig`` keywords (Whisper: only
            the encoder is built; decoder keys are ignored).
        sample_rate: what the backbone expects (16 kHz for both).
        normalize: zero-mean/unit-variance per utterance (HuBERT-large's
            feature extractor does this; HuBERT-base's does not).
        layer: which hidden state to use, numbered 0..num_layers with
            ``num_layers`` == -1 == the final output after the closing
            LayerNorm, as MER2023 extracted it (see :meth:`AudioEncoder.hidden_state`).
    """

    kind: str = "hubert"
    backbone: Mapping[str, Any] = field(default_factory=_hubert_large_backbone)
    sample_rate: int = 16000
    normalize: bool = True
    layer: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", canonical_mapping(self.backbone, "audio backbone"))
        if self.kind not in ("hubert", "whisper"):
            raise ConfigError(f"audio encoder kind must be 'hubert' or 'whisper', got {self.kind!r}")
        if self.sample_rate != 16000:
            raise ConfigError(f"audio encoders take 16 kHz audio, got sample_rate {self.sample_rate}")
        if self.kind == "hubert":
            _check_transformer(self.backbone, "hubert")
            n = int(self.backbone.get("num_hidden_layers", 12))
        else:
            for key in ("d_model", "encoder_attention_heads", "num_mel_bins", "max_source_positions"):
                if key not in self.backbone:
                    raise ConfigError(f"whisper: backbone needs {key!r}")
            if self.backbone["d_model"] % self.backbone["encoder_attention_heads"]:
                raise ConfigError("whisper: d_model must be divisible by encoder_attention_heads")
            n = int(self.backbone.get("encoder_layers", 4))
        if not -(n + 1) <= self.layer <= n:
            raise ConfigError(f"audio layer {self.layer} out of range for {n} layers")

    @classmethod
    def hubert_large(cls) -> "AudioEncoderConfig":
        return cls()

    @classmethod
    def whisper_large_v3(cls) -> "AudioEncoderConfig":
        return cls(kind="whisper", backbone=_whisper_large_v3_backbone(), normalize=False)

    @classmethod
    def tiny(cls, kind: str = "hubert") -> "AudioEncoderConfig":
        if kind == "whisper":
            # 40 mel bins, 1 s chunks: 100 mel frames -> 50 encoder frames.
            return cls(kind="whisper", normalize=False, backbone=dict(
                d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=40,
                max_source_positions=50, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=51866))
        return cls(backbone=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                                 num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                                 conv_bias=True))

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"] if self.kind == "hubert" else self.backbone["d_model"])

    @property
    def chunk_samples(self) -> int | None:
        """Whisper's fixed input length in samples (None for HuBERT)."""
        if self.kind != "whisper":
            return None
        return int(self.backbone["max_source_positions"]) * 2 * 160


def _receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (k - 1) * jump
        jump *= s
    return rf


def _clean_wave(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(a)):
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return a


class AudioEncoder(nn.Module):
    """HuBERT or Whisper encoder: tokens = frame features (B, T, D) (50 Hz), pooled = mean of the valid frames.

    Call ``encoder(encoder.preprocess(waves))``. HuBERT takes the (normalised)
    waveform; Whisper takes an 80/128-bin log-mel spectrogram from a
    ``WhisperFeatureExtractor`` constructed here from the config (never from the
    hub), padded to Whisper's fixed chunk; only the frames that cover real
    audio are marked valid, so a 2 s window is not averaged with 28 s of padding.
    """

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        self.config = config
        if config.kind == "hubert":
            from transformers import HubertConfig, HubertModel

            self.backbone = HubertModel(HubertConfig(**config.backbone))
            self.feature_extractor = None
        else:
            from transformers import WhisperConfig
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            self.backbone = WhisperEncoder(WhisperConfig(**config.backbone))
            self.feature_extractor = self._make_whisper_extractor()

    def _make_whisper_extractor(self) -> Any:
        from transformers import WhisperFeatureExtractor

        chunk = self.config.chunk_samples
        assert chunk is not None
        return WhisperFeatureExtractor(
            feature_size=int(self.config.backbone["num_mel_bins"]), sampling_rate=16000, hop_length=160,
            chunk_length=chunk // 16000 if chunk % 16000 == 0 else chunk / 16000, n_fft=400, padding_value=0.0,
        )

    @property
    def min_samples(self) -> int:
        """Shortest input the backbone accepts (HuBERT's conv receptive field)."""
        if self.config.kind != "hubert":
            return 1
        c = self.backbone.config
        return _receptive_field(c.conv_kernel, c.conv_stride)

    def preprocess(self, waves: Sequence[np.ndarray], sample_rate: int = 16000) -> dict[str, Tensor]:
        """Mono float waveforms at ``sample_rate`` -> backbone inputs (+ ``lengths`` in samples)."""
        if sample_rate != self.config.sample_rate:
            raise ValueError(f"audio must be resampled to {self.config.sample_rate} Hz first (got {sample_rate})")
        clean = [_clean_wave(w) for w in waves]
        if not clean:
            raise ValueError("no audio given")
        if self.config.kind == "hubert":
            from emo_stream.preprocess import hubert_inputs  # numpy, shared with the torch-free exported runtime

            values, lengths = hubert_inputs(clean, self.config.normalize, self.min_samples)
            return {"input_values": torch.from_numpy(values), "lengths": torch.from_numpy(lengths)}
        chunk = self.config.chunk_samples
        assert chunk is not None and self.feature_extractor is not None
        clipped = [a[:chunk] for a in clean]
        feats = self.feature_extractor(clipped, sampling_rate=16000, return_tensors="np", padding="max_length", max_length=chunk, truncation=True)
        return {"input_features": torch.from_numpy(np.asarray(feats["input_features"], dtype=np.float32)),
                "lengths": torch.tensor([max(1, a.size) for a in clipped])}

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder frames covering ``lengths`` samples."""
        if self.config.kind == "hubert":
            return self.backbone._get_feat_extract_output_lengths(lengths).long()
        # log-mel hop 160, then a stride-2 conv: one frame per 320 samples.
        return torch.clamp((lengths + 319) // 320, min=1, max=int(self.config.backbone["max_source_positions"]))

    @property
    def num_layers(self) -> int:
        return int(self.config.backbone.get("num_hidden_layers", 12) if self.config.kind == "hubert" else self.config.backbone.get("encoder_layers", 4))

    def hidden_state(self, **kwargs: Tensor) -> Tensor:
        """The configured layer's frame features, with one meaning under every transformers version.

        States are numbered 0..L (L = number of layers): 0 is the input of the
        first layer, ``i`` the output of layer ``i``, and L -- also ``-1`` -- the
        encoder's final output *after* its closing LayerNorm (HuBERT-large and
        Whisper have one). That is transformers 4.16's numbering, which
        MER2023-Baseline used to extract Emotion-LLaMA's "HL-UTT" features
        (``hidden_states[-1]`` there is after the final norm). transformers 5
        reports ``hidden_states[L]`` *before* that norm, so we never read index
        L from it: L and -1 both come from ``last_hidden_state``.
        """
        n = self.num_layers
        layer = self.config.layer % (n + 1)
        if layer == n:
            return self.backbone(**kwargs).last_hidden_state
        return self.backbone(**kwargs, output_hidden_states=True).hidden_states[layer]


    def forward(self, inputs: Mapping[str, Tensor]) -> EncoderOutput:
        lengths = inputs["lengths"]
        dtype = next(self.parameters()).dtype
        if self.config.kind == "hubert":
            values = inputs["input_values"].to(dtype)
            # Each utterance runs alone at its own length: padding would change
            # HuBERT's normalisation and convolution edges.
            rows = [self.hidden_state(input_values=values[i : i + 1, : int(lengths[i])])[0] for i in range(values.shape[0])]
        else:
            feats = inputs["input_features"].to(dtype)
            rows = list(self.hidden_state(input_features=feats))
        n = self.frame_lengths(lengths)
        t = max(int(n.max()), max(r.shape[0] for r in rows))
        tokens = rows[0].new_zeros(len(rows), t, rows[0].shape[-1])
        mask = torch.zeros(len(rows), t, dtype=torch.bool, device=tokens.device)
        for i, r in enumerate(rows):
            k = min(int(n[i]), r.shape[0])
            tokens[i, : r.shape[0]] = r
            mask[i, :k] = True
        tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, kind: str | None = None, normalize: bool | None = None, layer: int = -1) -> "AudioEncoder":
        """Load a HuBERT or Whisper directory; ``kind`` is read from config.json when not given."""
        from transformers import HubertConfig, HubertModel, WhisperConfig

        p = Path(path)
        raw = _read_config_json(p, "audio encoder") if (p / "config.json").is_file() else {}
        kind = kind or ("whisper" if raw.get("model_type") == "whisper" else "hubert")
        p = check_pretrained_dir(path, f"{kind} audio encoder", _HOW.get(kind, _HOW["hubert"]))
        if kind == "hubert":
            hf_cfg = HubertConfig.from_pretrained(str(p), local_files_only=True)
            if normalize is None:
                normalize = bool(hf_cfg.feat_extract_norm == "layer")
                pp = p / "preprocessor_config.json"
                if pp.is_file():
                    normalize = bool(json.loads(pp.read_text(encoding="utf-8")).get("do_normalize", normalize))
            enc = cls.__new__(cls)
            nn.Module.__init__(enc)
            enc.config = AudioEncoderConfig(kind="hubert", backbone=_config_kwargs(hf_cfg), normalize=normalize, layer=layer)
            enc.backbone = HubertModel.from_pretrained(str(p), local_files_only=True)
            enc.feature_extractor = None
            return enc.eval()
        hf_cfg = WhisperConfig.from_pretrained(str(p), local_files_only=True)
        enc = cls(AudioEncoderConfig(kind="whisper", backbone=_config_kwargs(hf_cfg), normalize=False, layer=layer))
        sd = load_state_dict_dir(p)
        enc_sd = {}
        for key, value in sd.items():
            for prefix in ("model.encoder.", "encoder."):
                if key.startswith(prefix):
                    enc_sd[key[len(prefix):]] = value
                    break
        target = enc.backbone.state_dict()
        missing = sorted(set(target) - set(enc_sd))
        if missing:
            raise ModelFileError(f"whisper dir {p} lacks encoder tensors: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}. {_HOW['whisper']}")
        enc.backbone.load_state_dict({k: v for k, v in enc_sd.items() if k in target}, strict=True)
        return enc.eval()
