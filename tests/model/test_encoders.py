"""Encoders: preprocessing, shapes, masks/pooling, local loading and the EVA converter (tiny random configs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.model.encoders import (
    AudioEncoder,
    AudioEncoderConfig,
    FaceViewConfig,
    FaceViewEncoder,
    GlobalViewConfig,
    GlobalViewEncoder,
    TemporalViewConfig,
    TemporalViewEncoder,
    center_square_box,
    convert_eva_vit_state_dict,
    images_to_tensor,
    masked_mean,
    resample_frame_indices,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _frames(rng: np.random.Generator, n: int, h: int = 40, w: int = 56) -> list[np.ndarray]:
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# -- preprocessing -------------------------------------------------------------


def test_images_to_tensor_converts_bgr_to_normalised_rgb() -> None:
    img = np.zeros((10, 12, 3), dtype=np.uint8)
    img[..., 0] = 255  # pure blue in BGR
    x = images_to_tensor([img], 8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert x.shape == (1, 3, 8, 8)
    assert torch.allclose(x[0, 2], torch.ones(8, 8), atol=1e-5)  # blue is the last RGB channel
    assert torch.allclose(x[0, :2], torch.zeros(2, 8, 8), atol=1e-5)
    mean, std = (0.5, 0.25, 0.75), (0.5, 0.25, 0.125)
    grey = np.full((8, 8, 3), 128, dtype=np.uint8)
    y = images_to_tensor([grey], 8, mean, std)
    for c in range(3):
        assert torch.allclose(y[0, c], torch.full((8, 8), (128 / 255 - mean[c]) / std[c]), atol=1e-5)


def test_images_to_tensor_crops_to_box() -> None:
    img = np.zeros((20, 20, 3), dtype=np.uint8)
    img[5:10, 5:10] = 200
    x = images_to_tensor([img], 5, (0, 0, 0), (1, 1, 1), boxes=[(5, 5, 10, 10)])
    assert torch.allclose(x, torch.full_like(x, 200 / 255), atol=1e-5)
    with pytest.raises(ValueError):
        images_to_tensor([img], 5, (0, 0, 0), (1, 1, 1), boxes=[(30, 30, 40, 40)])


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_images_to_tensor_rejects_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        images_to_tensor([bad], 8, (0, 0, 0), (1, 1, 1))


def test_center_square_box() -> None:
    x0, y0, x1, y1 = center_square_box(100, 200, 0.5)
    assert (x1 - x0, y1 - y0) == (50, 50)
    assert (x0 + x1) / 2 == pytest.approx(100, abs=1) and (y0 + y1) / 2 == pytest.approx(50, abs=1)
    with pytest.raises(ConfigError):
        center_square_box(10, 10, 0.0)


def test_resample_frame_indices() -> None:
    assert resample_frame_indices(8, 4) == [1, 3, 5, 7]
    assert resample_frame_indices(2, 4) == [0, 0, 1, 1]
    assert all(0 <= i < 3 for i in resample_frame_indices(3, 16))


def test_masked_mean_ignores_masked_tokens() -> None:
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    m = masked_mean(x, mask)
    assert torch.allclose(m[0], x[0, :2].mean(0))
    assert torch.equal(m[1], torch.zeros(3))


# -- visual encoders -------------------------------------------------------------


def test_global_view_tokens_and_pooling(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    cfg = GlobalViewConfig.tiny()
    enc = GlobalViewEncoder(cfg).eval()
    x = enc.preprocess(_frames(rng, 2))
    assert x.shape == (2, 3, cfg.image_size, cfg.image_size)
    out = enc(x)
    assert out.tokens.shape == (2, 1 + cfg.num_patches, cfg.hidden_size)
    assert out.mask.all()
    assert torch.allclose(out.pooled, out.tokens[:, 1:].mean(1))
    # EVA style: no final LayerNorm (MiniGPT-v2's ln_vision normalises later), so tokens are not unit-normalised.
    assert isinstance(enc.backbone.layernorm, torch.nn.Identity)
    normed = GlobalViewEncoder(GlobalViewConfig(backbone=cfg.backbone, final_norm=True)).eval()
    normed.load_state_dict(enc.state_dict(), strict=False)
    assert not torch.allclose(normed(x).tokens, out.tokens)


def test_face_view_is_deterministic_and_masks_frames(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    enc = FaceViewEncoder(FaceViewConfig.tiny()).eval()
    x = enc.preprocess(_frames(rng, 3)).unsqueeze(0)
    a, b = enc(x), enc(x)
    assert a.tokens.shape == (1, 3, enc.config.hidden_size)
    assert torch.equal(a.tokens, b.tokens)  # MAE's random masking is off
    masked = enc(x, frame_mask=torch.tensor([[True, True, False]]))
    assert torch.allclose(masked.pooled, enc(x[:, :2]).pooled, atol=1e-6)
    assert not torch.allclose(masked.pooled, a.pooled)
    with pytest.raises(ConfigError):
        FaceViewConfig(backbone={**FaceViewConfig.tiny().backbone, "mask_ratio": 0.75})


def test_temporal_view_resamples_frames(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    cfg = TemporalViewConfig.tiny()
    enc = TemporalViewEncoder(cfg).eval()
    clip = enc.preprocess(_frames(rng, 3))
    assert clip.shape == (cfg.num_frames, 3, cfg.image_size, cfg.image_size)
    out = enc(clip.unsqueeze(0))
    per_tubelet = (cfg.image_size // cfg.backbone["patch_size"]) ** 2
    assert out.tokens.shape == (1, cfg.num_frames // cfg.backbone["tubelet_size"] * per_tubelet, cfg.hidden_size)
    assert torch.allclose(out.pooled, out.tokens.mean(1))
    with pytest.raises(ValueError):
        enc(clip[:2].unsqueeze(0))


# -- audio encoders --------------------------------------------------------------


def test_hubert_batch_rows_equal_single_runs(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    enc = AudioEncoder(AudioEncoderConfig.tiny("hubert")).eval()
    waves = [rng.standard_normal(4000).astype(np.float32) * 0.1, rng.standard_normal(1500).astype(np.float32)]
    both = enc(enc.preprocess(waves))
    assert both.tokens.shape[0] == 2
    expected_frames = enc.frame_lengths(torch.tensor([4000, 1500]))
    assert torch.equal(both.mask.sum(1), expected_frames)
    for i, w in enumerate(waves):
        alone = enc(enc.preprocess([w]))
        assert torch.allclose(both.pooled[i], alone.pooled[0], atol=1e-5)
    # normalisation: scaling the input does not change HuBERT-large-style features
    scaled = enc(enc.preprocess([waves[0] * 7.0]))
    assert torch.allclose(scaled.pooled[0], both.pooled[0], atol=1e-4)


def test_hubert_pads_very_short_input() -> None:
    enc = AudioEncoder(AudioEncoderConfig.tiny("hubert")).eval()
    out = enc(enc.preprocess([np.ones(10, np.float32)]))
    assert out.mask.sum() >= 1 and torch.isfinite(out.pooled).all()


def test_whisper_log_mel_and_valid_frames(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    cfg = AudioEncoderConfig.tiny("whisper")
    enc = AudioEncoder(cfg).eval()
    n = 8000  # half of the 1 s tiny chunk
    inp = enc.preprocess([rng.standard_normal(n).astype(np.float32) * 0.1])
    assert inp["input_features"].shape == (1, cfg.backbone["num_mel_bins"], 2 * cfg.backbone["max_source_positions"])
    out = enc(inp)
    assert out.tokens.shape == (1, cfg.backbone["max_source_positions"], cfg.hidden_size)
    assert int(out.mask.sum()) == math.ceil(n / 320)
    assert torch.allclose(out.pooled, masked_mean(out.tokens, out.mask))
    assert not torch.allclose(out.pooled, out.tokens.mean(1))  # padding frames are excluded


def test_audio_config_validation() -> None:
    with pytest.raises(ConfigError):
        AudioEncoderConfig(kind="wav2vec")
    with pytest.raises(ConfigError):
        AudioEncoderConfig(sample_rate=8000)
    assert AudioEncoderConfig.whisper_large_v3().hidden_size == 1280
    assert AudioEncoderConfig.hubert_large().hidden_size == 1024


# -- local directories -----------------------------------------------------------


def test_from_pretrained_dirs_round_trip(tmp_path, rng: np.random.Generator) -> None:
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    frames = _frames(rng, 4)
    from transformers import ViTConfig, ViTModel

    vit = ViTModel(ViTConfig(**GlobalViewConfig.tiny().backbone), add_pooling_layer=False).eval()
    vit.save_pretrained(tmp_path / "vit")
    g2 = GlobalViewEncoder.from_pretrained_dir(tmp_path / "vit")
    x = g2.preprocess(frames[:1])
    # EVA-style: the last block's output, before the ViT's final LayerNorm
    assert torch.equal(g2(x).tokens, vit(pixel_values=x, output_hidden_states=True).hidden_states[-1])
    assert torch.equal(GlobalViewEncoder.from_pretrained_dir(tmp_path / "vit", final_norm=True)(x).tokens, vit(pixel_values=x).last_hidden_state)

    f = FaceViewEncoder(FaceViewConfig.tiny()).eval()
    f.backbone.save_pretrained(tmp_path / "mae")
    f2 = FaceViewEncoder.from_pretrained_dir(tmp_path / "mae")
    x = f.preprocess(frames).unsqueeze(0)
    assert torch.equal(f(x).pooled, f2(x).pooled)

    t = TemporalViewEncoder(TemporalViewConfig.tiny()).eval()
    t.backbone.save_pretrained(tmp_path / "videomae")
    t2 = TemporalViewEncoder.from_pretrained_dir(tmp_path / "videomae")
    clip = t.preprocess(frames).unsqueeze(0)
    assert torch.equal(t(clip).pooled, t2(clip).pooled)

    wave = [rng.standard_normal(3000).astype(np.float32)]
    h = AudioEncoder(AudioEncoderConfig.tiny("hubert")).eval()
    h.backbone.save_pretrained(tmp_path / "hubert")
    h2 = AudioEncoder.from_pretrained_dir(tmp_path / "hubert")
    assert h2.config.kind == "hubert"
    assert torch.allclose(h(h.preprocess(wave)).pooled, h2(h2.preprocess(wave)).pooled)

    wcfg = AudioEncoderConfig.tiny("whisper")
    full = WhisperModel(WhisperConfig(**wcfg.backbone)).eval()
    full.save_pretrained(tmp_path / "whisper")
    w2 = AudioEncoder.from_pretrained_dir(tmp_path / "whisper")
    assert w2.config.kind == "whisper"
    inp = w2.preprocess(wave)
    ref = full.encoder(inp["input_features"]).last_hidden_state
    assert torch.equal(w2(inp).tokens[0, : int(w2(inp).mask.sum())], ref[0, : int(w2(inp).mask.sum())])


def test_missing_dir_names_what_is_missing(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        AudioEncoder.from_pretrained_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match=r"config\.json.*weights.*huggingface-cli download"):
        FaceViewEncoder.from_pretrained_dir(tmp_path / "empty")


# -- EVA converter ---------------------------------------------------------------


def _eva_reference(sd: dict[str, torch.Tensor], x: torch.Tensor, depth: int, heads: int, patch: int) -> torch.Tensor:
    """EVA ViT forward as MiniGPT-v2's eva_vit.py computes it (no final norm)."""
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), t], dim=1) + sd["pos_embed"]
    d = t.shape[-1]
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(d), sd[p + "attn.v_bias"]])
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], bias).reshape(x.shape[0], -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (d // heads) ** -0.5, qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)).softmax(-1)
        o = (a @ v).transpose(1, 2).reshape(x.shape[0], -1, d)
        t = t + sd[p + "gamma_1"] * F.linear(o, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(t, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
        m = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        t = t + sd[p + "gamma_2"] * m
    return t


def _eva_state_dict(cfg: GlobalViewConfig, depth: int, grid: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    d, ff, p = cfg.hidden_size, cfg.backbone["intermediate_size"], cfg.backbone["patch_size"]

    def r(*shape: int, s: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * s

    sd = {
        "cls_token": r(1, 1, d),
        "pos_embed": r(1, 1 + grid * grid, d),
        "patch_embed.proj.weight": r(d, 3, p, p),
        "patch_embed.proj.bias": r(d),
        "norm.weight": r(d),
        "norm.bias": r(d),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": 1 + r(d),
                b + "norm1.bias": r(d),
                b + "attn.qkv.weight": r(3 * d, d),
                b + "attn.q_bias": r(d),
                b + "attn.v_bias": r(d),
                b + "attn.proj.weight": r(d, d),
                b + "attn.proj.bias": r(d),
                b + "norm2.weight": 1 + r(d),
                b + "norm2.bias": r(d),
                b + "mlp.fc1.weight": r(ff, d),
                b + "mlp.fc1.bias": r(ff),
                b + "mlp.fc2.weight": r(d, ff),
                b + "mlp.fc2.bias": r(d),
                b + "gamma_1": 1 + r(d),
                b + "gamma_2": 1 + r(d),
            }
        )
    return sd


def test_eva_checkpoint_converts_to_identical_features() -> None:
    cfg = GlobalViewConfig.tiny()
    depth = cfg.backbone["num_hidden_layers"]
    grid = cfg.image_size // cfg.backbone["patch_size"]
    sd = _eva_state_dict(cfg, depth + 1, grid)  # one extra block: dropped, as EVA-g's 40th
    enc = GlobalViewEncoder.from_eva_checkpoint(sd, cfg)
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(2))
    ref = _eva_reference(sd, x, depth, cfg.backbone["num_attention_heads"], cfg.backbone["patch_size"])
    torch.testing.assert_close(enc(x).tokens, ref, rtol=1e-4, atol=1e-4)


def test_eva_position_embeddings_are_resized() -> None:
    cfg = GlobalViewConfig.tiny()
    depth = cfg.backbone["num_hidden_layers"]
    sd = _eva_state_dict(cfg, depth, grid=2)  # a 2x2 grid (as 224 px weights run at 448 px)
    enc = GlobalViewEncoder.from_eva_checkpoint(sd, cfg)
    pos = enc.backbone.embeddings.position_embeddings
    assert pos.shape == (1, 1 + cfg.num_patches, cfg.hidden_size)
    assert torch.equal(pos[:, 0], sd["pos_embed"][:, 0])  # the CLS position is not interpolated


def test_eva_checkpoint_missing_tensors_are_listed() -> None:
    cfg = GlobalViewConfig.tiny()
    sd = _eva_state_dict(cfg, cfg.backbone["num_hidden_layers"], 4)
    del sd["blocks.1.mlp.fc1.weight"], sd["cls_token"]
    with pytest.raises(ModelFileError, match=r"cls_token.*blocks\.1\.mlp\.fc1\.weight"):
        convert_eva_vit_state_dict(sd, cfg, GlobalViewEncoder(cfg).backbone.state_dict().keys())


def test_fast_videomae_table_equals_transformers() -> None:
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    from emo_stream.model.encoders import sinusoid_table

    assert torch.equal(sinusoid_table(37, 24), get_sinusoid_encoding_table(37, 24))
    enc = TemporalViewEncoder(TemporalViewConfig.tiny())
    n = enc.backbone.embeddings.num_patches
    assert torch.equal(enc.backbone.embeddings.position_embeddings, get_sinusoid_encoding_table(n, enc.config.hidden_size))
