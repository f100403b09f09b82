"""Approaches, one file each; see :mod:`lumbar_bench.approaches.registry` for the names."""
