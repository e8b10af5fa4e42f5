"""Audio: HuBERT (Emotion-LLaMA) or a Whisper encoder (Emotion-LLaMAv2)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ModelFileError
from emo_stream.model.configs.encoders import (
    AudioEncoderConfig as AudioEncoderConfig,
)

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.encoders import (
    _hubert_large_backbone as _hubert_large_backbone,
)
from emo_stream.model.configs.encoders import (
    _whisper_large_v3_backbone as _whisper_large_v3_backbone,
)
from emo_stream.model.encoders.common import (
    _HOW,
    EncoderOutput,
    _config_kwargs,
    _read_config_json,
    check_pretrained_dir,
    load_state_dict_dir,
    masked_mean,
)
from emo_stream.preprocess import clean_wave, conv_receptive_field

_receptive_field = conv_receptive_field  # numpy-side helper, shared with the exported runtime


#: numpy, shared with the torch-free exported runtime
_clean_wave = clean_wave


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

            self.backbone: Any = HubertModel(HubertConfig(**config.backbone))  # or a WhisperEncoder, by config.kind
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
            feature_size=int(self.config.backbone["num_mel_bins"]),
            sampling_rate=16000,
            hop_length=160,
            chunk_length=chunk // 16000 if chunk % 16000 == 0 else chunk / 16000,
            n_fft=400,
            padding_value=0.0,
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
        return {
            "input_features": torch.from_numpy(np.asarray(feats["input_features"], dtype=np.float32)),
            "lengths": torch.tensor([max(1, a.size) for a in clipped]),
        }

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
    def from_pretrained_dir(cls, path: str | Path, kind: str | None = None, normalize: bool | None = None, layer: int = -1) -> AudioEncoder:
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
        whisper_cfg = WhisperConfig.from_pretrained(str(p), local_files_only=True)
        enc = cls(AudioEncoderConfig(kind="whisper", backbone=_config_kwargs(whisper_cfg), normalize=False, layer=layer))
        sd = load_state_dict_dir(p)
        enc_sd = {}
        for key, value in sd.items():
            for prefix in ("model.encoder.", "encoder."):
                if key.startswith(prefix):
                    enc_sd[key[len(prefix) :]] = value
                    break
        target = enc.backbone.state_dict()
        missing = sorted(set(target) - set(enc_sd))
        if missing:
            raise ModelFileError(f"whisper dir {p} lacks encoder tensors: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}. {_HOW['whisper']}")
        enc.backbone.load_state_dict({k: v for k, v in enc_sd.items() if k in target}, strict=True)
        return enc.eval()
