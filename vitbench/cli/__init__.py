"""The ``vitbench`` command line. Each submodule adds one group of commands to the root app."""
