"""The CI regression gate (``lumbar-bench check``) and its baseline file.

Rule: ``gate`` may import everything below it: ``core``, ``constants``, ``config``, ``data``,
``metrics``, ``approaches``, ``tracking``, ``run`` and ``board``.
"""
