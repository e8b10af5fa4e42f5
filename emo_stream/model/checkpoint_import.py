"""Import Emotion-LLaMA's public checkpoint into our model format.

Emotion-LLaMA saves checkpoints with MiniGPT-4's runner (``_save_checkpoint`` in
``minigpt4/runners/runner_base.py``): ``torch.save({"model": state_dict,
"optimizer": ..., "config": ..., "scaler": ..., "epoch": ...})`` where
``state_dict`` keeps only parameters that require grad (plus buffers). For
Emotion-LLaMA (MiniGPT-v2, ``freeze_vit=True``, LoRA via peft 0.2.0) the
``model`` entry therefore holds:

* ``llama_proj.{weight,bias}`` -- (4096, 5632), (4096,)
* ``cls_tk_llama_proj.{weight,bias}`` -- (4096, 1408)
* ``feats_llama_proj{1,2,3}.{weight,bias}`` -- (4096, 1024) each
* ``llama_model.base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_{A,B}.weight``
  -- (64, 4096) / (4096, 64); peft >= 0.3 inserts the adapter name
  (``lora_A.default.weight``), which is accepted too
* ``attention.*`` -- an auxiliary classification head (``Attention`` in
  ``minigpt_base.py``) that is trainable, hence saved, but never used in the
  forward pass: skipped and reported
* possibly ``ln_vision.{weight,bias}`` (1408,) -- only when the ViT was not
  frozen. With ``freeze_vit=True`` it is *not* saved and MiniGPT-v2 runs with a
  freshly constructed LayerNorm (weight 1, bias 0); the importer does the same
  and says so in its report
* possibly ``...rotary_emb.inv_freq`` buffers (old transformers): skipped.

The LoRA alpha is not a tensor; it is read from the checkpoint's ``config``
entry (``config["model"]["lora_alpha"]``) when present, else Emotion-LLaMA's 16.
Anything else -- and any expected tensor that is absent or has the wrong shape --
is listed in one :class:`~emo_stream.errors.ModelFileError`.

The checkpoint is read with ``torch.load(weights_only=True)``: no code in the
file is executed. The EVA/MAE/VideoMAE/HuBERT encoders are not in the checkpoint;
pass their local directories (``encoder_dirs``, and ``eva_checkpoint`` for
``eva_vit_g.pth``) to include them, otherwise the saved model has no encoder for
that modality (it must then be fed as a precomputed feature).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from emo_stream.errors import ModelFileError
from emo_stream.model.configs.encoders import FaceViewConfig, GlobalViewConfig, TemporalViewConfig
from emo_stream.model.emotion_llama import EmotionLlama, EmotionLlamaConfig
from emo_stream.model.encoders import AudioEncoder, FaceViewEncoder, GlobalViewEncoder, TemporalViewEncoder
from emo_stream.model.llm import EmotionLlamaLM, LoraSettings
from emo_stream.model.projectors import EmotionLlamaProjector, EmotionLlamaProjectorConfig

PROJECTOR_KEYS = tuple(
    f"{m}.{p}" for m in ("llama_proj", "cls_tk_llama_proj", "feats_llama_proj1", "feats_llama_proj2", "feats_llama_proj3") for p in ("weight", "bias")
)
LN_VISION_KEYS = ("ln_vision.weight", "ln_vision.bias")
_LORA_RE = re.compile(r"^llama_model\.base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$")
_IGNORED_RE = (
    (re.compile(r"^attention\."), "auxiliary classification head (minigpt_base.Attention), unused in the forward pass"),
    (re.compile(r"rotary_emb\.inv_freq$"), "rotary-embedding buffer, recomputed by transformers"),
)
_LORA_ALPHA_DEFAULT = 16


@dataclasses.dataclass
class MappedCheckpoint:
    """Emotion-LLaMA tensors sorted onto our modules.

    Attributes:
        projector: our projector state-dict keys -> tensors.
        lora: (layer, block, module, "A"|"B") -> tensor.
        ignored: checkpoint keys skipped on purpose, with the reason.
        notes: other facts worth reporting (e.g. ln_vision default).
        lora_alpha: from the checkpoint's config entry, or the default.
    """

    projector: dict[str, Tensor]
    lora: dict[tuple[int, str, str, str], Tensor]
    ignored: dict[str, str]
    notes: list[str]
    lora_alpha: float

    @property
    def lora_r(self) -> int:
        a = next(v for k, v in self.lora.items() if k[3] == "A")
        return int(a.shape[0])

    @property
    def lora_targets(self) -> tuple[str, ...]:
        return tuple(sorted({k[2] for k in self.lora}))

    @property
    def num_layers(self) -> int:
        return 1 + max(k[0] for k in self.lora)

    def projector_config(self, num_patches: int) -> EmotionLlamaProjectorConfig:
        w = self.projector["llama_proj.weight"]
        vision_width = int(self.projector["cls_tk_llama_proj.weight"].shape[1])
        return EmotionLlamaProjectorConfig(
            vision_width=vision_width,
            num_patches=num_patches,
            group=int(w.shape[1]) // vision_width,
            feature_dims=tuple(int(self.projector[f"feats_llama_proj{i}.weight"].shape[1]) for i in (1, 2, 3)),  # type: ignore[arg-type]
            llm_width=int(w.shape[0]),
        )


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(model_state_dict, run_config)`` of an Emotion-LLaMA ``.pth``, loaded with ``weights_only=True``."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(
            f"Emotion-LLaMA checkpoint {p} not found. Download Emotion_LLaMA.pth from the links in "
            "ZebangCheng/Emotion-LLaMA's README on a machine with network and copy it here."
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(
            f"{p} cannot be read as a plain-tensor checkpoint with torch.load(weights_only=True): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        keys = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ModelFileError(f"{p} is not an Emotion-LLaMA/MiniGPT checkpoint: expected a dict with a 'model' state dict, found {keys}")
    sd = {str(k): v for k, v in obj["model"].items()}
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise ModelFileError(f"{p}: 'model' entries that are not tensors: {bad[:6]}")
    cfg = obj.get("config")
    return sd, dict(cfg) if isinstance(cfg, Mapping) else {}


def map_checkpoint(state_dict: Mapping[str, Tensor], run_config: Mapping[str, Any] | None = None) -> MappedCheckpoint:
    """Sort checkpoint keys onto our modules; raise one error listing unknown and missing keys."""
    projector: dict[str, Tensor] = {}
    lora: dict[tuple[int, str, str, str], Tensor] = {}
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    notes: list[str] = []
    for key, value in state_dict.items():
        if key in PROJECTOR_KEYS or key in LN_VISION_KEYS:
            projector[key] = value
            continue
        m = _LORA_RE.match(key)
        if m:
            slot = (int(m.group(1)), m.group(2), m.group(3), m.group(4))
            if slot in lora:
                unknown.append(f"{key} (duplicate of another spelling of the same LoRA tensor)")
            lora[slot] = value
            continue
        for pattern, why in _IGNORED_RE:
            if pattern.search(key):
                ignored[key] = why
                break
        else:
            unknown.append(key)

    missing = [k for k in PROJECTOR_KEYS if k not in projector]
    have_ln = [k for k in LN_VISION_KEYS if k in projector]
    if len(have_ln) == 1:
        missing.append(next(k for k in LN_VISION_KEYS if k not in projector))
    elif not have_ln:
        notes.append("ln_vision is not in the checkpoint (frozen ViT): using LayerNorm weight 1, bias 0, as MiniGPT-v2 runs it")

    shape_errors: list[str] = []
    if not lora:
        missing.append("llama_model.base_model.model.model.layers.*.self_attn.{q,v}_proj.lora_{A,B}.weight (no LoRA tensors at all)")
    else:
        layers = 1 + max(k[0] for k in lora)
        modules = sorted({(k[1], k[2]) for k in lora})
        for i in range(layers):
            for blk, mod in modules:
                for ab in "AB":
                    if (i, blk, mod, ab) not in lora:
                        missing.append(f"llama_model.base_model.model.model.layers.{i}.{blk}.{mod}.lora_{ab}.weight")
        ranks = {int(v.shape[0]) for k, v in lora.items() if k[3] == "A"} | {int(v.shape[1]) for k, v in lora.items() if k[3] == "B"}
        if len(ranks) > 1:
            shape_errors.append(f"LoRA tensors disagree on the rank: {sorted(ranks)}")

    if not missing:
        d = int(projector["llama_proj.weight"].shape[0])
        vw = int(projector["cls_tk_llama_proj.weight"].shape[1])
        for k in PROJECTOR_KEYS:
            t = projector[k]
            if t.shape[0] != d:
                shape_errors.append(f"{k} has {tuple(t.shape)}, expected first dim {d} (the LLM width)")
        if projector["llama_proj.weight"].shape[1] % vw:
            shape_errors.append(f"llama_proj input {projector['llama_proj.weight'].shape[1]} is not a multiple of the vision width {vw}")
        for k in have_ln:
            if tuple(projector[k].shape) != (vw,):
                shape_errors.append(f"{k} has {tuple(projector[k].shape)}, expected ({vw},)")

    if unknown or missing or shape_errors:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unknown key(s): " + ", ".join(unknown[:12]) + (" ..." if len(unknown) > 12 else ""))
        if missing:
            parts.append(f"{len(missing)} missing key(s): " + ", ".join(missing[:12]) + (" ..." if len(missing) > 12 else ""))
        parts.extend(shape_errors)
        raise ModelFileError("Emotion-LLaMA checkpoint does not have the expected layout: " + "; ".join(parts))

    alpha = _LORA_ALPHA_DEFAULT
    model_cfg = (run_config or {}).get("model")
    if isinstance(model_cfg, Mapping) and "lora_alpha" in model_cfg:
        alpha = model_cfg["lora_alpha"]
    else:
        notes.append(f"lora_alpha not recorded in the checkpoint's config: using Emotion-LLaMA's {_LORA_ALPHA_DEFAULT}")
    if ignored:
        notes.append(f"skipped {len(ignored)} tensor(s) not used at inference (e.g. {next(iter(ignored))})")
    return MappedCheckpoint(projector=projector, lora=lora, ignored=ignored, notes=notes, lora_alpha=float(alpha))


def _our_lora_key(layer: int, block: str, module: str, ab: str) -> str:
    return f"llm.model.base_model.model.model.layers.{layer}.{block}.{module}.lora_{ab}.default.weight"


def apply_checkpoint(model: EmotionLlama, mapped: MappedCheckpoint) -> None:
    """Copy mapped tensors into ``model`` (shapes checked; one error lists all mismatches)."""
    state = model.state_dict(keep_vars=True)
    problems: list[str] = []
    pairs: list[tuple[Tensor, Tensor]] = []
    for key, value in mapped.projector.items():
        ours = f"projector.{key}"
        if ours not in state:
            problems.append(f"{key}: model has no {ours}")
        elif tuple(state[ours].shape) != tuple(value.shape):
            problems.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(state[ours].shape)}")
        else:
            pairs.append((state[ours], value))
    for (i, blk, mod, ab), value in mapped.lora.items():
        ours = _our_lora_key(i, blk, mod, ab)
        if ours not in state:
            problems.append(f"layer {i} {blk}.{mod}.lora_{ab}: model has no {ours} (LoRA target or layer count differs)")
        elif tuple(state[ours].shape) != tuple(value.shape):
            problems.append(f"layer {i} {blk}.{mod}.lora_{ab}: checkpoint {tuple(value.shape)} vs model {tuple(state[ours].shape)}")
        else:
            pairs.append((state[ours], value))
    if problems:
        raise ModelFileError("Emotion-LLaMA checkpoint does not fit the model: " + "; ".join(problems[:12]) + (" ..." if len(problems) > 12 else ""))
    with torch.no_grad():
        for dst, src in pairs:
            dst.data.copy_(src)
        if not any(k.startswith("ln_vision.") for k in mapped.projector):
            proj = model.projector
            assert isinstance(proj, EmotionLlamaProjector)  # the v1 projector: its keys were all found in the model above
            proj.ln_vision.weight.fill_(1.0)
            proj.ln_vision.bias.zero_()


_ViewT = TypeVar("_ViewT")


def _original_view(config: object, want: type[_ViewT], name: str) -> _ViewT | None:
    """``config`` (a view slot of the base config) if it configures the original checkpoint's encoder (None: its default)."""
    if config is None or isinstance(config, want):
        return config
    raise ModelFileError(f"the base config's {name} view is a {type(config).__name__}; the original {name} checkpoint needs a {want.__name__}")


