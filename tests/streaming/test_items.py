"""Item drift and leaked items in the live stream (issue 20): the landing query's item watch flags
a leaked item as compromised with its evidence and a harder item as drifted — those two only —
into ops.drift_events and ops.item_flags; with exclude_compromised_items the next scores leave
the leaked item's answers out; `learnscore items clear` brings it back. Real broker, Spark,
Delta, MLflow."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from learnscore.schemas import topics
from learnscore.streaming.job import run_scorer
from tests.streaming.conftest import BASE_TIME, _stamp

pytestmark = pytest.mark.integration

REFERENCE, WINDOW, ITEMS, PER_SUBMISSION = 300, 300, 15, 12


class Learners:
    """Submissions answered as the model's item bank expects (2PL, its response times)."""

    def __init__(self, bank, seed: int = 5):
        self.rng = np.random.default_rng(seed)
        self.items = [i for i, item in enumerate(bank.item_ids) if item.startswith("math.")][:ITEMS]
        self.bank = bank
        self.count = 0

    def submissions(self, n: int, leaked: str | None = None, harder: str | None = None) -> list[dict]:
        bank, rng, out = self.bank, self.rng, []
        for _ in range(n):
            theta = rng.normal()
            responses = []
            for i in rng.choice(self.items, PER_SUBMISSION, replace=False):
                item = bank.item_ids[i]
                b = bank.difficulty[i] + (2.5 if item == harder else 0.0)
                p = 1 / (1 + np.exp(-bank.discrimination[i] * (theta - b)))
                ms = float(np.expm1(bank.log_time[i] + rng.normal(0, 0.3)))
                correct = bool(rng.random() < p)
                if item == leaked:  # everyone knows the answer and gives it at a glance
                    correct, ms = True, ms * 0.2
                responses.append({"item_id": item, "skill": bank.item_skills[i], "correct": correct,
                                  "response_time_ms": max(int(ms), 1), "attempts": 1, "hint_used": False})
            self.count += 1
            out.append({"event_id": str(uuid.UUID(int=int(rng.integers(1 << 62)) << 64 | self.count, version=4)),
                        "schema_version": 1, "event_time": _stamp(BASE_TIME + timedelta(seconds=self.count)),
                        "learner_id": f"learner-{self.count:05d}", "assessment_id": "diag-1", "subject": "math",
                        "grade_level": 6, "responses": responses})
        return out

    def probe(self, leaked: str) -> dict:
        """A submission that answered the leaked item."""
        while True:
            probe = self.submissions(1, leaked=leaked)[0]
            if any(r["item_id"] == leaked for r in probe["responses"]):
                return probe


