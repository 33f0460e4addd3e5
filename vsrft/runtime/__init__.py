"""Inference: ONNX export (once per architecture and weights), ONNX Runtime sessions, tiling."""
