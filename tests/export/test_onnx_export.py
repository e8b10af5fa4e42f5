"""ONNX export of the tiny Emotion-LLaMA: manifest contents and torch vs ONNX Runtime within its tolerance."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from emo_stream.export.artifacts import sha256_file
from emo_stream.export.onnx_export import compare_outputs, measure_parity, ort_session
from emo_stream.export.stages import stage_specs

STAGES_V1 = ["global", "face", "temporal", "audio", "projector"]


@pytest.mark.slow
def test_manifest_describes_every_file(manifest_v1, export_v1):
    onnx_section = manifest_v1["onnx"]
    assert onnx_section["opset"] == 18 and onnx_section["stage_order"] == STAGES_V1
    for name in STAGES_V1:
        st = onnx_section["stages"][name]
        assert st["inputs"] and st["outputs"] and st["dynamic_axes"]
        assert all(t["dtype"] in ("float32", "bool") for t in st["inputs"] + st["outputs"])
        assert set(st["variants"]) == {"fp32", "fp16", "int8"}
        for prec, v in st["variants"].items():
            f = export_v1 / v["file"]
            assert manifest_v1.files[v["file"]]["sha256"] == sha256_file(f)
            par = v["parity"]
            dims = [s["dims"] for s in par["per_shape"]]
            assert par["shapes"] >= 3 and len({tuple(sorted(d.items())) for d in dims}) >= 3
            assert len({d.get("batch", d.get("faces")) for d in dims}) >= 3  # three batch sizes
            assert par["max_abs"] <= v["tolerance"]["abs"] and v["precision"] == prec
            # dynamic axes are symbolic in the graph; fixed ones are the manifest's numbers
            g = onnx.load(str(f), load_external_data=False)
            for gi, spec in zip(g.graph.input, st["inputs"]):
                assert gi.name == spec["name"]
                for d, want in zip(gi.type.tensor_type.shape.dim, spec["shape"]):
                    assert bool(d.dim_param) if isinstance(want, str) else d.dim_value == want
        assert st["variants"]["fp32"]["parity"]["max_rel"] < 1e-5
    assert manifest_v1["onnx"]["stages"]["audio"]["dynamic_axes"]["samples"]["min"] == 1600
    assert manifest_v1["model"]["source"].endswith("sharp-v1") and not manifest_v1["model"]["random_weights"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES_V1)
def test_onnxruntime_matches_torch_within_the_manifest_tolerance(stage, manifest_v1, export_v1, sharp_model):
    """Fresh inputs (new seeds; fp32 also at new shapes) stay within what the manifest reports."""
    spec = stage_specs(sharp_model)[stage]
    for prec, v in manifest_v1["onnx"]["stages"][stage]["variants"].items():
        sess = ort_session(export_v1 / v["file"], threads=1)
        shapes = [dict(s["dims"]) for s in v["parity"]["per_shape"]]
        if prec == "fp32":  # other batch sizes and lengths than the export measured
            shapes = [{k: n + 2 for k, n in d.items()} for d in shapes]
        res = measure_parity(spec, sess, shapes, seed=77)
        assert res["shapes"] >= 3 and res["bool_mismatches"] == 0, (prec, res)
        assert res["max_abs"] <= v["tolerance"]["abs"], (prec, res["max_abs"], v["tolerance"])


@pytest.mark.slow
def test_v2_conv_attention_fusion_export(tmp_path):
    """The v2 fusion (four dynamic token axes, masked softmax over modalities), weights as external data
    (the layout big models need); ~10 s of symbolic tracing."""
    from emo_stream.export.common import build_tiny, load_source_model
    from emo_stream.export.onnx_export import export_onnx

    out = tmp_path / "v2"
    m = export_onnx(load_source_model("tiny-v2"), out, precisions=("fp16", "int8"), stages=["fusion"], threads=1, external_data="yes")
    st = m["onnx"]["stages"]
    assert set(st) == {"fusion"} and m["onnx"]["stage_order"] == ["fusion"]
    fusion = st["fusion"]
    assert [t["name"] for t in fusion["inputs"]][-1] == "present" and "global_len" in fusion["dynamic_axes"]
    for v in fusion["variants"].values():
        assert v["parity"]["max_abs"] <= v["tolerance"]["abs"] and v["data_file"] == v["file"] + ".data"
        assert {v["file"], v["data_file"]} <= set(m["files"])
    model = build_tiny("v2")
    spec = stage_specs(model)["fusion"]
    sess = ort_session(out / fusion["variants"]["fp32"]["file"], threads=1)
    # an absent modality (one masked dummy token, present False) equals the torch fusion without it
    feeds = spec.sample({"batch": 2, "global_len": 17, "face_len": 3, "temporal_len": 8, "audio_len": 50}, seed=5)
    feeds["present"][:] = True
    feeds["face_tokens"] = np.zeros((2, 1, 16), np.float32)
    feeds["face_mask"] = np.zeros((2, 1), bool)
    feeds["present"][:, 1] = False
    got = dict(zip(spec.output_names, sess.run(spec.output_names, feeds)))
    import torch

    with torch.no_grad():
        ref = model.projector({n: (torch.from_numpy(feeds[f"{n}_tokens"]), torch.from_numpy(feeds[f"{n}_mask"])) for n in ("global", "temporal", "audio")})
    assert np.abs(got["tokens"] - ref.tokens.numpy()).max() < 1e-5
    assert np.allclose(got["attention"][..., 1], 0.0)
    cmp = compare_outputs(spec.run_torch(feeds), got)
    assert cmp["max_abs"] < 1e-5 and cmp["bool_mismatches"] == 0
