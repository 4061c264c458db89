"""What a platform's diagnostics are about: subjects, grades, skills, and the level cut scores.

The contracts, the features, the JSON Schema export and the simulator all follow one
:class:`Domain`, built from config (``domain:`` in ``conf/base.yaml``); the defaults are the
platform learnscore was first built for.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The comprehension levels, lowest first. Fixed: the model's outputs (``p_<level>``) and the
#: gold tables have one column per level.
LEVELS = ("beginner", "developing", "proficient", "advanced")


@dataclass(frozen=True)
class Domain:
    """The values a valid event may carry.

    >>> Domain().subjects
    ('math', 'reading', 'science')
    >>> Domain().level_of(59.9), Domain().level_of(60.0)
    ('developing', 'proficient')
    """

    subjects: tuple[str, ...] = ("math", "reading", "science")
    grade_min: int = 1
    grade_max: int = 12
    #: Allowed skill names; ``None``: any non-empty skill string (up to 64 characters).
    skills: tuple[str, ...] | None = None
    #: Progress-score boundaries between consecutive levels: a score of at least
    #: ``level_cut_scores[i]`` is at least ``LEVELS[i + 1]``.
    level_cut_scores: tuple[float, ...] = (40.0, 60.0, 78.0)

    def __post_init__(self) -> None:
        if not self.subjects or len(set(self.subjects)) != len(self.subjects):
            raise ValueError(f"subjects must be a non-empty list without repeats, got {list(self.subjects)}")
        if not 1 <= self.grade_min <= self.grade_max:
            raise ValueError(f"grades must satisfy 1 <= grade_min <= grade_max, got {self.grade_min}..{self.grade_max}")
        cuts = list(self.level_cut_scores)
        if len(cuts) != len(LEVELS) - 1 or cuts != sorted(cuts) or not all(0 < c < 100 for c in cuts):
            raise ValueError(f"level_cut_scores must be {len(LEVELS) - 1} increasing scores between 0 and 100, "
                             f"got {cuts}")

    def level_of(self, score: float) -> str:
        """The level a progress score falls in."""
        return LEVELS[sum(score >= cut for cut in self.level_cut_scores)]


DEFAULT_DOMAIN = Domain()
