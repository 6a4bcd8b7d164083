"""Region proposals for R-CNN and Fast R-CNN: selective search and its on-disk cache.

* :mod:`detect.proposals.selective_search` — the algorithm (OpenCV's C++ implementation);
* :mod:`detect.proposals.cache` — one file per image, parallel computation, resumable,
  and :func:`~detect.proposals.cache.attach_proposals`, which gives a dataset its proposals.
"""
