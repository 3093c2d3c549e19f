"""Torch-free inference service: FastAPI app factory, routes, ONNX Runtime pipeline."""
