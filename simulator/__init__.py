"""The learner simulator: seeded IRT learners, late outcomes, drift scenarios, broken events.

What other parts call:

- :class:`learnscore.simulator.generator.Simulator` — ``Simulator(seed, start, interval_s, scenarios,
  outcome_delay_s).take(n)`` → a :class:`~simulator.generator.SimulatedBatch` of valid
  submissions, their outcomes and the truth (true ability, cohort, scenario, oracle score).
- :func:`learnscore.simulator.stream.stream_to_kafka` — a paced run into Kafka, returning a
  :class:`~simulator.stream.StreamReport` (counts per kind, expected quarantine reasons,
  ids of the valid events sent, truth).
- :func:`learnscore.simulator.history.write_history` — the historical batch for the first training.
- :func:`learnscore.simulator.scenarios.parse_scenario` — ``"weaker-cohort@15s"`` → a scenario spec.
- :data:`learnscore.simulator.invalid.INVALID_KINDS` — every kind of broken event and its reason code.
"""

from __future__ import annotations


def settings_from_config(config):
    """The simulated platform's shape (:class:`SimulatorSettings`) from ``config.simulator`` and
    ``config.domain`` (its subjects, grades and skills)."""
    from learnscore.simulator.generator import SimulatorSettings

    section, domain = config.simulator, config.domain
    return SimulatorSettings(items_per_skill=section.items_per_skill, min_items=section.min_items,
                             max_items=section.max_items, subjects=tuple(domain.subjects),
                             grade_min=domain.grade_min, grade_max=domain.grade_max,
                             skills=tuple(domain.skills) if domain.skills else None)
