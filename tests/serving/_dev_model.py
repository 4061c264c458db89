"""A stand-in pyfunc model (MLflow "models from code", no pickle) for the endpoint tests.

It scores the output of ``schemas.features.model_input_from_events`` (one row per submission,
list columns per response field) from the share of correct answers. It stays only until the
model branch's trained, skops-backed model can be registered by the test fixtures; then
``register_version`` in conftest.py registers that instead.
"""
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

class Dev(PythonModel):
    def predict(self, context, model_input, params=None):
        acc = np.array([np.mean(correct) for correct in model_input["correct"]], dtype=float)
        score = 100 * acc
        levels = np.array(["beginner", "developing", "proficient", "advanced"])
        idx = np.minimum((acc * 4).astype(int), 3)
        p = np.full((len(acc), 4), 0.1); p[np.arange(len(acc)), idx] = 0.7
        return pd.DataFrame({"progress_score": score, "comprehension_level": levels[idx],
                             "p_beginner": p[:, 0], "p_developing": p[:, 1], "p_proficient": p[:, 2], "p_advanced": p[:, 3]})
set_model(Dev())
