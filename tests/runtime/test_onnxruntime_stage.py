"""ONNX Runtime stage backend: providers asked for vs actually used; silent CPU fallback is an error."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from emo_stream.errors import EmoStreamError, ModelFileError
from emo_stream.runtime.onnxruntime import OrtStageRuntime, normalize_providers
from emo_stream.runtime.stage import ProviderFallbackError, RuntimeUnavailableError


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """y = x * 2 with a dynamic batch axis, and a bool passthrough (built with onnx.helper: no torch)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    m = helper.make_tensor_value_info("m", TensorProto.BOOL, ["batch"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    k = helper.make_tensor_value_info("k", TensorProto.BOOL, ["batch"])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"]), helper.make_node("Identity", ["m"], ["k"])], "g", [x, m], [y, k], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    p = tmp_path_factory.mktemp("onnx") / "double.onnx"
    onnx.save(model, p)
    return p


def test_cpu_runs_and_reports_providers(tiny_onnx):
    rt = OrtStageRuntime(tiny_onnx, stage="double", providers="cpu", threads=1)
    out = rt.run({"x": np.ones((4, 3), np.float64), "m": np.array([1, 0, 1, 0])})  # dtypes are coerced
    assert out["y"].dtype == np.float32 and np.all(out["y"] == 2) and out["k"].tolist() == [True, False, True, False]
    assert rt.info.providers_requested == ["CPUExecutionProvider"] and rt.info.providers_used == ["CPUExecutionProvider"]
    assert "onnxruntime fp32" in rt.info.describe() and rt.input_names == ["x", "m"]
    with pytest.raises(ValueError, match="missing input"):
        rt.run({"x": np.ones((1, 3), np.float32)})


def test_provider_names():
    assert normalize_providers("cuda, cpu") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert normalize_providers(["TensorrtExecutionProvider", "trt", "cpu"]) == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert normalize_providers(None) == ["CPUExecutionProvider"]


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_asking_for_cuda_on_a_cpu_build_is_an_error_unless_allowed(tiny_onnx, caplog):
    with pytest.raises(ProviderFallbackError, match="CUDAExecutionProvider is not in this onnxruntime build") as exc:
        OrtStageRuntime(tiny_onnx, providers=["cuda", "cpu"])
    assert isinstance(exc.value, EmoStreamError) and "\n" not in str(exc.value)
    rt = OrtStageRuntime(tiny_onnx, providers=["cuda", "cpu"], allow_cpu_fallback=True)
    assert rt.info.providers_requested == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert rt.info.providers_used == ["CPUExecutionProvider"] and rt.info.device == "cpu"
    assert "allow_cpu_fallback" in caplog.text


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_gpu_build_that_silently_runs_on_cpu_is_caught(tiny_onnx, monkeypatch):
    """onnxruntime-gpu without a usable GPU lists CUDA as available, then registers only CPU."""
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(ProviderFallbackError, match="failed to load"):
        OrtStageRuntime(tiny_onnx, providers=["cuda", "cpu"])


def test_bad_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        OrtStageRuntime(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="bad.onnx cannot be loaded by ONNX Runtime"):
        OrtStageRuntime(tmp_path / "bad.onnx")


def test_tensorrt_backend_without_tensorrt_fails_in_one_line(tmp_path):
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - on a TensorRT box
        pytest.skip("TensorRT is installed here")
    from emo_stream.runtime.tensorrt import TensorRTStageRuntime

    with pytest.raises(RuntimeUnavailableError, match="TensorRT is not installed") as exc:
        TensorRTStageRuntime(tmp_path / "x.plan")
    assert "\n" not in str(exc.value)
