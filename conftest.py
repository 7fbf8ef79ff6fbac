"""Repository-wide pytest set-up.

The pytest-benchmark micro-benchmarks in ``benchmarks/`` run as plain tests (benchmarking disabled)
unless asked for with ``pytest benchmarks --benchmark-only``.
"""

import pytest
import torch


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if hasattr(config.option, "benchmark_disable") and not config.option.benchmark_only:
        config.option.benchmark_disable = True


@pytest.fixture(autouse=True)
def _doctest_torch(doctest_namespace):
    """Docstring examples use ``torch`` without importing it."""
    doctest_namespace["torch"] = torch

# The documented old import paths (gpuaug.dali, gpuaug.packed, ...) are aliases of the modules in the
# subpackages: their doctests run there, once.
collect_ignore = [f"gpuaug/{name}.py" for name in ("dali", "packed", "decode", "nvdecode", "samples")]
