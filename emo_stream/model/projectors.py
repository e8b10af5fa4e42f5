"""From encoder features to LLM input tokens: Emotion-LLaMA's projector (v1) and
Emotion-LLaMAv2's conv-attention pre-fusion (v2).

v1, :class:`EmotionLlamaProjector`, is laid out exactly as MiniGPT-v2 /
Emotion-LLaMA's ``encode_img`` (``minigpt4/models/minigpt_v2.py``) so the public
checkpoint's tensors load by name:

* ``ln_vision`` (LayerNorm, computed in float32) over the EVA tokens, then the
  CLS token is split off;
* the 1024 patch tokens are grouped by 4 along the sequence (``view(B, N/4,
  4*D)``: four *consecutive* row-major patches, not a 2x2 square) and projected by
  ``llama_proj`` (5632 -> 4096);
* ``feats_llama_proj1..3`` project the face (MAE), video (VideoMAE) and audio
  (HuBERT) utterance features (1024 -> 4096 each);
* ``cls_tk_llama_proj`` projects the CLS token (1408 -> 4096).

Token order: [256 grouped patch tokens] go into the prompt's ``<VideoHere>`` slot
and [face, video, audio, CLS] into ``<FeatureHere>``.

Missing modalities (no frame, no face, no audio; or an all-zero feature, the
form a missing modality takes in a feature cache) are *masked*: their tokens are
zeroed and their mask entries are False, and the LLM wrapper drops them from the
sequence. Emotion-LLaMA itself never saw a missing modality (its features were
always computed), so this is the natural extension, not a reproduction.

v2, :class:`ConvAttentionFusion`, follows the description of Emotion-LLaMAv2's
``ConvProAttention`` (the code is not public):

1. a per-modality MLP maps each modality's tokens to a common width H;
2. each modality's tokens are resampled to a fixed number T of fused tokens
   (masked mean over contiguous segments, like ``adaptive_avg_pool1d``);
3. at every fused token t, attention weights over the modalities come from a
   shared 1x1 ``Conv1d`` scorer plus a learned per-modality bias, softmaxed
   with absent modalities at -inf (a modality's weight depends only on its own
   features, so removing it leaves the others' scores unchanged);
4. a 1x1 ``Conv1d`` mixes channels, residual ``Conv1d(k=3) + SiLU`` blocks mix
   neighbouring tokens, and a ``Linear`` lifts H to the LLM width.

The softmax and the weighted sum are accumulated modality by modality in a fixed
order, so an absent modality contributes an exact ``+0.0``: the output with a
modality masked is bit-identical to the output with that modality's inputs
removed (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emo_stream.errors import ConfigError
from emo_stream.model.configs.projectors import (
    ConvAttentionFusionConfig as ConvAttentionFusionConfig,
)

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.projectors import (
    EmotionLlamaProjectorConfig as EmotionLlamaProjectorConfig,
)
from emo_stream.model.configs.projectors import (
    _default_modalities as _default_modalities,
)
from emo_stream.model.prompts import FEATURE_SLOT, VIDEO_SLOT

#: v1 utterance features in the order of ``feats_llama_proj1..3``.
V1_FEATURES = ("face", "video", "audio")


@dataclass
class SlotTokens:
    """Tokens for one prompt slot: (B, T, H) values and a (B, T) bool mask."""

    tokens: Tensor
    mask: Tensor


@dataclass
class ProjectionOutput:
    """Projected tokens per prompt slot, in the order they appear in the prompt."""

    slots: dict[str, SlotTokens]
    #: (B, T, M) v2 attention weights over modalities (None for v1).
    attention: Tensor | None = None

    @property
    def tokens(self) -> Tensor:
        return torch.cat([s.tokens for s in self.slots.values()], dim=1)

    @property
    def mask(self) -> Tensor:
        return torch.cat([s.mask for s in self.slots.values()], dim=1)


def _is_nonzero(x: Tensor) -> Tensor:
    """(B,) True where a sample's tensor has any non-zero value."""
    return x.flatten(1).ne(0).any(dim=1)


