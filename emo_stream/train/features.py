"""``emo-stream features``: run the frozen encoders once over a dataset into a sharded cache.

Same features as streaming, by construction
-------------------------------------------
Each clip is read by the stream's own sources (:func:`~emo_stream.stream.sources.factory.open_sources`:
PyAV decoding, the streaming resampler), cut into windows by the stream's own
:class:`~emo_stream.pipeline.Pipeline` / :class:`~emo_stream.stream.scheduler.Scheduler`
(frame selection included), and every window goes through the streaming
:class:`~emo_stream.engines.emotion_llama.EmotionLlamaEngine` itself: its
frame checks, face view (centre-crop stand-in or a face detector), audio
cleanup, ``EmotionLlama.preprocess`` and ``encode``. The engine's model is
wrapped in a tap that records the encoder outputs at ``project()`` and skips
the LLM, so nothing is re-implemented here and what the trainer sees is what
``emo-stream run --engine emotion-llama`` feeds the projector.

Windows per clip (``FeatureSettings.windows``):

* ``"clip"`` (default): one window spanning the sample's [start, end] (Emotion-LLaMA
  trains on utterance-level features). ``frames_per_window`` frames are
  selected uniformly over it by the stream's frame selector.
* ``"stream"``: the stream's own grid (``stream.window.length_s`` / ``hop_s``,
  partial windows per ``emit_partial``): every window the live stream would
  emit for that clip, each an item with the clip's label.

Cache layout (``out/``)::

    meta.json                 format, encoder fingerprints, settings
    index.jsonl               one line per finished sample: id, source key, shard, windows
    shards/shard-00000.safetensors   tensors "<item>/<modality>/{pooled,tokens,mask}"

Shards are written to a temporary name and renamed, then their samples are
appended to the index (flushed and fsynced), so an interrupted run loses at
most the unfinished shard: the next run skips every indexed sample whose
source key (media path, size, mtime, start/end, feature files) is unchanged and
overwrites any shard the index does not reference. A torn last index line is
ignored.

Every index line records its shard's sha256 (``shard_sha256``). Reading a
shard verifies it first, so a shard damaged on disk (bit rot, a bad copy, a
truncation) is an error naming it instead of NaN features that train to NaN
weights; ``emo-stream features`` on the same cache finds such shards, removes
them and re-encodes their samples. A full disk while writing is one
``cannot write ...`` error; what was indexed before stays valid.

What is stored: the pooled utterance vector of every modality; the token
sequence (valid tokens only) of the modalities the model's projector reads as
tokens (v1: the global view; v2: all). Precomputed features from the manifest
(e.g. MERR's MAE/VideoMAE/HuBERT ``.npy``) are stored in the same form and
replace the encoder output for their modality.

The encoder fingerprint (a SHA-256 over the encoders' tensors and configs) is
written to ``meta.json``; the trainer refuses a cache whose fingerprint differs
from its model's encoders, so a trained checkpoint always streams with the
encoders its projector was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emo_stream.config import StreamConfig
from emo_stream.durable import fsync_path, sha256_file
from emo_stream.engines.base import Engine, EngineOutput
from emo_stream.errors import ConfigError, EmoStreamError
from emo_stream.outputs import write_text, writing
from emo_stream.progress import progress_bar
from emo_stream.stream.samples import AudioChunk
from emo_stream.stream.samples import Sample as StreamSample
from emo_stream.stream.scheduler import Window
from emo_stream.stream.sources.base import Source
from emo_stream.stream.sources.wrapped import WrappedSource
from emo_stream.train.dataset import DatasetError, Manifest, Sample

log = logging.getLogger(__name__)

CACHE_FORMAT = "emo_stream.feature_cache"
CACHE_VERSION = 1
MODALITIES = ("global", "face", "temporal", "audio")


# ---------------------------------------------------------------------------
# settings and fingerprints
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSettings:
    """How windows are cut and encoded.

    Attributes:
        windows: ``"clip"`` (one window per sample) or ``"stream"`` (the stream grid).
        stream: the stream config whose window grid (``stream`` mode), frame
            count and frame selection (both modes), audio rate and source
            options are used.
        face_detector: the engine's ``face_detector`` option (``none``: the
            centre-crop stand-in, as the engine's default).
        face_crop_fraction: the engine's centre-crop size.
        dtype: stored float type (``float32`` or ``float16``).
        shard_size: samples per shard file.
        max_clip_s: longest ``clip``-mode window (the stream's window limit, 60 s).
    """

    windows: str = "clip"
    stream: StreamConfig = field(default_factory=StreamConfig)
    face_detector: str = "none"
    face_crop_fraction: float = 0.6
    dtype: str = "float32"
    shard_size: int = 256
    max_clip_s: float = 60.0

    def __post_init__(self) -> None:
        if self.windows not in ("clip", "stream"):
            raise ConfigError(f"features: windows must be 'clip' or 'stream', got {self.windows!r}")
        if self.face_detector not in ("none", "retinaface", "haar"):
            raise ConfigError(f"features: face_detector must be none, retinaface or haar, got {self.face_detector!r}")
        if not 0 < self.face_crop_fraction <= 1:
            raise ConfigError("features: face_crop_fraction must be in (0, 1]")
        if self.dtype not in ("float32", "float16"):
            raise ConfigError(f"features: dtype must be float32 or float16, got {self.dtype!r}")
        if self.shard_size < 1:
            raise ConfigError("features: shard_size must be >= 1")
        if not 0 < self.max_clip_s <= 60:
            raise ConfigError("features: max_clip_s must be in (0, 60]")

    def window_config(self) -> StreamConfig:
        """The stream config the pipeline runs with for one clip."""
        if self.windows == "stream":
            return self.stream
        w = self.max_clip_s
        frames = max(self.stream.buffers.max_frames, int(math.ceil(w * 120)))  # every frame of the clip stays
        return self.stream.replace(
            window={"length_s": w, "hop_s": w, "emit_partial": True}, buffers={"history_s": 2 * w + 1, "max_frames": frames}, source={"realtime": False}
        )

    def describe(self) -> dict[str, Any]:
        s = self.stream
        return {
            "windows": self.windows,
            "window": {"length_s": s.window.length_s, "hop_s": s.window.hop_s, "emit_partial": s.window.emit_partial}
            if self.windows == "stream"
            else {"max_clip_s": self.max_clip_s},
            "frames_per_window": s.window.frames_per_window,
            "frame_selection": s.window.frame_selection,
            "sample_rate": s.audio.sample_rate,
            "max_frame_side": s.source.max_frame_side,
            "face_detector": self.face_detector,
            "face_crop_fraction": self.face_crop_fraction,
        }


def encoder_fingerprints(model: Any) -> dict[str, str]:
    """SHA-256 per encoder over its config and every tensor (name, dtype, shape, bytes)."""
    out = {}
    for name in MODALITIES:
        enc = model.encoder(name)
        if enc is None:
            continue
        h = hashlib.sha256()
        h.update(json.dumps(_jsonable(enc.config), sort_keys=True).encode())
        for key, t in sorted(enc.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        out[name] = h.hexdigest()
    return out


def _jsonable(cfg: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else repr(cfg)


def tokens_kept(model_config: Any) -> tuple[str, ...]:
    """Modalities whose token sequences the projector reads (others: pooled vectors only)."""
    if model_config.version == "v1":
        return ("global",)
    return tuple(n for n, _ in model_config.fusion.modalities)


def expected_dims(model_config: Any) -> dict[str, int]:
    """Feature width per modality that the model's projector (v1) or fusion (v2) reads."""
    if model_config.version == "v1":
        p = model_config.projector
        return {"global": p.vision_width, "face": p.feature_dims[0], "temporal": p.feature_dims[1], "audio": p.feature_dims[2]}
    return {n: int(d) for n, d in model_config.fusion.modalities}


def source_key(sample: Sample) -> str:
    """Identity of a sample's inputs: changes when a file or the cut changes."""
    parts: list[Any] = [sample.start, sample.end]
    for p in ([sample.media] if sample.media is not None else []) + [sample.features[k] for k in sorted(sample.features)]:
        try:
            st = p.stat()
            parts.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            parts.append([str(p), None, None])
    parts.append(sorted(sample.features))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------
# reading one clip through the stream
# ---------------------------------------------------------------------------


class ClipSource(WrappedSource):
    """A file source cut to media time [start, end) (samples keep their media timestamps)."""

    def __init__(self, inner: Source, start: float | None, end: float | None) -> None:
        super().__init__(inner)  # counters, streams, clock: the inner source's
        self.start = start or 0.0
        self.end = math.inf if end is None else end

    def samples(self) -> Iterator[StreamSample]:
        for s in self.inner.samples():
            if s.t >= self.end + 2.0:  # every stream is past the end (2 s covers interleaving)
                return
            if isinstance(s, AudioChunk):
                rate = s.sample_rate
                lo = max(0, int(round((self.start - s.t) * rate)))
                hi = s.samples.size if math.isinf(self.end) else min(s.samples.size, int(round((self.end - s.t) * rate)))
                if hi <= lo:
                    continue
                if lo or hi < s.samples.size:
                    s = AudioChunk(t=s.t + lo / rate, samples=s.samples[lo:hi], sample_rate=rate)
                yield s
            elif self.start <= s.t < self.end:
                yield s


@dataclass
class WindowFeatures:
    """Encoder outputs of one window (numpy, batch dimension removed)."""

    index: int
    start: float | None
    end: float | None
    features: dict[str, dict[str, np.ndarray]]  # modality -> {"pooled", ["tokens", "mask"]}
    flags: list[str] = field(default_factory=list)


class _CaptureEngine(Engine):
    """Streams windows through ``inner.features`` (preprocess + encoders, no head) and keeps them as numpy.

    The pipeline needs an :class:`EngineOutput` per window; a uniform one stands
    in for the head that was not run (no sink reads it).
    """

    def __init__(self, inner: Engine, keep_tokens: Sequence[str], dtype: np.dtype) -> None:
        self.inner = inner
        self.model_id, self.label_set = inner.model_id, inner.label_set
        self.keep_tokens = set(keep_tokens)
        self.dtype = dtype
        self.windows: list[WindowFeatures] = []

    def reset(self) -> None:
        self.windows = []
        self.inner.reset()

    def process(self, window: Window) -> EngineOutput:
        f = self.inner.features(window)
        flags = list(dict.fromkeys(f.flags))
        self.windows.append(
            WindowFeatures(window.index, window.start, window.end, {n: _to_numpy(e, n in self.keep_tokens, self.dtype) for n, e in f.features.items()}, flags)
        )
        n = len(self.label_set)
        return EngineOutput(probabilities=np.full(n, 1.0 / n), modalities=f.modalities, latency_ms=f.latency_ms, flags=flags)


def _to_numpy(e: Any, keep_tokens: bool, dtype: np.dtype) -> dict[str, np.ndarray]:
    out = {"pooled": e.pooled[0].detach().float().cpu().numpy().astype(dtype)}
    if keep_tokens:
        mask = e.mask[0].detach().cpu().numpy().astype(bool)
        n = int(np.nonzero(mask)[0].max()) + 1 if mask.any() else 0
        out["tokens"] = e.tokens[0, :n].detach().float().cpu().numpy().astype(dtype)
        out["mask"] = mask[:n]
    return out


def _load_precomputed(path: Path, keep_tokens: bool, dtype: np.dtype, where: str, width: int | None = None) -> dict[str, np.ndarray]:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{where}: feature file {path} is not a readable .npy array ({exc})") from None
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DatasetError(f"{where}: feature file {path} must hold (D,) or (T, D) values, has shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"{where}: feature file {path} contains NaN/inf")
    if width is not None and x.shape[1] != width:
        raise DatasetError(f"{where}: feature file {path} has width {x.shape[1]}, this model's projector reads {width}")
    out = {"pooled": x.mean(axis=0).astype(dtype)}
    if keep_tokens:
        out["tokens"] = x.astype(dtype)
        out["mask"] = np.ones(x.shape[0], dtype=bool)
    return out


class ClipEncoder:
    """Encodes samples through the streaming engine (see module docstring)."""

    def __init__(self, model: Any, settings: FeatureSettings, device: str = "cpu") -> None:
        from emo_stream.engines.emotion_llama import EmotionLlamaEngine

        self.model = model
        self.settings = settings
        self.keep_tokens = tokens_kept(model.config)
        self.dtype = np.dtype(settings.dtype)
        self.stream_config = settings.window_config()
        opts: dict[str, Any] = {"face_detector": settings.face_detector, "face_crop_fraction": settings.face_crop_fraction, "device": device}
        cfg = self.stream_config.replace(engine={"name": "emotion-llama", "label_set": model.config.label_set, "options": opts})
        self.engine = _CaptureEngine(EmotionLlamaEngine(cfg, model=model), self.keep_tokens, self.dtype)

    def encode(self, sample: Sample) -> list[WindowFeatures]:
        """The sample's windows with their features (precomputed ones merged in)."""
        from emo_stream.pipeline import Pipeline
        from emo_stream.stream.sources.factory import open_sources

        where = f"sample {sample.id!r}" + (f" (line {sample.line})" if sample.line else "")
        dims = expected_dims(self.model.config)
        pre = {m: _load_precomputed(p, m in self.keep_tokens, self.dtype, where, dims.get(m)) for m, p in sample.features.items()}
        if sample.media is None:
            return [WindowFeatures(0, None, None, pre, ["precomputed"])]
        if self.settings.windows == "clip" and sample.start is not None and sample.end is not None and sample.end - sample.start > self.settings.max_clip_s:
            raise DatasetError(
                f"{where}: {sample.end - sample.start:.1f} s is longer than max_clip_s={self.settings.max_clip_s}; "
                "cut it into shorter samples or use windows: stream"
            )
        try:
            sources = [ClipSource(s, sample.start, sample.end) for s in open_sources(str(sample.media), self.stream_config)]
            pipeline = Pipeline(sources, self.engine, [], self.stream_config)
            stats = pipeline.run()
        except EmoStreamError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        windows = self.engine.windows
        self.engine.windows = []
        if stats.engine_errors:
            raise DatasetError(f"{where}: the engine failed on {stats.engine_errors} window(s) of {sample.media}")
        if not windows:
            raise DatasetError(f"{where}: {sample.media} gave no samples in [{sample.start or 0}, {sample.end or 'end'}]")
        if self.settings.windows == "clip" and len(windows) > 1:
            # The scheduler may cut a short tail window after the grid point; the
            # clip is the longest one (the stream would also emit both).
            windows = [max(windows, key=lambda w: (w.end or 0) - (w.start or 0))]
            windows[0].index = 0
        for w in windows:
            w.features.update(pre)
        return windows


# ---------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowRef:
    """Where one window's features live."""

    sample_id: str
    item: int
    shard: str
    index: int
    start: float | None
    end: float | None
    modalities: tuple[str, ...]
    flags: tuple[str, ...] = ()


class FeatureCache:
    """Read side of a feature cache directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise DatasetError(f"{self.root} is not a feature cache (no meta.json); create it with `emo-stream features`")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{meta_path} is not readable JSON ({exc})") from None
        if self.meta.get("format") != CACHE_FORMAT:
            raise DatasetError(f"{meta_path} is not an emo_stream feature cache")
        if int(self.meta.get("version", 0)) > CACHE_VERSION:
            raise DatasetError(f"{self.root} was written by a newer emo_stream (cache version {self.meta['version']})")
        self.entries = read_index(self.root / "index.jsonl")
        self._handles: dict[str, Any] = {}
        self._keys: dict[str, set[str]] = {}
        self._digests = shard_digests(self.entries)

    @property
    def fingerprints(self) -> dict[str, str]:
        return dict(self.meta.get("encoders", {}))

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.entries

    def windows(self, sample_id: str) -> list[WindowRef]:
        e = self.entries[sample_id]
        return [
            WindowRef(
                sample_id, int(w["item"]), e["shard"], int(w["index"]), w.get("start"), w.get("end"), tuple(w.get("modalities", ())), tuple(w.get("flags", ()))
            )
            for w in e["windows"]
        ]

    def check_model(self, model: Any, fingerprints: Mapping[str, str] | None = None) -> None:
        """Raise unless this cache's encoder features came from ``model``'s encoders
        (``fingerprints``: :func:`encoder_fingerprints` of the model, when already computed)."""
        mine = dict(fingerprints) if fingerprints is not None else encoder_fingerprints(model)
        theirs = self.fingerprints
        diff = sorted(n for n in set(mine) | set(theirs) if mine.get(n) != theirs.get(n))
        if diff:
            raise ConfigError(
                f"feature cache {self.root} was computed with other encoders than this model's ({', '.join(diff)} differ); "
                "re-run `emo-stream features` with the same model (same --weights, or same --tiny/--seed)"
            )
        kept = tuple(self.meta.get("tokens_kept", ()))
        need = tokens_kept(model.config)
        if not set(need) <= set(kept):
            raise ConfigError(f"feature cache {self.root} stores tokens for {list(kept)} but this model needs {list(need)}; re-run `emo-stream features`")

    def load(self, ref: WindowRef) -> dict[str, dict[str, Tensor]]:
        """``{modality: {"pooled": (D,), "tokens": (T, D)?, "mask": (T,)?}}`` as float32 tensors."""
        h = self._handles.get(ref.shard)
        if h is None:
            from safetensors import safe_open

            path = self.root / "shards" / ref.shard
            problem = shard_problem(path, self._digests.get(ref.shard))
            if problem:
                raise DatasetError(f"feature shard {path} {problem}; re-run `emo-stream features` on this cache (it re-encodes that shard's samples)")
            try:
                h = safe_open(str(path), framework="pt", device="cpu")
            except Exception as exc:
                raise DatasetError(f"feature shard {path} cannot be read ({exc}); re-run `emo-stream features`") from None
            self._handles[ref.shard] = h
            self._keys[ref.shard] = set(h.keys())
        keys = self._keys[ref.shard]
        out: dict[str, dict[str, Tensor]] = {}
        for m in ref.modalities:
            d = {"pooled": h.get_tensor(f"{ref.item}/{m}/pooled").float()}
            if f"{ref.item}/{m}/tokens" in keys:
                d["tokens"] = h.get_tensor(f"{ref.item}/{m}/tokens").float()
                d["mask"] = h.get_tensor(f"{ref.item}/{m}/mask").bool()
            out[m] = d
        return out


def shard_digests(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``{shard name: sha256}`` as the index recorded them (caches written before checksums: none)."""
    return {e["shard"]: e["shard_sha256"] for e in entries.values() if e.get("shard_sha256")}


def shard_problem(path: Path, digest: str | None) -> str | None:
    """Why the shard at ``path`` cannot be trusted (missing, unreadable, checksum mismatch), or None."""
    try:
        if digest is not None and sha256_file(path) != digest:
            return "is corrupt (its sha256 differs from the one recorded in index.jsonl)"
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not path.is_file():
        return "is missing"
    return None


def read_index(path: Path) -> dict[str, dict[str, Any]]:
    """Last entry per sample id; a torn (unparseable) final line is ignored."""
    entries: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return entries
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            e = json.loads(raw)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # interrupted while appending
            raise DatasetError(f"{path}: line {i + 1} is corrupt; delete the cache and re-run `emo-stream features`") from None
        entries[e["id"]] = e
    return entries


class _CacheWriter:
    def __init__(self, root: Path, meta: dict[str, Any]) -> None:
        self.root = root
        with writing(root / "shards"):
            (root / "shards").mkdir(parents=True, exist_ok=True)
        write_text(root / "meta.json", json.dumps(meta, indent=2))
        entries = read_index(root / "index.jsonl")
        self._rewrite_index_if_torn(entries)
        used = [int(e["shard"].split("-")[1].split(".")[0]) for e in entries.values()]
        self.next_shard = max(used) + 1 if used else 0
        self.next_item = max((int(w["item"]) for e in entries.values() for w in e["windows"]), default=-1) + 1
        self.pending: list[tuple[Sample, str, list[WindowFeatures]]] = []

    def _rewrite_index_if_torn(self, entries: dict[str, dict[str, Any]]) -> None:
        path = self.root / "index.jsonl"
        if not path.is_file():
            return
        raw = path.read_text(encoding="utf-8")
        if raw and not raw.endswith("\n"):
            write_text(path, "".join(json.dumps(e) + "\n" for e in entries.values()))

    def add(self, sample: Sample, key: str, windows: list[WindowFeatures]) -> None:
        self.pending.append((sample, key, windows))

    def flush(self) -> int:
        from safetensors.numpy import save as safetensors_bytes

        if not self.pending:
            return 0
        name = f"shard-{self.next_shard:05d}.safetensors"
        tensors: dict[str, np.ndarray] = {}
        lines = []
        for sample, key, windows in self.pending:
            ws = []
            for w in windows:
                item = self.next_item
                self.next_item += 1
                for m, d in w.features.items():
                    for k, v in d.items():
                        tensors[f"{item}/{m}/{k}"] = np.ascontiguousarray(v)
                ws.append({"item": item, "index": w.index, "start": w.start, "end": w.end, "modalities": sorted(w.features), "flags": w.flags})
            lines.append({"id": sample.id, "key": key, "shard": name, "label": sample.label, "windows": ws})
        path = self.root / "shards" / name
        tmp = path.with_name(name + ".partial")
        # Serialised in memory, then plain file I/O: the checksum is of exactly the bytes written,
        # and a full disk is an OSError with its reason (safetensors' own writer hides it).
        data = safetensors_bytes(tensors, metadata={"format": CACHE_FORMAT})
        digest = hashlib.sha256(data).hexdigest()
        try:
            with writing(path):
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_path(path.parent)
        with writing(self.root / "index.jsonl"), open(self.root / "index.jsonl", "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps({**line, "shard_sha256": digest}) + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        self.next_shard += 1
        n = len(self.pending)
        self.pending = []
        return n


@dataclass
class ExtractionSummary:
    cache: Path
    samples: int
    reused: int
    encoded: int
    windows: int
    seconds: float
    corrupt_shards: tuple[str, ...] = ()

    def line(self) -> str:
        fixed = f"; re-encoded the samples of damaged shard(s) {', '.join(self.corrupt_shards)}" if self.corrupt_shards else ""
        return (
            f"{self.samples} samples in {self.cache}: {self.encoded} encoded ({self.windows} windows), "
            f"{self.reused} reused from an earlier run, {self.seconds:.1f} s{fixed}"
        )


def cache_meta(model: Any, settings: FeatureSettings) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "model_version": model.config.version,
        "label_set": model.config.label_set,
        "encoders": encoder_fingerprints(model),
        "tokens_kept": list(tokens_kept(model.config)),
        "settings": settings.describe(),
        "dtype": settings.dtype,
    }


def extract_features(
    manifest: Manifest,
    model: Any,
    out: str | Path,
    settings: FeatureSettings | None = None,
    *,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    limit: int | None = None,
) -> ExtractionSummary:
    """Encode every sample of ``manifest`` into the cache at ``out`` (resumable; see module docstring).

    Args:
        manifest: the split to encode.
        model: an ``EmotionLlama`` (its encoders run; its LLM does not).
        out: cache directory (created).
        settings: window/face settings.
        overwrite: start from scratch when ``out`` holds a cache of other
            encoders/settings (otherwise that is an error).
        limit: encode at most this many new samples, then stop (the rest stay
            for a later run).
    """
    t0 = time.perf_counter()
    settings = settings or FeatureSettings()
    root = Path(out).expanduser()
    meta = cache_meta(model, settings)
    if (root / "meta.json").is_file():
        old = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        same = {k: old.get(k) for k in ("encoders", "settings", "tokens_kept", "dtype")} == {
            k: meta[k] for k in ("encoders", "settings", "tokens_kept", "dtype")
        }
        if not same:
            if not overwrite:
                raise ConfigError(f"{root} holds features of other encoders or settings; pass --overwrite to replace them, or use another --out")
            import shutil

            shutil.rmtree(root)
    writer = _CacheWriter(root, meta)
    done = read_index(root / "index.jsonl")
    bad = _drop_bad_shards(root, done)
    todo = []
    reused = 0
    for s in manifest:
        key = source_key(s)
        if s.id in done and done[s.id].get("key") == key:
            reused += 1
        else:
            todo.append((s, key))
    if limit is not None:
        todo = todo[: max(0, limit)]
    encoder = ClipEncoder(model, settings, device=device) if any(s.media is not None for s, _ in todo) else None
    n_windows = 0
    bar = progress_bar(len(manifest), reused, "features", progress, unit="clip")
    try:
        for s, key in todo:
            if s.media is not None:
                assert encoder is not None
                windows = encoder.encode(s)
            else:
                dims = expected_dims(model.config)
                windows = [
                    WindowFeatures(
                        0,
                        None,
                        None,
                        {
                            m: _load_precomputed(p, m in tokens_kept(model.config), np.dtype(settings.dtype), f"sample {s.id!r} (line {s.line})", dims.get(m))
                            for m, p in s.features.items()
                        },
                        ["precomputed"],
                    )
                ]
            writer.add(s, key, windows)
            n_windows += len(windows)
            if len(writer.pending) >= settings.shard_size:
                writer.flush()
            bar.update(1)
        writer.flush()
    finally:
        bar.close()
    return ExtractionSummary(root, len(manifest), reused, len(todo), n_windows, time.perf_counter() - t0, tuple(sorted(bad)))


def _drop_bad_shards(root: Path, done: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Verify every indexed shard; forget (and delete) damaged ones so their samples are re-encoded."""
    digests = shard_digests(done)
    bad: dict[str, str] = {}
    for shard in sorted({e["shard"] for e in done.values()}):
        problem = shard_problem(root / "shards" / shard, digests.get(shard))
        if problem:
            bad[shard] = problem
    for shard, problem in bad.items():
        log.warning("feature shard %s %s: re-encoding its samples", root / "shards" / shard, problem)
        (root / "shards" / shard).unlink(missing_ok=True)
    for sid in [sid for sid, e in done.items() if e["shard"] in bad]:
        del done[sid]
    return bad


# ---------------------------------------------------------------------------
# batches for the model
# ---------------------------------------------------------------------------


def collate(items: Sequence[Mapping[str, Mapping[str, Tensor]]], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Window features -> ``{modality: EncoderOutput}`` for ``EmotionLlama.project`` (batch, zero-padded, masked).

    A modality missing from some items is all-zero and masked there (the
    projector treats it as absent); a modality missing from all items is left out.
    """
    from emo_stream.model.encoders import EncoderOutput

    b = len(items)
    out: dict[str, Any] = {}
    for m in MODALITIES:
        have = [i for i, it in enumerate(items) if m in it]
        if not have:
            continue
        d = items[have[0]][m]["pooled"].shape[-1]
        t = max((items[i][m]["tokens"].shape[0] if "tokens" in items[i][m] else 1) for i in have)
        tokens = torch.zeros(b, t, d)
        mask = torch.zeros(b, t, dtype=torch.bool)
        pooled = torch.zeros(b, d)
        for i in have:
            f = items[i][m]
            pooled[i] = f["pooled"]
            if "tokens" in f:
                n = f["tokens"].shape[0]
                tokens[i, :n] = f["tokens"]
                mask[i, :n] = f["mask"]
            else:
                tokens[i, 0] = f["pooled"]
                mask[i, 0] = True
        out[m] = EncoderOutput(tokens=tokens.to(device), mask=mask.to(device), pooled=pooled.to(device))
    return out
