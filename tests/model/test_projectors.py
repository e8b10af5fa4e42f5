"""v1 projector (Emotion-LLaMA layout) and v2 conv-attention fusion: shapes, masking, exact modality removal."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emo_stream.errors import ConfigError
from emo_stream.model.projectors import (
    ConvAttentionFusion,
    ConvAttentionFusionConfig,
    EmotionLlamaProjector,
    EmotionLlamaProjectorConfig,
    segment_mean,
)
from emo_stream.model.prompts import FEATURE_SLOT, VIDEO_SLOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

G = torch.Generator().manual_seed(0)


def _v1() -> tuple[EmotionLlamaProjector, EmotionLlamaProjectorConfig]:
    torch.manual_seed(0)
    cfg = EmotionLlamaProjectorConfig.tiny()
    proj = EmotionLlamaProjector(cfg).eval()
    with torch.no_grad():  # a non-trivial ln_vision, so using or skipping it shows
        proj.ln_vision.weight.copy_(1 + 0.3 * torch.randn(cfg.vision_width, generator=G))
        proj.ln_vision.bias.copy_(0.3 * torch.randn(cfg.vision_width, generator=G))
    return proj, cfg


def _v1_inputs(cfg: EmotionLlamaProjectorConfig, b: int = 2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    vision = torch.randn(b, 1 + cfg.num_patches, cfg.vision_width, generator=G)
    feats = {n: torch.randn(b, d, generator=G) for n, d in zip(("face", "video", "audio"), cfg.feature_dims)}
    return vision, feats


def test_v1_matches_minigpt_v2_encode_img() -> None:
    proj, cfg = _v1()
    vision, feats = _v1_inputs(cfg)
    out = proj(vision, feats)
    # Direct computation from the raw weights, in MiniGPT-v2's order of operations.
    x = F.layer_norm(vision, (cfg.vision_width,), proj.ln_vision.weight, proj.ln_vision.bias, cfg.ln_eps)
    cls_tok = F.linear(x[:, :1], proj.cls_tk_llama_proj.weight, proj.cls_tk_llama_proj.bias)
    grouped = x[:, 1:].reshape(2, cfg.num_patches // 4, 4 * cfg.vision_width)
    vid = F.linear(grouped, proj.llama_proj.weight, proj.llama_proj.bias)
    f = [
        F.linear(feats[n], getattr(proj, f"feats_llama_proj{i}").weight, getattr(proj, f"feats_llama_proj{i}").bias)
        for i, n in ((1, "face"), (2, "video"), (3, "audio"))
    ]
    expected_feats = torch.cat([torch.stack(f, dim=1), cls_tok], dim=1)
    assert list(out.slots) == [VIDEO_SLOT, FEATURE_SLOT]
    # a few float32 ulps: BLAS rounding can depend on the memory alignment of the operands
    torch.testing.assert_close(out.slots[VIDEO_SLOT].tokens, vid, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.slots[FEATURE_SLOT].tokens, expected_feats, rtol=1e-6, atol=1e-6)
    assert out.tokens.shape == (2, cfg.num_video_tokens + 4, cfg.llm_width)
    assert out.mask.all()


def test_v1_groups_consecutive_patches() -> None:
    proj, cfg = _v1()
    vision, feats = _v1_inputs(cfg, 1)
    base = proj(vision, feats).slots[VIDEO_SLOT].tokens
    bumped = vision.clone()
    bumped[0, 1 + 5] += 1.0  # patch 5 belongs to LLM token 5 // 4 = 1
    changed = (proj(bumped, feats).slots[VIDEO_SLOT].tokens - base).abs().amax(-1)[0] > 0
    assert changed.tolist() == [i == 1 for i in range(cfg.num_video_tokens)]


def test_v1_missing_modalities_are_masked_and_zeroed() -> None:
    proj, cfg = _v1()
    vision, feats = _v1_inputs(cfg)
    full = proj(vision, feats)
    no_audio = proj(vision, {k: v for k, v in feats.items() if k != "audio"})
    fm = no_audio.slots[FEATURE_SLOT]
    assert fm.mask.tolist() == [[True, True, False, True]] * 2
    assert torch.equal(fm.tokens[:, 2], torch.zeros_like(fm.tokens[:, 2]))
    keep = [0, 1, 3]
    assert torch.equal(fm.tokens[:, keep], full.slots[FEATURE_SLOT].tokens[:, keep])
    # an all-zero feature (a missing modality in a feature cache) is masked too
    zeroed = proj(vision, {**feats, "face": torch.zeros_like(feats["face"])})
    assert zeroed.slots[FEATURE_SLOT].mask[:, 0].tolist() == [False, False]
    # per-sample presence
    per = proj(vision, feats, present={"video": torch.tensor([True, False])})
    assert per.slots[FEATURE_SLOT].mask[:, 1].tolist() == [True, False]
    # no frame: patch tokens and CLS masked
    no_vis = proj(None, feats)
    assert not no_vis.slots[VIDEO_SLOT].mask.any()
    assert no_vis.slots[FEATURE_SLOT].mask[:, 3].tolist() == [False, False]
    assert torch.equal(no_vis.slots[FEATURE_SLOT].tokens[:, :3], full.slots[FEATURE_SLOT].tokens[:, :3])


def test_v1_rejects_bad_shapes() -> None:
    proj, cfg = _v1()
    vision, feats = _v1_inputs(cfg)
    with pytest.raises(ValueError):
        proj(vision[:, :-1], feats)
    with pytest.raises(ValueError):
        proj(vision, {"face": torch.randn(2, cfg.feature_dims[0] + 1)})
    with pytest.raises(ValueError):
        proj(vision, {"text": torch.randn(2, 4)})
    with pytest.raises(ConfigError):
        EmotionLlamaProjectorConfig(num_patches=10, group=4)


def test_v1_default_shapes_are_emotion_llamas() -> None:
    cfg = EmotionLlamaProjectorConfig()
    with torch.device("meta"):
        proj = EmotionLlamaProjector(cfg)
    assert proj.llama_proj.weight.shape == (4096, 5632)
    assert proj.cls_tk_llama_proj.weight.shape == (4096, 1408)
    assert all(getattr(proj, f"feats_llama_proj{i}").weight.shape == (4096, 1024) for i in (1, 2, 3))
    assert cfg.num_video_tokens + 4 == 260


# -- v2 ------------------------------------------------------------------------


def _v2(cfg: ConvAttentionFusionConfig | None = None) -> ConvAttentionFusion:
    torch.manual_seed(0)
    fusion = ConvAttentionFusion(cfg or ConvAttentionFusionConfig.tiny()).eval()
    with torch.no_grad():
        fusion.modality_bias.copy_(torch.randn(len(fusion.config.modalities), generator=G))
    return fusion


def _v2_inputs(cfg: ConvAttentionFusionConfig, b: int = 2) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    lengths = {"global": 17, "face": 3, "temporal": 8, "audio": 11}
    out = {}
    for name, dim in cfg.modalities:
        n = lengths[name]
        mask = torch.ones(b, n, dtype=torch.bool)
        out[name] = (torch.randn(b, n, dim, generator=G), mask)
    out["audio"][1][1, 7:] = False  # a padded audio row
    return out


def test_v2_shapes_and_attention_weights() -> None:
    fusion = _v2()
    cfg = fusion.config
    inputs = _v2_inputs(cfg)
    out = fusion(inputs)
    slot = out.slots[VIDEO_SLOT]
    assert slot.tokens.shape == (2, cfg.num_tokens, cfg.llm_width)
    assert slot.mask.all()
    assert out.attention is not None and out.attention.shape == (2, cfg.num_tokens, len(cfg.modalities))
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, cfg.num_tokens))
    no_face = fusion({k: v for k, v in inputs.items() if k != "face"})
    assert torch.equal(no_face.attention[..., cfg.names.index("face")], torch.zeros(2, cfg.num_tokens))


@pytest.mark.parametrize("absent", ["audio", "face", "global"])
def test_v2_absent_modality_equals_removed_modality_exactly(absent: str) -> None:
    fusion = _v2()
    cfg = fusion.config
    inputs = _v2_inputs(cfg)
    removed = {k: v for k, v in inputs.items() if k != absent}
    ref = fusion(removed).slots[VIDEO_SLOT].tokens
    b = inputs[absent][0].shape[0]
    masked = fusion(inputs, present={absent: torch.zeros(b, dtype=torch.bool)}).slots[VIDEO_SLOT].tokens
    zeroed = fusion({**inputs, absent: (torch.zeros_like(inputs[absent][0]), inputs[absent][1])}).slots[VIDEO_SLOT].tokens
    no_tokens = fusion({**inputs, absent: (inputs[absent][0], torch.zeros_like(inputs[absent][1]))}).slots[VIDEO_SLOT].tokens
    assert torch.equal(masked, ref)
    assert torch.equal(zeroed, ref)
    assert torch.equal(no_tokens, ref)
    # A fusion built without that modality, sharing the other weights, agrees exactly too.
    small_cfg = ConvAttentionFusionConfig(**{**cfg.__dict__, "modalities": tuple(m for m in cfg.modalities if m[0] != absent)})
    small = ConvAttentionFusion(small_cfg).eval()
    sd = {k: v for k, v in fusion.state_dict().items() if not k.startswith(f"prep.{absent}.") and k != "modality_bias"}
    sd["modality_bias"] = fusion.modality_bias.detach()[[i for i, n in enumerate(cfg.names) if n != absent]]
    small.load_state_dict(sd, strict=True)
    # (separate weight copies: equal up to BLAS rounding, which can depend on memory alignment)
    torch.testing.assert_close(small(removed).slots[VIDEO_SLOT].tokens, ref, rtol=1e-6, atol=1e-6)
    # ...and the modality does matter when present (the test could fail).
    assert not torch.allclose(fusion(inputs).slots[VIDEO_SLOT].tokens, ref)


def test_v2_per_sample_absence_matches_single_sample_run() -> None:
    fusion = _v2()
    inputs = _v2_inputs(fusion.config)
    out = fusion(inputs, present={"audio": torch.tensor([True, False])}).slots[VIDEO_SLOT].tokens
    row1 = {k: (t[1:], m[1:]) for k, (t, m) in inputs.items() if k != "audio"}
    torch.testing.assert_close(out[1:], fusion(row1).slots[VIDEO_SLOT].tokens)
    row0 = {k: (t[:1], m[:1]) for k, (t, m) in inputs.items()}
    torch.testing.assert_close(out[:1], fusion(row0).slots[VIDEO_SLOT].tokens)


def test_v2_padding_tokens_do_not_change_output() -> None:
    fusion = _v2()
    inputs = _v2_inputs(fusion.config)
    t, m = inputs["audio"]
    padded_t = torch.cat([t, 100 * torch.randn(2, 5, t.shape[-1], generator=G)], dim=1)
    padded_m = torch.cat([m, torch.zeros(2, 5, dtype=torch.bool)], dim=1)
    a = fusion(inputs).slots[VIDEO_SLOT].tokens
    b = fusion({**inputs, "audio": (padded_t, padded_m)}).slots[VIDEO_SLOT].tokens
    torch.testing.assert_close(a, b)


def test_v2_no_modality_gives_masked_output() -> None:
    fusion = _v2()
    out = fusion({}, present={"audio": torch.zeros(3, dtype=torch.bool)})
    slot = out.slots[VIDEO_SLOT]
    assert slot.tokens.shape[0] == 3 and not slot.mask.any()
    assert torch.equal(slot.tokens, torch.zeros_like(slot.tokens)) and torch.isfinite(out.attention).all()


def test_segment_mean_spreads_valid_tokens() -> None:
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1)
    mask = torch.tensor([[True, True, True, True, False, False]])
    out, ok = segment_mean(x, mask, 2)
    assert out.flatten().tolist() == [0.5, 2.5] and ok.all()
    out, ok = segment_mean(x[:, :2], mask[:, :2], 4)  # fewer tokens than outputs: repeat
    assert out.flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
    out, ok = segment_mean(x, torch.zeros_like(mask), 2)
    assert not ok.any()


def test_v2_config_validation() -> None:
    with pytest.raises(ConfigError):
        ConvAttentionFusionConfig(modalities=(("a", 4), ("a", 4)))
    with pytest.raises(ConfigError):
        ConvAttentionFusionConfig(kernel_size=2)
    fusion = _v2()
    with pytest.raises(ValueError):
        fusion({"speech": torch.randn(1, 2, 3)})
    with pytest.raises(ValueError):
        fusion({"audio": torch.randn(1, 2, 3)})
