"""Boards read back from tracking: rows pooled over seeds, bootstrap CIs, paired tests, claims.

Rule: ``board`` may import ``core``, ``constants``, ``config``, ``data``, ``metrics`` and
``tracking``; never ``run`` (a board reads runs, it does not make them).
"""
