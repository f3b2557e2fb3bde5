"""What MLflow runs to build the registered model when it loads it (models from code): an empty
``PortableEncoder`` that reads its encoder and settings from the logged model (``profiling.model.portable``)."""

import mlflow

from profiling.model.portable import PortableEncoder

mlflow.models.set_model(PortableEncoder())
