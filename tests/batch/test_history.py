"""Loading a simulated history into silver: validated, MERGEd on event_id, bad lines quarantined."""

import json
import shutil

import pytest

from learnscore.batch.history import HistoryNotFound, load_history, read_history_manifest

pytestmark = pytest.mark.integration


def test_the_history_lands_in_silver_once(spark, silver_history, small_history):
    lake_config, versions = silver_history
    submissions = spark.read.format("delta").load(lake_config.table_path("silver.submissions"))
    outcomes = spark.read.format("delta").load(lake_config.table_path("silver.outcomes"))
    assert submissions.count() == outcomes.count() == 3000
    assert submissions.select("event_id").distinct().count() == 3000
    assert submissions.where("responses IS NULL OR size(responses) < 20 OR event_time IS NULL").count() == 0
    assert outcomes.join(submissions, outcomes.submission_event_id == submissions.event_id).count() == 3000

    again = load_history(spark, lake_config, small_history)  # loading twice changes nothing
    assert again["submissions"] == {"read": 3000, "valid": 3000, "inserted": 0, "quarantined": 0}
    assert again["outcomes"]["inserted"] == 0
    assert again["versions"] == versions


def test_broken_lines_are_quarantined_with_their_reason(spark, silver_history, small_history, tmp_path):
    lake_config, versions = silver_history
    folder = tmp_path / "broken"
    folder.mkdir()
    manifest = read_history_manifest(small_history)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    lines = (small_history / "submissions.jsonl").read_bytes().splitlines()[:5]
    missing_subject = json.loads(lines[0])
    del missing_subject["subject"]
    missing_subject["event_id"] = "6f1c3a52-8f0e-4c7b-9a55-0d2b9b1f0a77"
    (folder / "submissions.jsonl").write_bytes(b"\n".join([*lines, b"{not json", json.dumps(missing_subject).encode()]) + b"\n")
    shutil.copy(small_history / "outcomes.jsonl", folder / "outcomes.jsonl")

    report = load_history(spark, lake_config, folder)
    assert report["submissions"] == {"read": 7, "valid": 5, "inserted": 0, "quarantined": 2}
    assert report["versions"]["silver.submissions"] == versions["silver.submissions"]
    quarantined = {row.reason_code: row for row in spark.read.format("delta").load(
        lake_config.table_path("silver.quarantine")).where("source_topic = 'history:submissions.jsonl'").collect()}
    assert set(quarantined) == {"not_json", "missing_field"}
    assert "subject" in quarantined["missing_field"].reason
    assert quarantined["missing_field"].event_id == missing_subject["event_id"]

    load_history(spark, lake_config, folder)  # the same broken lines are not quarantined twice
    assert spark.read.format("delta").load(lake_config.table_path("silver.quarantine")).where(
        "source_topic = 'history:submissions.jsonl'").count() == 2


def test_a_folder_without_a_manifest_says_what_to_do(spark, config, tmp_path):
    with pytest.raises(HistoryNotFound, match="learnscore simulate history"):
        load_history(spark, config, tmp_path)
