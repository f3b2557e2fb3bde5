"""Speed benchmarks of the profiling stages (not part of the library): ``python -m benchmarks.speed``."""
