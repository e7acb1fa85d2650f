"""MLflow "models from code" entry point: the file MLflow runs to build the forecast pyfunc model.

Logging the model as this file (instead of a cloudpickled object) keeps the stored model free of
pickled code; the fitted forecaster itself is the model's ``forecaster`` artifact.
"""

import mlflow

from hub_ml.forecast.mlflow_model import EnsemblePyfuncModel

mlflow.models.set_model(EnsemblePyfuncModel())
