import mlflow
import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

class Dev(PythonModel):
    def predict(self, context, model_input, params=None):
        acc = model_input["accuracy"].to_numpy()
        score = 100 * acc
        levels = np.array(["beginner", "developing", "proficient", "advanced"])
        idx = np.minimum((acc * 4).astype(int), 3)
        p = np.full((len(acc), 4), 0.1); p[np.arange(len(acc)), idx] = 0.7
        return pd.DataFrame({"progress_score": score, "comprehension_level": levels[idx],
                             "p_beginner": p[:, 0], "p_developing": p[:, 1], "p_proficient": p[:, 2], "p_advanced": p[:, 3]})
set_model(Dev())
