"""BI access: the daily aggregate with small-cell suppression, and SQL through the Thrift server."""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from learnscore.bi.daily_summary import refresh_daily_summary
from learnscore.core.lake import ensure_spark_tables, read_table
from learnscore.core.ports import free_port
from learnscore.schemas.tables import TABLES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAY1 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)


def _write(spark, config, name, rows):
    from pyspark.sql.types import StructType

    ensure_spark_tables(spark, config, [name])
    table = TABLES[name]
    spark.createDataFrame([tuple(row.get(c) for c in table.column_names) for row in rows],
                          StructType.fromDDL(table.ddl)) \
        .write.format("delta").mode("append").save(config.table_path(name))


def _seed(spark, config):
    """Day 1 math grade 4: 12 learners (kept), 11 with outcomes; day 1 reading grade 4: 3 learners
    (suppressed)."""
    predictions, outcomes = [], []
    for i in range(15):
        math = i < 12
        score = 40.0 + i
        level = "developing" if score < 50 else "proficient"
        event_id = f"00000000-0000-4000-8000-{i:012d}"
        predictions.append({"event_id": event_id, "learner_key": f"k{i}", "assessment_id": "a",
                            "subject": "math" if math else "reading", "grade_level": 4,
                            "event_time": DAY1 + timedelta(minutes=i), "progress_score": score,
                            "comprehension_level": level, "p_beginner": 0.1, "p_developing": 0.4,
                            "p_proficient": 0.4, "p_advanced": 0.1, "model_name": "m", "model_version": "1",
                            "scored_at": DAY1 + timedelta(minutes=i, seconds=1), "latency_s": 1.0, "batch_id": 0})
        if i < 11:
            outcomes.append({"event_id": event_id, "learner_key": f"k{i}", "subject": "math", "grade_level": 4,
                             "event_time": DAY1 + timedelta(minutes=i), "model_version": "1",
                             "progress_score": score, "comprehension_level": level,
                             "observed_progress_score": score + 4, "observed_comprehension_level": level,
                             "abs_error": 4.0, "level_correct": True, "outcome_time": DAY1 + timedelta(days=20),
                             "joined_at": DAY1 + timedelta(days=20)})
    _write(spark, config, "gold.predictions", predictions)
    _write(spark, config, "gold.prediction_outcomes", outcomes)


def test_daily_summary_suppresses_small_cells_and_is_idempotent(spark, config):
    _seed(spark, config)
    assert refresh_daily_summary(spark, config) == 1
    first = read_table(config, "gold.daily_summary")
    assert refresh_daily_summary(spark, config) == 1
    again = read_table(config, "gold.daily_summary")

    assert len(again) == 1
    row = again.iloc[0]
    assert (str(row["day"]), row["subject"], row["grade_level"], row["submissions"], row["learners"]) == (
        "2026-11-02", "math", 4, 12, 12)
    assert row["mean_predicted_score"] == pytest.approx(45.5)
    assert (row["share_developing"], row["share_proficient"]) == (pytest.approx(10 / 12), pytest.approx(2 / 12))
    assert (row["outcomes"], row["mean_abs_error"]) == (11, 4.0)
    assert first.drop(columns="updated_at").equals(again.drop(columns="updated_at"))

    # A cell of 12 learners whose outcomes come from 11 shows its learners but not their error.
    stricter = config.model_copy(update={"privacy": config.privacy.model_copy(update={"min_cell_learners": 12})})
    assert refresh_daily_summary(spark, stricter) == 1
    row = read_table(config, "gold.daily_summary").iloc[0]
    assert (row["learners"], row["outcomes"]) == (12, 11) and pd.isna(row["mean_abs_error"])


def _wait_for_port(port: int, process: subprocess.Popen, log_file: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"learnscore bi exited early:\n{log_file.read_text()[-4000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise AssertionError(f"the Thrift server did not listen within {timeout_s}s:\n{log_file.read_text()[-4000:]}")


def _beeline_command(port: int) -> list[str]:
    import pyspark

    beeline = Path(pyspark.__file__).parent / "bin" / "beeline"
    return [str(beeline), "-u", f"jdbc:hive2://127.0.0.1:{port}/bi", "--silent=true", "--outputformat=csv2"]


def _beeline_env() -> dict[str, str]:
    import pyspark

    return {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent)}


def _beeline_run(port: int, sql: str, password_file: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_beeline_command(port), "-n", "bi", "-w", str(password_file), *options,
                           *(["-e", sql] if sql else [])],
                          capture_output=True, text=True, timeout=180, env=_beeline_env())


