"""The mapping file of ``learnscore import``: which of the user's columns hold what, in what unit.

A small YAML file, typed here and strict: an unknown key, a missing column name or a field that
has neither a column nor a default is refused with the key's path and what to write instead.
``examples/mappings/`` holds one for a warehouse's long export and the one for files in the
Kafka contract (:func:`kafka_contract_mapping`, what ``learnscore simulate history`` writes).

Two layouts of the submissions file:

``long``
    one row per answered item; the rows of one submission share learner, assessment and
    submitted-at (the submission's key), and their order in the file is the order of the
    responses.
``nested``
    one row per submission, its responses in a list column (JSON lines or Parquet); the names
    under ``columns`` for the response fields are the keys inside each list element.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FileFormat = Literal["csv", "parquet", "jsonl"]
_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
             ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


class MappingError(ValueError):
    """The mapping file cannot be used; the message names the key and what to write."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubmissionColumns(_Strict):
    """The user's column for each field of a submission (``None``: not in the file)."""

    learner_id: str
    assessment_id: str
    submitted_at: str
    subject: str
    grade_level: str
    item_id: str
    skill: str
    correct: str
    response_time: str
    attempts: str | None = None
    hint_used: str | None = None
    #: nested only: the list column holding the responses
    responses: str | None = None
    #: nested only: a column that already holds the submission's UUID (else one is derived)
    event_id: str | None = None
    #: nested only: the contract version each row claims (else 1)
    schema_version: str | None = None

    @property
    def submission_fields(self) -> dict[str, str]:
        """Fields of the submission itself → column (for ``long`` every field is one)."""
        names = ("event_id", "schema_version", "learner_id", "assessment_id", "submitted_at", "subject",
                 "grade_level")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    @property
    def response_fields(self) -> dict[str, str]:
        names = ("item_id", "skill", "correct", "response_time", "attempts", "hint_used")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class Units(_Strict):
    response_time: Literal["s", "ms"] = Field("ms", description="seconds or milliseconds")


class Defaults(_Strict):
    """Values for fields the file lacks (or leaves empty in a row)."""

    attempts: int | None = Field(None, ge=1)
    hint_used: bool | None = None


class SubmissionValues(_Strict):
    """Renames of the file's values to the domain's (``Mathematics: math``)."""

    subject: dict[str, str] = Field(default_factory=dict)
    skill: dict[str, str] = Field(default_factory=dict)


class SubmissionsMapping(_Strict):
    layout: Literal["long", "nested"] = "long"
    format: FileFormat | None = None
    columns: SubmissionColumns
    units: Units = Units()
    defaults: Defaults = Defaults()
    values: SubmissionValues = SubmissionValues()

    @model_validator(mode="after")
    def _fits_the_layout(self) -> SubmissionsMapping:
        columns = self.columns
        if self.layout == "long":
            given = [key for key in ("responses", "event_id", "schema_version") if getattr(columns, key)]
            if given:
                raise ValueError(f"columns.{given[0]} is for layout nested; long rows get their event id "
                                 f"from learner, assessment and submitted_at")
        elif columns.responses is None:
            raise ValueError("layout nested needs columns.responses: the list column holding the responses")
        if self.layout == "nested" and self.format == "csv":
            raise ValueError("a CSV file has no list columns: use layout long, or JSON lines / Parquet")
        for field in ("attempts", "hint_used"):
            if getattr(columns, field) is None and getattr(self.defaults, field) is None:
                example = "1" if field == "attempts" else "false"
                raise ValueError(f"{field} has neither a column nor a default: name its column under "
                                 f"columns.{field}, or set defaults.{field}: {example}")
        return self


class OutcomeColumns(_Strict):
    """The outcome's columns; it names its submission by event id or by the submission's key."""

    learner_id: str
    observed_score: str
    observed_at: str
    observed_level: str | None = None
    submission_event_id: str | None = None
    assessment_id: str | None = None
    submitted_at: str | None = None
    event_id: str | None = None

    @model_validator(mode="after")
    def _names_its_submission(self) -> OutcomeColumns:
        by_key = [self.assessment_id, self.submitted_at]
        if self.submission_event_id is None and None in by_key:
            raise ValueError("an outcome must name its submission: set submission_event_id, or "
                             "assessment_id and submitted_at (with learner_id, the submission's key)")
        if self.submission_event_id is not None and any(by_key):
            raise ValueError("set either submission_event_id or assessment_id + submitted_at, not both")
        return self


class OutcomeValues(_Strict):
    observed_level: dict[str, str] = Field(default_factory=dict)


