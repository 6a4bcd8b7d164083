"""Datasets (PASCAL VOC, COCO, the built-in synthetic shapes), augmentation and collation."""
