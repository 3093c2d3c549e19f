"""Flows that span packages (trainer, registry, export, service): the demo pipeline.

Use cases inside one package live there (``vitbench.trainer.runs``, ``vitbench.trainer.export.registered``,
``vitbench.registry.env``); a flow here only composes them.
"""
