"""Benchmark: featurize + predict throughput of the diagnostic model (``learnscore bench model``).

Fits a model with the ``conf/`` hyperparameters on simulated submissions, then scores fresh
ones the way each caller does:

* ``direct``: :meth:`DiagnosticModel.predict` on Spark-shaped model input (numpy-array cells,
  as Arrow → pandas gives them), per batch size;
* ``pyfunc``: the same through ``mlflow.pyfunc.load_model`` (our skops loader and MLflow's
  wrapper), as the stream UDF and the endpoint call it;
* ``spark_udf`` (``--spark``): ``mlflow.pyfunc.spark_udf`` over a cached DataFrame of
  submissions on ``spark.master`` cores, written to a no-op sink: the UDF end to end.

Wall-clock and CPU rates are both reported: on a shared machine the CPU rate is the steadier one.
Results go to ``bench/results/model_scoring.json`` in the working directory (``--output``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

log = logging.getLogger(__name__)

# Relative to the folder the benchmark runs in (never inside the installed package).
RESULTS = Path("bench/results/model_scoring.json")


def _simulated(rows: int, seed: int):
    from learnscore.simulator.generator import Simulator

    batch = Simulator(seed=seed, start=datetime(2026, 1, 1, tzinfo=timezone.utc), interval_s=60,
                      run="bench").take(rows)
    table = pa.Table.from_pylist([{"subject": e["subject"], "grade_level": e["grade_level"],
                                   "responses": e["responses"]} for e in batch.submissions])
    return batch, table


def _rate(function, rows: int, repeats: int) -> dict[str, float]:
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return {"rows_per_s_wall": round(rows / min(wall), 1), "rows_per_s_cpu": round(rows / min(cpu), 1)}


def run_model_benchmark(config, *, train_rows: int = 20_000, score_rows: int = 20_000,
                        spark: bool = False, out: Path = RESULTS) -> dict[str, Any]:
    """Measure and write the figures; return them."""
    import mlflow
    import pandas as pd

    from learnscore.model.diagnostic import model_from_config
    from learnscore.model.features import compute_features, model_input_from_arrow, model_input_from_events
    from learnscore.model.loader import save_model_file
    from learnscore.model.packaging import input_example, model_signature

    train_batch, _ = _simulated(train_rows, seed=1)
    score_batch, score_table = _simulated(score_rows, seed=2)
    train_input = model_input_from_events(train_batch.submissions)
    outcomes = pd.DataFrame(train_batch.outcomes)
    log.info("fitting on %d simulated submissions", train_rows)
    started = time.perf_counter()
    model = model_from_config(config.model).fit(train_input, outcomes["observed_progress_score"],
                                               outcomes["observed_comprehension_level"])
    fit_seconds = time.perf_counter() - started
    score_input = model_input_from_arrow(score_table)
    responses = int(sum(len(items) for items in score_input["item_id"]))

    results: dict[str, Any] = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version()},
        "model": {"score": config.model.score.model_dump(), "level": config.model.level.model_dump(),
                  "features": len(model.feature_names_), "fit_rows": train_rows,
                  "fit_seconds": round(fit_seconds, 2)},
        "score_rows": score_rows, "responses_per_submission": round(responses / score_rows, 1),
        "direct": {}, "features_only": {}, "pyfunc": {},
    }
    for size in (10_000, 1_000, 100):
        batches = [score_input.iloc[i:i + size] for i in range(0, min(score_rows, 20 * size), size)]
        rows = sum(len(b) for b in batches)
        log.info("direct scoring in batches of %d", size)
        results["direct"][str(size)] = _rate(lambda batches=batches: [model.predict(b) for b in batches], rows, 3)
        results["features_only"][str(size)] = _rate(
            lambda batches=batches: [compute_features(b, model.item_bank_) for b in batches], rows, 3)
    results["single_row_ms"] = round(1000 / _rate(lambda: model.predict(score_input.iloc[:1]), 1, 20)
                                     ["rows_per_s_wall"], 3)

    with tempfile.TemporaryDirectory(prefix="learnscore-bench-") as scratch:
        data_dir = Path(scratch) / "diagnostic_model"
        save_model_file(model, data_dir)
        model_dir = Path(scratch) / "pyfunc"
        mlflow.pyfunc.save_model(str(model_dir), loader_module="learnscore.model.loader",
                                 data_path=str(data_dir), signature=model_signature(),
                                 input_example=input_example(score_input))
        loaded = mlflow.pyfunc.load_model(str(model_dir))
        for size in (10_000, 1_000):
            batches = [score_input.iloc[i:i + size] for i in range(0, score_rows, size)]
            results["pyfunc"][str(size)] = _rate(lambda batches=batches: [loaded.predict(b) for b in batches],
                                                 sum(len(b) for b in batches), 3)
        if spark:
            results["spark_udf"] = _spark_udf_rate(config, str(model_dir), score_batch.submissions)

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    log.info("wrote %s", out)
    return results


def _spark_udf_rate(config, model_dir: str, submissions: list[dict]) -> dict[str, Any]:
    """The UDF end to end: Spark → Arrow → pyfunc → struct, over cached submissions."""
    import mlflow
    import orjson
    from pyspark.sql import functions as F

    from learnscore.core.spark import create_spark_session
    from learnscore.model.features import spark_model_input_columns
    from learnscore.schemas.contract import spark_schema
    from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED
    from learnscore.schemas.scoring import PREDICTION_RESULT_TYPE

    session = create_spark_session(config, app_name="learnscore-bench-model")
    try:
        raw = session.createDataFrame([(orjson.dumps(e).decode(),) for e in submissions], "value string")
        frame = (raw.select(F.from_json("value", spark_schema(DIAGNOSTIC_SUBMITTED)).alias("e"))
                 .select("e.*").repartition(session.sparkContext.defaultParallelism).cache())
        rows = frame.count()
        predict = mlflow.pyfunc.spark_udf(session, model_dir, result_type=PREDICTION_RESULT_TYPE,
                                          env_manager="local")
        scored = frame.withColumn("prediction", predict(*spark_model_input_columns())).select("prediction.*")
        scored.write.format("noop").mode("overwrite").save()  # warm: workers start, model loads
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            scored.write.format("noop").mode("overwrite").save()
            timings.append(time.perf_counter() - started)
        return {"rows": rows, "partitions": frame.rdd.getNumPartitions(),
                "master": config.spark.master, "rows_per_s_wall": round(rows / min(timings), 1)}
    finally:
        session.stop()