def _beeline(port: int, sql: str, first_column: str, password_file: Path) -> list[dict[str, str]]:
    answer = _beeline_run(port, sql, password_file)
    assert answer.returncode == 0, answer.stderr[:2000] + " ... " + answer.stderr[-1000:]
    # Beeline echoes its prompt ("0: jdbc:hive2://...> ") in front of the header row.
    lines = [re.sub(r"^\d+: jdbc:hive2://\S*> ", "", line) for line in answer.stdout.splitlines() if line.strip()]
    starts = [n for n, line in enumerate(lines) if line.split(",")[0] == first_column]
    assert starts, f"no {first_column} header in beeline's output:\n{answer.stdout[-2000:]}"
    return list(csv.DictReader(io.StringIO("\n".join(lines[starts[0]:]))))


@pytest.mark.slow
def test_bi_signs_in_reads_the_bi_views_and_nothing_else(spark, config, tmp_path):
    _seed(spark, config)
    ensure_spark_tables(spark, config, ["silver.submissions"])  # raw learner ids: never served
    refresh_daily_summary(spark, config)
    port = free_port()
    log_file = tmp_path / "bi.log"
    password = secrets.token_urlsafe(32)
    password_file, wrong_file = tmp_path / "bi-password", tmp_path / "wrong-password"
    password_file.write_text(password)
    wrong_file.write_text(password[:-1] + ("x" if password[-1] != "x" else "y"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEARNSCORE__STATE_DIR": str(tmp_path / "state"),
           "LEARNSCORE__LAKE__ROOT": config.lake.root, "LEARNSCORE__BI__THRIFT_PORT": str(port),
           "LEARNSCORE__SPARK__MASTER": "local[1]", "LEARNSCORE_BI_PASSWORD": password}
    silver = config.table_path("silver.submissions")
    with open(log_file, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "learnscore", "bi"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(port, process, log_file)
        via_jdbc = _beeline(port, "SELECT event_id, subject, progress_score, model_version "
                                  "FROM bi.predictions ORDER BY event_id", "event_id", password_file)
        summary = _beeline(port, "SELECT subject, learners FROM daily_summary", "subject", password_file)
        tables = _beeline(port, "SHOW TABLES IN bi", "namespace", password_file)
        script = tmp_path / "hostile.sql"  # -f with --force runs every statement, errors or not
        script.write_text(";\n".join([
            f"SELECT count(*) FROM delta.`{silver}`",
            f"SELECT * FROM text.`{password_file}`",
            "SELECT count(*) FROM bi.predictions WHERE event_id IN (SELECT event_id FROM delta.`" + silver + "`)",
            f"DELETE FROM delta.`{silver}`",
            f"DELETE FROM delta.`{config.table_path('gold.predictions')}`",
            f"CREATE TABLE stolen USING delta LOCATION '{silver}'",
            "SET spark.sql.runSQLOnFiles=true",
            "SELECT reflect('java.lang.System', 'getenv', 'LEARNSCORE_BI_PASSWORD')"]) + ";\n")
        refused = _beeline_run(port, "", password_file, "--force=true", "-f", str(script))
        intruder = _beeline_run(port, "SELECT count(*) FROM bi.predictions", wrong_file)
        anonymous = subprocess.run([*_beeline_command(port), "-e", "SELECT count(*) FROM bi.predictions"],
                                   capture_output=True, text=True, timeout=180, env=_beeline_env())
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    direct = read_table(config, "gold.predictions").sort_values("event_id")
    assert [(row["event_id"], row["subject"], float(row["progress_score"]), row["model_version"])
            for row in via_jdbc] == list(zip(direct["event_id"], direct["subject"],
                                             direct["progress_score"], direct["model_version"]))
    assert len(via_jdbc) == 15
    assert summary == [{"subject": "math", "learners": "12"}]
    served = {row["tableName"] for row in tables}
    assert {"predictions", "daily_summary", "model_events", "stream_progress"} <= served
    assert not served & {"submissions", "quarantine", "outcomes", "diagnostic_submitted"}

    said = refused.stdout + refused.stderr
    errors = [line[:300] for line in said.splitlines() if line.startswith("Error:")]
    assert sum("BI reads the views of the `bi` schema only" in e for e in errors) == 3, errors
    assert sum("the BI server is read-only" in e for e in errors) == 4, errors
    assert "reflect/java_method are not allowed" in said and password not in said, errors
    assert read_table(config, "gold.predictions").shape[0] == 15  # nothing deleted
    for refused_login in (intruder, anonymous):  # a wrong password, and none at all
        assert refused_login.returncode != 0 and "15" not in refused_login.stdout, refused_login.stdout
        assert "Error validating the login" in refused_login.stderr or "Could not open client" in \
            refused_login.stderr, refused_login.stderr[-2000:]
