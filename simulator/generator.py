"""The seeded source of valid submissions, their outcomes and the truth behind them.

:class:`Simulator` hands out events in order (``take(n)``). Event ``i`` happens ``i * interval_s``
seconds after ``start``; its outcome ``outcome_delay_s`` later. Internally events are drawn in
fixed blocks, each from its own random generator seeded by (seed, run, start, block number), so
the events depend only on those settings — never on how callers cut their ``take`` calls.
Two runs with the same seed but another ``start`` (or ``run`` name) get fresh learners and
event ids, so a re-run never replays ids an earlier run already sent.
"""

from __future__ import annotations

import gc
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from learnscore.schemas.events import LEVELS, SUBJECTS
from learnscore.simulator.irt import ItemBank, answer_tests, draw_abilities, make_item_bank, sample_tests
from learnscore.simulator.outcomes import level_index, observe_outcomes
from learnscore.simulator.scenarios import ScenarioSpec, apply_psychometric_effects, effects_of

BLOCK_SIZE = 2048
BANK_SEED = 2026  # the platform has one item bank: the same for every run and seed

TRUTH_COLUMNS = (
    "event_id", "learner_id", "subject", "grade_level", "cohort", "scenario", "item_bank",
    "true_ability", "n_items", "accuracy", "oracle_score", "oracle_level", "observed_score",
    "observed_level", "outcome_event_id", "submission_time", "outcome_time",
)


@dataclass(frozen=True)
class SimulatorSettings:
    """The shape of the simulated platform (not of one run)."""

    items_per_skill: int = 40
    min_items: int = 20
    max_items: int = 40
    bank_seed: int = BANK_SEED
    subjects: tuple[str, ...] = SUBJECTS  # the domain's (config: domain.subjects, grade_min/max, skills)
    grade_min: int = 1
    grade_max: int = 12
    skills: tuple[str, ...] | None = None


@dataclass
class SimulatedBatch:
    """Valid submissions, their outcomes (``outcomes[i]`` measures ``submissions[i]``) and the truth.

    ``truth`` holds one numpy array per column of :data:`TRUTH_COLUMNS`; ``offsets_s`` the time
    of each submission in seconds after the simulator's start.
    """

    submissions: list[dict]
    outcomes: list[dict]
    truth: dict[str, np.ndarray]
    offsets_s: np.ndarray
    first_index: int = 0

    def __len__(self) -> int:
        return len(self.submissions)

    def slice(self, start: int, stop: int) -> SimulatedBatch:
        return SimulatedBatch(self.submissions[start:stop], self.outcomes[start:stop],
                              {k: v[start:stop] for k, v in self.truth.items()},
                              self.offsets_s[start:stop], self.first_index + start)

    @staticmethod
    def concat(batches: list[SimulatedBatch]) -> SimulatedBatch:
        if not batches:
            return SimulatedBatch([], [], {k: np.array([], dtype=object) for k in TRUTH_COLUMNS},
                                  np.array([], dtype=float))
        return SimulatedBatch(
            [e for b in batches for e in b.submissions],
            [e for b in batches for e in b.outcomes],
            {k: np.concatenate([b.truth[k] for b in batches]) for k in TRUTH_COLUMNS},
            np.concatenate([b.offsets_s for b in batches]),
            batches[0].first_index,
        )

    def truth_table(self) -> pa.Table:
        """The truth as an Arrow table (times as UTC timestamps in microseconds)."""
        return truth_table(self.truth)


def truth_table(truth: dict[str, np.ndarray]) -> pa.Table:
    columns = {}
    for name in TRUTH_COLUMNS:
        values = truth[name]
        if name.endswith("_time"):
            columns[name] = pa.array(values.astype("datetime64[us]"), type=pa.timestamp("us", tz="UTC"))
        elif values.dtype == object:
            columns[name] = pa.array(values.tolist(), type=pa.string())
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


