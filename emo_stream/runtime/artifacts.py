"""Reading an export directory: the format constants, :class:`Manifest` and
:func:`load_manifest` (checked loading, sha256 on first open).

The format itself (what is in a directory, crash safety) is described in
:mod:`emo_stream.export.artifacts`, which writes it. Reading lives here, in the
runtime layer, because the runtimes open exports and must not import the
exporters (which import the runtimes to check what they wrote).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emo_stream.durable import sha256_file
from emo_stream.errors import ModelFileError

FORMAT = "emo_stream.export"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_CONFIG_NAME = "model_config.json"
TOKENIZER_DIR = "tokenizer"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not readable JSON ({exc}); re-run the export") from None


class Manifest:
    """A complete export directory's manifest (see module docstring)."""

    def __init__(self, root: Path, data: dict[str, Any]) -> None:
        self.root = root
        self.data = data
        self._verified: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.data.get("files", {})

    def path(self, rel: str, verify: bool = True) -> Path:
        """Absolute path of a listed file, checked against its size and sha256 (once per process object)."""
        if rel not in self.files:
            raise ModelFileError(f"export {self.root}: {rel} is not listed in {MANIFEST_NAME}")
        if verify:
            self.verify([rel])
        return self.root / rel

    def verify(self, rels: Iterable[str] | None = None) -> None:
        """Check size and sha256 of the given listed files (default: all); raise :class:`ModelFileError`."""
        for rel in self.files if rels is None else rels:
            if rel in self._verified:
                continue
            info = self.files.get(rel)
            if info is None:
                raise ModelFileError(f"export {self.root}: {rel} is not listed in {MANIFEST_NAME}")
            p = self.root / rel
            if not p.is_file():
                raise ModelFileError(f"export {self.root} is incomplete: {rel} is missing; re-run the export")
            size = p.stat().st_size
            if size != info.get("bytes"):
                raise ModelFileError(
                    f"export {self.root}: {rel} is {size} bytes, the manifest says {info.get('bytes')} (truncated or replaced); re-run the export"
                )
            digest = sha256_file(p)
            if digest != info.get("sha256"):
                raise ModelFileError(f"export {self.root}: sha256 of {rel} does not match the manifest (corrupt or replaced); re-run the export")
            self._verified.add(rel)

    def model_config(self) -> Any:
        from emo_stream.model.configs.emotion_llama import EmotionLlamaConfig

        rel = self.get("model", {}).get("config_file", MODEL_CONFIG_NAME)
        data = _read_json(self.path(rel))
        return EmotionLlamaConfig.from_dict(data.get("config", data))

    def tokenizer_dir(self) -> Path:
        rels = [r for r in self.files if r.startswith(TOKENIZER_DIR + "/")]
        if not rels:
            raise ModelFileError(f"export {self.root} has no tokenizer/; re-run the export")
        self.verify(rels)
        return self.root / TOKENIZER_DIR


def load_manifest(root: str | Path, verify: bool = False) -> Manifest:
    """Open a complete export directory; raise :class:`ModelFileError` if it is not one.

    ``verify=True`` checks every listed file's sha256 now; otherwise files are
    checked when a runtime first opens them (:meth:`Manifest.path`).
    """
    d = Path(root).expanduser()
    if not d.is_dir():
        raise ModelFileError(f"export directory {d} does not exist; create it with `emo-stream export onnx --model ... --out {d}`")
    mf = d / MANIFEST_NAME
    if not mf.is_file():
        raise ModelFileError(
            f"{d} is not a complete export: it has no {MANIFEST_NAME} (the export was interrupted or never ran); "
            f"re-run `emo-stream export onnx/gguf ... --out {d}`"
        )
    data = _read_json(mf)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(f"{mf} is not an emo_stream export manifest (format {data.get('format') if isinstance(data, dict) else None!r})")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{d} was exported by a newer emo_stream (manifest format_version {data['format_version']})")
    m = Manifest(d, data)
    if verify:
        m.verify()
    return m
