"""Config dataclasses of the model's parts, importable without torch.

The torch modules of :mod:`emo_stream.model` re-export them (old import paths
keep working); the exported runtime (:mod:`emo_stream.runtime.exported`) reads
an export's config through these on a robot where torch is not installed.
"""
