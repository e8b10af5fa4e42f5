"""Importing Emotion-LLaMA's checkpoint layout (synthetic tensors, real key names, tiny shapes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from emo_stream.errors import ModelFileError
from emo_stream.model.checkpoint_import import import_emotion_llama, map_checkpoint, read_checkpoint
from emo_stream.model.emotion_llama import EmotionLlama, EmotionLlamaConfig
from emo_stream.model.encoders import AudioEncoder, AudioEncoderConfig
from emo_stream.model.llm import LlamaLMConfig, build_word_tokenizer
from emo_stream.model.prompts import FEATURE_SLOT, VIDEO_SLOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = EmotionLlamaConfig.tiny("v1")
D = BASE.llm.hidden_size
VW = BASE.projector.vision_width
FD = BASE.projector.feature_dims
LAYERS = BASE.llm.llama["num_hidden_layers"]
R, ALPHA = 8, 32  # differ from the tiny defaults, so the importer must read them from the checkpoint
LORA = "llama_model.base_model.model.model.layers.{i}.self_attn.{m}.lora_{ab}{sep}weight"


def synthetic_state_dict(seed: int = 0, default_spelling: bool = False, with_ln: bool = False) -> dict[str, torch.Tensor]:
    """The tensors an Emotion-LLaMA checkpoint's 'model' entry holds, at tiny shapes."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.3

    sd = {
        "llama_proj.weight": r(D, 4 * VW),
        "llama_proj.bias": r(D),
        "cls_tk_llama_proj.weight": r(D, VW),
        "cls_tk_llama_proj.bias": r(D),
        "feats_llama_proj1.weight": r(D, FD[0]),
        "feats_llama_proj1.bias": r(D),
        "feats_llama_proj2.weight": r(D, FD[1]),
        "feats_llama_proj2.bias": r(D),
        "feats_llama_proj3.weight": r(D, FD[2]),
        "feats_llama_proj3.bias": r(D),
        # MiniGPTBase's auxiliary head: trainable (so saved) but unused at inference
        "attention.feats_prep.0.0.weight": r(256, 1024),
        "attention.fc_att.weight": r(7, 128),
        "llama_model.base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq": r(4),
    }
    sep = ".default." if default_spelling else "."
    for i in range(LAYERS):
        for m in ("q_proj", "v_proj"):
            sd[LORA.format(i=i, m=m, ab="A", sep=sep)] = r(R, D)
            sd[LORA.format(i=i, m=m, ab="B", sep=sep)] = r(D, R)
    if with_ln:
        sd["ln_vision.weight"] = 1 + r(VW)
        sd["ln_vision.bias"] = r(VW)
    return sd


def save_checkpoint(path: Path, sd: dict[str, torch.Tensor], alpha: int | None = ALPHA) -> Path:
    obj = {
        "model": sd,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
        "epoch": 3,
        "scaler": None,
        "config": {"model": {"arch": "minigpt_v2", "lora_r": R, **({"lora_alpha": alpha} if alpha else {})}},
    }
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    from transformers import LlamaForCausalLM

    d = tmp_path_factory.mktemp("llama")
    torch.manual_seed(5)
    LlamaForCausalLM(LlamaLMConfig.tiny().llama_config()).save_pretrained(str(d))
    build_word_tokenizer().save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hubert")
    torch.manual_seed(6)
    AudioEncoder(AudioEncoderConfig.tiny("hubert")).backbone.save_pretrained(str(d))
    return d


def _reference_logits(llama_dir: Path, sd: dict[str, torch.Tensor], embeds: torch.Tensor, scaling: float) -> torch.Tensor:
    """LLaMA-2 + LoRA computed straight from the raw checkpoint tensors (forward hooks, no peft)."""
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(str(llama_dir), local_files_only=True).eval()
    hooks = []
    for i, layer in enumerate(base.model.layers):
        for m in ("q_proj", "v_proj"):
            a = sd[LORA.format(i=i, m=m, ab="A", sep=".")]
            b = sd[LORA.format(i=i, m=m, ab="B", sep=".")]
            hooks.append(getattr(layer.self_attn, m).register_forward_hook(lambda mod, inp, out, a=a, b=b: out + scaling * F.linear(F.linear(inp[0], a), b)))
    with torch.no_grad():
        logits = base(inputs_embeds=embeds).logits
    for h in hooks:
        h.remove()
    return logits