def _batch_size(*tensors: Tensor | None) -> int:
    sizes = {t.shape[0] for t in tensors if t is not None}
    if not sizes:
        raise ValueError("at least one modality must be given")
    if len(sizes) > 1:
        raise ValueError(f"modalities disagree on batch size: {sorted(sizes)}")
    return sizes.pop()


# ---------------------------------------------------------------------------
# v1: Emotion-LLaMA's linear projector
# ---------------------------------------------------------------------------


class EmotionLlamaProjector(nn.Module):
    """Emotion-LLaMA's projector; parameter names match the public checkpoint."""

    def __init__(self, config: EmotionLlamaProjectorConfig):
        super().__init__()
        c = config
        self.config = c
        self.ln_vision = nn.LayerNorm(c.vision_width, eps=c.ln_eps)
        self.llama_proj = nn.Linear(c.vision_width * c.group, c.llm_width)
        self.feats_llama_proj1 = nn.Linear(c.feature_dims[0], c.llm_width)
        self.feats_llama_proj2 = nn.Linear(c.feature_dims[1], c.llm_width)
        self.feats_llama_proj3 = nn.Linear(c.feature_dims[2], c.llm_width)
        self.cls_tk_llama_proj = nn.Linear(c.vision_width, c.llm_width)

    def feature_proj(self, name: str) -> nn.Linear:
        return getattr(self, f"feats_llama_proj{V1_FEATURES.index(name) + 1}")

    def forward(
        self,
        vision_tokens: Tensor | None,
        features: Mapping[str, Tensor | None] | None = None,
        present: Mapping[str, Tensor] | None = None,
    ) -> ProjectionOutput:
        """Project one batch.

        Args:
            vision_tokens: (B, 1 + num_patches, vision_width) EVA output [CLS,
                patches], or None when there is no frame.
            features: ``{"face", "video", "audio"}`` -> (B, dim) utterance
                features; a missing key or None means absent.
            present: optional (B,) bool per modality (``"global"`` for the
                vision tokens, or a feature name) to mask single samples.
        """
        c = self.config
        features = dict(features or {})
        present = dict(present or {})
        unknown = set(features) - set(V1_FEATURES)
        if unknown:
            raise ValueError(f"unknown v1 features {sorted(unknown)}; expected {V1_FEATURES}")
        b = _batch_size(vision_tokens, *features.values())
        ref = next(self.parameters())
        dev, dtype = ref.device, ref.dtype
        n_vid = c.num_video_tokens

        if vision_tokens is not None:
            if vision_tokens.shape[1:] != (1 + c.num_patches, c.vision_width):
                raise ValueError(f"vision tokens must be (B, {1 + c.num_patches}, {c.vision_width}), got {tuple(vision_tokens.shape)}")
            # MiniGPT-v2's LayerNorm subclass normalises in float32.
            x = F.layer_norm(vision_tokens.float(), (c.vision_width,), self.ln_vision.weight.float(), self.ln_vision.bias.float(), c.ln_eps).to(dtype)
            cls_tok = self.cls_tk_llama_proj(x[:, :1])
            patches = x[:, 1:].reshape(b, n_vid, c.vision_width * c.group)
            vid = self.llama_proj(patches)
            vis_ok = _is_nonzero(vision_tokens).to(dev)
            if "global" in present:
                vis_ok = vis_ok & present["global"].to(dev, torch.bool)
        else:
            cls_tok = torch.zeros(b, 1, c.llm_width, device=dev, dtype=dtype)
            vid = torch.zeros(b, n_vid, c.llm_width, device=dev, dtype=dtype)
            vis_ok = torch.zeros(b, dtype=torch.bool, device=dev)

        feat_tokens, feat_ok = [], []
        for name in V1_FEATURES:
            f = features.get(name)
            if f is None:
                feat_tokens.append(torch.zeros(b, 1, c.llm_width, device=dev, dtype=dtype))
                feat_ok.append(torch.zeros(b, dtype=torch.bool, device=dev))
                continue
            if f.ndim != 2 or f.shape[1] != c.feature_dims[V1_FEATURES.index(name)]:
                raise ValueError(f"{name} feature must be (B, {c.feature_dims[V1_FEATURES.index(name)]}), got {tuple(f.shape)}")
            ok = _is_nonzero(f).to(dev)
            if name in present:
                ok = ok & present[name].to(dev, torch.bool)
            feat_tokens.append(self.feature_proj(name)(f.to(dev, dtype)).unsqueeze(1))
            feat_ok.append(ok)

        vid_mask = vis_ok[:, None].expand(b, n_vid)
        feat_mask = torch.stack([*feat_ok, vis_ok], dim=1)  # face, video, audio, CLS
        feats = torch.cat([*feat_tokens, cls_tok], dim=1)
        vid = vid * vid_mask.unsqueeze(-1).to(dtype)
        feats = feats * feat_mask.unsqueeze(-1).to(dtype)
        return ProjectionOutput(slots={VIDEO_SLOT: SlotTokens(vid, vid_mask), FEATURE_SLOT: SlotTokens(feats, feat_mask)})


