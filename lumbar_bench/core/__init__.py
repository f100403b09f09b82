"""The harness's foundations, used by every other room.

Errors, atomic files, progress bars, process pools, signals, seeding, budgets, torchrun, the
stage cache, the default paths and the device choice.

Rule: ``core`` imports nothing else of lumbar_bench.
"""
