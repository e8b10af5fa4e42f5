"""Shared pieces of the export commands: the source model, its fingerprint, progress lines, common files."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo_stream.errors import (
    ConfigError,
    EmoStreamError,
    MissingDependencyError,  # noqa: F401 - re-exported; one class wherever raised
    ModelFileError,
)
from emo_stream.export.artifacts import MODEL_CONFIG_NAME, TOKENIZER_DIR, ExportWriter
from emo_stream.progress import Progress  # noqa: F401 - the exporters take a Progress; one progress helper

#: ``--model`` values that build a random tiny model (fixed seed) instead of loading a directory.
TINY_MODELS = {"tiny": "v1", "tiny-v1": "v1", "tiny-v2": "v2"}


class ExportError(EmoStreamError):
    """An export cannot be produced as asked (bad output dir, failed parity, missing tool)."""


@dataclass
class SourceModel:
    """The model being exported and where it came from."""

    model: Any  # EmotionLlama
    info: dict[str, Any] = field(default_factory=dict)


def build_tiny(version: str = "v1", seed: int = 0, label_set: str = "mer2023") -> Any:
    """The random tiny model the ``emotion-llama`` engine builds for ``tiny: true`` (same seed -> same weights)."""
    import torch

    from emo_stream.model.emotion_llama import EmotionLlamaConfig, build_emotion_llama

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_emotion_llama(EmotionLlamaConfig.tiny(version, label_set=label_set)).eval()


def load_source_model(spec: str | Path, seed: int = 0) -> SourceModel:
    """``--model``: a directory written by ``EmotionLlama.save_pretrained`` / the importer, or ``tiny`` / ``tiny-v2``."""
    key = str(spec)
    if key in TINY_MODELS:
        version = TINY_MODELS[key]
        model = build_tiny(version, seed)
        return SourceModel(model, {"source": key, "version": version, "seed": seed, "random_weights": True})
    from emo_stream.model.emotion_llama import EmotionLlama

    d = Path(key).expanduser()
    if not d.is_dir():
        raise ModelFileError(f"--model {key}: no such directory (give a dir written by EmotionLlama.save_pretrained, or 'tiny' / 'tiny-v2')")
    model = EmotionLlama.from_pretrained(d)
    info: dict[str, Any] = {"source": str(d.resolve()), "version": model.config.version, "random_weights": False}
    provenance = read_provenance(d)
    if provenance:
        # What the weights were trained on travels into the export, and from there into every state.
        info["provenance"] = provenance
        info["synthetic_trained"] = bool(provenance.get("synthetic"))
    return SourceModel(model, info)


def read_provenance(model_dir: Path) -> dict[str, Any]:
    """The ``provenance`` block the trainer writes into a model's ``config.json`` ({} when absent)."""
    import json

    try:
        meta = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    prov = meta.get("provenance") if isinstance(meta, dict) else None
    return dict(prov) if isinstance(prov, dict) else {}


def model_fingerprint(model: Any) -> str:
    """A cheap identity of a model's weights: sha256 over the config and every tensor's name, shape, dtype
    and up to 64 KiB of its bytes (start and end). Two exports into one directory must share it."""
    import torch

    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        flat = t.detach().reshape(-1)
        if flat.dtype == torch.bfloat16:
            flat = flat.view(torch.int16)
        a = flat.cpu().numpy()
        raw = a[:8192].tobytes() + a[-8192:].tobytes()
        h.update(raw)
    return h.hexdigest()


def model_section(src: SourceModel, fingerprint: str) -> dict[str, Any]:
    from emo_stream.export.stages import shipped_encoders

    section = {
        **src.info,
        "fingerprint": fingerprint,
        "config_file": MODEL_CONFIG_NAME,
        "label_set": src.model.config.label_set,
        "llm_width": src.model.config.llm.hidden_size,
    }
    shipped = shipped_encoders(src.model)
    if shipped:
        section["shipped_encoders"] = shipped
    return section


def check_same_model(writer: ExportWriter, fingerprint: str, force: bool) -> None:
    """Refuse to mix artifacts of two models in one directory (unless ``force``: start the directory afresh)."""
    prev = writer.previous
    if prev is None:
        return
    if force:
        writer.invalidate()
        writer.previous = None
        return
    old = prev.get("model", {}).get("fingerprint")
    if old and old != fingerprint:
        raise ExportError(
            f"{writer.root} holds an export of a different model (fingerprint {old[:12]} vs {fingerprint[:12]}); use another --out, or --force to replace it"
        )


def write_common_files(writer: ExportWriter, model: Any) -> None:
    """``model_config.json`` and ``tokenizer/`` (skipped byte-identical files keep the old manifest valid)."""
    from emo_stream.model.emotion_llama import FORMAT, FORMAT_VERSION

    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict()}
    write_if_changed(writer, MODEL_CONFIG_NAME, (json.dumps(data, indent=2) + "\n").encode())
    tok = model.llm.tokenizer
    if tok is None:
        raise ExportError("the model has no tokenizer; the exported runtimes need one (load the model with its tokenizer/ dir)")
    with tempfile.TemporaryDirectory(dir=writer.root, prefix=".tokenizer.partial-") as tmp:
        tok.save_pretrained(tmp)
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                write_if_changed(writer, f"{TOKENIZER_DIR}/{f.relative_to(tmp).as_posix()}", f.read_bytes())


def write_if_changed(writer: ExportWriter, rel: str, data: bytes) -> None:
    final = writer.path_for(rel)
    if final.is_file() and final.read_bytes() == data:
        writer.record(rel)
        return
    with writer.write(rel) as tmp:
        tmp.write_bytes(data)


def parse_precisions(values: Any, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or ():
        for p in str(v).split(","):
            p = p.strip()
            if not p:
                continue
            if p not in allowed:
                raise ConfigError(f"{what} must be one of {', '.join(allowed)}; got {p!r}")
            if p not in out:
                out.append(p)
    return tuple(out)
