"""detect: the classic object-detection lineage (R-CNN, Fast R-CNN, Faster R-CNN, YOLOv1) on one frame.

Importing the package has no side effects; the sub-packages are imported on demand.
"""

__version__ = "0.1.0"