def test_import_round_trip_reproduces_projector_and_llm(tmp_path, llama_dir, hubert_dir) -> None:
    sd = synthetic_state_dict()
    ckpt = save_checkpoint(tmp_path / "Emotion_LLaMA.pth", sd)
    out = import_emotion_llama(ckpt, llama_dir, tmp_path / "out", base_config=BASE, encoder_dirs={"audio": hubert_dir})
    model = EmotionLlama.from_pretrained(out)
    cfg = model.config
    assert cfg.llm.lora.r == R and cfg.llm.lora.alpha == ALPHA and cfg.llm.lora.target_modules == ("q_proj", "v_proj")
    assert set(model.encoders) == {"audio"} and cfg.global_view is None

    # Projector: identical to the computation from the raw tensors (ln_vision absent -> weight 1, bias 0).
    g = torch.Generator().manual_seed(9)
    vision = torch.randn(2, 1 + BASE.projector.num_patches, VW, generator=g)
    feats = {n: torch.randn(2, d, generator=g) for n, d in zip(("face", "video", "audio"), FD)}
    got = model.projector(vision, feats)
    x = F.layer_norm(vision, (VW,), None, None, 1e-5)
    vid = F.linear(x[:, 1:].reshape(2, -1, 4 * VW), sd["llama_proj.weight"], sd["llama_proj.bias"])
    f = [F.linear(feats[n], sd[f"feats_llama_proj{i}.weight"], sd[f"feats_llama_proj{i}.bias"]) for i, n in ((1, "face"), (2, "video"), (3, "audio"))]
    cls_tok = F.linear(x[:, :1], sd["cls_tk_llama_proj.weight"], sd["cls_tk_llama_proj.bias"])
    # Same operations on the same values; a GEMM may still differ in the last bit between two weight copies
    # (BLAS kernels depend on memory alignment), hence a tolerance of a few float32 ulps.
    exact = dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.slots[VIDEO_SLOT].tokens, vid, **exact)
    torch.testing.assert_close(got.slots[FEATURE_SLOT].tokens, torch.cat([torch.stack(f, 1), cls_tok], 1), **exact)

    # LLM: identical logits to LLaMA + (alpha / r) * B A applied from the raw tensors.
    embeds = torch.randn(2, 7, D, generator=g)
    with torch.no_grad():
        ours = model.llm.model(inputs_embeds=embeds).logits
    ref = _reference_logits(llama_dir, sd, embeds, ALPHA / R)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    no_lora = _reference_logits(llama_dir, sd, embeds, 0.0)
    assert not torch.allclose(ours, no_lora, atol=1e-3)  # the adapters were really loaded

    report = json.loads((out / "import_report.json").read_text())
    assert "attention.fc_att.weight" in report["ignored"]
    assert any("ln_vision" in n for n in report["notes"])
    assert report["lora"] == {"r": R, "alpha": ALPHA, "targets": ["q_proj", "v_proj"], "layers": LAYERS}


def test_ln_vision_and_peft_adapter_spelling(tmp_path, llama_dir) -> None:
    sd = synthetic_state_dict(seed=1, default_spelling=True, with_ln=True)
    out = import_emotion_llama(save_checkpoint(tmp_path / "c.pth", sd, alpha=None), llama_dir, tmp_path / "o", base_config=BASE)
    model = EmotionLlama.from_pretrained(out)
    assert torch.equal(model.projector.ln_vision.weight, sd["ln_vision.weight"])
    assert model.config.llm.lora.alpha == 16  # not recorded -> Emotion-LLaMA's value
    lora_a = model.state_dict()["llm.model.base_model.model.model.layers.1.self_attn.v_proj.lora_A.default.weight"]
    assert torch.equal(lora_a, sd[LORA.format(i=1, m="v_proj", ab="A", sep=".default.")])
    # A weights dir without encoders cannot drive the streaming engine, but can score precomputed features.
    assert not model.encoders


