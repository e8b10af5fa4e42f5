"""Our encoders against tiny copies of the original definitions (tests/model/reference_vits.py), random weights.

Per view: the original checkpoint layout converts (with its progress line and
one-line errors for anything else), the network matches the original's forward
at the issue's tolerances, and the default preprocessing (frame choice, crops,
resize, normalisation, sampling, pooling) is the original's, checked end to end
against the original's pipeline restated with PIL (what torchvision's
``Resize`` runs on PIL images) and the original feature definition.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.model.emotion_llama import EmotionLlama, EmotionLlamaConfig
from emo_stream.model.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AudioEncoder,
    AudioEncoderConfig,
    FaceViewConfig,
    FaceViewEncoder,
    GlobalViewConfig,
    GlobalViewEncoder,
    TemporalViewConfig,
    TemporalViewEncoder,
    segment_frame_indices,
)
from emo_stream.model.llm import build_word_tokenizer
from tests.model.reference_vits import RefEVAViT, RefMAEViT, RefVideoMAE, randomize

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The issue's tolerances (max abs difference of the network outputs).
GLOBAL_TOL, FACE_TOL, TEMPORAL_TOL = 1.5e-6, 7e-7, 7e-7


def _crops(n: int, size: int = 40, seed: int = 0) -> list[np.ndarray]:
    """Smooth BGR face-crop stand-ins (gradients + noise), so resizing behaves like it does on photos."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        base = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], axis=-1) * 0.4 + 0.5
        img = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        out.append((img * 255).astype(np.uint8))
    return out


def _original_pixels(bgr: np.ndarray, size: int) -> torch.Tensor:
    """MER2023's transform: RGB PIL image -> Resize((size, size)) (bilinear) -> ToTensor (pixels in [0, 1], no mean/std)."""
    img = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def _save(tmp_path, name: str, sd: dict[str, torch.Tensor]) -> str:
    path = tmp_path / name
    torch.save({"model": sd, "epoch": 340}, path)  # the training loop's layout
    return str(path)


# -- face view: MAE ViT ----------------------------------------------------------------


def _face_cfg(**kw) -> FaceViewConfig:
    bb = {**FaceViewConfig.tiny().backbone, "num_hidden_layers": 2}
    return FaceViewConfig(backbone=bb, **kw)


def _mae_ref(cfg: FaceViewConfig) -> RefMAEViT:
    b = cfg.backbone
    return randomize(
        RefMAEViT(b["hidden_size"], b["num_hidden_layers"], b["num_attention_heads"], b["intermediate_size"], b["image_size"], b["patch_size"]), seed=3
    )


def test_face_mae_checkpoint_converts_and_matches_the_original(tmp_path, capsys) -> None:
    cfg = _face_cfg()
    ref = _mae_ref(cfg)
    sd = dict(ref.state_dict())
    d = cfg.hidden_size
    sd.update(
        {"mask_token": torch.zeros(1, 1, d), "decoder_embed.weight": torch.zeros(d, d), "decoder_pred.bias": torch.zeros(8), "fc_norm.weight": torch.ones(d)}
    )  # pre-training extras the original load skips
    enc = FaceViewEncoder.from_mae_checkpoint(_save(tmp_path, "mae_checkpoint-340.pth", sd), cfg)
    err = capsys.readouterr().err
    assert err.startswith("emo-stream: face view (MAE ViT): converted ") and "MAE decoder tensors" in err and err.count("\n") == 1
    x = torch.rand(3, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        diff = (enc.frame_features(x) - ref.forward_features(x)).abs().max().item()
    assert diff <= FACE_TOL

    # End to end: the original's crops -> Resize + ToTensor -> CLS per frame -> mean over frames.
    crops = _crops(4)
    with torch.no_grad():
        ours = enc(enc.preprocess(crops).unsqueeze(0)).pooled[0]
        theirs = ref.forward_features(torch.stack([_original_pixels(c, cfg.image_size) for c in crops])).mean(0)
        old = FaceViewEncoder(_face_cfg(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, pooling="mean_patches"))
        old.backbone.load_state_dict(enc.backbone.state_dict())
        before = old(old.preprocess(crops).unsqueeze(0)).pooled[0]
    assert _cos(ours, theirs) > 0.9999
    assert _cos(before, theirs) < _cos(ours, theirs) - 1e-3  # ImageNet mean/std + patch mean is measurably off


def test_face_checkpoint_errors_are_one_line(tmp_path) -> None:
    cfg = _face_cfg()
    sd = dict(_mae_ref(cfg).state_dict())
    del sd["norm.weight"], sd["blocks.1.mlp.fc1.weight"]
    with pytest.raises(ModelFileError, match=r"MAE checkpoint lacks 2 tensor\(s\): norm\.weight, blocks\.1\.mlp\.fc1\.weight"):
        FaceViewEncoder.from_mae_checkpoint(sd, cfg)
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(ModelFileError, match="not a state dict of tensors") as info:
        FaceViewEncoder.from_mae_checkpoint(tmp_path / "list.pth", cfg)
    assert "\n" not in str(info.value)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="cannot be read as plain tensors"):
        FaceViewEncoder.from_mae_checkpoint(tmp_path / "junk.pth", cfg)
    with pytest.raises(ModelFileError, match="not found.*mae_checkpoint-340"):
        FaceViewEncoder.from_mae_checkpoint(tmp_path / "absent.pth", cfg)
    with pytest.raises(ConfigError, match="pooling"):
        _face_cfg(pooling="max")