@contextmanager
def _gc_paused():
    """Building millions of small acyclic dicts triggers the cycle collector over and over for
    nothing; pausing it for one block makes generation ~40% faster."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _uuid4_strings(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` random version-4 UUIDs drawn from ``rng`` (so they are reproducible)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    text = raw.tobytes().hex()
    out = []
    for i in range(0, 32 * n, 32):
        h = text[i:i + 32]
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def _rfc3339(moments: np.ndarray) -> list[str]:
    """datetime64 values → ``2026-01-31T09:30:00.250Z`` strings (milliseconds, UTC)."""
    return [text + "Z" for text in np.datetime_as_string(moments, unit="ms").tolist()]


def _datetime64(moment: datetime) -> np.datetime64:
    if moment.tzinfo is None:
        raise ValueError(f"start time {moment} has no time zone; pass an aware datetime (UTC)")
    return np.datetime64(moment.astimezone(timezone.utc).replace(tzinfo=None), "us")


@dataclass
class Simulator:
    """A deterministic stream of simulated diagnostic submissions (see the module docstring).

    >>> from datetime import datetime, timezone
    >>> sim = Simulator(seed=7, start=datetime(2026, 1, 5, tzinfo=timezone.utc), interval_s=0.5)
    >>> batch = sim.take(3)
    >>> [e["event_time"] for e in batch.submissions]
    ['2026-01-05T00:00:00.000Z', '2026-01-05T00:00:00.500Z', '2026-01-05T00:00:01.000Z']
    >>> batch.outcomes[0]["submission_event_id"] == batch.submissions[0]["event_id"]
    True
    """

    seed: int
    start: datetime
    interval_s: float = 0.001
    scenarios: tuple[ScenarioSpec, ...] = ()
    outcome_delay_s: float = 10.0
    run: str = "stream"
    settings: SimulatorSettings = field(default_factory=SimulatorSettings)
    bank: ItemBank | None = None

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")
        self.scenarios = tuple(self.scenarios)
        self._start64 = _datetime64(self.start)
        self._start_ms = int(self._start64.astype("datetime64[ms]").astype(np.int64))
        self.bank = self.bank or make_item_bank(self.settings.bank_seed, self.settings.items_per_skill,
                                                subjects=self.settings.subjects, skills=self.settings.skills)
        self._run_key = zlib.crc32(self.run.encode())
        self._buffer: SimulatedBatch | None = None
        self._next_block = 0
        self._taken = 0

    @property
    def produced(self) -> int:
        """How many submissions ``take`` has handed out so far."""
        return self._taken

    def take(self, n: int) -> SimulatedBatch:
        """The next ``n`` submissions with their outcomes and truth."""
        parts: list[SimulatedBatch] = []
        while n > 0:
            if self._buffer is None or len(self._buffer) == 0:
                self._buffer = self._make_block(self._next_block)
                self._next_block += 1
            part = self._buffer.slice(0, n)
            self._buffer = self._buffer.slice(len(part), len(self._buffer))
            parts.append(part)
            n -= len(part)
        batch = SimulatedBatch.concat(parts) if len(parts) != 1 else parts[0]
        self._taken += len(batch)
        return batch

    def _make_block(self, block: int) -> SimulatedBatch:
        with _gc_paused():
            return self._draw_block(block)

    def _draw_block(self, block: int) -> SimulatedBatch:
        rng = np.random.default_rng([self.seed, self._run_key, self._start_ms, block])
        bank, settings = self.bank, self.settings
        n = BLOCK_SIZE
        index = np.arange(block * n, (block + 1) * n)
        offsets_s = index * self.interval_s
        effects = effects_of(self.scenarios, index, offsets_s)

        subject_index = rng.integers(0, len(bank.subjects), n)
        grade = rng.integers(settings.grade_min, settings.grade_max + 1, n)
        theta = draw_abilities(rng, grade, effects.ability_shift)
        test_offsets, item_index = sample_tests(rng, bank, subject_index, effects.bank_version,
                                                settings.min_items, settings.max_items)
        answers = answer_tests(rng, bank, theta, test_offsets, item_index)
        score, level = observe_outcomes(rng, theta, effects.score_intercept, effects.score_slope,
                                        effects.score_noise_sd)
        oracle_score = np.clip(effects.score_intercept + effects.score_slope * theta, 0.0, 100.0)

        event_ids = _uuid4_strings(rng, n)
        outcome_ids = _uuid4_strings(rng, n)
        learner_ids = [f"L{value:016x}" for value in
                       rng.integers(0, 2**63 - 1, n, dtype=np.int64).tolist()]
        if effects.psychometric:  # last: a run without these scenarios draws what it always drew
            apply_psychometric_effects(rng, bank, answers, theta, effects)
        submitted = self._start64 + (offsets_s * 1e6).astype("timedelta64[us]")
        observed = submitted + np.timedelta64(int(round(self.outcome_delay_s * 1e6)), "us")
        submitted_text, observed_text = _rfc3339(submitted), _rfc3339(observed)

        seconds = np.repeat(effects.time_in_seconds, answers.counts)
        times = np.rint(np.where(seconds, answers.response_time_ms / 1000.0, answers.response_time_ms))
        flat = [
            {"item_id": i, "skill": s, "correct": c, "response_time_ms": t, "attempts": a, "hint_used": h}
            for i, s, c, t, a, h in zip(
                bank.item_id[answers.item_index].tolist(), bank.skill[answers.item_index].tolist(),
                answers.correct.tolist(), times.astype(np.int64).tolist(),
                answers.attempts.tolist(), answers.hint_used.tolist())
        ]
        bounds = test_offsets.tolist()
        subjects = np.asarray(bank.subjects, dtype=object)[subject_index].tolist()
        versions = np.asarray(bank.versions, dtype=object)[effects.bank_version].tolist()
        grades = grade.tolist()
        submissions = [
            {"event_id": event_ids[k], "schema_version": 1, "event_time": submitted_text[k],
             "learner_id": learner_ids[k], "assessment_id": f"diag-{subjects[k]}-{versions[k]}",
             "subject": subjects[k], "grade_level": grades[k],
             "responses": flat[bounds[k]:bounds[k + 1]]}
            for k in range(n)
        ]
        levels = np.asarray(LEVELS, dtype=object)
        level_names = levels[level].tolist()
        scores = score.tolist()
        outcomes = [
            {"event_id": outcome_ids[k], "schema_version": 1, "event_time": observed_text[k],
             "submission_event_id": event_ids[k], "learner_id": learner_ids[k],
             "observed_progress_score": scores[k], "observed_comprehension_level": level_names[k]}
            for k in range(n)
        ]
        counts = answers.counts
        accuracy = np.add.reduceat(answers.correct.astype(float), test_offsets[:-1]) / counts
        truth = {
            "event_id": np.asarray(event_ids, dtype=object),
            "learner_id": np.asarray(learner_ids, dtype=object),
            "subject": np.asarray(subjects, dtype=object),
            "grade_level": grade,
            "cohort": effects.cohort,
            "scenario": effects.label,
            "item_bank": np.asarray(versions, dtype=object),
            "true_ability": theta,
            "n_items": counts,
            "accuracy": accuracy,
            "oracle_score": oracle_score,
            "oracle_level": levels[level_index(oracle_score)],
            "observed_score": score,
            "observed_level": levels[level],
            "outcome_event_id": np.asarray(outcome_ids, dtype=object),
            "submission_time": submitted,
            "outcome_time": observed,
        }
        return SimulatedBatch(submissions, outcomes, truth, offsets_s, block * n)


def measure_generation(n: int = 50_000, seed: int = 7) -> dict[str, float]:
    """Time the generation of ``n`` submissions (dicts, and dicts serialised to JSON bytes).

    Returns submissions per second for both, for benchmarks and the README's figures.
    """
    import time

    import orjson

    sim = Simulator(seed=seed, start=datetime(2026, 1, 1, tzinfo=timezone.utc), run="measure")
    sim.take(1)  # build the item bank outside the timing
    began = time.perf_counter()
    batch = sim.take(n)
    dict_seconds = time.perf_counter() - began
    began = time.perf_counter()
    size = sum(len(orjson.dumps(event)) for event in batch.submissions)
    json_seconds = time.perf_counter() - began
    return {
        "submissions": float(n),
        "responses": float(sum(len(e["responses"]) for e in batch.submissions)),
        "dicts_per_s": n / dict_seconds,
        "json_per_s": n / (dict_seconds + json_seconds),
        "mean_event_bytes": size / n,
    }
