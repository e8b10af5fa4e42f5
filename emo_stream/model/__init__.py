"""Model definitions: config dataclasses, torch modules and their factories.

Modules here may import torch (and transformers) at top level: they are what
builds, converts, trains and tests a model. Runtime paths on a robot use the
files exported from them (ONNX, GGUF) and must not import this package when
torch is not installed.
"""
