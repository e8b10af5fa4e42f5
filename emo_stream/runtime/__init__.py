"""Inference runtimes: what executes the models, behind small interfaces.

One module per runtime, each owning everything that is specific to it (loading,
tokenization, KV cache, batching, providers), so engines speak in prompts,
labels, arrays and embeddings and never in C structs:

* :mod:`emo_stream.runtime.llama_cpp` -- llama.cpp through the low-level
  ``llama-cpp-python`` bindings: label scoring with a cached static prompt
  prefix, short rationales, and multimodal soft-token injection
  (Emotion-LLaMA style) through ``llama_batch.embd``;
* :mod:`emo_stream.runtime.lm` -- one interface for the language-model stage
  (torch reference or llama.cpp);
* :mod:`emo_stream.runtime.stage` with :mod:`~emo_stream.runtime.onnxruntime`
  and :mod:`~emo_stream.runtime.tensorrt` -- graph stages (encoders,
  projector, fusion);
* :mod:`emo_stream.runtime.exported` -- Emotion-LLaMA run from an export
  directory.

Nothing here is imported by ``emo_stream`` at start-up: ``llama_cpp``,
ONNX Runtime and TensorRT are optional, compiled dependencies, and a robot that
runs only the baseline engine must not need them.
"""
