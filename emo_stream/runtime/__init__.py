"""Inference runtimes for the language-model half of the engines.

One module per runtime, each owning everything that is specific to it (loading,
tokenization, KV cache, batching), so engines speak in prompts, labels and
embeddings and never in C structs:

* :mod:`emo_stream.runtime.llama_cpp` -- llama.cpp through the low-level
  ``llama-cpp-python`` bindings: label scoring with a cached static prompt
  prefix, short greedy rationales, and multimodal soft-token injection
  (Emotion-LLaMA style) through ``llama_batch.embd``.

Nothing here is imported by ``emo_stream`` at start-up: ``llama_cpp`` is an
optional, compiled dependency, and a robot that runs only the baseline engine
must not need it.
"""
