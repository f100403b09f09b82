"""One approach on one fold: the resolved plan, fit, predict, score and log (``lumbar-bench run``).

Rule: ``run`` may import ``core``, ``constants``, ``config``, ``data``, ``metrics``, ``approaches``
and ``tracking``; nothing above it (``board``, ``gate``, ``scale``, ``cli``).
"""
