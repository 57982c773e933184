"""Model runtimes: the encoder (`Embedder`), the model folder format, the torch `SupportModel`, the
ONNX Runtime student, calibration, and loading whichever folder a deployment serves.

Depends on `core` only; retrieval, the service and training build on it.
"""
