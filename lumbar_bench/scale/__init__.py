"""Scale-out: approaches x folds x seeds through submitit (local, SLURM), SLURM job states.

Rule: ``scale`` may import everything below it except ``gate``: ``core``, ``constants``,
``config``, ``data``, ``metrics``, ``approaches``, ``tracking``, ``run`` and ``board``.
"""
