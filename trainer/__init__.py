"""Training side of vitbench: recipes, models, initializations, data, engine, evaluation, export.

Importing this package does not import torch; submodules that need it import it themselves.
"""