def test_a_leaked_and_a_harder_item_are_flagged_excluded_and_cleared(kit, production_model, small_model):
    from learnscore.model.features import model_input_from_events
    from learnscore.streaming.drift.items import ExcludedItems, excluded_items, item_flags
    from tests.streaming.test_own_model import _cli

    config = kit.config.model_copy(update={"psychometrics": kit.config.psychometrics.model_copy(update={
        "item_reference_submissions": REFERENCE, "item_window_submissions": WINDOW, "item_min_responses": 30,
        "exclude_compromised_items": True, "item_flags_check_seconds": 0.5})})
    model = small_model[0]
    learners = Learners(model.item_bank)
    leaked, harder = (model.item_bank.item_ids[i] for i in learners.items[:2])
    kit.produce(topics.SUBMISSIONS, kit.as_messages(learners.submissions(REFERENCE)))
    run_scorer(config, until_idle_s=2, handle_signals=False)
    assert item_flags(config).empty  # the reference window flags nothing
    kit.produce(topics.SUBMISSIONS, kit.as_messages(learners.submissions(WINDOW, leaked=leaked, harder=harder)))
    run_scorer(config, until_idle_s=2, handle_signals=False)

    events = [e for e in kit.table("ops.drift_events").collect() if e.kind == "item"]
    assert {(e.item_id, e.signal, e.direction) for e in events} == {
        (leaked, "item_compromised", "easier"), (harder, "item_drift", "harder")}
    flags = item_flags(config).set_index("item_id")
    assert set(flags.index) == {leaked, harder} and set(flags["status"]) == {"flagged"}
    proof = json.loads(flags.loc[leaked, "evidence"])
    assert proof["effect"] > 0.1 and proof["z"] > 5 and proof["z_time"] < -5 and proof["observed_rate"] == 1.0
    assert json.loads(flags.loc[harder, "evidence"])["effect"] < -0.1

    assert excluded_items(config) == [leaked]  # only the compromised one is left out of scoring
    listed = _cli(config, "items", "list")
    assert listed.exit_code == 0 and leaked in listed.output and "item_compromised" in listed.output

    # The next submission's score leaves the leaked item's answers out (exclude_compromised_items).
    probe = learners.probe(leaked)
    kit.produce(topics.SUBMISSIONS, kit.as_messages([probe]))
    run_scorer(config, until_idle_s=2, handle_signals=False)
    without = {**probe, "responses": [r for r in probe["responses"] if r["item_id"] != leaked]}
    expected = model.predict(model_input_from_events([without]))["progress_score"].iloc[0]
    with_leaked = model.predict(model_input_from_events([probe]))["progress_score"].iloc[0]
    scored = kit.table("gold.predictions").where(f"event_id = '{probe['event_id']}'").collect()
    assert len(scored) == 1 and expected != pytest.approx(with_leaked, abs=1e-6)
    assert scored[0].progress_score == pytest.approx(expected, abs=1e-6)

    clock = [0.0]
    exclusion = ExcludedItems(config, clock=lambda: clock[0])
    assert exclusion.current() == [leaked]
    cleared = _cli(config, "items", "clear", leaked, "--by", "reviewer")
    assert cleared.exit_code == 0, cleared.output
    again = _cli(config, "items", "clear", leaked)
    assert again.exit_code == 1 and "is not flagged" in again.output
    assert list(item_flags(config)["item_id"]) == [harder]
    row = item_flags(config, include_cleared=True).set_index("item_id").loc[leaked]
    assert (row["status"], row["reviewed_by"]) == ("cleared", "reviewer")

    # Cleared: the scoring query sees it at its next reread of the flags, and scores the item again.
    assert exclusion.current() == [leaked]
    clock[0] += config.psychometrics.item_flags_check_seconds
    assert exclusion.current() == []


def test_item_flags_that_could_not_be_written_are_written_with_the_next_batch_once(config, spark, small_model,
                                                                                   tmp_path):
    from learnscore.streaming.drift.items import ItemHook, item_flags, make_item_hook, merge_item_flags

    config = config.model_copy(update={"psychometrics": config.psychometrics.model_copy(update={
        "item_reference_submissions": REFERENCE, "item_window_submissions": WINDOW, "item_min_responses": 30})})
    bank = small_model[0].item_bank
    learners = Learners(bank, seed=9)
    leaked, harder = (bank.item_ids[i] for i in learners.items[:2])
    checkpoint = str(tmp_path / "checkpoints" / "land")
    real = make_item_hook(config, checkpoint, spark=spark)

    def hook(write_flags) -> ItemHook:  # what the landing query builds, after a restart each time
        return ItemHook(config.psychometrics, str(real.store.path), lambda: ("1", bank), real.write_events,
                        write_flags)

    def broken(rows):
        raise ConnectionError("the flag table's commit was lost")

    first = hook(broken)
    assert first(0, pd.DataFrame(learners.submissions(REFERENCE))) == []
    window = pd.DataFrame(learners.submissions(WINDOW, leaked=leaked, harder=harder))
    with pytest.raises(ConnectionError):
        first(1, window)
    assert item_flags(config).empty

    def item_events():
        return sorted((e.item_id, e.signal) for e in spark.read.format("delta").load(
            config.table_path("ops.drift_events")).collect())

    restarted = hook(lambda rows: merge_item_flags(config, rows))
    assert restarted(1, window) == []  # a replay: nothing is fed again, what was not written is
    assert sorted(item_flags(config)["item_id"]) == sorted([leaked, harder])
    assert item_events() == sorted([(leaked, "item_compromised"), (harder, "item_drift")])
    assert restarted.monitor.window_count == 0 and restarted(2, pd.DataFrame(learners.submissions(10))) == []
    assert item_events() == sorted([(leaked, "item_compromised"), (harder, "item_drift")])  # once