def test_unknown_and_missing_keys_are_listed_together(tmp_path) -> None:
    sd = synthetic_state_dict()
    sd["visual_encoder.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    del sd["feats_llama_proj2.bias"]
    del sd[LORA.format(i=1, m="q_proj", ab="B", sep=".")]
    with pytest.raises(ModelFileError) as err:
        map_checkpoint(sd)
    msg = str(err.value)
    assert "1 unknown key(s): visual_encoder.blocks.0.attn.qkv.weight" in msg
    assert "2 missing key(s)" in msg and "feats_llama_proj2.bias" in msg and "layers.1.self_attn.q_proj.lora_B.weight" in msg


def test_shape_and_model_mismatches(tmp_path, llama_dir) -> None:
    sd = synthetic_state_dict()
    sd["feats_llama_proj1.weight"] = torch.zeros(D + 1, FD[0])
    with pytest.raises(ModelFileError, match="feats_llama_proj1.weight"):
        map_checkpoint(sd)
    wide = synthetic_state_dict()
    for k in list(wide):
        if k.startswith(("llama_proj", "cls_tk", "feats_llama")):
            wide[k] = torch.zeros(2 * D, *wide[k].shape[1:])
    with pytest.raises(ModelFileError, match="hidden size"):
        import_emotion_llama(save_checkpoint(tmp_path / "w.pth", wide), llama_dir, tmp_path / "w", base_config=BASE)
    deep = synthetic_state_dict()
    for m in ("q_proj", "v_proj"):
        for ab, shape in (("A", (R, D)), ("B", (D, R))):
            deep[LORA.format(i=LAYERS, m=m, ab=ab, sep=".")] = torch.zeros(*shape)
    with pytest.raises(ModelFileError, match="layers"):
        import_emotion_llama(save_checkpoint(tmp_path / "d.pth", deep), llama_dir, tmp_path / "d", base_config=BASE)


class _NotATensor:
    pass


def test_unsafe_or_foreign_files_are_refused(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")
    torch.save({"model": synthetic_state_dict(), "extra": _NotATensor()}, tmp_path / "pickled.pth")
    with pytest.raises(ModelFileError, match="weights_only"):
        read_checkpoint(tmp_path / "pickled.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(ModelFileError, match="'model'"):
        read_checkpoint(tmp_path / "other.pth")
    with pytest.raises(ModelFileError, match="LLaMA-2"):
        import_emotion_llama(save_checkpoint(tmp_path / "ok.pth", synthetic_state_dict()), tmp_path / "no_llama", tmp_path / "x")


def test_original_encoder_checkpoint_files_load_per_view(tmp_path, hubert_dir, capsys) -> None:
    """`--encoder face=FILE` etc.: a file is the original .pth layout, converted with the base config's view settings."""
    from emo_stream.model.checkpoint_import import load_encoder
    from emo_stream.model.encoders import FaceViewEncoder, TemporalViewEncoder
    from tests.model.reference_vits import RefMAEViT, RefVideoMAE, randomize

    fb, tb = BASE.face_view.backbone, BASE.temporal_view.backbone
    mae = randomize(
        RefMAEViT(fb["hidden_size"], fb["num_hidden_layers"], fb["num_attention_heads"], fb["intermediate_size"], fb["image_size"], fb["patch_size"]), seed=1
    )
    vmae = randomize(
        RefVideoMAE(
            tb["hidden_size"],
            tb["num_hidden_layers"],
            tb["num_attention_heads"],
            tb["intermediate_size"],
            tb["image_size"],
            tb["patch_size"],
            tb["num_frames"],
            tb["tubelet_size"],
        ),
        seed=2,
    )
    torch.save({"model": mae.state_dict()}, tmp_path / "mae.pth")
    torch.save({"model": {f"encoder.{k}": v for k, v in vmae.state_dict().items()}}, tmp_path / "videomae.pth")
    face = load_encoder("face", tmp_path / "mae.pth", BASE)
    temporal = load_encoder("temporal", tmp_path / "videomae.pth", BASE)
    assert isinstance(face, FaceViewEncoder) and face.config == BASE.face_view
    assert isinstance(temporal, TemporalViewEncoder) and temporal.config == BASE.temporal_view
    assert capsys.readouterr().err.count("emo-stream: ") == 2
    x = torch.rand(2, 3, fb["image_size"], fb["image_size"])
    with torch.no_grad():
        torch.testing.assert_close(face.frame_features(x), mae.forward_features(x), rtol=0, atol=1e-6)
    assert isinstance(load_encoder("audio", hubert_dir, BASE), AudioEncoder)
    with pytest.raises(ModelFileError, match="audio encoder: .* is a file"):
        load_encoder("audio", tmp_path / "mae.pth", BASE)
    with pytest.raises(ModelFileError, match="unknown encoder 'lidar'"):
        load_encoder("lidar", tmp_path, BASE)
