"""Importing a simulated history folder (``learnscore import --history``): the Kafka-contract
mapping, MERGEd on event_id, bad lines quarantined with their line numbers."""

import json
import shutil

import pytest

from learnscore.batch.history import HistoryNotFound
from learnscore.batch.importer import import_history

pytestmark = pytest.mark.integration
SILVER = ("silver.submissions", "silver.outcomes")


def test_the_history_lands_in_silver_once(spark, silver_history, small_history):
    lake_config, versions = silver_history
    submissions = spark.read.format("delta").load(lake_config.table_path("silver.submissions"))
    outcomes = spark.read.format("delta").load(lake_config.table_path("silver.outcomes"))
    assert submissions.count() == outcomes.count() == 3000
    assert submissions.select("event_id").distinct().count() == 3000
    assert submissions.where("responses IS NULL OR size(responses) < 20 OR event_time IS NULL").count() == 0
    assert outcomes.join(submissions, outcomes.submission_event_id == submissions.event_id).count() == 3000
    first_line = json.loads((small_history / "submissions.jsonl").read_text().splitlines()[0])
    lineage = json.loads(submissions.where(submissions.event_id == first_line["event_id"]).first().import_lineage)
    assert lineage["file"].endswith("submissions.jsonl") and lineage["rows"] == "1"

    again = import_history(spark, lake_config, small_history)  # importing twice changes nothing
    assert (again.submissions.records, again.submissions.staged, again.submissions.landed,
            again.submissions.already_in_silver, again.submissions.refusals.total) == (3000, 3000, 0, 3000, 0)
    assert (again.outcomes.landed, again.outcomes.already_in_silver) == (0, 3000)
    assert {name: again.versions[name] for name in SILVER} == {name: versions[name] for name in SILVER}


def test_broken_lines_are_quarantined_with_their_reason(spark, silver_history, small_history, tmp_path):
    lake_config, versions = silver_history
    folder = tmp_path / "broken"
    folder.mkdir()
    shutil.copy(small_history / "manifest.json", folder / "manifest.json")
    lines = (small_history / "submissions.jsonl").read_bytes().splitlines()[:5]
    missing_subject = json.loads(lines[0])
    del missing_subject["subject"]
    missing_subject["event_id"] = "6f1c3a52-8f0e-4c7b-9a55-0d2b9b1f0a77"
    (folder / "submissions.jsonl").write_bytes(b"\n".join([*lines, b"{not json", json.dumps(missing_subject).encode()]) + b"\n")
    shutil.copy(small_history / "outcomes.jsonl", folder / "outcomes.jsonl")

    report = import_history(spark, lake_config, folder)
    assert (report.submissions.records, report.submissions.staged, report.submissions.landed) == (7, 5, 0)
    assert dict(report.submissions.refusals.counts) == {"not_json": 1, "missing_field": 1}
    assert report.submissions.refusals.examples == {"not_json": ["6"], "missing_field": ["7"]}
    assert report.versions["silver.submissions"] == versions["silver.submissions"]
    quarantine = spark.read.format("delta").load(lake_config.table_path("silver.quarantine")).where(
        "source_topic = 'import:submissions.jsonl'")
    quarantined = {row.reason_code: row for row in quarantine.collect()}
    assert set(quarantined) == {"not_json", "missing_field"}
    assert quarantined["missing_field"].reason.startswith("row 7 of submissions.jsonl: missing_field at subject")
    assert quarantined["missing_field"].event_id == missing_subject["event_id"]
    assert json.loads(quarantined["not_json"].import_lineage)["rows"] == "6"

    import_history(spark, lake_config, folder)  # the same broken lines are not quarantined twice
    assert quarantine.count() == 2


def test_a_folder_without_a_manifest_says_what_to_do(spark, config, tmp_path):
    with pytest.raises(HistoryNotFound, match="learnscore simulate history"):
        import_history(spark, config, tmp_path)
