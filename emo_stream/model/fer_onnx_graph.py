"""The FER2013 mini-Xception written straight to ONNX from the Keras ``.hdf5``: no torch, no TensorFlow.

A robot install has onnxruntime, h5py and the small ``onnx`` package but not
torch, and the default engine's expression expert needs this network on a clean
model cache. So the graph is written node by node with ``onnx.helper`` from the
arrays :func:`~emo_stream.model.fer_keras.keras_layer_weights` reads (after the
file's Keras graph has been checked against the expected one), and the result
is what ONNX Runtime runs everywhere. The torch rebuild
(:mod:`emo_stream.model.fer_mini_xception`) stays the reference: a test in the
full install compares the two on real face crops.

The Keras conventions are written out here exactly as in the torch rebuild:

* Keras kernels are HWIO, ONNX ``Conv`` wants OIHW; a separable convolution is
  a depthwise ``Conv`` (``group`` = channels) then a 1x1 pointwise one.
* TensorFlow's ``'same'`` padding is asymmetric when the total is odd (extra
  row/column after); ONNX ``pads`` ([top, left, bottom, right]) can say so
  directly, so no separate ``Pad`` node is needed. ``MaxPool`` ignores padded
  cells, which is TensorFlow's -inf padding.
* BatchNormalization stays an inference ``BatchNormalization`` node with the
  file's epsilon (1e-3), so nothing is folded by hand; ONNX Runtime fuses it
  into the convolution when it optimises the session.

The spatial sizes are static (64x64 input), so every padding is computed here;
the batch axis is dynamic. Outputs: ``probs`` (softmax) and ``logits`` (the
global average of the head convolution), as the torch export has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.errors import ModelFileError
from emo_stream.model.fer_keras import KerasLayerWeights, MiniXceptionConfig, keras_layer_weights, tf_same_padding

ONNX_INPUT = "input"
ONNX_OUTPUTS = ("probs", "logits")
#: Opset 17 runs on every ONNX Runtime >= 1.13, so a robot's older ORT can open the file.
OPSET = 17
#: Written into the file's producer fields, so a cache file says which builder made it.
PRODUCER = "emo_stream.fer_onnx_graph"
#: Part of the cache file name; bump it when the written graph changes, so caches rebuild.
GRAPH_VERSION = "g1"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        from emo_stream.errors import missing_dependency

        raise missing_dependency("onnx", "writing the expression network's ONNX file", "robot") from exc
    return onnx


@dataclass
class _GraphWriter:
    """Collects nodes and initializers; names every tensor once."""

    onnx: Any
    nodes: list[Any]
    inits: list[Any]
    count: int = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, array: np.ndarray) -> str:
        n = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), n))
        return n

    def node(self, op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = self.name(base)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _same_pads(side: int, kernel: int, stride: int) -> list[int]:
    before, after = tf_same_padding(side, kernel, stride)
    return [before, before, after, after]  # square input: same on both axes


def _out_side(side: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return -(-side // stride)
    return (side - kernel) // stride + 1


def _conv(
    w: _GraphWriter, x: str, kernel_oihw: np.ndarray, side: int, stride: int, padding: str, bias: np.ndarray | None = None, group: int = 1
) -> tuple[str, int]:
    k = int(kernel_oihw.shape[-1])
    pads = _same_pads(side, k, stride) if padding == "same" else [0, 0, 0, 0]
    inputs = [x, w.const("W", kernel_oihw)] + ([w.const("B", bias)] if bias is not None else [])
    y = w.node("Conv", inputs, "conv", kernel_shape=[k, k], strides=[stride, stride], pads=pads, group=group)
    return y, _out_side(side, k, stride, padding)


def _batchnorm(w: _GraphWriter, x: str, arrays: dict[str, np.ndarray], eps: float) -> str:
    params = [w.const(n, arrays[k]) for n, k in (("scale", "gamma"), ("B", "beta"), ("mean", "moving_mean"), ("var", "moving_variance"))]
    return w.node("BatchNormalization", [x, *params], "bn", epsilon=float(eps))


def _hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 2, 0, 1)


def _depthwise_to_oihw(kernel: np.ndarray) -> np.ndarray:
    kh, kw, cin, mult = kernel.shape  # output channel = c * mult + m, as TensorFlow orders them
    return kernel.reshape(kh, kw, cin * mult, 1).transpose(2, 3, 0, 1)


def _arrays(layers: dict[str, KerasLayerWeights], target: str, path: Path) -> dict[str, np.ndarray]:
    if target not in layers:  # pragma: no cover - keras_layer_weights yields every target of the expected list
        raise ModelFileError(f"{path}: no weights for {target}")
    return layers[target].arrays


def _check_shape(path: Path, target: str, key: str, array: np.ndarray, want: tuple[int, ...]) -> None:
    if tuple(array.shape) != want:
        raise ModelFileError(f"{path}: {target} {key} has shape {tuple(array.shape)}, a mini-Xception expects {want}")


def build_model_proto(hdf5: str | Path, config: MiniXceptionConfig | None = None) -> Any:
    """The ``onnx.ModelProto`` of the mini-Xception with the weights of the Keras file ``hdf5``.

    Raises :class:`ModelFileError` for a file whose graph is not the expected
    one, or whose arrays are missing, non-finite or of the wrong shape.
    """
    onnx = _onnx()
    c = config or MiniXceptionConfig()
    path = Path(hdf5)
    layers = {lw.spec.target: lw for lw in keras_layer_weights(path, c) if lw.spec.target}
    w = _GraphWriter(onnx, [], [])
    x, side, ch = ONNX_INPUT, c.input_size, c.in_channels

    def arrays(target: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        a = _arrays(layers, target, path)
        for key, want in shapes.items():
            if key not in a:
                raise ModelFileError(f"{path}: {target} has no {key} array (has {sorted(a)})")
            _check_shape(path, target, key, a[key], want)
        return a

    def bn(x: str, target: str, n: int) -> str:
        a = arrays(target, dict.fromkeys(("gamma", "beta", "moving_mean", "moving_variance"), (n,)))
        return _batchnorm(w, x, a, c.bn_eps)

    def separable(x: str, target: str, cin: int, cout: int, side: int) -> str:
        a = arrays(target, {"depthwise_kernel": (3, 3, cin, 1), "pointwise_kernel": (1, 1, cin, cout)})
        y, _ = _conv(w, x, _depthwise_to_oihw(a["depthwise_kernel"]), side, 1, "same", group=cin)
        y, _ = _conv(w, y, _hwio_to_oihw(a["pointwise_kernel"]), side, 1, "valid")
        return y

    for i, out_ch in enumerate(c.stem_channels):
        a = arrays(f"stem.{i}.conv", {"kernel": (3, 3, ch, out_ch)})
        x, side = _conv(w, x, _hwio_to_oihw(a["kernel"]), side, 1, "valid")
        x = w.node("Relu", [bn(x, f"stem.{i}.bn", out_ch)], "relu")
        ch = out_ch
    for i, out_ch in enumerate(c.block_channels):
        p = f"blocks.{i}"
        a = arrays(f"{p}.shortcut", {"kernel": (1, 1, ch, out_ch)})
        r, _ = _conv(w, x, _hwio_to_oihw(a["kernel"]), side, 2, "same")
        r = bn(r, f"{p}.shortcut_bn", out_ch)
        y = w.node("Relu", [bn(separable(x, f"{p}.sep1", ch, out_ch, side), f"{p}.bn1", out_ch)], "relu")
        y = bn(separable(y, f"{p}.sep2", out_ch, out_ch, side), f"{p}.bn2", out_ch)
        y = w.node("MaxPool", [y], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=_same_pads(side, 3, 2))
        x, side, ch = w.node("Add", [y, r], "add"), _out_side(side, 3, 2, "same"), out_ch
    a = arrays("head", {"kernel": (3, 3, ch, c.num_classes), "bias": (c.num_classes,)})
    x, side = _conv(w, x, _hwio_to_oihw(a["kernel"]), side, 1, "same", bias=a["bias"])
    pooled = w.node("GlobalAveragePool", [x], "gap")
    w.nodes.append(onnx.helper.make_node("Flatten", [pooled], [ONNX_OUTPUTS[1]], name="logits", axis=1))
    w.nodes.append(onnx.helper.make_node("Softmax", [ONNX_OUTPUTS[1]], [ONNX_OUTPUTS[0]], name="probs", axis=-1))

    f32 = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        w.nodes,
        "fer_mini_xception",
        [onnx.helper.make_tensor_value_info(ONNX_INPUT, f32, ["batch", c.in_channels, c.input_size, c.input_size])],
        [onnx.helper.make_tensor_value_info(n, f32, ["batch", c.num_classes]) for n in ONNX_OUTPUTS],
        initializer=w.inits,
    )
    model = onnx.helper.make_model(graph, producer_name=PRODUCER, opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, 8)  # IR 8 = what ONNX Runtime 1.13+ reads
    onnx.checker.check_model(model, full_check=True)
    return model


def set_metadata(proto: Any, meta: dict[str, str]) -> None:
    """Store ``meta`` as the model's metadata_props (what ``get_modelmeta().custom_metadata_map`` reads)."""
    _onnx().helper.set_model_props(proto, meta)


def write_onnx(proto: Any, path: str | Path) -> Path:
    """Save ``proto`` to ``path`` atomically (a crash or a concurrent build never leaves half a model)."""
    from emo_stream.durable import atomic_path

    onnx = _onnx()
    out = Path(path)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return out