def load_encoder(name: str, path: str | Path, base: EmotionLlamaConfig) -> Any:
    """One view's encoder from a local transformers directory, or from the original ``.pth`` checkpoint.

    A *file* is read in the original layout and converted (global: EVA
    ``eva_vit_g.pth``; face: the authors' MAE ``{'model': ...}``; temporal: the
    authors' ``encoder.``-prefixed VideoMAE), with ``base``'s view config
    (Emotion-LLaMA's preprocessing defaults). A *directory* is a transformers
    model dir (HuBERT / Whisper for audio).
    """
    views: dict[str, tuple[Callable[[Path], Any], Callable[[Path], Any] | None]] = {
        "global": (
            GlobalViewEncoder.from_pretrained_dir,
            lambda p: GlobalViewEncoder.from_eva_checkpoint(p, _original_view(base.global_view, GlobalViewConfig, "global")),
        ),
        "face": (FaceViewEncoder.from_pretrained_dir, lambda p: FaceViewEncoder.from_mae_checkpoint(p, _original_view(base.face_view, FaceViewConfig, "face"))),
        "temporal": (
            TemporalViewEncoder.from_pretrained_dir,
            lambda p: TemporalViewEncoder.from_videomae_checkpoint(p, _original_view(base.temporal_view, TemporalViewConfig, "temporal")),
        ),
        "audio": (AudioEncoder.from_pretrained_dir, None),
    }
    if name not in views:
        raise ModelFileError(f"unknown encoder {name!r} in encoder_dirs; expected global, face, temporal, audio")
    from_dir, from_file = views[name]
    p = Path(path)
    if p.is_file():
        if from_file is None:
            raise ModelFileError(f"{name} encoder: {p} is a file; give a transformers model directory (config.json + weights)")
        return from_file(p)
    return from_dir(p)


