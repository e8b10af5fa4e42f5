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
from emo_stream.durable import atomic_path, fsync_path, partial_path, sha256_file
from emo_stream.errors import ModelFileError

# The reading half (format constants, Manifest, load_manifest) is the runtime's:
# runtimes open exports without importing the exporters (issue 15, layers).
from emo_stream.runtime.artifacts import (  # noqa: F401 - re-exported
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MODEL_CONFIG_NAME,
    TOKENIZER_DIR,
    Manifest,
    _read_json,
    load_manifest,
)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(path)


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

        out = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "emo_stream_version": __version__,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **manifest,
            "files": dict(sorted(files.items())),
        }
        write_json_atomic(self.root / MANIFEST_NAME, out)
        self.previous = out
        self._invalidated = False
        return out
