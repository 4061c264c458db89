"""The rollback guard on a running stream.

A version whose progress scores are 30 points off is pushed to ``production`` past loosened
gates while the scorer runs; the guard (in a thread, as in the retrain worker) sees it on live
evidence and rolls back to the previous version, once, with the evidence recorded in
``ops.model_events``, the registry and an alert; the stream's rows after the rollback carry the
previous version; the bad version is refused by every promotion path after that; forced back
into production, an ``alert-only`` guard alerts and leaves it there.

Live traffic is the tail of the session's simulated history (submissions 2,000–2,999, which
the test model was not fitted on) with its real outcomes, so "worse" is measured, not staged.
"""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest

from learnscore.core.alerts import configure_alerts, current_dispatcher
from learnscore.registry.access import PRODUCTION, PROMOTION_BLOCKED_TAG, PromotionBlocked, alias_version
from learnscore.registry.guard import ACTOR, RollbackGuard, run_guard
from learnscore.registry.history import PROMOTED, ROLLED_BACK, model_events
from learnscore.registry.promote import promote
from learnscore.schemas import topics
from tests.support import WebhookReceiver

pytestmark = pytest.mark.integration


def shifted_scores(model, points: float = 30.0):
    """A copy of ``model`` whose progress scores are ``points`` higher (clipped to 0–100 by the
    model): loads, passes the contract, and is plainly worse."""
    shifted = copy.deepcopy(model)
    regressor = shifted.score_pipeline_[-1]
    regressor._baseline_prediction = regressor._baseline_prediction + points
    return shifted


def _with(config, section: str, **changes):
    return config.model_copy(update={section: getattr(config, section).model_copy(update=changes)})


def _versions_of(kit, event_ids: list[str]) -> dict[str, str]:
    gold = kit.table("gold.predictions")
    rows = gold.where(gold.event_id.isin(event_ids)).select("event_id", "model_version").collect()
    return {row.event_id: row.model_version for row in rows}


@pytest.fixture
def webhook(kit):
    """This process's alerts go to a local receiver for the test, and back to the log after."""
    with WebhookReceiver() as receiver:
        configure_alerts(_with(kit.config, "alerts", webhook_url=receiver.url), environ={})
        try:
            yield receiver
        finally:
            current_dispatcher().flush(20)
            configure_alerts(kit.config, environ={})


