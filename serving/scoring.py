"""Scoring validated submissions with a loaded model, batching requests that wait together.

Features come from the shared feature code (``learnscore.model.features``), the same function the
training job and the stream call, so the three cannot disagree.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from learnscore.serving.models import ServedVersion

log = logging.getLogger(__name__)

LEVEL_PROBABILITIES = ("p_beginner", "p_developing", "p_proficient", "p_advanced")


class UnusableOutput(ValueError):
    """The model returned values no client can use (NaN or infinite); answered 503, never 200."""


def predictions_from_columns(predicted: Mapping[str, Any], events: list[dict[str, Any]],
                             model: ServedVersion) -> list[dict[str, Any]]:
    """One JSON-ready prediction per event from the model's output columns (same row order).

    ``predicted`` is the model's output: a DataFrame or a dict of arrays with the columns of
    ``learnscore.model.diagnostic.PREDICTION_COLUMNS``.

    >>> import numpy as np
    >>> columns = {"progress_score": np.array([61.5]), "comprehension_level": np.array(["proficient"]),
    ...     "p_beginner": np.array([0.1]), "p_developing": np.array([0.2]),
    ...     "p_proficient": np.array([0.6]), "p_advanced": np.array([0.1])}
    >>> model = ServedVersion("m", "3", "production", None, None)
    >>> prediction = predictions_from_columns(columns, [{"event_id": "e1"}], model)[0]
    >>> prediction["progress_score"], prediction["probabilities"]["proficient"], prediction["model_version"]
    (61.5, 0.6, '3')
    """
    score_array = np.asarray(predicted["progress_score"], dtype=np.float64)
    if len(score_array) != len(events):
        raise ValueError(f"the model returned {len(score_array)} rows for {len(events)} submissions")
    probability_arrays = [np.asarray(predicted[column], dtype=np.float64) for column in LEVEL_PROBABILITIES]
    finite = np.isfinite(score_array) & np.logical_and.reduce([np.isfinite(a) for a in probability_arrays])
    if not finite.all():
        raise UnusableOutput(f"version {model.version} returned non-finite values (NaN or infinity) for "
                             f"{int((~finite).sum())} of {len(events)} submissions")
    scores = score_array.tolist()
    levels = [str(level) for level in np.asarray(predicted["comprehension_level"]).tolist()]
    probabilities = [array.tolist() for array in probability_arrays]
    names = [column[2:] for column in LEVEL_PROBABILITIES]
    return [
        {
            "event_id": event["event_id"],
            "progress_score": scores[row],
            "comprehension_level": levels[row],
            "probabilities": {name: values[row] for name, values in zip(names, probabilities)},
            "model_name": model.name,
            "model_version": model.version,
            "model_alias": model.alias,
        }
        for row, event in enumerate(events)
    ]


def score_events(model: ServedVersion, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Featurise ``events`` (contract-valid) with the shared feature code and score them.

    A model that checks its own input gets the flat responses directly
    (:func:`learnscore.model.features.flatten_events`); any other pyfunc gets the model input DataFrame.
    """
    from learnscore.model.features import flatten_events

    flat = flatten_events(events)
    predictions = predictions_from_columns(_predict(model, events, flat), events, model)
    return with_effort(predictions, events, flat, model)


def _predict(model: ServedVersion, events: list[dict[str, Any]], flat) -> Mapping[str, Any]:
    from learnscore.model.features import model_input_from_events

    if model.direct is not None:
        return model.direct.predict_flat(flat)
    return model.model.predict(model_input_from_events(events))


def with_effort(predictions: list[dict[str, Any]], events: list[dict[str, Any]], flat,
                model: ServedVersion) -> list[dict[str, Any]]:
    """Each prediction with ``rapid_guess_share`` and ``low_effort`` (null when the version's item
    bank has no response times) and, for a low-effort submission, ``effort_moderated_score``: the
    same model's score of its effortful answers alone — as ``streaming/effort.py`` does in the stream."""
    from learnscore.model.effort import effort_per_submission, judges_effort
    from learnscore.model.features import flatten_events

    settings = model.effort
    for prediction in predictions:
        prediction.update(rapid_guess_share=None, low_effort=None, effort_moderated_score=None)
    if settings is None or not settings.enabled or model.item_bank is None or not judges_effort(model.item_bank):
        return predictions
    shares, masks = effort_per_submission(flat, model.item_bank, share=settings.normative_share,
                                          cap_ms=settings.threshold_cap_ms)
    rushed = []
    for row, (prediction, share, mask) in enumerate(zip(predictions, shares.tolist(), masks)):
        prediction.update(rapid_guess_share=share, low_effort=share > settings.low_effort_share)
        if prediction["low_effort"] and not mask.all():
            rushed.append(row)
    if rushed:
        effortful = [{**events[row], "responses": [response for response, rapid in
                                                   zip(events[row]["responses"], masks[row]) if not rapid]}
                     for row in rushed]
        scores = np.asarray(_predict(model, effortful, flatten_events(effortful))["progress_score"], dtype=np.float64)
        for row, score in zip(rushed, scores.tolist()):
            predictions[row]["effort_moderated_score"] = score if np.isfinite(score) else None
    return predictions


@dataclass
class _Job:
    model: ServedVersion
    events: list[dict[str, Any]]
    future: asyncio.Future


def _score_jobs(jobs: list[_Job]) -> list[list[dict[str, Any]] | BaseException]:
    """Score jobs that waited together: one model call per model, split back per job."""
    results: list[Any] = [None] * len(jobs)
    by_model: dict[int, list[int]] = {}
    for index, job in enumerate(jobs):
        by_model.setdefault(id(job.model), []).append(index)
    for indexes in by_model.values():
        model = jobs[indexes[0]].model
        events = [event for index in indexes for event in jobs[index].events]
        try:
            scored = score_events(model, events)
        except Exception:  # noqa: BLE001 - a model error must not fail the neighbours
            # One bad job must not fail its neighbours: score them one by one.
            for index in indexes:
                try:
                    results[index] = score_events(model, jobs[index].events)
                except Exception as exc:  # noqa: BLE001 - reported to that request's handler
                    results[index] = exc
            continue
        start = 0
        for index in indexes:
            end = start + len(jobs[index].events)
            results[index] = scored[start:end]
            start = end
    return results


class ScoreBatcher:
    """Scores requests in a worker thread; requests that arrive while it works go in one batch.

    At low load a request is scored alone at once; under load the model is called once per
    batch instead of once per request, which is what lets one process serve hundreds of
    requests per second.
    """

    def __init__(self, max_items: int):
        self.max_items = max_items
        self._waiting: list[_Job] = []
        self._draining = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="score")

    async def score(self, model: ServedVersion, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        job = _Job(model, events, loop.create_future())
        self._waiting.append(job)
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await job.future

    def _take(self) -> list[_Job]:
        taken, items = [], 0
        while self._waiting and (not taken or items + len(self._waiting[0].events) <= self.max_items):
            job = self._waiting.pop(0)
            taken.append(job)
            items += len(job.events)
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                jobs = self._take()
                try:
                    results = await loop.run_in_executor(self._pool, _score_jobs, jobs)
                except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                    results = [exc] * len(jobs)
                for job, result in zip(jobs, results):
                    if job.future.done():
                        continue
                    if isinstance(result, BaseException):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)
        finally:
            self._draining = False

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
