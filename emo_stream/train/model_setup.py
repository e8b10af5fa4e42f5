"""The model a training run tunes: built from its config section, and which of its parameters train.

Split from :mod:`emo_stream.train.trainer` (issue 15): the evaluator, the
feature extractor and the CLI build the same model without the training loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from emo_stream.errors import ConfigError
from emo_stream.train.config import ModelSection


def build_model(section: ModelSection) -> Any:
    """The model a training config names (see :class:`~emo_stream.train.config.ModelSection`)."""
    from emo_stream.model.emotion_llama import (
        EmotionLlama,
        EmotionLlamaConfig,
        build_emotion_llama,
    )

    if section.tiny is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(section.seed)
            model = build_emotion_llama(EmotionLlamaConfig.tiny(section.tiny, label_set=section.label_set))
            if section.llm_init_std is not None:
                reinit_llm(model, section.llm_init_std, section.seed)
            return model
    if section.small is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(section.seed)  # the fresh projector/fusion and LoRA
            return build_emotion_llama(
                EmotionLlamaConfig.small(
                    section.small, label_set=section.label_set, vit_precision=section.vit_precision, sliding=section.view_layout == "sliding"
                )
            )
    if section.weights is not None:
        return EmotionLlama.from_pretrained(section.weights)
    return _from_llama_dir(section)


def reinit_llm(model: Any, std: float, seed: int) -> None:
    """Redraw the base LLM's linear and embedding weights ~ N(0, std) (norms stay 1; LoRA untouched).

    Seeded on its own (``seed``), after the model is built, so the encoders --
    and therefore the cached features -- are the same as without it.
    """
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    with torch.no_grad():
        for name, p in model.llm.base_llama().named_parameters():
            if "lora_" in name or p.ndim != 2:
                continue
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _from_llama_dir(section: ModelSection) -> Any:
    """LLaMA-2 + local encoder dirs + a fresh projector/fusion (no Emotion-LLaMA checkpoint)."""
    from emo_stream.model.emotion_llama import EmotionLlama, EmotionLlamaConfig
    from emo_stream.model.encoders import (
        AudioEncoder,
        FaceViewEncoder,
        GlobalViewEncoder,
        TemporalViewEncoder,
    )
    from emo_stream.model.llm import EmotionLlamaLM
    from emo_stream.model.projectors import EmotionLlamaProjectorConfig

    loaders: dict[str, Callable[[str], Any]] = {
        "global": GlobalViewEncoder.from_pretrained_dir,
        "face": FaceViewEncoder.from_pretrained_dir,
        "temporal": TemporalViewEncoder.from_pretrained_dir,
        "audio": AudioEncoder.from_pretrained_dir,
    }
    unknown = set(section.encoders) - set(loaders)
    if unknown:
        raise ConfigError(f"model.encoders: unknown view(s) {sorted(unknown)}; use {sorted(loaders)}")
    encs = {k: loaders[k](v) for k, v in section.encoders.items()}
    llama_dir = section.llama_dir
    assert llama_dir is not None  # ModelSection holds exactly one of tiny, small, weights, llama_dir; build_model took the others
    llm = EmotionLlamaLM.from_llama_dir(llama_dir)
    ref = EmotionLlamaConfig.emotion_llama_7b() if section.version == "v1" else EmotionLlamaConfig.emotion_llama_v2_7b()
    cfgs = {k: (encs[k].config if k in encs else None) for k in loaders}

    def hidden_size(view: str, default: int) -> int:
        c = cfgs[view]
        return c.hidden_size if c is not None else default

    width = llm.hidden_size
    if section.version == "v1":
        g = cfgs["global"]
        dims = (hidden_size("face", 1024), hidden_size("temporal", 1024), hidden_size("audio", 1024))
        proj = EmotionLlamaProjectorConfig(
            vision_width=g.hidden_size if g else 1408, num_patches=g.num_patches if g else 1024, feature_dims=dims, llm_width=width
        )
        cfg = EmotionLlamaConfig(
            version="v1",
            global_view=cfgs["global"],
            face_view=cfgs["face"],
            temporal_view=cfgs["temporal"],
            audio=cfgs["audio"],
            projector=proj,
            llm=llm.config,
            label_set=section.label_set,
        )
    else:
        ref_fusion = ref.fusion
        assert ref_fusion is not None  # the v2 reference config has a fusion
        default_dims = dict(ref_fusion.modalities)
        mods = tuple((k, hidden_size(k, default_dims[k])) for k in ("global", "face", "temporal", "audio"))
        fusion = dataclasses.replace(ref_fusion, modalities=mods, llm_width=width)
        cfg = EmotionLlamaConfig(
            version="v2",
            global_view=cfgs["global"],
            face_view=cfgs["face"],
            temporal_view=cfgs["temporal"],
            audio=cfgs["audio"],
            projector=None,
            fusion=fusion,
            llm=llm.config,
            label_set=section.label_set,
        )
    return EmotionLlama(cfg, tokenizer=llm.tokenizer, llm=llm, encoders=encs)


def trainable_names(model: Any, groups: Sequence[str]) -> list[str]:
    """Parameter names of the ``projector`` (minus the frozen ``ln_vision``) and/or ``lora`` groups."""
    names = []
    for n, _ in model.named_parameters():
        if ("projector" in groups and n.startswith("projector.") and not n.startswith("projector.ln_vision.")) or (
            "lora" in groups and "lora_" in n and n.startswith("llm.")
        ):
            names.append(n)
    if not names:
        raise ConfigError(f"no parameters in trainable groups {list(groups)} (LoRA disabled in this model?)")
    return names


def set_trainable(model: Any, groups: Sequence[str]) -> list[str]:
    keep = set(trainable_names(model, groups))
    for n, p in model.named_parameters():
        p.requires_grad_(n in keep)
    return sorted(keep)


def _to_device(model: Any, device: torch.device) -> Any:
    """Projector and LLM to ``device``; the encoders stay on the CPU (training reads cached features,
    and they are only needed again when the model is saved)."""
    model.projector.to(device)
    model.llm.to(device)
    return model
