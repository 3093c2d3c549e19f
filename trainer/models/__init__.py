"""Detection models: plain ViT backbone, necks and Mask R-CNN assembly (torchvision parts).

Import the submodules directly (``trainer.models.detector.build_detector``); this package imports
nothing heavy so that ``import vitbench.trainer.models`` stays cheap.
"""
