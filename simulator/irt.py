"""Item response theory: the item bank, learner abilities and the answers they give.

Three-parameter logistic model (3PL): a learner of ability ``theta`` answers an item of
difficulty ``b``, discrimination ``a`` and guessing floor ``c`` correctly with probability
``c + (1 - c) / (1 + exp(-a (theta - b)))``. Response times are log-normal and longer when
the item is hard for the learner (``b - theta`` large); wrong answers take more attempts and
weak learners ask for hints more often.

Everything here is vectorised with numpy over a block of submissions: one call draws every
answer of every test in the block, as flat arrays with per-submission offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learnscore.schemas.events import SUBJECTS

SKILLS: dict[str, tuple[str, ...]] = {
    "math": ("number_sense", "fractions", "algebra", "geometry", "data_analysis"),
    "reading": ("phonics", "vocabulary", "fluency", "comprehension", "inference"),
    "science": ("life_science", "physical_science", "earth_science", "inquiry", "chemistry"),
}
SKILLS_PER_SUBJECT = 5


def subject_skills(subject: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The simulated skills of ``subject``: the built-in ones, else ``<subject>_skill_<k>``; with
    ``allowed`` (``domain.skills``) the subject's slots take allowed names in turn.

    >>> subject_skills("music")[:2]
    ('music_skill_1', 'music_skill_2')
    >>> subject_skills("music", ("rhythm", "pitch"))
    ('rhythm', 'pitch', 'rhythm', 'pitch', 'rhythm')
    """
    own = SKILLS.get(subject) or tuple(f"{subject}_skill_{k + 1}" for k in range(SKILLS_PER_SUBJECT))
    if allowed is None or set(own) <= set(allowed):
        return own
    return tuple(allowed[k % len(allowed)] for k in range(SKILLS_PER_SUBJECT))

GRADES = np.arange(1, 13)
MEDIAN_RESPONSE_MS = 20_000.0  # a typical item takes ~20 s
MAX_RESPONSE_MS = 3_600_000  # the contract's limit (one hour)


@dataclass(frozen=True)
class BankDesign:
    """How the parameters of one version of the item bank are drawn."""

    version: str
    difficulty_mean: float = 0.0
    difficulty_sd: float = 1.0
    log_discrimination_mean: float = 0.15  # a ≈ 1.2 on average
    log_discrimination_sd: float = 0.25
    guessing_mean: float = 0.2


BASE_BANK = BankDesign("v1")
# A rewritten bank: new items that are harder (+1 logit) and discriminate less (a ≈ 0.7).
CHANGED_BANK = BankDesign("v2", difficulty_mean=1.0, log_discrimination_mean=-0.35)


@dataclass(frozen=True)
class ItemBank:
    """All items of every bank version, laid out by (version, subject, skill, item).

    ``block(version_index, subject_index)`` is the contiguous range of one subject's items in
    one version; every subject has ``skills × items_per_skill`` items.
    """

    versions: tuple[str, ...]
    items_per_skill: int
    item_id: np.ndarray  # object array of str
    skill: np.ndarray  # object array of str
    discrimination: np.ndarray  # a
    difficulty: np.ndarray  # b
    guessing: np.ndarray  # c
    time_intensity: np.ndarray  # log-scale offset of the item's typical response time
    subjects: tuple[str, ...] = SUBJECTS

    @property
    def items_per_subject(self) -> int:
        return SKILLS_PER_SUBJECT * self.items_per_skill

    def block_start(self, version_index: np.ndarray | int, subject_index: np.ndarray | int):
        return (np.asarray(version_index) * len(self.subjects) + np.asarray(subject_index)) * self.items_per_subject


