"""The mAP benchmark: every detector trained and evaluated on the same data, in one table.

    from detect.benchmark import BenchmarkOptions, run_benchmark
    results = run_benchmark(BenchmarkOptions(data="../shared/data/raccoon", out=Path("runs/benchmark_raccoon")))

- ``runner``: which config each detector trains with, training or loading it, evaluating and
  timing it, and the run as a whole (``tools/benchmark.py`` is its command line).
- ``timing``: inference, backbone, proposal and training-step timers (shared with ``benchmarks/``).
- ``memory``: peak memory of inference, training state released.
- ``reproduction``: does this run reproduce an earlier ``results.json``?
- ``report``: the machine, ``results.md`` and the speed-against-mAP plot.
"""

from detect.benchmark.runner import DETECTORS, TITLES, BenchmarkOptions, run_benchmark

__all__ = ["DETECTORS", "TITLES", "BenchmarkOptions", "run_benchmark"]
