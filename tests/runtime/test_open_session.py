"""The one ONNX-session opener: a bad model file is one ModelFileError line naming it (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from emo_stream.assets import SILERO_VAD_ONNX
from emo_stream.errors import ModelFileError
from emo_stream.runtime.onnxruntime import open_session


@pytest.fixture(scope="module")
def vad_bytes() -> bytes:
    return SILERO_VAD_ONNX.path().read_bytes()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


def test_a_good_model_opens(vad_bytes):
    sess = open_session(SILERO_VAD_ONNX.path(), what="silero VAD ONNX")
    assert [i.name for i in sess.get_inputs()]  # a real session


@pytest.mark.parametrize("mangle", [lambda b: b[: len(b) * 6 // 10], lambda b: b"not a model at all", lambda b: b[:10]])
def test_a_damaged_file_is_one_line_naming_it_and_the_fix(tmp_path, vad_bytes, mangle):
    bad = tmp_path / "silero_vad.onnx"
    bad.write_bytes(mangle(vad_bytes))
    with pytest.raises(ModelFileError) as exc:
        open_session(bad, what="silero VAD ONNX", fix=SILERO_VAD_ONNX.reinstall_hint)
    msg = _one_line(exc)
    assert msg.startswith(f"silero VAD ONNX {bad} cannot be loaded by ONNX Runtime")
    assert msg.count(str(bad)) == 1  # ONNX Runtime's own copy of the path is dropped
    assert msg.endswith("--force-reinstall") and "silero-vad==" in msg


def test_in_memory_bytes_name_the_file_they_came_from(vad_bytes):
    with pytest.raises(ModelFileError) as exc:
        open_session(vad_bytes[:5000], what="RetinaFace ONNX", source="/site/retinaface/weights.py")
    assert "RetinaFace ONNX /site/retinaface/weights.py cannot be loaded" in _one_line(exc)


def test_the_vad_loader_uses_it(tmp_path, vad_bytes):
    from emo_stream.perception.vad import VoiceActivityDetector

    bad = tmp_path / "vad.onnx"
    bad.write_bytes(vad_bytes[: len(vad_bytes) * 6 // 10])
    with pytest.raises(ModelFileError, match="silero VAD ONNX .*vad.onnx cannot be loaded"):
        VoiceActivityDetector(model_path=bad)
    vad = VoiceActivityDetector(model_path=SILERO_VAD_ONNX.path())  # the real file still works
    assert vad.update(0.0, np.zeros(16000, np.float32)).new_frames > 0