def make_item_bank(seed: int, items_per_skill: int = 40,
                   designs: tuple[BankDesign, ...] = (BASE_BANK, CHANGED_BANK),
                   subjects: tuple[str, ...] = SUBJECTS, skills: tuple[str, ...] | None = None) -> ItemBank:
    """Draw the item bank: for each design, subject and skill, ``items_per_skill`` items.
    ``subjects`` / ``skills``: the domain's (``domain.subjects``, ``domain.skills``).

    >>> bank = make_item_bank(seed=1, items_per_skill=2)
    >>> len(bank.item_id), bank.item_id[0], bank.item_id[-1]
    (60, 'math.number_sense.v1.000', 'science.chemistry.v2.001')
    >>> make_item_bank(seed=1, items_per_skill=2, subjects=("math", "music")).item_id[-1]
    'music.music_skill_5.v2.001'
    """
    rng = np.random.default_rng([seed, 0x17E5])
    ids, skill_names, a, b, c, tau = [], [], [], [], [], []
    for design in designs:
        for subject in subjects:
            numbered: dict[str, int] = {}  # a skill that fills two slots numbers its items on
            for skill in subject_skills(subject, skills):
                n, first = items_per_skill, numbered.get(skill, 0)
                numbered[skill] = first + n
                ids += [f"{subject}.{skill}.{design.version}.{k:03d}" for k in range(first, first + n)]
                skill_names += [skill] * n
                a.append(np.exp(rng.normal(design.log_discrimination_mean, design.log_discrimination_sd, n)))
                b.append(rng.normal(design.difficulty_mean, design.difficulty_sd, n))
                # Beta with mean guessing_mean and ~0.07 spread, kept below one half.
                concentration = 30.0
                c.append(np.minimum(rng.beta(design.guessing_mean * concentration,
                                             (1 - design.guessing_mean) * concentration, n), 0.45))
                tau.append(rng.normal(0.0, 0.3, n))
    return ItemBank(
        versions=tuple(design.version for design in designs),
        items_per_skill=items_per_skill,
        item_id=np.array(ids, dtype=object),
        skill=np.array(skill_names, dtype=object),
        discrimination=np.concatenate(a),
        difficulty=np.concatenate(b),
        guessing=np.concatenate(c),
        time_intensity=np.concatenate(tau),
        subjects=tuple(subjects),
    )


def p_correct(theta, discrimination, difficulty, guessing):
    """3PL probability of a correct answer.

    >>> round(float(p_correct(0.0, 1.0, 0.0, 0.2)), 3)  # ability = difficulty: halfway above c
    0.6
    >>> round(float(p_correct(3.0, 1.5, -1.0, 0.2)), 3)
    0.998
    """
    return guessing + (1.0 - guessing) / (1.0 + np.exp(-discrimination * (theta - difficulty)))


def grade_mean_ability(grade):
    """Mean ability by grade: older learners are a little stronger on the same diagnostic.

    >>> grade_mean_ability(np.array([1, 12])).round(2).tolist()
    [-0.55, 0.55]
    """
    return 0.1 * (np.asarray(grade) - 6.5)


def draw_abilities(rng: np.random.Generator, grade: np.ndarray, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """One ability per learner: normal around the grade's mean plus the cohort ``shift``."""
    return grade_mean_ability(grade) + shift + rng.standard_normal(len(grade))


@dataclass(frozen=True)
class Answers:
    """Every answer of a block of tests, flat; test ``i`` owns ``offsets[i]:offsets[i+1]``."""

    offsets: np.ndarray
    item_index: np.ndarray
    correct: np.ndarray
    response_time_ms: np.ndarray  # float milliseconds, before any unit change
    attempts: np.ndarray
    hint_used: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


def sample_tests(rng: np.random.Generator, bank: ItemBank, subject_index: np.ndarray,
                 version_index: np.ndarray, min_items: int, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick each learner's test: ``min_items``–``max_items`` distinct items of their subject and
    bank version. Returns (offsets, flat item indices into the bank)."""
    n = len(subject_index)
    per_subject = bank.items_per_subject
    if not 1 <= min_items <= max_items <= per_subject:
        raise ValueError(f"test length {min_items}-{max_items} must lie within 1-{per_subject} items")
    counts = rng.integers(min_items, max_items + 1, n)
    # A random permutation per row, cut to each row's length: items without replacement.
    picks = rng.permuted(np.broadcast_to(np.arange(per_subject), (n, per_subject)), axis=1)[:, :max_items]
    keep = np.arange(max_items) < counts[:, None]
    local = picks[keep]
    start = np.repeat(bank.block_start(version_index, subject_index), counts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, start + local


def answer_tests(rng: np.random.Generator, bank: ItemBank, theta: np.ndarray,
                 offsets: np.ndarray, item_index: np.ndarray) -> Answers:
    """Draw correctness, response time, attempts and hints for every (learner, item) pair."""
    ability = np.repeat(theta, np.diff(offsets))
    a = bank.discrimination[item_index]
    b = bank.difficulty[item_index]
    c = bank.guessing[item_index]
    m = len(item_index)
    correct = rng.random(m) < p_correct(ability, a, b, c)
    gap = b - ability  # > 0: the item is hard for this learner
    log_time = (np.log(MEDIAN_RESPONSE_MS) + bank.time_intensity[item_index] + 0.3 * gap
                + rng.normal(0.0, 0.4, m))
    response_time_ms = np.clip(np.exp(log_time), 300.0, MAX_RESPONSE_MS)
    # Wrong final answers come after more tries; one extra try now and then even when right.
    attempts = 1 + np.minimum(rng.poisson(np.where(correct, 0.1, 0.9)), 9)
    hint_used = rng.random(m) < 1.0 / (1.0 + np.exp(-(-1.5 + 0.9 * gap)))
    return Answers(offsets, item_index, correct, response_time_ms, attempts, hint_used)
