"""The code MLflow runs to build a lumbar-bench model when it loads one ("models from code").

:func:`lumbar_bench.tracking.pyfunc.save_pyfunc` saves this file into every model instead of a
pickled object; MLflow executes it at load time, and :func:`mlflow.models.set_model` hands it the
model. Nothing in the package imports this file.
"""

from mlflow.models import set_model

from lumbar_bench.tracking.pyfunc import LumbarBenchModel

set_model(LumbarBenchModel())