class OutcomesMapping(_Strict):
    format: FileFormat | None = None
    columns: OutcomeColumns
    values: OutcomeValues = OutcomeValues()


class CsvOptions(_Strict):
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote: str = Field('"', min_length=1, max_length=1)
    null_values: tuple[str, ...] = ("", "NULL", "null", "NA", "N/A")


class ImportMapping(_Strict):
    """The whole mapping file."""

    version: Literal[1] = 1
    #: for times written without an offset
    timezone: str = "UTC"
    submissions: SubmissionsMapping
    outcomes: OutcomesMapping | None = None
    csv: CsvOptions = CsvOptions()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Paris") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def file_format(path: str | Path, declared: FileFormat | None) -> FileFormat:
    """The format of a file: as declared in the mapping, else from its name.

    >>> file_format("exports/answers.csv.gz", None), file_format("x.data", "parquet")
    ('csv', 'parquet')
    >>> file_format("answers.xlsx", None)
    Traceback (most recent call last):
    ...
    learnscore.batch.import_mapping.MappingError: cannot tell the format of answers.xlsx from its name: ...
    """
    if declared is not None:
        return declared
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]]  # type: ignore[return-value]
    raise MappingError(f"cannot tell the format of {Path(path).name} from its name: set format: csv, "
                       f"parquet or jsonl in the mapping")


def parse_mapping(document: Any, source: str = "the mapping") -> ImportMapping:
    """Validate a mapping already read from YAML; errors name each key's path.

    >>> parse_mapping({"submissions": {"columns": {"lerner_id": "x"}}}, "m.yaml")
    Traceback (most recent call last):
    ...
    learnscore.batch.import_mapping.MappingError: m.yaml is not a usable mapping:
      submissions.columns.learner_id: required, missing
      ...
      submissions.columns.lerner_id: unknown key; did you mean learner_id? (known here: ...)
    (see examples/mappings/ for complete examples)
    """
    if not isinstance(document, dict):
        raise MappingError(f"{source} must be a YAML mapping (key: value lines), got {type(document).__name__}")
    try:
        return ImportMapping.model_validate(document)
    except ValidationError as exc:
        problems = [_explain(error) for error in exc.errors(include_url=False)]
        raise MappingError(f"{source} is not a usable mapping:\n  " + "\n  ".join(problems)
                           + "\n(see examples/mappings/ for complete examples)") from None


def load_mapping(path: str | Path) -> ImportMapping:
    """Read and validate a mapping file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(f"mapping file {path} not found; start from one in examples/mappings/") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read the mapping file {path}: {exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise MappingError(f"{path}{line} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_mapping(document, str(path))


def kafka_contract_mapping() -> ImportMapping:
    """The mapping of files in the Kafka contract: one ``DiagnosticSubmitted`` / ``OutcomeObserved``
    per line, as ``learnscore simulate history`` writes them (``examples/mappings/kafka-contract.yaml``).

    >>> kafka_contract_mapping().submissions.columns.responses
    'responses'
    """
    return parse_mapping({
        "submissions": {
            "layout": "nested", "format": "jsonl",
            "columns": {"event_id": "event_id", "schema_version": "schema_version", "learner_id": "learner_id",
                        "assessment_id": "assessment_id", "submitted_at": "event_time", "subject": "subject",
                        "grade_level": "grade_level", "responses": "responses", "item_id": "item_id",
                        "skill": "skill", "correct": "correct", "response_time": "response_time_ms",
                        "attempts": "attempts", "hint_used": "hint_used"},
            "units": {"response_time": "ms"},
        },
        "outcomes": {
            "format": "jsonl",
            "columns": {"event_id": "event_id", "submission_event_id": "submission_event_id",
                        "learner_id": "learner_id", "observed_score": "observed_progress_score",
                        "observed_level": "observed_comprehension_level", "observed_at": "event_time"},
        },
    }, "the Kafka-contract mapping")


def _explain(error: dict[str, Any]) -> str:
    path = ".".join(str(step) for step in error["loc"])
    if error["type"] == "extra_forbidden":
        known = _known_keys(error["loc"][:-1])
        guess = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        return f"{path}: unknown key{hint} (known here: {', '.join(known)})"
    if error["type"] == "missing":
        return f"{path}: required, missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def _known_keys(location: tuple) -> list[str]:
    model: Any = ImportMapping
    for step in location:
        field = model.model_fields.get(str(step)) if isinstance(model, type) else None
        if field is None:
            return []
        model = field.annotation
        if hasattr(model, "__args__"):  # X | None
            model = next((arg for arg in model.__args__ if isinstance(arg, type) and issubclass(arg, BaseModel)),
                         model)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