# -- temporal view: VideoMAE -------------------------------------------------------------


def _temporal_cfg(**kw) -> TemporalViewConfig:
    bb = {**TemporalViewConfig.tiny().backbone, "num_hidden_layers": 2}
    return TemporalViewConfig(backbone=bb, **kw)


def _videomae_ref(cfg: TemporalViewConfig) -> RefVideoMAE:
    b = cfg.backbone
    return randomize(
        RefVideoMAE(
            b["hidden_size"],
            b["num_hidden_layers"],
            b["num_attention_heads"],
            b["intermediate_size"],
            b["image_size"],
            b["patch_size"],
            b["num_frames"],
            b["tubelet_size"],
        ),
        seed=5,
    )


def _original_segments(n: int, num_segments: int = 8, duration: int = 2) -> list[int]:
    """The VideoMAE dataset's test-mode indices, restated from its description (mid-segment starts, consecutive frames)."""
    if n > num_segments + duration - 1:
        tick = (n - duration + 1) / float(num_segments)
        offsets = [int(tick / 2.0 + tick * x) for x in range(num_segments)]
    else:
        offsets = [0] * num_segments
    out = []
    for p in offsets:
        for _ in range(duration):
            out.append(p)
            if p < n - 1:
                p += 1
    return out


@pytest.mark.parametrize("n", [1, 2, 9, 10, 16, 37, 120])
def test_temporal_sampling_is_the_originals(n: int) -> None:
    assert segment_frame_indices(n, 8, 2) == _original_segments(n)
    assert TemporalViewConfig().frame_indices(n) == _original_segments(n)


