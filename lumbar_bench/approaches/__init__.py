"""Approaches, one file each; see :mod:`lumbar_bench.registry` for the names."""
