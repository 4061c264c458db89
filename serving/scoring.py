"""Scoring validated submissions with a loaded model, batching requests that wait together.

Features come from the shared feature code (``schemas.features``), the same function the
training job and the stream call, so the three cannot disagree.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Any

from serving.models import LoadedModel

log = logging.getLogger(__name__)

LEVEL_PROBABILITIES = ("p_beginner", "p_developing", "p_proficient", "p_advanced")


def predictions_from_frame(predicted, events: list[dict[str, Any]], model: LoadedModel) -> list[dict[str, Any]]:
    """One JSON-ready prediction per event from the model's output frame (same row order).

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"progress_score": [61.5], "comprehension_level": ["proficient"],
    ...     "p_beginner": [0.1], "p_developing": [0.2], "p_proficient": [0.6], "p_advanced": [0.1]})
    >>> model = LoadedModel("m", "3", "production", None, None)
    >>> predictions_from_frame(frame, [{"event_id": "e1"}], model)[0]["model_version"]
    '3'
    """
    if len(predicted) != len(events):
        raise ValueError(f"the model returned {len(predicted)} rows for {len(events)} submissions")
    scores = predicted["progress_score"].tolist()
    levels = predicted["comprehension_level"].tolist()
    probabilities = [predicted[column].tolist() for column in LEVEL_PROBABILITIES]
    return [
        {
            "event_id": event["event_id"],
            "progress_score": float(scores[row]),
            "comprehension_level": str(levels[row]),
            "probabilities": {column[2:]: float(values[row])
                              for column, values in zip(LEVEL_PROBABILITIES, probabilities)},
            "model_name": model.name,
            "model_version": model.version,
            "model_alias": model.alias,
        }
        for row, event in enumerate(events)
    ]


def score_events(model: LoadedModel, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Featurise ``events`` with the shared feature code and score them with ``model``."""
    from schemas.features import model_input_from_events

    predicted = model.model.predict(model_input_from_events(events))
    return predictions_from_frame(predicted, events, model)


@dataclass
class _Job:
    model: LoadedModel
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
        except Exception:
            # One bad job must not fail its neighbours: score them one by one.
            for index in indexes:
                try:
                    results[index] = score_events(model, jobs[index].events)
                except Exception as exc:  # reported to that request's handler
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

    async def score(self, model: LoadedModel, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
                except Exception as exc:
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
