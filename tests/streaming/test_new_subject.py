"""A subject the platform adds in config (``domain.subjects``) flows from a warehouse import
through training into a model that scores it live; a subject the config does not name is
refused at both doors (the import and the stream) with a reason that names the config key."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pandas as pd
import pytest

from learnscore.batch.import_mapping import load_mapping, parse_mapping
from learnscore.batch.importer import ImportRequest, import_files
from learnscore.schemas import topics
from learnscore.simulator.export import write_export
from tests.support import ROOT, ScorerProcess, wait_for

pytestmark = pytest.mark.integration

WAREHOUSE = ROOT / "examples" / "mappings" / "warehouse-long.yaml"
SUBJECTS = ("math", "reading", "science", "music")
# The export's science answers become music, with music's own skills (the items keep their ids).
MUSIC_SKILLS = {"life_science": "rhythm", "physical_science": "pitch", "earth_science": "harmony",
                "inquiry": "notation", "chemistry": "listening"}


def _music_export(small_history, folder: Path) -> tuple[Path, Path, int]:
    """The warehouse export of ``small_history`` with Science as Music and ten Reading tests
    as Art (a subject no config names); (answers, outcomes, submissions in Art)."""
    export = write_export(small_history, folder / "export")
    answers = pd.read_csv(export["answers"], dtype=str, keep_default_na=False)
    science = answers["subject"] == "Science"
    answers.loc[science, "skill"] = answers.loc[science, "skill"].map(MUSIC_SKILLS)
    answers.loc[science, "subject"] = "Music"
    key = answers["student_id"] + "|" + answers["test_id"] + "|" + answers["taken_at"]
    art = key.isin(key[answers["subject"] == "Reading"].unique()[:10])
    answers.loc[art, "subject"] = "Art"
    path = folder / "answers-with-music.csv"
    answers.to_csv(path, index=False)
    return path, Path(export["outcomes"]), 10


def _music_mapping():
    document = load_mapping(WAREHOUSE).model_dump(exclude_none=True)
    document["submissions"]["values"]["subject"]["Music"] = "music"
    return parse_mapping(document)


def _live(event: dict, subject: str) -> dict:
    """A history submission as a new live event in ``subject``."""
    moment = datetime.now(timezone.utc)
    return {**event, "event_id": str(uuid.uuid4()), "subject": subject,
            "event_time": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "responses": [{**r, "skill": MUSIC_SKILLS.get(r["skill"], r["skill"])} for r in event["responses"]]}


def _rows(kit, table: str, condition: str) -> int:
    """Rows of ``table`` that meet ``condition``; 0 before the scorer has created it."""
    from pyspark.errors import AnalysisException

    try:
        return kit.table(table).where(condition).count()
    except AnalysisException:
        return 0


def test_a_subject_added_in_config_is_imported_trained_on_and_scored_live(
        spark, kit, small_history, small_history_events, mlflow_store, tmp_path):
    from learnscore.batch.train import train_model
    from learnscore.registry.artifacts import version_item_bank
    from learnscore.registry.promote import promote

    config = kit.config.model_copy(update={"domain": kit.config.domain.model_copy(update={"subjects": SUBJECTS})})

    # -- import: music lands in silver; Art is refused with the key to change -------------------
    answers, outcomes, art_tests = _music_export(small_history, tmp_path)
    report = import_files(spark, config, ImportRequest(answers, _music_mapping(), outcomes))
    assert report.submissions.landed == 3000 - art_tests
    silver = kit.table("silver.submissions")
    assert silver.where("subject = 'music'").count() > 800
    refused = kit.table("silver.quarantine").where("reason LIKE '%subject%'").collect()
    assert len(refused) == art_tests, [r.reason for r in refused]
    assert all("'Art' is not one of math, reading, science, music" in r.reason
               and "domain.subjects" in r.reason for r in refused), refused[0].reason

    # -- training: the new model knows the subject (a feature slot and its items) ----------------
    trained = train_model(spark, config, actor="test")
    bank = version_item_bank(config, trained.version)
    assert "music" in bank.subjects and {"rhythm", "pitch"} <= set(bank.skills)
    assert promote(config, trained.version, actor="test", reason="first model with music").report.passed

    # -- the stream scores a live music submission and quarantines an Art one -------------------
    science = [e for e in small_history_events[0] if e["subject"] == "science"][:6]
    music = [_live(event, "music") for event in science]
    art = _live(science[0], "art")
    scorer = ScorerProcess(config, tmp_path / "scorer.log",
                           LEARNSCORE__DOMAIN__SUBJECTS=orjson.dumps(SUBJECTS).decode())
    kit.produce(topics.SUBMISSIONS, kit.as_messages([*music, art]))
    scorer.start()
    try:
        music_ids = ", ".join(f"'{event['event_id']}'" for event in music)

        def scored() -> bool:
            assert scorer.process.poll() is None, f"the scorer exited:\n{scorer.tail()}"
            return (kit.table("silver.quarantine").where(f"event_id = '{art['event_id']}'").count() == 1
                    and _rows(kit, "gold.predictions", f"event_id IN ({music_ids})") == len(music))

        wait_for(scored, 600, "the stream to score the music submissions and refuse the Art one")
    finally:
        scorer.kill()
    gold = kit.table("gold.predictions").where(f"event_id IN ({music_ids})").collect()
    assert {(row.subject, str(row.model_version)) for row in gold} == {("music", trained.version)}
    assert all(0 <= row.progress_score <= 100 for row in gold)
    reason = kit.table("silver.quarantine").where(f"event_id = '{art['event_id']}'").first().reason
    assert "'art' is not one of math, reading, science, music" in reason and "domain.subjects" in reason
