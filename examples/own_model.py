"""Bring your own model: train one with your own code, log it to MLflow, and let learnscore
register, gate, promote and stream-score it (docs/bring-your-own-model.md walks through it).

The model here is deliberately not learnscore's: a ridge regression for the progress score and a
multinomial logistic regression for the comprehension level, both on learnscore's shared
features (any features of your own work as well: the scoring contract is the raw submission).

    learnscore import ...          # or a demo/stream run: silver needs labelled submissions
    LEARNSCORE__MODELS__ALLOW_PICKLE=true python examples/own_model.py
    learnscore promote --version <the version it printed>

It is logged as a ``python_model`` pyfunc, which MLflow stores with cloudpickle: learnscore refuses
every pickle-based model unless the operator sets ``models.allow_pickle: true`` (loading a
pickle runs whatever code it names: allow it only for models from people who can already run
code on your machines). ``--register`` off: log only and print the URI.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


class RidgeAndLogistic(mlflow.pyfunc.PythonModel):
    """Submissions in (the scoring contract's model input), predictions out."""

    def __init__(self, item_bank: dict, score_model, level_model):
        self.item_bank, self.score_model, self.level_model = item_bank, score_model, level_model

    def _features(self, model_input: pd.DataFrame) -> pd.DataFrame:
        from learnscore.model.features import compute_features
        from learnscore.model.item_bank import ItemBank

        return compute_features(model_input, ItemBank.from_dict(self.item_bank))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from learnscore.model.features import as_model_input

        features = self._features(as_model_input(model_input))
        probabilities = self.level_model.predict_proba(features)
        levels = self.level_model.classes_
        out = pd.DataFrame({"progress_score": np.clip(self.score_model.predict(features), 0.0, 100.0),
                            "comprehension_level": levels[probabilities.argmax(axis=1)]})
        from learnscore.schemas.domain import LEVELS

        for level in LEVELS:
            column = np.flatnonzero(levels == level)
            out[f"p_{level}"] = probabilities[:, column[0]] if len(column) else 0.0
        return out


def train(model_input: pd.DataFrame, labels: pd.DataFrame) -> RidgeAndLogistic:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from learnscore.model.features import compute_features, flatten_model_input
    from learnscore.model.item_bank import fit_item_bank

    flat = flatten_model_input(model_input)
    bank = fit_item_bank(flat.item_id, flat.skill, flat.response_subject, flat.correct, flat.log_time,
                         flat.row, flat.n_rows)
    features = compute_features(model_input, bank)

    def linear(model):  # per-skill features are NaN where a submission has no item of that skill
        return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), model)

    score = linear(Ridge(alpha=1.0)).fit(features, labels["observed_progress_score"])
    level = linear(LogisticRegression(max_iter=500)).fit(features, labels["observed_comprehension_level"].astype(str))
    return RidgeAndLogistic(bank.to_dict(), score, level)


def log(model: RidgeAndLogistic, example: pd.DataFrame) -> str:
    """Log the model with the contract's signature and its item bank (for drift) as an artifact."""
    from learnscore.model.packaging import input_example, model_signature

    with tempfile.TemporaryDirectory() as scratch, mlflow.start_run(run_name="own-model"):
        bank = Path(scratch) / "item_bank.json"
        bank.write_text(json.dumps(model.item_bank))
        info = mlflow.pyfunc.log_model(name="model", python_model=model, signature=model_signature(),
                                       input_example=input_example(example), artifacts={"item_bank": str(bank)},
                                       pip_requirements=["scikit-learn", "pandas", "numpy"])
    return info.model_uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="labelled submissions to train on (latest)")
    parser.add_argument("--no-register", dest="register", action="store_false", help="log only")
    args = parser.parse_args()

    from learnscore.core.config import load_config
    from learnscore.core.tracking import use_mlflow
    from learnscore.registry.register import register_own_model
    from learnscore.registry.window import recent_labelled_window

    config = load_config()
    use_mlflow(config)
    model_input, labels = recent_labelled_window(config, args.rows)
    if len(labels) < 200:
        raise SystemExit(f"silver holds {len(labels)} labelled submissions; import or stream some first "
                         f"(this example trains on at least 200)")
    uri = log(train(model_input, labels), model_input)
    print(f"logged   {uri} (trained on {len(labels):,} labelled submissions)")
    if args.register:
        version = register_own_model(config, uri, actor="examples/own_model.py",
                                     reason="ridge + logistic regression from examples/own_model.py")
        print(f"version  {config.mlflow.model_name} v{version} → staging")
        print(f"next     learnscore promote --version {version}")


if __name__ == "__main__":
    main()
