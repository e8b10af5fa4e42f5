"""Fixtures for the export tests: one tiny model, exported once per session.

The tiny random model gives near-uniform label probabilities, which would make
"llama.cpp matches torch" trivially true. ``sharp_model_dir`` therefore gives
it non-zero LoRA adapters (so merging them matters) and an output layer scaled
x8 (so the label distribution is peaked: top label ~0.47), then saves it with
``save_pretrained`` -- the exports read it back as a user's model directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # tiny models on a small shared CPU: one intra-op thread is much faster than a contended pool
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sharpen(model, seed: int = 1, lora_std: float = 0.3, head_scale: float = 8.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * lora_std)
        model.llm.base_llama().lm_head.weight.mul_(head_scale)
    return model


@pytest.fixture(scope="session")
def sharp_model_dir(tmp_path_factory) -> Path:
    from emo_stream.export.common import build_tiny

    d = tmp_path_factory.mktemp("model") / "sharp-v1"
    sharpen(build_tiny("v1")).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def sharp_model(sharp_model_dir):
    from emo_stream.model.emotion_llama import EmotionLlama

    return EmotionLlama.from_pretrained(sharp_model_dir).eval()


@pytest.fixture(scope="session")
def export_v1(sharp_model_dir, tmp_path_factory) -> Path:
    """ONNX (fp32, fp16, int8) + GGUF (F16, Q8_0, Q4_K_M) of the sharpened tiny v1 model, in one directory."""
    from emo_stream.export.gguf_export import export_gguf
    from emo_stream.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("export") / "tiny-v1"
    export_onnx(sharp_model_dir, out, precisions=("fp32", "fp16", "int8"), threads=1)
    export_gguf(sharp_model_dir, out, quants=("F16", "Q8_0", "Q4_K_M"), threads=1)
    return out


@pytest.fixture(scope="session")
def manifest_v1(export_v1):
    from emo_stream.export.artifacts import load_manifest

    return load_manifest(export_v1, verify=True)


@pytest.fixture(scope="session")
def sharpen_model():
    """:func:`sharpen` for tests that build their own model (conftest modules are not importable)."""
    return sharpen
