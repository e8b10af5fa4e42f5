"""Atomic writes, the manifest as commit mark, and checked loading (no model export needed)."""

from __future__ import annotations

import json

import pytest

from emo_stream.errors import ModelFileError
from emo_stream.export.artifacts import (
    MANIFEST_NAME,
    ExportWriter,
    atomic_path,
    load_manifest,
    partial_path,
    sha256_file,
)


def _export(root, files: dict[str, bytes], section="onnx"):
    w = ExportWriter(root)
    for rel, data in files.items():
        with w.write(rel) as tmp:
            tmp.write_bytes(data)
    return w.finish({section: {"files": sorted(files)}})


def test_atomic_path_never_leaves_a_half_file(tmp_path):
    final = tmp_path / "a.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"new but incomplete")
        raise RuntimeError("killed")
    assert final.read_bytes() == b"old"
    assert not partial_path(final).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"


def test_manifest_lists_sha256_and_is_written_last(tmp_path):
    m = _export(tmp_path / "e", {"onnx/a.onnx": b"graph", "tokenizer/t.json": b"{}"})
    assert m["files"]["onnx/a.onnx"] == {"sha256": sha256_file(tmp_path / "e/onnx/a.onnx"), "bytes": 5}
    loaded = load_manifest(tmp_path / "e", verify=True)
    assert loaded["onnx"]["files"] == ["onnx/a.onnx", "tokenizer/t.json"]
    assert loaded.path("onnx/a.onnx").read_bytes() == b"graph"


def test_loader_refuses_incomplete_or_corrupt_exports(tmp_path):
    d = tmp_path / "e"
    _export(d, {"onnx/a.onnx": b"graph"})
    (d / "onnx/a.onnx").write_bytes(b"grapH")  # same size, other bytes
    with pytest.raises(ModelFileError, match="sha256 of onnx/a.onnx does not match"):
        load_manifest(d).path("onnx/a.onnx")
    (d / "onnx/a.onnx").write_bytes(b"gra")
    with pytest.raises(ModelFileError, match="truncated or replaced"):
        load_manifest(d, verify=True)
    (d / "onnx/a.onnx").unlink()
    with pytest.raises(ModelFileError, match="is missing"):
        load_manifest(d, verify=True)
    (d / MANIFEST_NAME).unlink()
    with pytest.raises(ModelFileError, match="not a complete export"):
        load_manifest(d)
    (d / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFileError, match="not readable JSON"):
        load_manifest(d)
    (d / MANIFEST_NAME).write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(ModelFileError, match="not an emo_stream export manifest"):
        load_manifest(d)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_manifest(tmp_path / "nowhere")


def test_killed_reexport_leaves_no_manifest_that_describes_other_bytes(tmp_path):
    d = tmp_path / "e"
    _export(d, {"onnx/a.onnx": b"v1", "onnx/b.onnx": b"v1"})
    w = ExportWriter(d)
    with w.write("onnx/a.onnx") as tmp:  # replacing a listed file first removes the manifest
        tmp.write_bytes(b"v2")
    assert not (d / MANIFEST_NAME).exists()
    with pytest.raises(KeyboardInterrupt), w.write("onnx/b.onnx") as tmp:
        tmp.write_bytes(b"v2-half")
        raise KeyboardInterrupt  # the export is killed here
    with pytest.raises(ModelFileError, match="not a complete export"):
        load_manifest(d)
    assert (d / "onnx/b.onnx").read_bytes() == b"v1" and not list(d.rglob("*.partial-*"))


def test_adding_a_section_keeps_the_old_one_valid_until_the_merged_manifest(tmp_path):
    d = tmp_path / "e"
    _export(d, {"onnx/a.onnx": b"graph"})
    w = ExportWriter(d)
    with w.write("llm/model.gguf") as tmp:
        tmp.write_bytes(b"GGUF")
    assert load_manifest(d, verify=True)["onnx"]  # old manifest still complete and valid meanwhile
    m = w.finish({"gguf": {"variants": {}}})
    assert set(m["files"]) == {"onnx/a.onnx", "llm/model.gguf"} and "onnx" in m and "gguf" in m
    load_manifest(d, verify=True)


def test_leftover_partial_files_are_swept(tmp_path):
    d = tmp_path / "e"
    (d / "onnx").mkdir(parents=True)
    stale = d / "onnx" / ".a.onnx.partial-123"
    stale.write_bytes(b"half")
    ExportWriter(d)
    assert not stale.exists()
