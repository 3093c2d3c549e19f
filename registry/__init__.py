"""Torch-free model registry client on MLflow: manifests, register, resolve, download, verify."""
