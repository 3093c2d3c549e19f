"""In-platform pre-training of the study's ViT: MAE, supervised (DeiT) and MoCo v3.

Modules: ``encoder`` (the ViT under the releases' names), ``mae``, ``supervised``, ``mocov3`` (the
methods), ``data`` (images and augmentations), ``formats`` (writing the releases' checkpoint formats),
``recipes`` (typed pre-training recipes) and ``task`` (one method as a unit the engine can run).
"""
