"""Export directories: atomic file writes, the manifest, and checked loading.

An export directory (``export/NAME/``) holds deployment artifacts of one model:

* ``model_config.json`` -- the :class:`~emo_stream.model.emotion_llama.EmotionLlamaConfig`
  the artifacts were made from (preprocessing sizes, prompt template, label set);
* ``tokenizer/`` -- the model's tokenizer (runtimes tokenize with it, so token
  ids are exactly the torch model's whatever the LLM backend);
* ``onnx/<stage>.<precision>.onnx`` (+ ``.onnx.data`` for large models) --
  encoders and the projector / fusion (``emo-stream export onnx``);
* ``tensorrt/<stage>.<precision>.plan`` (``emo-stream export tensorrt``);
* ``llm/model.<QUANT>.gguf`` (``emo-stream export gguf``);
* ``manifest.json`` -- what all of that is: names, shapes, dtypes, opset,
  precisions, measured errors, and the sha256 of every file.

Crash safety. Every file is written to a hidden temporary name in its final
directory, flushed to disk and renamed over the final name (``os.replace`` is
atomic on POSIX), so a file name never points at half a file. The manifest is
written last and is the commit mark: a directory without ``manifest.json`` is an
incomplete export and :func:`load_manifest` refuses it. When an export is about
to replace a file that the current manifest lists, the manifest is removed
first (the directory becomes "incomplete" until the new manifest is written), so
a killed re-export never leaves a manifest whose checksums describe other bytes.
Adding artifacts that the current manifest does not list (``export gguf`` into
an ONNX export) keeps the old manifest valid until the merged one replaces it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from emo_stream.durable import PARTIAL_MARK as _PARTIAL
from emo_stream.durable import atomic_path, fsync_path, partial_path, sha256_file  # noqa: F401 - re-exported
from emo_stream.errors import ModelFileError

FORMAT = "emo_stream.export"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_CONFIG_NAME = "model_config.json"
TOKENIZER_DIR = "tokenizer"


def write_json_atomic(path: str | Path, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not readable JSON ({exc}); re-run the export") from None


class ExportWriter:
    """Writes files into an export directory and, last, the merged manifest.

    Use :meth:`path_for` / :meth:`commit` (or :meth:`write`) for every file;
    then :meth:`finish` with the sections this export produced. Sections of an
    existing complete manifest that this export does not produce are kept
    (with their files), so ``export onnx`` and ``export gguf`` can fill one
    directory in either order.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ModelFileError(f"export output {self.root} exists and is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_partials()
        self.previous: dict[str, Any] | None = None
        mf = self.root / MANIFEST_NAME
        if mf.is_file():
            try:
                data = _read_json(mf)
                if isinstance(data, dict) and data.get("format") == FORMAT:
                    self.previous = data
            except ModelFileError:
                self.previous = None
        self.files: dict[str, dict[str, Any]] = {}
        self._invalidated = False

    def _sweep_partials(self) -> None:
        """Remove temporary files a killed export left behind (they never load: hidden + odd names)."""
        for p in self.root.rglob(f".*{_PARTIAL}*"):
            with contextlib.suppress(OSError):
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    def _listed(self, rel: str) -> bool:
        return self.previous is not None and rel in self.previous.get("files", {})

    def invalidate(self) -> None:
        """Mark the directory incomplete (remove the manifest) before changing listed files."""
        if not self._invalidated:
            (self.root / MANIFEST_NAME).unlink(missing_ok=True)
            fsync_path(self.root)
            self._invalidated = True

    def path_for(self, rel: str) -> Path:
        return self.root / rel

    @contextlib.contextmanager
    def write(self, rel: str) -> Iterator[Path]:
        """Atomically write ``rel``: yields a temporary path to fill; records its sha256."""
        final = self.path_for(rel)
        if self._listed(rel) or final.exists():
            self.invalidate()
        with atomic_path(final) as tmp:
            yield tmp
        self.record(rel)

    def commit(self, tmp: str | Path, rel: str) -> Path:
        """Move an already complete file ``tmp`` (same filesystem) to ``rel`` atomically."""
        final = self.path_for(rel)
        if self._listed(rel) or final.exists():
            self.invalidate()
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = partial_path(final)
        shutil.move(str(tmp), staged)  # a rename when on the same filesystem
        with open(staged, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(staged, 0o644)
        os.replace(staged, final)
        self.record(rel)
        return final

    def record(self, rel: str) -> None:
        p = self.path_for(rel)
        self.files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}

    def write_json(self, rel: str, data: Any) -> None:
        with self.write(rel) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def finish(self, sections: Mapping[str, Any], drop_files_of: Iterable[str] = ()) -> dict[str, Any]:
        """Write the merged manifest (the commit mark) and return it.

        ``sections``: top-level manifest keys this export produced (they replace
        the previous ones). Files of replaced sections that this export did not
        rewrite are dropped from the file table (and deleted) when listed under
        ``drop_files_of`` prefixes.
        """
        prev = self.previous or {}
        files = dict(prev.get("files", {}))
        for prefix in drop_files_of:
            for rel in [r for r in files if r.startswith(prefix) and r not in self.files]:
                files.pop(rel)
                with contextlib.suppress(OSError):
                    self.path_for(rel).unlink()
        files.update(self.files)
        manifest: dict[str, Any] = {k: v for k, v in prev.items() if k not in ("files", "format", "format_version", "updated")}
        manifest.update(sections)
        from emo_stream import __version__

        out = {"format": FORMAT, "format_version": FORMAT_VERSION, "emo_stream_version": __version__,
               "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **manifest, "files": dict(sorted(files.items()))}
        write_json_atomic(self.root / MANIFEST_NAME, out)
        self.previous = out
        self._invalidated = False
        return out


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
        for rel in (self.files if rels is None else rels):
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
                raise ModelFileError(f"export {self.root}: {rel} is {size} bytes, the manifest says {info.get('bytes')} (truncated or replaced); re-run the export")
            digest = sha256_file(p)
            if digest != info.get("sha256"):
                raise ModelFileError(f"export {self.root}: sha256 of {rel} does not match the manifest (corrupt or replaced); re-run the export")
            self._verified.add(rel)

    def model_config(self) -> Any:
        from emo_stream.model.emotion_llama import EmotionLlamaConfig

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
