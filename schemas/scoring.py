"""The scoring contract: what a model gets (model input) and what it must return (predictions).

Every model learnscore scores with — its own or one a team registers — is an MLflow pyfunc that
takes *model input*, one row per submission, and returns :data:`PREDICTION_COLUMNS`:

=====================  ==============================================================
model input column     type
=====================  ==============================================================
``subject``            str
``grade_level``        int64
``item_id``            list[str]   one value per response, in answer order
``skill``              list[str]
``correct``            list[bool]
``response_time_ms``   list[int64]
``attempts``           list[int64]
``hint_used``          list[bool]
=====================  ==============================================================

Outputs: ``progress_score`` (0–100), ``comprehension_level`` (one of ``LEVELS``) and one
probability per level (``p_<level>``, summing to 1). The feature computation of learnscore's
own model lives in :mod:`learnscore.model.features`; this module only names the columns.
"""

from __future__ import annotations

from learnscore.schemas.domain import LEVELS

MODEL_INPUT_COLUMNS = ("subject", "grade_level", "item_id", "skill", "correct", "response_time_ms", "attempts",
                       "hint_used")
RESPONSE_COLUMNS = MODEL_INPUT_COLUMNS[2:]
PROBABILITY_COLUMNS = tuple(f"p_{level}" for level in LEVELS)
PREDICTION_COLUMNS = ("progress_score", "comprehension_level", *PROBABILITY_COLUMNS)
#: The Spark type of the predictions, for ``mlflow.pyfunc.spark_udf(..., result_type=...)``.
PREDICTION_RESULT_TYPE = ", ".join(
    f"{name} {'string' if name == 'comprehension_level' else 'double'}" for name in PREDICTION_COLUMNS)
#: Progress scores are clipped to this range; anything else is unusable output.
SCORE_RANGE = (0.0, 100.0)
#: Class probabilities must sum to 1 within this.
PROBABILITY_TOLERANCE = 1e-3
