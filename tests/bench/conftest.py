"""Benchmarks run only under `make bench` (pytest-benchmark); `make test` skips them (--benchmark-skip)."""
