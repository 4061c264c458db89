"""The retrain worker: ``RetrainRequested`` events in, one training run per burst out.

``learnscore retrain-worker`` consumes ``model.retrain-requests`` in a consumer group with
auto-commit off and, for each burst of requests:

1. **debounces**: waits until no new request came for ``retrain.debounce_seconds`` (at most
   ``retrain.max_wait_seconds`` after the first), so nine segments alarming together are one run;
2. **takes the lease** (``batch/retrain_lease.py``, table ``ops.retrain_lease``): a second worker
   — of the same consumer group, holding the other partitions of the burst, or of another
   deployment — waits while one trains;
3. **skips what is done**: a request that already has a final row in ``ops.retrain_runs`` is a
   redelivery and trains nothing; one made before a finished run began training is ``covered`` by
   that run's version (the second worker's share of a burst); one with only a ``started`` row was
   interrupted and is resumed;
4. records ``started``, picks the training window (``batch/retrain_policy.py``), trains with
   the training job in a Spark session this process owns (the new version gets alias
   ``staging``, tagged with the run and request ids), then applies the promotion policy —
   ``auto``: the gates, then ``production``; ``manual``: it waits for ``learnscore promote``;
5. records the row that ends the attempt, and only when that is final commits the Kafka
   offsets and releases the lease.

The lease carries a fencing token: right before each write — a ledger row, registering (the
default trainer asks through ``before_register``), tagging, promoting — the worker checks that it
still holds the lease with its token, and a worker that lost it (it stalled past the ttl and
another took over) stops there with :class:`~learnscore.batch.retrain_lease.LeaseLost`, records
nothing and acknowledges nothing; the holder resumes the run.

A run is named after its first request (``run_id_for``), not after the whole burst: a worker
killed anywhere in 2–5 gets the requests again on restart — with any that came meanwhile — and
resumes the same run, finding the version an interrupted attempt registered (by its run tag, or
the first request's id the trainer tagged it with at registration) instead of training another.
So each burst makes exactly one version.

MLflow / registry errors are retried with exponential back-off; when they persist the attempt is
recorded as ``deferred`` and the requests stay unacknowledged: the worker runs them again every
``retrain.deferred_retry_seconds`` until MLflow answers (a restarted worker gets them again too),
so an outage delays a retrain but does not lose it; after ``retrain.max_deferred_attempts``
deferrals in a row (an MLflow error that is not an outage) the run is recorded ``failed``. Any
other error ends the attempt ``attempt_failed``; the run is tried again after
``retrain.failed_backoff_seconds``, twice as long after each failure, and after
``retrain.failed_attempts`` failures it is recorded ``failed`` for good: logged at ERROR, alerted
(``retrain_failed``, as is each deferral) and handed to ``on_final_failure``, and its requests are
acknowledged. A run's first attempt is alerted too (``retrain_requested``; :func:`run_alert`).
``--every 24h`` also asks for a run when no model has been trained for that long, by sending a
``schedule`` request (its id is derived from the period, so restarts do not duplicate it).

Beside the runs, the worker watches the last promotion with the rollback guard
(:mod:`learnscore.registry.guard`, every ``guard.check_seconds``, per ``guard.policy``) in a thread
of its own, estimates the live performance of every version in another
(:func:`learnscore.batch.estimate_performance.run_estimation_schedule`, every
``estimation.interval_seconds``: the windows whose predictions or outcomes changed, into
``ops.estimated_performance``), and serves its counters on ``/metrics`` when ``retrain.metrics_port`` is set
(:mod:`learnscore.batch.retrain_metrics`). A version the guard rolled back is refused by the
promotion (``refused``), never promoted again automatically.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pandas as pd

from learnscore.batch.retrain_lease import LeaseLost, RetrainLease
from learnscore.batch.retrain_metrics import WorkerMetrics
from learnscore.batch.retrain_policy import (
    TrainingWindow,
    choose_window,
    post_onset_wait,
    request_kind,
    schedule_request,
    widen_to_rows,
)
from learnscore.batch.retrain_runs import (
    ATTEMPT_FAILED,
    COVERED,
    DEFERRED,
    FINAL_STATUSES,
    RUN_NAMESPACE,
    TRAINED_STATUSES,
    WAITING,
    RetrainRun,
    last_training_at,
    record_run,
    request_statuses,
    run_id_for,
    runs,
)
from learnscore.core.alerts import alert
from learnscore.core.config import Config
from learnscore.core.kafka_io import BrokerAuthenticationFailed, BrokerUnreachable
from learnscore.registry.access import (
    GateRefused,
    PromotionBlocked,
    RegistryUnreachable,
    production_version,
    registry_client,
)
from learnscore.schemas import topics
from learnscore.schemas.contract import parse_timestamp
from learnscore.schemas.events import RETRAIN_REQUESTED, validate_bytes

log = logging.getLogger(__name__)
_WAIT_POLL_S = 15.0  # a run waiting for post-onset outcomes looks again this often

__all__ = ["RetrainWorker", "run_id_for", "run_retrain_worker"]
ACTOR = "retrain-worker"
DEFAULT_TRAINER = "learnscore.batch.train:train_model"
DEFAULT_PROMOTER = "learnscore.registry.promote:promote"


class RetrainError(RuntimeError):
    """MLflow / the registry still failed after the retries; the message says which step and why.
    The attempt is recorded ``deferred`` and its requests are run again later."""


class PromotionRefused(RuntimeError):
    """The gates refused the new version; the run is recorded as ``refused``."""


def load_callable(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` → the function (the CLI's ``--trainer`` option)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} is not 'module:function' (e.g. {DEFAULT_TRAINER})")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from None


def _retryable() -> tuple[type[BaseException], ...]:
    # A broker slow to answer a bootstrap on a loaded machine is as passing as an MLflow timeout
    # (training checks it and registering publishes to it); a refused login is not (see _retry).
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError, OSError, RegistryUnreachable,
                                         BrokerUnreachable]
    try:
        from mlflow.exceptions import MlflowException

        kinds.append(MlflowException)
    except ImportError:  # pragma: no cover - mlflow is a dependency
        pass
    try:
        from sqlalchemy.exc import OperationalError

        kinds.append(OperationalError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


class RetrainWorker:
    """Turns bursts of retrain requests into recorded training runs.

    ``trainer(spark, config, *, since, until, trigger, request_id)`` must train, register a
    version with alias ``staging`` tagged ``request_id`` (the run's first request) when it is
    registered, and return an object with ``version`` and ``run_id`` (the contract of
    ``learnscore.batch.train.train_model``). ``promoter(config, version=, actor=, reason=)`` runs
    the gates and moves ``production`` (``learnscore.registry.promote.promote``); it raises, or
    returns an object whose ``promoted`` is False, when the gates refuse. ``on_final_failure(run)``
    is called with the ``failed`` row of a run that will not be tried again (alerts).
    """

    def __init__(self, config: Config, *, policy: str | None = None,
                 every: timedelta | None = None,
                 trainer: Callable[..., Any] | str = DEFAULT_TRAINER,
                 promoter: Callable[..., Any] | str = DEFAULT_PROMOTER,
                 spark_factory: Callable[[], Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 metrics: WorkerMetrics | None = None,
                 on_final_failure: Callable[[RetrainRun], None] | None = None):
        self.config = config
        self.policy = policy or config.retrain.policy
        if self.policy not in ("auto", "manual"):
            raise ValueError(f"policy must be 'auto' or 'manual', got {self.policy!r}")
        self.every = every
        self._trainer = trainer
        self._promoter = promoter
        self._spark_factory = spark_factory
        self._spark = None
        self._spark_lock = threading.Lock()
        self._sleep = sleep
        self._scheduled: set[str] = set()
        self._next_schedule_check = 0.0
        self.metrics = metrics or WorkerMetrics()
        self._guard_stop = threading.Event()
        self._on_final_failure = on_final_failure or (lambda run: None)
        self.lease = RetrainLease(config)
        self._stop = threading.Event()

    # -- one burst -------------------------------------------------------------------------
    def handle_burst(self, requests: list[dict[str, Any]], now: datetime | None = None, *,
                     may_defer: bool = True) -> RetrainRun | None:
        """Run one training for the not yet handled requests among ``requests`` and record it.

        Holds the lease meanwhile (waits for it). Returns the row that ended the attempt (final;
        ``deferred`` when MLflow stayed away and ``may_defer``; ``attempt_failed``, also when an
        earlier failure's back-off has not run out, then with nothing recorded), a ``covered``
        row when a finished run answers them, or None when every request was already handled
        (or the worker is stopping). Raises :class:`~learnscore.batch.retrain_lease.LeaseLost` when
        another worker took the lease over meanwhile: nothing more was written, and the requests
        are the holder's to finish.
        """
        with self.lease.held(self._stop) as holding:
            if not holding:
                return None
            return self._handle_burst(requests, now, may_defer)

    def _handle_burst(self, requests: list[dict[str, Any]], now: datetime | None,
                      may_defer: bool) -> RetrainRun | None:
        ledger = runs(self.config)  # read under the lease: no other worker changes it meanwhile
        statuses = request_statuses(self.config, ledger)
        fresh = {r["event_id"]: r for r in requests
                 if statuses.get(r["event_id"]) not in FINAL_STATUSES}
        for request in requests:
            if request["event_id"] not in fresh:
                log.info("retrain request %s was already handled (%s): nothing to train",
                         request["event_id"], statuses[request["event_id"]])
        if not fresh:
            return None
        now = now or datetime.now(timezone.utc)
        covered = self._covered(ledger, fresh, statuses)
        for request_id in covered.request_ids if covered else ():
            fresh.pop(request_id)
        if not fresh:
            return covered
        run_id, first = _resumed_run(ledger, fresh, statuses)
        failures = _attempts(ledger, run_id, ATTEMPT_FAILED)
        if failures:
            due = failures[-1] + timedelta(seconds=self._backoff_s(len(failures)))
            if now < due:  # restarted during a back-off: the run is not due yet
                return RetrainRun(run_id=run_id, trigger="unknown", request_ids=(first,),
                                  status=ATTEMPT_FAILED, started_at=now,
                                  retry_in_s=(due - now).total_seconds())
        request_ids = [first, *sorted(set(fresh) - {first})]
        kinds = {request_kind(r) for r in fresh.values()}
        trigger = ("drift" if any(r.get("trigger") == "drift" for r in fresh.values())
                   else "schedule" if "schedule" in kinds else "manual")
        window, wait_s = self._window(list(fresh.values()), now)
        if wait_s > 0:
            # Training on pre-onset rows teaches the old relation: wait for post-onset outcomes
            # (they land minutes after the drift is seen), up to retrain.concept_max_wait_seconds.
            log.info("retrain run %s waits for outcomes of submissions after the onset %s (fewer "
                     "than %d in the lake yet), up to %.0f s more", run_id,
                     window.onset.isoformat() if window.onset else "?",
                     self.config.retrain.min_training_rows, wait_s)
            return RetrainRun(run_id=run_id, trigger="drift", request_ids=(first,), status=WAITING,
                              started_at=now, retry_in_s=min(wait_s, _WAIT_POLL_S))
        run = RetrainRun(run_id=run_id, trigger=trigger,
                         request_ids=tuple(request_ids), status="started", started_at=now,
                         window_start=window.since, window_end=window.until,
                         message=f"{len(request_ids)} request(s) [{', '.join(sorted(kinds))}]; "
                                 f"window: {window.reason}")
        resumed = any(statuses.get(i) in ("started", DEFERRED, ATTEMPT_FAILED) for i in request_ids)
        if resumed:
            log.warning("retrain run %s did not finish before (%d failed attempt(s)): running it again%s",
                        run.run_id, len(failures),
                        f" with {len(request_ids) - sum(1 for i in request_ids if i in statuses)} request(s) "
                        f"that came meanwhile" if any(i not in statuses for i in request_ids) else "")
        self.lease.fence(f"starting retrain run {run.run_id}")
        record_run(self.config, run)
        if not resumed:  # its first attempt: a resumed run was announced when it began
            _alert_run(run)
        final = self._train_and_promote(run, window, may_defer, len(failures))
        self.lease.fence(f"recording the end of retrain run {run.run_id} ({final.status})")
        record_run(self.config, final)
        self.metrics.observe_run(final)
        _alert_run(final)
        if final.status == "failed":
            self._on_final_failure(final)
        return final

    def _covered(self, ledger, fresh: dict[str, dict[str, Any]],
                 statuses: dict[str, str]) -> RetrainRun | None:
        """Record (and return) the requests a finished run answers: those made before it began
        training, and drifts whose change began before the data of a run that promoted its version
        ended (that version learned from the changed data; the detectors measured the old one,
        which no longer serves). Requests of an interrupted run are never covered: it resumes."""
        trained = ledger[ledger["status"].isin(TRAINED_STATUSES) & ledger["window_end"].notna()]
        if trained.empty:
            return None
        promoted = trained[(trained["status"] == "succeeded") & (trained["promoted"] == True)]  # noqa: E712
        answering: dict[str, Any] = {}
        for request_id, request in fresh.items():
            made = parse_timestamp(request.get("event_time", ""))
            if request_id in statuses or made is None:
                continue
            later = trained[trained["window_end"] >= made]
            began = parse_timestamp(request.get("evidence_window_start") or "")
            if later.empty and request.get("trigger") == "drift" and began is not None:
                later = promoted[promoted["window_end"] >= began]
            if not later.empty:
                answering[request_id] = later.iloc[0]
        if not answering:
            return None
        by = next(iter(answering.values()))
        ids = tuple(sorted(i for i, row in answering.items() if row["run_id"] == by["run_id"]))
        moment = datetime.now(timezone.utc)
        row = RetrainRun(
            run_id=by["run_id"], trigger="covered", request_ids=ids, status=COVERED, started_at=moment,
            finished_at=moment, model_version=by["model_version"], window_end=by["window_end"].to_pydatetime(),
            message=f"{len(ids)} request(s) made (or whose drift began) before run {by['run_id']}'s "
                    f"training data ended, {by['window_end']:%Y-%m-%d %H:%M:%S} UTC: its version "
                    f"{by['model_version']} ({by['status']}) answers them; nothing trained again")
        log.info("retrain requests %s are covered by run %s (version %s): nothing to train",
                 ", ".join(ids), by["run_id"], by["model_version"])
        self.lease.fence(f"recording requests {', '.join(ids)} as covered")
        record_run(self.config, row)
        return row

    def _backoff_s(self, failures: int) -> float:
        """Seconds between the ``failures``-th failed attempt of a run and the next attempt."""
        return self.config.retrain.failed_backoff_seconds * 2 ** (failures - 1)

    def _window(self, requests: list[dict[str, Any]], now: datetime) -> tuple[TrainingWindow, float]:
        """The training window (policy: :mod:`learnscore.batch.retrain_policy`) and how many
        seconds a concept-drift run should still wait for post-onset outcomes (0: train now)."""
        settings = self.config.retrain
        window = choose_window(requests, now, history_days=settings.history_days,
                               concept_history_seconds=settings.concept_history_seconds)
        labelled = _recent_labelled_times(self.config, window.until, settings.min_training_rows)
        detections = [parse_timestamp(r.get("detected_at") or r.get("event_time") or "") for r in requests
                      if request_kind(r) == "concept"]
        wait_s = post_onset_wait(window, labelled, min_rows=settings.min_training_rows,
                                 first_detected=min((d for d in detections if d), default=None),
                                 now=now, max_wait_seconds=settings.concept_max_wait_seconds)
        return widen_to_rows(window, labelled, settings.min_training_rows), wait_s

    def _train_and_promote(self, run: RetrainRun, window: TrainingWindow,
                           may_defer: bool = True, failures: int = 0) -> RetrainRun:
        try:
            version, mlflow_run_id, data_versions = self._registered_version(run, window)
        except RetrainError as exc:
            return self._deferred(run, "training", exc, may_defer)
        except LeaseLost:
            raise  # not a failure of the run: another worker holds it now
        except Exception as exc:  # noqa: BLE001 - recorded and logged; the worker lives on
            return self._failed(run, "training", exc, failures)
        run = replace(run, mlflow_run_id=mlflow_run_id, model_version=version,
                      data_versions=data_versions)
        if self.policy == "manual":
            return run.finished("succeeded", promoted=False,
                                message=f"{run.message}; manual policy: version {version} stays "
                                        f"'staging' until `learnscore promote --version {version}`")
        reason = (f"retrain run {run.run_id} ({run.trigger}); requests "
                  f"{', '.join(run.request_ids)}")
        try:
            report = self._retry(f"promoting version {version}",
                                 lambda: self._call_promoter(version, reason))
        except PromotionRefused as exc:
            report_text = _report_text(getattr(exc.__cause__, "report", None) or exc)
            log.warning("retrain run %s: the gates refused version %s: %s", run.run_id, version,
                        report_text)
            return run.finished("refused", promoted=False, gate_report=report_text,
                                message=f"{run.message}; gates refused version {version}")
        except RetrainError as exc:
            return self._deferred(replace(run, promoted=False), f"promoting version {version}", exc,
                                  may_defer)
        except LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded and logged; the worker lives on
            return self._failed(replace(run, promoted=False), "promotion", exc, failures)
        return run.finished("succeeded", promoted=True, gate_report=report,
                            message=f"{run.message}; version {version} promoted to production")

    def _failed(self, run: RetrainRun, step: str, exc: Exception, failures: int) -> RetrainRun:
        """The end of an attempt that an error stopped: ``attempt_failed`` (tried again after a
        back-off) until the run failed ``retrain.failed_attempts`` times, then ``failed``."""
        attempt, limit = failures + 1, self.config.retrain.failed_attempts
        if attempt < limit:
            pause = self._backoff_s(attempt)
            log.warning("retrain run %s: attempt %d of %d failed while %s: %s; trying again in %.0f s",
                        run.run_id, attempt, limit, step, exc, pause)
            return run.finished(ATTEMPT_FAILED, retry_in_s=pause,
                                message=f"{run.message}; attempt {attempt} of {limit}: {step} failed: {exc}; "
                                        f"next attempt in {pause:.0f} s")
        log.error("retrain run %s failed for good: %s failed: %s (attempt %d of %d); its requests %s are "
                  "acknowledged", run.run_id, step, exc, attempt, limit, ", ".join(run.request_ids))
        return run.finished("failed", message=f"{run.message}; {step} failed: {exc}; "
                                              f"failed {attempt} of {limit} attempts")

    def _deferred(self, run: RetrainRun, step: str, exc: RetrainError, may_defer: bool) -> RetrainRun:
        """The end of an attempt that MLflow did not let finish: ``deferred``, or ``failed``
        when no more deferrals are allowed."""
        if not may_defer:
            log.error("retrain run %s failed while %s: %s (deferred %d times: giving up)", run.run_id,
                      step, exc, self.config.retrain.max_deferred_attempts)
            return run.finished("failed", message=f"{run.message}; {step} failed: {exc}; deferred "
                                                  f"{self.config.retrain.max_deferred_attempts} times")
        pause = self.config.retrain.deferred_retry_seconds
        log.error("retrain run %s deferred while %s: %s; its requests stay unacknowledged and run "
                  "again in %.0f s (is the MLflow server up? mlflow.tracking_uri)", run.run_id, step,
                  exc, pause)
        return run.finished(DEFERRED, retry_in_s=pause, message=f"{run.message}; MLflow unreachable while {step}: "
                                              f"{exc}; runs again in {pause:.0f} s")

    def _registered_version(self, run: RetrainRun, window: TrainingWindow):
        """Train and register, unless an interrupted attempt of this run already registered."""
        existing = self._retry("looking up earlier attempts", lambda: _version_of_run(
            self.config, run))
        if existing is not None:
            log.info("retrain run %s already registered version %s before it was interrupted: "
                     "not training again", run.run_id, existing["version"])
            self.lease.fence(f"tagging version {existing['version']}")
            self._retry("tagging the version", lambda: _tag_version(
                self.config, existing["version"], run, self.lease.token))
            return existing["version"], existing["run_id"], {}
        trainer = (load_callable(self._trainer) if isinstance(self._trainer, str)
                   else self._trainer)
        fence = {"before_register": lambda: self.lease.fence(f"registering the version of run {run.run_id}")}
        result = self._retry("training", lambda: trainer(
            self.spark, self.config, since=window.since, until=window.until,
            trigger=run.trigger, request_id=run.first_request_id,
            **(fence if _accepts(trainer, "before_register") else {})))
        version = str(_field(result, "version"))
        self.lease.fence(f"tagging version {version}")
        self._retry("tagging the new version", lambda: _tag_version(
            self.config, version, run, self.lease.token))
        data_versions = _field(result, "data_versions", default={}) or {}
        return version, _field(result, "run_id", default=None), dict(data_versions)

    def _call_promoter(self, version: str, reason: str) -> str | None:
        if production_version(self.config) == version:
            # An interrupted attempt promoted it and died before recording: nothing left to do.
            return f"version {version} was already production (promoted by an earlier attempt)"
        promoter = (load_callable(self._promoter) if isinstance(self._promoter, str)
                    else self._promoter)
        self.lease.fence(f"promoting version {version}")
        try:
            result = promoter(self.config, version=version, actor=ACTOR, reason=reason)
        except (GateRefused, PromotionBlocked) as exc:
            raise PromotionRefused(str(exc)) from exc
        if result is not None and _field(result, "promoted", default=True) is False:
            raise PromotionRefused(_report_text(_field(result, "report", default=result)))
        return None if result is None else _report_text(_field(result, "report", default=result))

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        settings = self.config.retrain
        retryable = _retryable()
        for attempt in range(1, settings.retry_attempts + 1):
            try:
                return call()
            except (PromotionRefused, LeaseLost, BrokerAuthenticationFailed):
                raise
            except retryable as exc:
                if attempt == settings.retry_attempts:
                    raise RetrainError(f"{what} failed {attempt} times; last error: "
                                       f"{type(exc).__name__}: {exc}") from exc
                pause = settings.retry_backoff_seconds * 2 ** (attempt - 1)
                log.warning("%s failed (attempt %d of %d: %s: %s); retrying in %.0f s", what,
                            attempt, settings.retry_attempts, type(exc).__name__, exc, pause)
                self._sleep(pause)
        raise AssertionError("unreachable")

    @property
    def spark(self):
        """The worker's own SparkSession, started on first use (the default trainer needs it)."""
        with self._spark_lock:
            if self._spark is None:
                if self._spark_factory is not None:
                    self._spark = self._spark_factory()
                else:
                    from learnscore.core.spark import create_spark_session

                    self._spark = create_spark_session(self.config, app_name="learnscore-retrain")
            return self._spark

    def _warm_up(self) -> None:
        """Start the SparkSession while waiting for requests when the default trainer will need
        it: a JVM takes a minute on a busy 2-core machine, which a drift alarm should not wait."""
        if self._trainer != DEFAULT_TRAINER or self._spark is not None or self._spark_factory is not None:
            return

        def start():
            try:
                _ = self.spark  # starts the session
            except Exception as exc:  # noqa: BLE001 - the first run starts it again and reports it
                log.warning("retrain worker: could not start Spark ahead of a run: %s", exc)

        threading.Thread(target=start, name="spark-warm-up", daemon=True).start()

    # -- the consumer loop -----------------------------------------------------------------
    def serve(self, stop: threading.Event | None = None, *, max_runs: int | None = None,
              idle_exit_seconds: float | None = None, watch: bool = False,
              estimate: bool = False) -> list[RetrainRun]:
        """Consume requests until ``stop`` is set, ``max_runs`` runs are done, or nothing came
        for ``idle_exit_seconds``. Returns the final rows of the runs it made. ``watch``: run
        the rollback guard beside it; ``estimate``: the scheduled performance estimation
        (``learnscore retrain-worker`` does both)."""
        from learnscore.core.kafka_io import consumer, create_topics

        stop = self._stop = stop or threading.Event()  # also ends a wait for the lease
        settings = self.config.retrain
        # It writes both (scheduled requests, registry changes): a broker may not auto-create them.
        create_topics(self.config, [topics.RETRAIN_REQUESTS, topics.LIFECYCLE])
        reader = consumer(
            self.config, self.config.topic(topics.RETRAIN_REQUESTS),
            group_id=settings.consumer_group, enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Training can take longer than kafka-python's 5-minute default between polls;
            # a crashed worker's requests go to a restarted one after 10 s, not 45 s.
            max_poll_interval_ms=6 * 3600 * 1000, session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000)
        done: list[RetrainRun] = []
        pending: dict[str, dict[str, Any]] = {}
        first_at = last_at = idle_since = time.monotonic()
        retry_at, deferrals = 0.0, 0  # after a deferred attempt: not before retry_at
        warmed = False
        log.info("retrain worker: listening on %s (group %s, policy %s%s)",
                 self.config.topic(topics.RETRAIN_REQUESTS), settings.consumer_group,
                 self.policy, f", every {self.every}" if self.every else "")
        guard = self._start_guard() if watch else None
        estimation = self._start_estimation() if estimate else None
        try:
            while not stop.is_set():
                self._maybe_schedule()
                polled = reader.poll(timeout_ms=500)
                if not warmed:  # the broker answered: this worker is here to stay
                    self._warm_up()
                    warmed = True
                moment = time.monotonic()
                received = [m for batch in polled.values() for m in batch]
                if received:
                    idle_since = moment
                    fresh = self._accept(received, pending)
                    if fresh and not pending:
                        first_at = moment
                    if fresh:
                        last_at = moment
                        pending.update(fresh)
                    if not pending:  # only duplicates / invalid ones: done with them
                        _commit(reader)
                if pending and moment >= retry_at and (
                        moment - last_at >= settings.debounce_seconds
                        or moment - first_at >= settings.max_wait_seconds):
                    try:
                        run = self.handle_burst(list(pending.values()),
                                                may_defer=deferrals < settings.max_deferred_attempts)
                    except LeaseLost as exc:
                        # Kept unacknowledged: once the holder is done they are final (or resumed).
                        log.warning("retrain worker fenced off: %s", exc)
                        retry_at = time.monotonic() + settings.debounce_seconds
                        continue
                    if run is None and stop.is_set():
                        break  # stopped while waiting for the lease: nothing done, nothing acknowledged
                    if run is not None and run.status in (DEFERRED, ATTEMPT_FAILED, WAITING):
                        # Not acknowledged: kept here, and redelivered should this worker die.
                        retry_at = time.monotonic() + (run.retry_in_s or 0.0)
                        deferrals += run.status == DEFERRED
                        continue
                    deferrals = 0
                    _commit(reader)  # only after the run is recorded
                    pending.clear()
                    idle_since = time.monotonic()
                    if run is not None:
                        done.append(run)
                    if max_runs is not None and len(done) >= max_runs:
                        break
                if (idle_exit_seconds is not None and not pending
                        and time.monotonic() - idle_since >= idle_exit_seconds):
                    log.info("retrain worker: idle for %.0f s, stopping", idle_exit_seconds)
                    break
        finally:
            reader.close()
            if guard is not None:
                self._guard_stop.set()
                guard.join(timeout=30)
            if estimation is not None:
                estimation_thread, estimation_stop = estimation
                estimation_stop.set()
                estimation_thread.join(timeout=30)
        return done

    def _start_estimation(self) -> tuple[threading.Thread, threading.Event] | None:
        """The scheduled performance estimation in a thread of its own (an estimation never waits
        for a training run, nor a run for it); the thread and the event that ends it."""
        from learnscore.batch.estimate_performance import run_estimation_schedule

        settings = self.config.estimation
        if settings.interval_seconds <= 0:
            log.info("retrain worker: performance estimation off (estimation.interval_seconds is 0)")
            return None
        stop = threading.Event()
        thread = threading.Thread(target=run_estimation_schedule, name="performance-estimation", daemon=True,
                                  args=(self.config,), kwargs={"stop": stop})
        thread.start()
        log.info("retrain worker: estimating performance every %.0f s over windows of %d s (last %d windows)",
                 settings.interval_seconds, settings.window_seconds, settings.lookback_windows)
        return thread, stop

    def _start_guard(self) -> threading.Thread | None:
        """The rollback guard in a thread of its own: a training run takes minutes, a bad
        promotion should not wait for it. It ends when :meth:`serve` ends."""
        from learnscore.registry.guard import run_guard

        if self.config.guard.policy == "off":
            log.info("retrain worker: rollback guard off (guard.policy)")
            return None
        self._guard_stop.clear()
        thread = threading.Thread(target=run_guard, name="rollback-guard", daemon=True, args=(self.config,),
                                  kwargs={"stop": self._guard_stop, "on_decision": self.metrics.observe_guard})
        thread.start()
        log.info("retrain worker: rollback guard watching promotions every %.0f s (policy %s)",
                 self.config.guard.check_seconds, self.config.guard.policy)
        return thread

    def _accept(self, messages, pending: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Valid requests not handled yet; invalid ones are recorded, duplicates logged."""
        statuses = request_statuses(self.config)
        fresh: dict[str, dict[str, Any]] = {}
        for message in messages:
            verdict = validate_bytes(RETRAIN_REQUESTED, message.value)
            if not verdict.ok:
                self._record_invalid(message, verdict.reason)
                continue
            request = verdict.event
            request_id = request["event_id"]
            if statuses.get(request_id) in FINAL_STATUSES:
                log.info("retrain request %s redelivered (%s already): nothing to train",
                         request_id, statuses[request_id])
            elif request_id in pending or request_id in fresh:
                log.info("retrain request %s received twice in one burst", request_id)
            else:
                log.info("retrain request %s: %s %s %s", request_id, request.get("trigger"),
                         request.get("statistic") or "", request.get("segment") or "")
                fresh[request_id] = request
        return fresh

    def _record_invalid(self, message, reason: str | None) -> None:
        coordinates = f"{message.topic}/{message.partition}/{message.offset}"
        log.error("retrain request at %s breaks the RetrainRequested contract: %s; recorded "
                  "as invalid, not trained", coordinates, reason)
        now = datetime.now(timezone.utc)
        record_run(self.config, RetrainRun(
            run_id=str(uuid.uuid5(RUN_NAMESPACE, coordinates)), trigger="unknown",
            request_ids=(f"kafka:{coordinates}",), status="invalid", started_at=now,
            finished_at=now, message=f"invalid request at {coordinates}: {reason}"))

    def _maybe_schedule(self) -> None:
        """With ``every``: ask for a run when no model was trained for that long."""
        if self.every is None or time.monotonic() < self._next_schedule_check:
            return
        self._next_schedule_check = time.monotonic() + min(60.0, self.every.total_seconds() / 4)
        now = datetime.now(timezone.utc)
        last = max([t for t in (last_training_at(self.config),
                                _last_registration_at(self.config)) if t is not None],
                   default=None)
        if last is not None and now - last < self.every:
            return
        request = schedule_request(now, self.every)
        if request["event_id"] in self._scheduled:
            return
        from learnscore.core.kafka_io import producer

        writer = producer(self.config)
        try:
            writer.send(self.config.topic(topics.RETRAIN_REQUESTS), key=b"schedule",
                        value=orjson.dumps(request)).get(timeout=self.config.kafka.request_timeout_s)
        finally:
            writer.close()
        self._scheduled.add(request["event_id"])
        log.info("schedule: no model trained since %s (every %s): asked for run %s",
                 last.isoformat() if last else "ever", self.every, request["event_id"])


def run_alert(run: RetrainRun) -> tuple[str, str, str] | None:
    """The alert a ledger row calls for, as (kind, text, key), or None.

    ``started`` → ``retrain_requested`` (key: the run id); ``failed`` (for good) →
    ``retrain_failed`` (key: the run id); ``deferred`` → ``retrain_failed`` (key:
    ``<run id>/deferred``, so that the run failing for good later is a new incident).

    >>> started = RetrainRun("r1", "drift", ("q1", "q2"), "started", datetime(2026, 12, 3))
    >>> run_alert(started)
    ('retrain_requested', 'retrain run r1 started (drift): 2 request(s)', 'r1')
    >>> run_alert(started.finished("deferred", message="MLflow unreachable"))[::2]
    ('retrain_failed', 'r1/deferred')
    >>> run_alert(started.finished("succeeded")) is None
    True
    """
    if run.status == "started":
        return ("retrain_requested", f"retrain run {run.run_id} started ({run.trigger}): "
                                     f"{len(run.request_ids)} request(s)", run.run_id)
    if run.status == "failed":
        return "retrain_failed", f"retrain run {run.run_id} failed for good: {run.message}", run.run_id
    if run.status == DEFERRED:
        return ("retrain_failed", f"retrain run {run.run_id} deferred, its requests wait: {run.message}",
                f"{run.run_id}/{DEFERRED}")
    return None


def _alert_run(run: RetrainRun) -> None:
    """Raise the alert ``run`` calls for (:func:`run_alert`); never raises."""
    try:
        found = run_alert(run)
        if found is not None:
            kind, text, key = found
            alert(kind, text, key=key, run_id=run.run_id, trigger=run.trigger, status=run.status,
                  requests=list(run.request_ids), model_version=run.model_version)
    except Exception as exc:  # noqa: BLE001 - an alert must not stop the worker
        log.error("alert for retrain run %s (%s) could not be raised: %s", run.run_id, run.status, exc)


def _commit(reader) -> None:
    """Commit the consumed offsets; after a rebalance the partitions' new owner gets the requests
    again and finds them final in the ledger, so a failed commit costs nothing."""
    from kafka.errors import CommitFailedError

    try:
        reader.commit()
    except CommitFailedError as exc:
        log.warning("could not commit the retrain requests' offsets (%s): the worker that owns their "
                    "partitions now will find them handled", exc)


# -- the ledger's answers -------------------------------------------------------------------------
_UNFINISHED = ("started", DEFERRED, ATTEMPT_FAILED)
_LATEST = datetime.max.replace(tzinfo=timezone.utc)


def _resumed_run(ledger, fresh: dict[str, dict[str, Any]], statuses: dict[str, str]) -> tuple[str, str]:
    """(run id, first request id) for ``fresh``: the earliest unfinished run one of them belongs
    to, resumed; else a new run named after the earliest request (by event time, then id)."""
    unfinished = {i for i in fresh if statuses.get(i) in _UNFINISHED}
    if unfinished:
        for row in ledger.itertuples():  # oldest first
            ids = json.loads(row.request_ids or "[]")
            if unfinished & set(ids):
                return row.run_id, ids[0]
    first = min(fresh.values(), key=lambda r: (parse_timestamp(r.get("event_time", "")) or _LATEST, r["event_id"]))
    return run_id_for(first["event_id"]), first["event_id"]


def _attempts(ledger, run_id: str, status: str) -> list[datetime]:
    """When the attempts of ``run_id`` that ended ``status`` finished, oldest first."""
    rows = ledger[(ledger["run_id"] == run_id) & (ledger["status"] == status)]
    return sorted(moment.to_pydatetime() for moment in rows["finished_at"].dropna())


# -- registry and lake helpers -------------------------------------------------------------------
def _field(result: Any, name: str, default: Any = ...) -> Any:
    if isinstance(result, dict):
        value = result.get(name, default)
    else:
        value = getattr(result, name, default)
    if value is ...:
        raise RetrainError(f"the trainer returned {type(result).__name__} without {name!r}")
    return value



def _accepts(function: Callable[..., Any], keyword: str) -> bool:
    """Whether ``function`` takes ``keyword`` (a trainer given by path may predate it)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return keyword in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _report_text(report: Any) -> str:
    """A gate report as text: its ``summary()`` when it has one."""
    summary = getattr(report, "summary", None)
    return str(summary() if callable(summary) else report)




def _tag_version(config: Config, version: str, run: RetrainRun, lease_token: int) -> None:
    client = registry_client(config)
    name = config.mlflow.model_name
    client.set_model_version_tag(name, version, "retrain_run_id", run.run_id)
    client.set_model_version_tag(name, version, "retrain_lease_token", str(lease_token))
    client.set_model_version_tag(name, version, "retrain_request_ids", ",".join(run.request_ids))
    client.set_model_version_tag(name, version, "retrain_trigger", run.trigger)


def _version_of_run(config: Config, run: RetrainRun) -> dict[str, str] | None:
    """The version an earlier attempt of ``run`` registered, if any: tagged with the run id
    by the worker, or — killed before it could tag — with the run's first request id by the
    trainer (``learnscore.batch.train.train_model`` tags ``request_id``)."""
    client = registry_client(config)
    name = config.mlflow.model_name
    found = client.search_model_versions(f"name = '{name}' and tags.retrain_run_id = '{run.run_id}'")
    if not found:
        found = client.search_model_versions(
            f"name = '{name}' and tags.request_id = '{run.first_request_id}'")
    if not found:
        return None
    latest = max(found, key=lambda v: int(v.version))
    return {"version": str(latest.version), "run_id": latest.run_id}


def _last_registration_at(config: Config) -> datetime | None:
    try:
        versions = registry_client(config).search_model_versions(f"name = '{config.mlflow.model_name}'")
    except Exception as exc:  # noqa: BLE001 - the schedule then relies on the ledger alone
        log.warning("could not read the registry for the schedule: %s", exc)
        return None
    if not versions:
        return None
    newest = max(v.creation_timestamp for v in versions)
    return datetime.fromtimestamp(newest / 1000, tz=timezone.utc)


def _recent_labelled_times(config: Config, until: datetime, limit: int) -> list[datetime]:
    """Event times of the newest ``limit`` labelled predictions before ``until``, newest first."""
    from learnscore.core.lake import read_table

    frame = read_table(config, "gold.prediction_outcomes", columns=["event_time"])
    if frame.empty:
        return []
    times = pd.to_datetime(frame["event_time"], utc=True)
    return [t.to_pydatetime() for t in times[times < until].nlargest(limit)]


def run_retrain_worker(config: Config, *, every: str | None = None, policy: str | None = None,
                       trainer: str = DEFAULT_TRAINER, promoter: str = DEFAULT_PROMOTER,
                       max_runs: int | None = None, idle_exit_seconds: float | None = None,
                       watch: bool = True, estimate: bool = True,
                       on_final_failure: str | None = None) -> list[RetrainRun]:
    """The ``learnscore retrain-worker`` command: serve until Ctrl-C / SIGTERM."""
    import signal

    from learnscore.core.durations import parse_duration

    worker = RetrainWorker(config, policy=policy,
                           every=timedelta(seconds=parse_duration(every)) if every else None,
                           trainer=trainer, promoter=promoter,
                           on_final_failure=load_callable(on_final_failure) if on_final_failure else None)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.metrics.serve(config)
    try:
        return worker.serve(stop, max_runs=max_runs, idle_exit_seconds=idle_exit_seconds,
                            watch=watch, estimate=estimate)
    finally:
        worker.metrics.close()
        signal.signal(signal.SIGTERM, previous)
