"""Stream simulated events into Kafka at a target rate.

:class:`MessagePlan` is the pure part: every message a run sends, in send order, each with the
second (after the start) it is due — valid submissions, their outcomes ``outcome_delay_s``
later, and the broken events and duplicates the invalid ratio mixes in. It is seeded and needs
no broker, so tests can count what a run will send.

:func:`stream_to_kafka` sends a plan through the idempotent producer (``acks=all``,
key = learner id), paced to the wall clock, logging a progress line, and returns a
:class:`StreamReport` with the counts per kind and the ids of the valid events it sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from learnscore.core.config import Config
from learnscore.schemas.topics import OUTCOMES, SUBMISSIONS
from learnscore.simulator.generator import TRUTH_COLUMNS, Simulator, SimulatorSettings, truth_table
from learnscore.simulator.invalid import INVALID_KINDS, InvalidMixer
from learnscore.simulator.scenarios import ScenarioSpec

log = logging.getLogger(__name__)

SUBMISSION, OUTCOME = "submission", "outcome"  # kinds of valid messages
_CHUNK = 256


@dataclass(frozen=True)
class StreamOptions:
    """What one ``simulate stream`` run sends. ``rate`` counts valid submissions per second;
    broken events come on top (about ``invalid_ratio`` of all messages on each topic)."""

    rate: float = 1000.0
    duration_s: float = 30.0
    scenarios: tuple[ScenarioSpec, ...] = ()
    invalid_ratio: float = 0.0
    outcome_delay_s: float = 10.0
    seed: int = 7
    drain_outcomes: bool = True  # after the last submission, wait to send the outcomes still due
    progress_interval_s: float = 5.0
    settings: SimulatorSettings = field(default_factory=SimulatorSettings)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be positive (submissions per second), got {self.rate}")
        if self.duration_s <= 0:
            raise ValueError(f"duration must be positive, got {self.duration_s}s")
        if self.outcome_delay_s < 0:
            raise ValueError(f"outcome delay must not be negative, got {self.outcome_delay_s}s")
        if not 0.0 <= self.invalid_ratio <= 0.5:
            raise ValueError(f"invalid ratio must lie between 0 and 0.5, got {self.invalid_ratio}")

    @property
    def submissions(self) -> int:
        return max(1, int(round(self.rate * self.duration_s)))


@dataclass(frozen=True)
class Outgoing:
    """One message to send: base topic name, key, raw value, what it is, when it is due."""

    due_s: float
    topic: str
    key: bytes
    value: bytes | None
    kind: str  # "submission", "outcome" or a name in INVALID_KINDS
    event_id: str | None = None


class MessagePlan:
    """Every message of a run, in send order (seeded; see the module docstring).

    >>> from datetime import datetime, timezone
    >>> plan = MessagePlan(StreamOptions(rate=100, duration_s=1, outcome_delay_s=0.5),
    ...                    start=datetime(2026, 3, 1, tzinfo=timezone.utc))
    >>> kinds = Counter(message.kind for message in plan)
    >>> kinds["submission"], kinds["outcome"]
    (100, 100)
    """

    def __init__(self, options: StreamOptions, start: datetime, keep_truth: bool = True):
        self.options = options
        self.start = start
        self.simulator = Simulator(seed=options.seed, start=start, interval_s=1.0 / options.rate,
                                   scenarios=options.scenarios, outcome_delay_s=options.outcome_delay_s,
                                   run="stream", settings=options.settings)
        self.mixer = InvalidMixer(options.seed, options.invalid_ratio)
        self.keep_truth = keep_truth
        self._truth: list[dict[str, np.ndarray]] = []  # truth columns of every block drawn (not the events)

    def __iter__(self) -> Iterator[Outgoing]:
        options, mixer = self.options, self.mixer
        delay = options.outcome_delay_s
        pending: deque[tuple[float, dict[str, Any]]] = deque()
        remaining = options.submissions
        while remaining > 0:
            batch = self.simulator.take(min(_CHUNK, remaining))
            if self.keep_truth:
                self._truth.append(batch.truth)
            remaining -= len(batch)
            for due, event, outcome in zip(batch.offsets_s.tolist(), batch.submissions, batch.outcomes):
                while pending and pending[0][0] <= due:
                    yield from self._outcome(*pending.popleft())
                broken = mixer.before(SUBMISSIONS, event)
                if broken is not None:
                    yield Outgoing(due, SUBMISSIONS, broken.key, broken.value, broken.kind, broken.event_id)
                raw = orjson.dumps(event)
                mixer.remember(event, raw)
                yield Outgoing(due, SUBMISSIONS, event["learner_id"].encode(), raw, SUBMISSION,
                               event["event_id"])
                pending.append((due + delay, outcome))
        if options.drain_outcomes:
            while pending:
                yield from self._outcome(*pending.popleft())

    def _outcome(self, due: float, outcome: dict[str, Any]) -> Iterator[Outgoing]:
        broken = self.mixer.before(OUTCOMES, outcome)
        if broken is not None:
            yield Outgoing(due, OUTCOMES, broken.key, broken.value, broken.kind)
        yield Outgoing(due, OUTCOMES, outcome["learner_id"].encode(), orjson.dumps(outcome), OUTCOME,
                       outcome["event_id"])

    def truth(self, submissions: int) -> pa.Table:
        """The truth of the first ``submissions`` valid submissions of the plan."""
        if not self.keep_truth:
            raise ValueError("this plan was made with keep_truth=False")
        columns = {name: np.concatenate([part[name] for part in self._truth])[:submissions]
                   for name in TRUTH_COLUMNS}
        return truth_table(columns)


@dataclass
class StreamReport:
    """What a run sent. ``sent`` counts messages per kind ("submission", "outcome", and each
    broken kind of :data:`learnscore.simulator.invalid.INVALID_KINDS`)."""

    started_at: datetime
    options: StreamOptions
    sent: Counter = field(default_factory=Counter)
    valid_event_ids: set[str] = field(default_factory=set)
    outcome_event_ids: set[str] = field(default_factory=set)
    duplicated_event_ids: set[str] = field(default_factory=set)
    failed: int = 0
    elapsed_s: float = 0.0
    submissions_elapsed_s: float = 0.0  # until the last submission went out (outcomes may follow)
    stopped_early: bool = False
    truth: pa.Table | None = None

    @property
    def submissions(self) -> int:
        return self.sent[SUBMISSION]

    @property
    def outcomes(self) -> int:
        return self.sent[OUTCOME]

    @property
    def pending_outcomes(self) -> int:
        """Outcomes of sent submissions that were not sent (the run stopped before they were due)."""
        return self.submissions - self.outcomes

    def invalid(self, topic: str | None = None) -> dict[str, int]:
        """Broken messages (duplicates included) sent per kind, on ``topic`` or on both."""
        return {kind: count for kind, count in sorted(self.sent.items())
                if kind in INVALID_KINDS and (topic is None or INVALID_KINDS[kind].topic == topic)}

    def expected_reasons(self, topic: str) -> Counter:
        """reason_code → how many messages of ``topic`` the pipeline should quarantine."""
        reasons: Counter = Counter()
        for kind, count in self.invalid(topic).items():
            reasons[INVALID_KINDS[kind].reason_code] += count
        return reasons

    def messages(self, topic: str) -> int:
        """Every message sent to ``topic`` (valid and broken)."""
        valid = self.submissions if topic == SUBMISSIONS else self.outcomes
        return valid + sum(self.invalid(topic).values())

    def summary(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "elapsed_s": round(self.elapsed_s, 3),
            "submissions_elapsed_s": round(self.submissions_elapsed_s, 3),
            "seed": self.options.seed,
            "rate": self.options.rate,
            "scenarios": [str(s) for s in self.options.scenarios],
            "submissions": self.submissions,
            "outcomes": self.outcomes,
            "pending_outcomes": self.pending_outcomes,
            "invalid": {kind: {"sent": count, "topic": INVALID_KINDS[kind].topic,
                               "expected_reason_code": INVALID_KINDS[kind].reason_code}
                        for kind, count in self.invalid().items()},
            "expected_quarantine": {topic: dict(self.expected_reasons(topic)) for topic in (SUBMISSIONS, OUTCOMES)},
            "failed": self.failed,
            "stopped_early": self.stopped_early,
        }

    def lines(self) -> list[str]:
        """The human summary ``simulate stream`` prints."""
        rate = self.submissions / self.submissions_elapsed_s if self.submissions_elapsed_s else 0.0
        out = [
            f"sent {self.submissions} valid submissions and {self.outcomes} outcomes, seed {self.options.seed}: "
            f"submissions in {self.submissions_elapsed_s:.1f}s ({rate:.0f}/s, target {self.options.rate:g}/s), "
            f"all in {self.elapsed_s:.1f}s",
        ]
        if self.options.scenarios:
            out.append("scenarios: " + ", ".join(str(s) for s in self.options.scenarios))
        for topic in (SUBMISSIONS, OUTCOMES):
            invalid = self.invalid(topic)
            if invalid:
                out.append(f"broken on {topic}: {sum(invalid.values())}")
                out += [f"  {kind:<24} {count:>6}  → {INVALID_KINDS[kind].reason_code}"
                        for kind, count in invalid.items()]
        if self.pending_outcomes:
            out.append(f"{self.pending_outcomes} outcomes were not sent: the run stopped before they were due")
        if self.failed:
            out.append(f"{self.failed} messages FAILED to reach Kafka")
        return out


def producer_compression() -> str | None:
    """kafka-python checksums every record batch with CRC32C. Without the ``crc32c`` C extension
    that runs in pure Python at ~4 MB/s and caps a producer near 1k messages/s of 4 KB; gzip (C,
    in the standard library) shrinks what is checksummed about six times. With the extension,
    sending uncompressed is fastest (~20k messages/s)."""
    from kafka.record import util

    return None if getattr(util, "crc32c_c", None) is not None else "gzip"


def stream_to_kafka(config: Config, options: StreamOptions, stop_event: threading.Event | None = None,
                    start: datetime | None = None, keep_truth: bool = True) -> StreamReport:
    """Send a simulated run to ``config``'s Kafka and return what was sent.

    Creates the submissions and outcomes topics if missing. Returns when the run and its
    outcomes are sent, or soon after ``stop_event`` is set (outcomes not yet due are then not
    sent; the report says how many). Raises :class:`learnscore.core.kafka_io.BrokerUnreachable`
    when no broker answers.
    """
    from kafka.errors import KafkaTimeoutError

    from learnscore.core.kafka_io import create_topics, producer

    stop_event = stop_event or threading.Event()
    create_topics(config, [SUBMISSIONS, OUTCOMES])
    topics = {SUBMISSIONS: config.topic(SUBMISSIONS), OUTCOMES: config.topic(OUTCOMES)}
    kafka = producer(config, linger_ms=20, batch_size=64 * 1024, compression_type=producer_compression())
    start = start or datetime.now(timezone.utc)
    plan = MessagePlan(options, start, keep_truth=keep_truth)
    report = StreamReport(started_at=start, options=options)
    delivered = [0]  # acknowledged by the broker (callbacks run on the producer's I/O thread)
    errors: list[BaseException] = []

    def acknowledged(_metadata) -> None:
        delivered[0] += 1

    began = time.monotonic()
    next_progress = began + options.progress_interval_s
    try:
        for message in plan:
            wait = began + message.due_s - time.monotonic()
            if wait > 0.002 and stop_event.wait(wait):
                break
            if stop_event.is_set():
                break
            future = kafka.send(topics[message.topic], key=message.key, value=message.value)
            future.add_callback(acknowledged).add_errback(errors.append)
            report.sent[message.kind] += 1
            if message.kind == SUBMISSION:
                report.valid_event_ids.add(message.event_id)
                report.submissions_elapsed_s = time.monotonic() - began
            elif message.kind == OUTCOME:
                report.outcome_event_ids.add(message.event_id)
            elif message.event_id is not None:
                report.duplicated_event_ids.add(message.event_id)
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + options.progress_interval_s
                _log_progress(report, plan, now - began)
        report.stopped_early = stop_event.is_set()
        try:
            kafka.flush(timeout=config.kafka.request_timeout_s * 4)
        except KafkaTimeoutError:
            log.error("Kafka did not acknowledge every message within %.0fs", config.kafka.request_timeout_s * 4)
    finally:
        kafka.close(timeout=config.kafka.request_timeout_s)
    report.elapsed_s = time.monotonic() - began
    report.failed = sum(report.sent.values()) - delivered[0]
    if report.failed:
        log.error("%d of %d messages were not acknowledged by Kafka at %s; first error: %s", report.failed,
                  sum(report.sent.values()), config.kafka.bootstrap_servers, errors[0] if errors else "timeout")
    if keep_truth:
        report.truth = plan.truth(report.submissions)
    return report


def _log_progress(report: StreamReport, plan: MessagePlan, elapsed: float) -> None:
    active = [str(s) for s in plan.options.scenarios
              if s.active(np.array([report.submissions]), np.array([report.submissions / plan.options.rate]))[0]]
    log.info("simulate: %5.0fs  %d submissions (%.0f/s)  %d outcomes  %d broken  scenarios: %s",
             elapsed, report.submissions, report.submissions / max(elapsed, 1e-9), report.outcomes,
             sum(report.invalid().values()), ", ".join(active) or "none")
