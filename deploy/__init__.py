"""The ``vitbench`` command line, job specs, local executor and Kubernetes Job client."""
