"""Throughput of gpuaug against the baselines people use today, measured side by side.

Run ``python -m benchmarks --help``. Every run writes ``OUT/results.json`` (with the date, commit,
hardware and versions that produced it) and a bar chart per benchmark.
"""
