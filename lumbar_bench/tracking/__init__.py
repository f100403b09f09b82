"""The only code that imports MLflow: writing runs, reading them back, models, the server.

``names`` holds the default store, experiments and tag names without importing MLflow, so the
command line's ``--help`` stays fast; every other module here imports MLflow at its top.

Rule: ``tracking`` may import ``core``, ``constants``, ``config``, ``data``, ``metrics`` and
``approaches`` (the pyfunc model predicts through :mod:`lumbar_bench.approaches.trained`).
"""