def test_a_version_30_points_off_is_rolled_back_once_and_never_promoted_again(
        kit, models, small_model, small_history_events, webhook):
    from learnscore.batch.retrain_worker import PromotionRefused, RetrainWorker
    from learnscore.streaming.job import start_scorer

    config = _with(kit.config, "guard", policy="auto", check_seconds=1.0, min_labelled_rows=150,
                   min_estimate_rows=150)
    # The bad version gets past the gates only because these are loosened (a misconfigured
    # deployment, or a window that did not show the fault): exactly what the guard is for.
    loose = _with(config, "gates", max_mae_increase=100.0, max_macro_f1_drop=1.0, max_mae=100.0,
                  min_macro_f1=0.0)
    submissions, outcomes = small_history_events

    def send(start: int, stop: int) -> None:
        kit.produce(topics.SUBMISSIONS, kit.as_messages(submissions[start:stop]))
        kit.produce(topics.OUTCOMES, kit.as_messages(outcomes[start:stop]))

    first = models.register()  # production before anything is recorded
    scorer = start_scorer(kit.spark, config, drift=False)
    try:
        # -- a labelled window scored by the first version, then a sound promotion over it --------
        send(2000, 2400)
        for table in ("gold.prediction_outcomes", "silver.outcomes"):
            kit.wait_for(lambda name=table: kit.table(name).count() >= 400, 600, f"400 rows in {table}",
                         interval_s=2, scorer=scorer)
        sound = models.register(alias=None)
        promote(config, sound, actor="test", reason="the same model through the gates")
        bad = models.register(shifted_scores(small_model[0]), alias=None)

        # -- the bad version goes to production; the guard watches from then on -----------------
        decisions = []
        stop = threading.Event()
        promote(loose, bad, actor="test", reason="a bad version past loosened gates")
        promoted_at = time.monotonic()
        guard = threading.Thread(target=run_guard, args=(config,),
                                 kwargs={"stop": stop, "on_decision": decisions.append}, daemon=True)
        guard.start()
        send(2400, 2800)
        kit.wait_for(lambda: alias_version(config, PRODUCTION) == sound, 600,
                     f"the guard to roll back version {bad}", interval_s=0.1, scorer=scorer)
        seconds = time.monotonic() - promoted_at
        stop.set()
        guard.join(timeout=120)
        (verdict,) = [d for d in decisions if d.action == "roll_back"]
        print(f"\npromotion of version {bad} → rollback to {sound}: {seconds:.1f} s "
              f"({verdict.evidence.source} evidence on {verdict.evidence.n_rows} predictions, "
              f"{verdict.evidence.n_labelled} with outcomes; baseline {verdict.baseline.source}; "
              f"{len(decisions)} checks)\n{verdict.summary()}")

        # -- the stream follows: rows scored after the rollback carry the sound version ----------
        time.sleep(3 * config.streaming.alias_check_seconds)
        after = [s["event_id"] for s in submissions[2800:2900]]
        send(2800, 2900)
        kit.wait_for(lambda: len(_versions_of(kit, after)) == len(after), 600,
                     "the rows sent after the rollback in gold", interval_s=2, scorer=scorer)
        assert set(_versions_of(kit, after).values()) == {sound}
        assert bad in set(kit.table("gold.predictions").select("model_version").toPandas().model_version)
    finally:
        scorer.stop()

    # -- recorded once, with the evidence ---------------------------------------------------------
    history = model_events(config)
    production = history[history.alias == PRODUCTION]
    assert list(zip(production.event_type, production.version, production.previous_version)) == [
        (PROMOTED, sound, first), (PROMOTED, bad, sound), (ROLLED_BACK, sound, bad)]
    rolled = production.iloc[-1]
    assert rolled.actor == ACTOR and f"roll back version {bad}" in rolled.reason
    evidence = json.loads(rolled.metrics_json)
    assert evidence["guard_live_mae"] > evidence["guard_baseline_mae"] + config.guard.max_mae_increase
    # Judged on outcomes (realized) or on predictions alone (estimated): enough of one or the other.
    assert (evidence["guard_n_labelled"] >= config.guard.min_labelled_rows
            or evidence["guard_n_rows"] >= config.guard.min_estimate_rows), evidence
    assert RollbackGuard(config).check() is None  # nothing left to watch: it acts once

    from mlflow.tracking import MlflowClient

    client = MlflowClient(config.mlflow.tracking_uri, config.registry_uri)
    assert "rolled back by the guard" in client.get_model_version(
        config.mlflow.model_name, bad).tags[PROMOTION_BLOCKED_TAG]
    assert client.get_model_version(config.mlflow.model_name, sound).tags[
        "lifecycle.rolled_back.previous_version"] == bad

    # -- never promoted again: not by promote, not by the retrain worker --------------------------
    with pytest.raises(PromotionBlocked, match="--force"):
        promote(loose, bad, actor="test", reason="again?")
    worker = RetrainWorker(loose, promoter=promote, spark_factory=lambda: None)
    with worker.lease.held() as holding:  # a worker promotes only while it holds the retrain lease
        assert holding
        with pytest.raises(PromotionRefused, match="blocked"):
            worker._call_promoter(bad, "a retrain run that found the blocked version")
    assert alias_version(config, PRODUCTION) == sound

    # -- forced back in: alert-only alerts and leaves production alone -----------------------------
    promote(loose, bad, actor="test", reason="forced, to see alert-only", force=True)
    watcher = RollbackGuard(config, policy="alert-only")
    assert watcher.check().action == "roll_back"
    assert watcher.check().action == "roll_back"  # checked twice: one incident, one alert
    assert alias_version(config, PRODUCTION) == bad
    assert list(model_events(config).event_type).count(ROLLED_BACK) == 1

    assert current_dispatcher().flush(20)
    kinds = [body["kind"] for body in webhook.bodies]
    assert kinds.count("model_rolled_back") == 1 and kinds.count("rollback_recommended") == 1
    (rolled_alert,) = [b for b in webhook.bodies if b["kind"] == "model_rolled_back"]
    assert rolled_alert["fields"]["version"] == bad and rolled_alert["fields"]["restored_version"] == sound
    assert rolled_alert["fields"]["guard_live_mae"] == pytest.approx(evidence["guard_live_mae"], rel=1e-3)
