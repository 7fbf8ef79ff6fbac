"""Repository-wide pytest set-up.

The pytest-benchmark micro-benchmarks in ``benchmarks/`` run as plain tests (benchmarking disabled)
unless asked for with ``pytest benchmarks --benchmark-only``.
"""

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if hasattr(config.option, "benchmark_disable") and not config.option.benchmark_only:
        config.option.benchmark_disable = True
