"""Evaluation: PASCAL VOC average precision, COCO metrics through pycocotools, PR curves."""