def import_emotion_llama(
    checkpoint_path: str | Path,
    llama_dir: str | Path,
    out_dir: str | Path,
    *,
    base_config: EmotionLlamaConfig | None = None,
    encoder_dirs: Mapping[str, str | Path] | None = None,
    eva_checkpoint: str | Path | None = None,
    dtype: str | None = None,
    lora_dropout: float = 0.05,
) -> Path:
    """Convert Emotion-LLaMA's checkpoint + a local LLaMA-2 dir into an :class:`EmotionLlama` directory.

    Args:
        checkpoint_path: Emotion-LLaMA's ``.pth`` (a dict whose ``model`` entry holds the tensors).
        llama_dir: local Llama-2-7b-chat-hf directory (config, weights, tokenizer).
        out_dir: where ``config.json``, ``model.safetensors``, ``tokenizer/`` and
            ``import_report.json`` are written.
        base_config: supplies what the checkpoint does not determine (label
            set, encoder shapes, number of EVA patches); default: Emotion-LLaMA 7B.
        encoder_dirs: per view, a local transformers dir (``"global"`` ViT,
            ``"face"`` ViTMAE, ``"temporal"`` VideoMAE, ``"audio"`` HuBERT) or,
            for the visual views, the original ``.pth`` checkpoint file (see
            :func:`load_encoder`).
        eva_checkpoint: ``eva_vit_g.pth`` for the global view (instead of a ViT dir).
        dtype: LLM dtype (default: what llama_dir stores, usually float16).

    Returns:
        ``out_dir`` as a Path.
    """
    base = base_config or EmotionLlamaConfig.emotion_llama_7b()
    sd, run_cfg = read_checkpoint(checkpoint_path)
    mapped = map_checkpoint(sd, run_cfg)

    encoders: dict[str, Any] = {}
    for name, path in (encoder_dirs or {}).items():
        encoders[name] = load_encoder(name, path, base)
    if eva_checkpoint is not None:
        if "global" in encoders:
            raise ModelFileError("give the global view either as encoder_dirs['global'] or as eva_checkpoint, not both")
        encoders["global"] = GlobalViewEncoder.from_eva_checkpoint(eva_checkpoint, _original_view(base.global_view, GlobalViewConfig, "global"))

    llm = EmotionLlamaLM.from_llama_dir(
        llama_dir, lora=LoraSettings(r=mapped.lora_r, alpha=mapped.lora_alpha, dropout=lora_dropout, target_modules=mapped.lora_targets), dtype=dtype
    )
    num_patches = encoders["global"].config.num_patches if "global" in encoders else (base.projector.num_patches if base.projector else 1024)
    proj_cfg = mapped.projector_config(num_patches)
    if proj_cfg.llm_width != llm.hidden_size:
        raise ModelFileError(f"checkpoint projects to width {proj_cfg.llm_width} but the LLaMA in {llama_dir} has hidden size {llm.hidden_size}")
    n_layers = int(llm.config.llama["num_hidden_layers"])
    if mapped.num_layers != n_layers:
        raise ModelFileError(f"checkpoint has LoRA for {mapped.num_layers} layers, the LLaMA in {llama_dir} has {n_layers}")

    config = dataclasses.replace(
        base,
        version="v1",
        projector=proj_cfg,
        fusion=None,
        llm=llm.config,
        global_view=encoders["global"].config if "global" in encoders else None,
        face_view=encoders["face"].config if "face" in encoders else None,
        temporal_view=encoders["temporal"].config if "temporal" in encoders else None,
        audio=encoders["audio"].config if "audio" in encoders else None,
    )
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from contextlib import nullcontext as no_init_weights  # type: ignore[assignment]
    with no_init_weights():
        model = EmotionLlama(config, llm=llm, encoders=encoders)
    apply_checkpoint(model, mapped)
    out = model.eval().save_pretrained(out_dir)
    report = {
        "checkpoint": str(checkpoint_path),
        "llama_dir": str(llama_dir),
        "tensors_imported": len(mapped.projector) + len(mapped.lora),
        "lora": {"r": mapped.lora_r, "alpha": mapped.lora_alpha, "targets": list(mapped.lora_targets), "layers": mapped.num_layers},
        "encoders": sorted(encoders),
        "ignored": mapped.ignored,
        "notes": mapped.notes,
    }
    (out / "import_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return out
