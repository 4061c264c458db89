"""``learnscore import``: warehouse exports into silver, validated by the stream's contract.

Unit tests (no Spark, no broker) cover the mapping, the conversions, the grouping, the event ids
and bounded memory on the staging side; the integration tests land real files in real Delta
tables. The 2-million-row figure lives in the benchmark (``learnscore bench import``): here the
bounded-memory check stages a 50k- and a 200k-row Parquet file with small chunks and partitions
and compares the peak memory of the two processes.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from learnscore.batch.import_mapping import MappingError, kafka_contract_mapping, load_mapping, parse_mapping
from learnscore.batch.import_read import InputFileError
from learnscore.batch.importer import ImportRequest, dry_run_report, import_files, stage_import
from learnscore.schemas.domain import Domain
from learnscore.simulator.export import write_export
from tests.support import ROOT

WAREHOUSE = ROOT / "examples" / "mappings" / "warehouse-long.yaml"
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def export(small_history, tmp_path_factory) -> dict:
    """``small_history`` (3,000 submissions, 90,059 answers) as a warehouse's long CSV export."""
    return write_export(small_history, tmp_path_factory.mktemp("export"))


def _stage(tmp_path, submissions, mapping, outcomes=None, **options):
    folder = tmp_path / f"staged-{len(list(tmp_path.glob('staged-*')))}"
    return stage_import(ImportRequest(Path(submissions), mapping, Path(outcomes) if outcomes else None), Domain(),
                        folder, now=NOW, import_id="test", **options)


def _staged_rows(staged, kind="submissions", drop=("import_lineage",)) -> list[dict]:
    table = pq.read_table(staged.folder / kind) if staged.files(kind) else None
    if table is None:
        return []
    return sorted(table.drop([c for c in drop if c in table.column_names]).to_pylist(),
                  key=lambda row: (row["event_id"] or "", row.get("reason_code") or ""))


def _without_event_ids(mapping):
    """The Kafka-contract mapping, but deriving ids from the key as a long file does."""
    document = mapping.model_dump(exclude_none=True)
    for name in ("event_id", "schema_version"):
        del document["submissions"]["columns"][name]
    del document["outcomes"]
    return parse_mapping(document)


# -- the mapping -------------------------------------------------------------------------------


def test_the_examples_are_valid_and_the_kafka_contract_one_is_the_builtin_mapping():
    assert load_mapping(ROOT / "examples" / "mappings" / "kafka-contract.yaml") == kafka_contract_mapping()
    warehouse = load_mapping(WAREHOUSE)
    assert warehouse.submissions.layout == "long" and warehouse.submissions.units.response_time == "s"