# ---------------------------------------------------------------------------
# v2: conv-attention pre-fusion
# ---------------------------------------------------------------------------


def segment_mean(x: Tensor, mask: Tensor, num_out: int) -> tuple[Tensor, Tensor]:
    """Resample (B, N, H) tokens to (B, num_out, H) by means over contiguous segments of the *valid* tokens.

    With n valid tokens in a row (``mask`` True; padding and holes are skipped),
    segment t covers valid tokens number [floor(t n / T), ceil((t+1) n / T)) --
    the boundaries of ``adaptive_avg_pool1d``, tokens repeating when n < T -- so
    a 2 s Whisper window padded to 30 s is spread over all T fused tokens, and
    padding never moves a boundary. Returns the values and a (B, num_out) mask
    that is False where a row has no valid token.
    """
    m = mask.to(torch.bool)
    n = m.sum(dim=1, keepdim=True)  # (B, 1)
    rank = m.long().cumsum(dim=1) - 1  # (B, N) index among valid tokens
    t = torch.arange(num_out, device=x.device).unsqueeze(0)  # (1, T)
    start = (t * n) // num_out  # (B, T)
    end = torch.maximum(((t + 1) * n + num_out - 1) // num_out, start + 1)
    seg = (rank[:, None, :] >= start[:, :, None]) & (rank[:, None, :] < end[:, :, None]) & m[:, None, :]  # (B, T, N)
    w = seg.to(x.dtype)
    count = w.sum(dim=-1)
    out = torch.bmm(w, x) / count.clamp_min(1.0).unsqueeze(-1)
    return out, count > 0


class ConvAttentionFusion(nn.Module):
    """Emotion-LLaMAv2-style conv-attention pre-fusion (see module docstring)."""

    def __init__(self, config: ConvAttentionFusionConfig):
        super().__init__()
        c = config
        self.config = c
        self.prep = nn.ModuleDict(
            {name: nn.Sequential(nn.Linear(dim, c.hidden), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(c.hidden, c.hidden)) for name, dim in c.modalities}
        )
        self.score = nn.Conv1d(c.hidden, 1, kernel_size=1)
        self.modality_bias = nn.Parameter(torch.zeros(len(c.modalities)))
        self.mix = nn.Conv1d(c.hidden, c.hidden, kernel_size=1)
        self.blocks = nn.ModuleList(nn.Conv1d(c.hidden, c.hidden, c.kernel_size, padding=c.kernel_size // 2) for _ in range(c.num_blocks))
        self.norm = nn.LayerNorm(c.hidden)
        self.up = nn.Linear(c.hidden, c.llm_width)

    def forward(
        self,
        inputs: Mapping[str, tuple[Tensor, Tensor | None] | Tensor | None],
        present: Mapping[str, Tensor] | None = None,
    ) -> ProjectionOutput:
        """Fuse token sequences.

        Args:
            inputs: modality name -> (tokens (B, N_m, D_m), mask (B, N_m) or None),
                or just the tokens, or None (absent). Modalities of the config
                missing from ``inputs`` are absent.
            present: optional (B,) bool per modality to mask single samples.

        Returns:
            One slot (``<VideoHere>``) of T fused tokens; the mask is False for
            a sample with no modality at all. ``attention`` holds the (B, T, M)
            weights.
        """
        c = self.config
        present = dict(present or {})
        unknown = set(inputs) - set(c.names)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; this fusion knows {c.names}")
        given: dict[str, tuple[Tensor, Tensor]] = {}
        for name, value in inputs.items():
            if value is None:
                continue
            tokens, mask = (value, None) if isinstance(value, Tensor) else value
            if tokens.ndim != 3 or tokens.shape[-1] != dict(c.modalities)[name]:
                raise ValueError(f"{name} tokens must be (B, N, {dict(c.modalities)[name]}), got {tuple(tokens.shape)}")
            if mask is None:
                mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            given[name] = (tokens, mask.to(torch.bool))
        b = _batch_size(*(t for t, _ in given.values())) if given else _batch_size(*present.values())
        ref = self.up.weight
        dev, dtype = ref.device, ref.dtype
        neg_inf = torch.tensor(float("-inf"), device=dev, dtype=dtype)

        values: list[Tensor] = []  # (B, T, H) per modality, zero where invalid
        logits: list[Tensor] = []  # (B, T), -inf where invalid
        for m, name in enumerate(c.names):
            if name not in given:
                values.append(torch.zeros(b, c.num_tokens, c.hidden, device=dev, dtype=dtype))
                logits.append(neg_inf.expand(b, c.num_tokens))
                continue
            tokens, mask = given[name]
            tokens, mask = tokens.to(dev, dtype), mask.to(dev)
            ok = mask.any(dim=1)
            if c.mask_all_zero:
                ok = ok & _is_nonzero(tokens)
            if name in present:
                ok = ok & present[name].to(dev, torch.bool)
            h = self.prep[name](tokens)
            r, seg_ok = segment_mean(h, mask, c.num_tokens)
            valid = seg_ok & ok[:, None]
            r = torch.where(valid.unsqueeze(-1), r, torch.zeros((), device=dev, dtype=dtype))
            s = self.score(r.transpose(1, 2)).squeeze(1) + self.modality_bias[m]
            values.append(r)
            logits.append(torch.where(valid, s, neg_inf))

        # Masked softmax over modalities, accumulated in a fixed order so that an
        # absent modality adds exactly 0 (see module docstring).
        top = logits[0]
        for s in logits[1:]:
            top = torch.maximum(top, s)
        any_valid = torch.isfinite(top)
        safe_top = torch.where(any_valid, top, torch.zeros((), device=dev, dtype=dtype))
        exps = [torch.where(torch.isfinite(s), torch.exp(s - safe_top), torch.zeros((), device=dev, dtype=dtype)) for s in logits]
        denom = exps[0]
        for e in exps[1:]:
            denom = denom + e
        denom = torch.where(any_valid, denom, torch.ones((), device=dev, dtype=dtype))
        weights = [e / denom for e in exps]
        fused = weights[0].unsqueeze(-1) * values[0]
        for w, v in zip(weights[1:], values[1:]):
            fused = fused + w.unsqueeze(-1) * v

        x = self.mix(fused.transpose(1, 2))
        for conv in self.blocks:
            x = x + F.silu(conv(x))
        out = self.up(self.norm(x.transpose(1, 2)))
        out = out * any_valid.unsqueeze(-1).to(dtype)
        return ProjectionOutput(slots={VIDEO_SLOT: SlotTokens(out, any_valid)}, attention=torch.stack(weights, dim=-1))


def build_projector(config: EmotionLlamaProjectorConfig | ConvAttentionFusionConfig) -> nn.Module:
    """v1 projector or v2 fusion, chosen by the config's type."""
    if isinstance(config, EmotionLlamaProjectorConfig):
        return EmotionLlamaProjector(config)
    if isinstance(config, ConvAttentionFusionConfig):
        return ConvAttentionFusion(config)
    raise ConfigError(f"not a projector config: {type(config).__name__}")
