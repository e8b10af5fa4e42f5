"""Deployment exports of Emotion-LLaMA models (``emo-stream export onnx|tensorrt|gguf``).

* :mod:`.onnx_export` -- every encoder and the projector/fusion as ONNX
  (torch.export + dynamo exporter, dynamic axes), fp16 / dynamic-INT8 variants,
  parity with torch measured at >= 3 shapes per file;
* :mod:`.tensorrt_export` -- TensorRT engines from those files with
  optimisation profiles from the manifest (TensorRT imported lazily);
* :mod:`.gguf_export` -- the LLaMA with LoRA merged as GGUF, quantized by
  llama.cpp, parity of label probabilities with torch;
* :mod:`.artifacts` -- atomic writes, ``manifest.json`` (written last, the
  commit mark) and checked loading;
* :mod:`.stages` -- the stage graphs and their tensor specs;
* :mod:`.cli` -- the argparse sub-commands.

The runtimes that read these exports are in :mod:`emo_stream.runtime`
(:mod:`~emo_stream.runtime.exported` puts them together). Nothing here is
imported at ``emo_stream`` start-up: torch, onnx, onnxruntime, gguf, llama.cpp
and TensorRT are all imported by the functions that need them.
"""