def test_videomae_checkpoint_converts_and_matches_the_original(tmp_path, capsys) -> None:
    cfg = _temporal_cfg()
    assert cfg.backbone["layer_norm_eps"] == 1e-6 and TemporalViewConfig().backbone["layer_norm_eps"] == 1e-6
    ref = _videomae_ref(cfg)
    d = cfg.hidden_size
    sd = {f"encoder.{k}": v for k, v in ref.state_dict().items()}  # the pre-training checkpoint's prefix
    sd.update(
        {
            "encoder.norm.weight": torch.ones(d),
            "decoder.blocks.0.norm1.weight": torch.ones(d),
            "encoder_to_decoder.weight": torch.zeros(d, d),
            "mask_token": torch.zeros(1, 1, d),
        }
    )
    enc = TemporalViewEncoder.from_videomae_checkpoint(_save(tmp_path, "maeV_399.pth", sd), cfg)
    err = capsys.readouterr().err
    assert err.startswith("emo-stream: temporal view (VideoMAE): converted ") and "VideoMAE decoder tensors" in err
    x = torch.rand(2, cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        diff = (enc(x).pooled - ref(x.permute(0, 2, 1, 3, 4))).abs().max().item()
    assert diff <= TEMPORAL_TOL

    crops = _crops(11, seed=1)
    with torch.no_grad():
        ours = enc(enc.preprocess(crops).unsqueeze(0)).pooled[0]
        idx = _original_segments(len(crops), cfg.num_frames // 2, 2)
        clip = torch.stack([_original_pixels(crops[i], cfg.image_size) for i in idx], dim=1).unsqueeze(0)  # (1, C, T, H, W)
        theirs = ref(clip)[0]
    assert _cos(ours, theirs) > 0.9999


def test_videomae_checkpoint_errors(tmp_path) -> None:
    cfg = _temporal_cfg()
    sd = dict(_videomae_ref(cfg).state_dict())
    del sd["blocks.0.attn.qkv.weight"]
    with pytest.raises(ModelFileError, match=r"VideoMAE checkpoint lacks 1 tensor\(s\): blocks\.0\.attn\.qkv\.weight"):
        TemporalViewEncoder.from_videomae_checkpoint(sd, cfg)
    with pytest.raises(ConfigError, match="segment_length"):
        _temporal_cfg(segment_length=3)
    with pytest.raises(ConfigError, match="crop"):
        _temporal_cfg(crop="body")


# -- global view: EVA ViT -----------------------------------------------------------------


def test_eva_checkpoint_with_rel_pos_bias_keys_matches_the_original(capsys) -> None:
    cfg = GlobalViewConfig.tiny()
    b = cfg.backbone
    ref = randomize(
        RefEVAViT(b["hidden_size"], b["num_hidden_layers"], b["num_attention_heads"], b["intermediate_size"], b["image_size"], b["patch_size"]),
        seed=7,
        scale=0.1,
    )
    sd = dict(ref.state_dict())
    d = cfg.hidden_size
    sd.update(
        {
            "rel_pos_bias.relative_position_bias_table": torch.zeros(9, 2),
            "rel_pos_bias.relative_position_index": torch.zeros(5, 5),
            "blocks.0.attn.relative_position_bias_table": torch.zeros(9, 2),
            "norm.weight": torch.ones(d),
            f"blocks.{b['num_hidden_layers']}.norm1.weight": torch.ones(d),
        }
    )  # a 40th block, as eva_vit_g.pth has
    enc = GlobalViewEncoder.from_eva_checkpoint(sd, cfg)
    err = capsys.readouterr().err
    assert "relative-position-bias tensors" in err and "blocks beyond the 2" in err
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        diff = (enc(x).tokens - ref(x)).abs().max().item()
    assert diff <= GLOBAL_TOL


def test_global_view_takes_the_first_frame_by_default() -> None:
    torch.manual_seed(0)
    model = EmotionLlama(EmotionLlamaConfig.tiny(), tokenizer=build_word_tokenizer()).eval()
    frames = _crops(5, size=48, seed=2)
    g = model.encoder("global")
    assert g.config.frame == "first"
    inp = model.preprocess(frames)
    assert torch.equal(inp.global_pixels, g.preprocess([frames[0]]))
    middle = GlobalViewConfig(backbone=g.config.backbone, frame="middle")
    assert middle.frame_index(5) == 2 and GlobalViewConfig().frame_index(5) == 0
    with pytest.raises(ConfigError):
        GlobalViewConfig(frame="last")


def test_temporal_view_uses_face_crops_by_default() -> None:
    from emo_stream.model.encoders import TemporalViewConfig

    assert TemporalViewConfig().crop == "face"  # the original's default (tiny reads whole frames: no detector in tests)
    torch.manual_seed(0)
    tiny = EmotionLlamaConfig.tiny()
    tiny = dataclasses.replace(tiny, temporal_view=dataclasses.replace(tiny.temporal_view, crop="face"))
    model = EmotionLlama(tiny, tokenizer=build_word_tokenizer()).eval()
    frames = _crops(6, size=64, seed=3)
    crops = _crops(6, size=24, seed=4)
    t = model.encoder("temporal")
    inp = model.preprocess(frames, face_images=crops)
    assert torch.equal(inp.temporal_pixels[0], t.preprocess(crops))
    assert model.preprocess(frames, face_images=[]).temporal_pixels is None  # no face: no temporal view (flagged absent)
    boxes = [(8, 8, 40, 40), None, (10, 10, 42, 42), None, None, (0, 0, 32, 32)]
    inp = model.preprocess(frames, face_boxes=boxes)
    kept = [i for i, bx in enumerate(boxes) if bx is not None]
    assert torch.equal(inp.temporal_pixels[0], t.preprocess([frames[i] for i in kept], [boxes[i] for i in kept]))
    cfg = dataclasses.replace(EmotionLlamaConfig.tiny(), temporal_view=dataclasses.replace(t.config, crop="frame"))
    whole = EmotionLlama(cfg, tokenizer=build_word_tokenizer()).eval()
    assert torch.equal(whole.preprocess(frames, face_images=crops).temporal_pixels[0], whole.encoder("temporal").preprocess(frames))


# -- audio: HuBERT layer numbering ----------------------------------------------------------


def test_hubert_layer_numbering_is_version_independent() -> None:
    torch.manual_seed(0)
    base = AudioEncoderConfig.tiny()
    bb = {**base.backbone, "num_hidden_layers": 2}
    wave = [np.sin(np.linspace(0, 300, 4000)).astype(np.float32)]
    encs = {layer: AudioEncoder(AudioEncoderConfig(backbone=bb, layer=layer)).eval() for layer in (-1, 2, 1, 0)}
    for e in encs.values():
        e.backbone.load_state_dict(encs[-1].backbone.state_dict())
    x = encs[-1].preprocess(wave)
    with torch.no_grad():
        out = {k: e(x).tokens for k, e in encs.items()}
        raw = encs[-1].backbone(input_values=x["input_values"], output_hidden_states=True)
    # -1 and num_hidden_layers are the same state: after the final LayerNorm (transformers 4.16's hidden_states[-1]).
    assert torch.equal(out[-1], out[2]) and torch.equal(out[2], raw.last_hidden_state)
    # transformers 5 reports hidden_states[-1] before that norm (4.x after it): either way we give the normed state.
    ln = encs[-1].backbone.encoder.layer_norm
    last = raw.hidden_states[-1]
    assert torch.equal(last, out[2]) or torch.equal(ln(last), out[2])
    assert torch.equal(out[1], raw.hidden_states[1]) and torch.equal(out[0], raw.hidden_states[0])
    assert not torch.allclose(out[1], out[2])
    with pytest.raises(ConfigError):
        AudioEncoderConfig(backbone=bb, layer=3)
