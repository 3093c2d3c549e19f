"""COCO box and mask evaluation with pycocotools."""