def _long_mapping(**changes) -> dict:
    document = {"submissions": {"columns": {field: field for field in (
        "learner_id", "assessment_id", "submitted_at", "subject", "grade_level", "item_id", "skill", "correct",
        "response_time", "attempts", "hint_used")}}}
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = document
        for step in parents:
            node = node.setdefault(step, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return document


@pytest.mark.parametrize(("changes", "message"), [
    ({"submissions.columns.lerner_id": "x"}, r"submissions.columns.lerner_id: unknown key; did you mean learner_id\?"),
    ({"submissions.colums": {}}, r"submissions.colums: unknown key; did you mean columns\?"),
    ({"submissions.columns.attempts": None}, r"attempts has neither a column nor a default: .* defaults.attempts: 1"),
    ({"submissions.columns.responses": "rs"}, r"columns.responses is for layout nested"),
    ({"submissions.layout": "nested"}, r"layout nested needs columns.responses"),
    ({"submissions.layout": "nested", "submissions.columns.responses": "r", "submissions.format": "csv"},
     r"a CSV file has no list columns"),
    ({"submissions.units.response_time": "minutes"}, r"submissions.units.response_time: Input should be 's' or 'ms'"),
    ({"timezone": "Mars/Olympus"}, r"unknown time zone 'Mars/Olympus'"),
    ({"outcomes.columns": {"learner_id": "l", "observed_score": "s", "observed_at": "t"}},
     r"an outcome must name its submission"),
])
def test_a_wrong_mapping_names_the_key_and_what_to_write(changes, message):
    with pytest.raises(MappingError, match=message):
        parse_mapping(_long_mapping(**changes), "m.yaml")


def test_a_default_replaces_a_missing_column():
    mapping = parse_mapping(_long_mapping(**{"submissions.columns.attempts": None,
                                             "submissions.defaults.attempts": 1}))
    assert mapping.submissions.columns.attempts is None and mapping.submissions.defaults.attempts == 1


def test_a_mapping_file_that_cannot_be_read_says_where(tmp_path):
    with pytest.raises(MappingError, match=r"mapping file .*nope.yaml not found; start from one in examples/mappings/"):
        load_mapping(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("submissions:\n  columns:\n    learner_id: [unclosed\n")
    with pytest.raises(MappingError, match=r"broken.yaml line \d+ is not valid YAML"):
        load_mapping(broken)


# -- staging: conversions, grouping, ids -----------------------------------------------------------


def test_a_long_csv_and_the_nested_jsonl_of_the_same_data_stage_the_same_events(tmp_path, export, small_history):
    long = _stage(tmp_path, export["answers"], load_mapping(WAREHOUSE), chunk_rows=5000, partition_rows=20_000)
    nested = _stage(tmp_path, small_history / "submissions.jsonl", _without_event_ids(kafka_contract_mapping()),
                    chunk_rows=500, partition_rows=20_000)
    assert (long.submissions.records, long.submissions.events, long.submissions.staged) == (90_059, 3000, 3000)
    assert (nested.submissions.records, nested.submissions.staged) == (3000, 3000)
    assert _staged_rows(long) == _staged_rows(nested)


def test_responses_keep_the_file_order_and_rows_group_by_learner_assessment_and_time(tmp_path):
    header = "learner,test,at,subject,grade,item,skill,ok,ms\n"
    rows = [  # two submissions of one learner interleaved, and a time spelt two ways
        "L1,T,2026-01-31T09:30:00Z,math,5,i3,s,1,100",
        "L1,T,2026-01-31T10:30:00+01:00,math,5,i1,s,0,200",  # the same moment
        "L1,T,2026-01-31T09:45:00Z,math,5,i9,s,1,300",
        "L1,T,2026-01-31 09:30:00,math,5,i2,s,yes,400",       # no offset: the mapping's zone (UTC)
    ]
    path = tmp_path / "answers.csv"
    path.write_text(header + "\n".join(rows) + "\n")
    mapping = parse_mapping({"submissions": {"columns": {
        "learner_id": "learner", "assessment_id": "test", "submitted_at": "at", "subject": "subject",
        "grade_level": "grade", "item_id": "item", "skill": "skill", "correct": "ok", "response_time": "ms"},
        "defaults": {"attempts": 1, "hint_used": False}}})
    staged = _stage(tmp_path, path, mapping)
    by_items = {tuple(r["item_id"] for r in row["responses"]): row for row in _staged_rows(staged)}
    assert set(by_items) == {("i3", "i1", "i2"), ("i9",)}
    first = by_items[("i3", "i1", "i2")]
    assert [r["correct"] for r in first["responses"]] == [True, False, True]
    assert [r["attempts"] for r in first["responses"]] == [1, 1, 1]  # the default
    assert json.loads(pq.read_table(staged.folder / "submissions").column("import_lineage").to_pylist()[0])["rows"] in ("1-2,4", "3")
    again = _stage(tmp_path, path, mapping)  # ids are keyed, not random: a re-import finds them
    assert {row["event_id"] for row in _staged_rows(again)} == {row["event_id"] for row in _staged_rows(staged)}


def test_seconds_and_milliseconds_give_the_same_events(tmp_path, export):
    answers = pcsv.read_csv(export["answers"], convert_options=pcsv.ConvertOptions(
        column_types={"seconds_spent": pa.float64(), "student_id": pa.string(), "test_id": pa.string(),
                      "taken_at": pa.string()}))
    in_ms = answers.set_column(answers.schema.get_field_index("seconds_spent"), "ms_spent",
                               pa.compute.multiply(answers["seconds_spent"], 1000))
    pq.write_table(in_ms.slice(0, 3000), tmp_path / "answers_ms.parquet")
    pcsv.write_csv(answers.slice(0, 3000), tmp_path / "answers_s.csv")
    seconds = load_mapping(WAREHOUSE)
    document = seconds.model_dump(exclude_none=True)
    document["submissions"]["columns"]["response_time"] = "ms_spent"
    document["submissions"]["units"]["response_time"] = "ms"
    millis = parse_mapping(document)
    assert _staged_rows(_stage(tmp_path, tmp_path / "answers_s.csv", seconds)) == \
        _staged_rows(_stage(tmp_path, tmp_path / "answers_ms.parquet", millis))


def test_outcomes_find_their_submission_by_key_and_get_a_level_from_the_score(tmp_path, export):
    document = load_mapping(WAREHOUSE).model_dump(exclude_none=True)
    del document["outcomes"]["columns"]["observed_level"]
    staged = _stage(tmp_path, export["answers"], parse_mapping(document), export["outcomes"])
    submissions = {row["event_id"]: row for row in _staged_rows(staged)}
    outcomes = _staged_rows(staged, "outcomes", drop=("import_lineage", "_raw_value"))
    assert len(outcomes) == 3000 and {o["submission_event_id"] for o in outcomes} == set(submissions)
    domain = Domain()
    assert all(o["observed_comprehension_level"] == domain.level_of(o["observed_progress_score"]) for o in outcomes)
    assert outcomes[0]["_reference"].startswith("learner L")


def test_unreadable_and_invalid_values_are_refused_by_the_contract_with_their_rows(tmp_path, export):
    lines = Path(export["answers"]).read_text().splitlines()
    header, body = lines[0], lines[1:81]  # the first three submissions (rows 1-27, 28-55, 56-80)
    cells = [line.split(",") for line in body]
    cells[3][7] = '"maybe"'        # row 4: correct cannot be read
    cells[30][8] = "-5"            # row 31: a negative time (readable; the contract refuses it)
    cells[60][4] = "13"            # row 61: one row disagrees with its submission's grade
    body = [",".join(c) for c in cells]
    body.insert(70, '"L0","only","three"')  # row 71: too few fields
    path = tmp_path / "broken.csv"
    path.write_text("\n".join([header, *body]) + "\n")
    staged = _stage(tmp_path, path, load_mapping(WAREHOUSE))
    report = dry_run_report(staged)
    assert dict(staged.submissions.refusals.counts) == {"wrong_type": 1, "out_of_range": 1,
                                                        "inconsistent_rows": 1, "malformed_row": 1}
    assert staged.submissions.refusals.examples == {"wrong_type": ["1-27"], "out_of_range": ["28-55"],
                                                    "inconsistent_rows": ["56-70,72-81"], "malformed_row": ["71"]}
    quarantine = {row["reason_code"]: row for row in _staged_rows(staged, "quarantine", drop=())}
    assert quarantine["wrong_type"]["reason"] == (
        "rows 1-27 of broken.csv: wrong_type at responses[3].correct: expected true/false, got string")
    assert json.loads(quarantine["wrong_type"]["raw_value"])["responses"][3]["correct"] == "maybe"
    assert "out_of_range at responses[3].response_time_ms: -5000 is below the minimum 0" in quarantine["out_of_range"]["reason"]
    assert "disagree on grade_level: 1 in row 56, 13 in row 61" in quarantine["inconsistent_rows"]["reason"]
    assert quarantine["malformed_row"]["raw_value"] == b'"L0","only","three"'
    assert json.loads(quarantine["malformed_row"]["import_lineage"]) == {
        "import_id": "test", "file": str(path.resolve()), "rows": "71"}
    assert report.quarantined == 4 and staged.submissions.staged == 0
    assert any("malformed_row" in line and "row 71" in line for line in report.lines())


# -- staging: files that cannot be imported ---------------------------------------------------------


def test_a_missing_column_names_it_and_the_mapping_key_in_every_format(tmp_path, export, small_history):
    document = load_mapping(WAREHOUSE).model_dump(exclude_none=True)
    document["submissions"]["columns"]["learner_id"] = "student"
    mapping = parse_mapping(document)
    answers = pcsv.read_csv(export["answers"]).slice(0, 100)
    pq.write_table(answers, tmp_path / "answers.parquet")
    (tmp_path / "answers.jsonl").write_bytes(b"\n".join(orjson.dumps(row, default=str) for row in answers.to_pylist()))
    for name in (export["answers"], tmp_path / "answers.parquet", tmp_path / "answers.jsonl"):
        with pytest.raises(InputFileError, match=r"has (no column|the key) 'student' \(the mapping's "
                                                 r"submissions.columns.learner_id\)\. Did you mean 'student_id'\?"):
            _stage(tmp_path, name, mapping)
    assert not list(tmp_path.glob("staged-*"))  # nothing left behind
    nested = kafka_contract_mapping().model_dump(exclude_none=True)
    nested["submissions"]["columns"]["correct"] = "is_correct"
    with pytest.raises(InputFileError, match=r"key 'is_correct' in the elements of 'responses' "
                                             r"\(the mapping's submissions.columns \(inside responses\).correct\)"):
        _stage(tmp_path, small_history / "submissions.jsonl", parse_mapping(nested))


def test_an_unreadable_file_says_what_to_do(tmp_path):
    mapping = load_mapping(WAREHOUSE)
    with pytest.raises(InputFileError, match=r"nothing.csv not found"):
        _stage(tmp_path, tmp_path / "nothing.csv", mapping)
    (tmp_path / "fake.parquet").write_text("student_id,test_id\n")
    with pytest.raises(InputFileError, match=r"cannot read .*fake.parquet as Parquet .*set format in the mapping"):
        _stage(tmp_path, tmp_path / "fake.parquet", mapping)
    header = ",".join(["student_id", "test_id", "taken_at", "subject", "grade", "question_id", "skill",
                       "is_correct", "seconds_spent", "attempts", "used_hint"])
    (tmp_path / "latin1.csv").write_bytes(f"{header}\n".encode() + "Ren\xe9,t,2026-01-01 10:00,Reading,3,q,s,1,2.5,1,no\n"
                                          .encode("latin-1"))
    with pytest.raises(InputFileError, match=r"cannot read .*latin1.csv near row 1: .*UTF8.*must be UTF-8 text"):
        _stage(tmp_path, tmp_path / "latin1.csv", mapping)


def test_the_command_refuses_a_wrong_mapping_and_writes_nothing(tmp_path, export):
    bad = tmp_path / "bad.yaml"
    bad.write_text(WAREHOUSE.read_text().replace("learner_id: student_id", "learner: student_id"))
    environ = {**os.environ, "LEARNSCORE__STATE_DIR": str(tmp_path / "state"), "LEARNSCORE_TEST_TIER": "unit"}
    for mapping, message in ((bad, "submissions.columns.learner: unknown key; did you mean learner_id?"),
                             (WAREHOUSE, None)):
        command = [sys.executable, "-m", "learnscore.cli", "import", str(tmp_path / "absent.csv") if message is None
                   else export["answers"], "--mapping", str(mapping)]
        done = subprocess.run(command, capture_output=True, text=True, env=environ, cwd=ROOT, timeout=120)
        assert done.returncode == 1, done.stderr
        assert (message or "absent.csv not found") in done.stderr and "Nothing was written." in done.stderr
    assert not (tmp_path / "state" / "lake").exists()


# -- bounded memory ---------------------------------------------------------------------------------

_STAGE_AND_MEASURE = """
import resource, sys
from pathlib import Path
from learnscore.batch.import_mapping import load_mapping
from learnscore.batch.importer import ImportRequest, stage_import
from learnscore.schemas.domain import Domain
staged = stage_import(ImportRequest(Path(sys.argv[1]), load_mapping(sys.argv[2])), Domain(), Path(sys.argv[3]),
                      chunk_rows=5000, partition_rows=20000)
print(staged.submissions.records, staged.submissions.staged, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_staging_memory_does_not_grow_with_the_file(tmp_path):
    from learnscore.simulator.history import HistoryOptions, write_history

    history = tmp_path / "history"
    write_history(history, HistoryOptions(learners=7000, days=10, seed=3, end=NOW))
    peaks = {}
    for rows in (50_000, 200_000):
        files = write_export(history, tmp_path / f"export-{rows}", file_format="parquet", max_rows=rows)
        done = subprocess.run([sys.executable, "-c", _STAGE_AND_MEASURE, files["answers"], str(WAREHOUSE),
                               str(tmp_path / f"staged-{rows}")], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        records, staged, peak_kib = map(int, done.stdout.split())
        assert records >= rows and staged == files["submissions"]
        peaks[rows] = peak_kib / 1024
    # Four times the rows, about the same peak: what grows is the number of partitions on disk.
    # Holding the 200k rows as Python events would take ~150 MiB more.
    assert peaks[200_000] - peaks[50_000] < 30, peaks


# -- into silver -----------------------------------------------------------------------------------


def _lake(config, name):
    return config.model_copy(update={"lake": config.lake.model_copy(update={
        "root": f"{config.lake.root}-{name}", "checkpoints": f"{config.lake.checkpoints}-{name}"})})


def _silver(spark, config, table, drop=("ingested_at", "import_lineage")):
    frame = spark.read.format("delta").load(config.table_path(table)).drop(*drop)
    return sorted(frame.collect(), key=lambda row: row.event_id)


@pytest.mark.integration
def test_csv_and_jsonl_land_the_same_silver_rows_and_a_reimport_changes_nothing(spark, config, export, small_history):
    csv = import_files(spark, config, ImportRequest(Path(export["answers"]), load_mapping(WAREHOUSE),
                                                    Path(export["outcomes"])), now=NOW)
    nested_config = _lake(config, "nested")
    nested_mapping = _without_event_ids(kafka_contract_mapping()).model_copy(
        update={"outcomes": load_mapping(WAREHOUSE).outcomes})
    nested = import_files(spark, nested_config, ImportRequest(small_history / "submissions.jsonl", nested_mapping,
                                                              Path(export["outcomes"])), now=NOW)
    for report in (csv, nested):
        assert (report.submissions.landed, report.outcomes.landed, report.quarantined) == (3000, 3000, 0)
    for table in ("silver.submissions", "silver.outcomes"):
        assert _silver(spark, config, table) == _silver(spark, nested_config, table)
    lineage = json.loads(spark.read.format("delta").load(config.table_path("silver.submissions"))
                         .where("import_lineage IS NOT NULL").first().import_lineage)
    assert lineage["import_id"] == csv.import_id and lineage["file"].endswith("answers.csv")

    again = import_files(spark, config, ImportRequest(Path(export["answers"]), load_mapping(WAREHOUSE),
                                                      Path(export["outcomes"])), now=NOW)
    assert (again.submissions.landed, again.submissions.already_in_silver) == (0, 3000)
    assert (again.outcomes.landed, again.outcomes.already_in_silver) == (0, 3000)
    assert again.versions == csv.versions  # not one commit


@pytest.mark.integration
def test_five_percent_broken_rows_are_quarantined_with_their_rows_and_the_rest_lands(spark, config, export, tmp_path):
    lines = Path(export["answers"]).read_text().splitlines()
    header, body = lines[0], lines[1:12_001]
    rng = random.Random(5)
    broken = sorted(rng.sample(range(len(body)), len(body) // 20))  # 5 %
    breakages = [(7, '"maybe"'), (5, ""), (8, "-5"), (4, "13")]    # correct, item id, time, grade
    for index in broken:
        cells = body[index].split(",")
        column, value = breakages[index % len(breakages)]
        cells[column] = value
        body[index] = ",".join(cells)
    path = tmp_path / "answers.csv"
    path.write_text("\n".join([header, *body]) + "\n")
    keys = [tuple(line.split(",")[:3]) for line in lines[1:12_001]]
    refused_keys = {keys[index] for index in broken}
    rows_of = {}
    for number, key in enumerate(keys, start=1):
        rows_of.setdefault(key, []).append(number)

    report = import_files(spark, config, ImportRequest(path, load_mapping(WAREHOUSE), Path(export["outcomes"])), now=NOW)
    assert report.submissions.events == len(rows_of)
    assert report.submissions.landed == len(rows_of) - len(refused_keys)
    assert report.submissions.refusals.total == len(refused_keys)
    quarantine = spark.read.format("delta").load(config.table_path("silver.quarantine")).where(
        "source_topic = 'import:answers.csv'").collect()
    quarantined_rows = set()
    for row in quarantine:
        ranges = json.loads(row.import_lineage)["rows"]
        assert row.reason.split(" of answers.csv: ")[0] in (f"rows {ranges}", f"row {ranges}")
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            quarantined_rows.update(range(int(low), int(high or low) + 1))
    assert quarantined_rows == {n for key in refused_keys for n in rows_of[key]}
    assert {number + 1 for number in broken} <= quarantined_rows
    # Every outcome of the whole export came: those of landed submissions land, the others are
    # refused for naming a submission silver does not hold (those in rows past 12,000 included).
    assert report.outcomes.landed == report.submissions.landed
    assert report.outcomes.refusals.counts["unknown_submission"] == 3000 - report.submissions.landed
    assert report.quarantined == len(refused_keys) + 3000 - report.submissions.landed


@pytest.mark.integration
def test_train_initial_on_an_empty_lake_refuses_and_writes_nothing(config, tmp_path):
    state = tmp_path / "state"
    environ = {**os.environ, "LEARNSCORE__STATE_DIR": str(state),
               "LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
               "LEARNSCORE__SPARK__DRIVER_MEMORY": "1g"}
    done = subprocess.run([sys.executable, "-m", "learnscore.cli", "train", "--initial"], capture_output=True,
                          text=True, env=environ, cwd=ROOT, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "silver holds 0 submissions with an observed outcome" in done.stderr
    assert "needs at least 2,000 (retrain.min_training_rows)" in done.stderr
    assert "learnscore import" in done.stderr and "learnscore simulate history --import" in done.stderr
    assert not (state / "lake").exists() and not (state / "mlflow").exists()
