"""``learnscore import``: historical data from a warehouse export into the silver tables.

The export is one file of submissions (CSV, Parquet or JSON lines; one row per answered item, or
one row per submission with its responses nested) and optionally one of outcomes, read through
a mapping file (:mod:`learnscore.batch.import_mapping`). Every submission and outcome becomes
the event the stream would have received and is validated with the stream's contract; valid
ones land in ``silver.submissions`` / ``silver.outcomes``, refused ones in ``silver.quarantine``
with the reason and the file's row numbers; every imported row says where it came from in
``import_lineage``.

Two phases, so that nothing is written before everything is read and checked:

**stage** (:func:`stage_import`, no Spark): the files stream in chunks; each chunk is converted
and spilled to a few Parquet files by a hash of its submission's event id, so that all rows of
a submission meet in one partition; then one partition at a time is grouped into events and
validated. Memory holds one chunk, then one partition, never the file: the number of
partitions grows with the file (``partition_rows`` rows each). A wrong mapping, a missing
column or an unreadable file stops the import here, with the lake untouched.

**land** (:func:`land_import`, Spark): outcomes whose submission is neither in this import nor
in ``silver.submissions`` are refused (``unknown_submission``); then one MERGE per table —
quarantine, submissions, outcomes, in that order, so a reader never meets an outcome whose
submission is not there yet.

An insert-only MERGE on the event id inserts only what silver does not hold yet: importing the
same file again changes nothing (event ids are UUID 5s of the submission's key, or the ids the
file carries), and no commit is made when nothing is new. Under Delta's default isolation
(WriteSerializable) the stream's blind appends do not conflict with it, so an import can run
beside the stream — but it does not see the stream's duplicates either: the stream decides
first deliveries with its own state, not by reading silver, so history to import is history the
stream has not carried (docs/bring-your-own-data.md). The three MERGEs are three commits: a
crash between them leaves the earlier tables written, and running the same import again
completes it.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from learnscore.batch.history import HistoryNotFound, history_files
from learnscore.batch.import_events import (
    OUTCOME_ROWS,
    QUARANTINE_ROWS,
    SUBMISSION_ROWS,
    Lineage,
    Refusals,
    build_outcomes,
    build_submissions,
    prepare_outcome_rows,
    prepare_submission_rows,
    quarantine_malformed,
)
from learnscore.batch.import_mapping import ImportMapping, file_format, kafka_contract_mapping
from learnscore.batch.import_read import InputFileError, Layout, SourceFile
from learnscore.core.config import Config
from learnscore.schemas.domain import Domain
from learnscore.schemas.events import contracts_for
from learnscore.schemas.tables import OUTCOMES, QUARANTINE, SUBMISSIONS, Table

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
#: Rows of a partition of the spilled file (one partition is in memory at a time): about
#: 100 MB of Arrow and sorting for long rows; the events themselves are validated a few
#: thousand at a time.
DEFAULT_PARTITION_ROWS = 500_000
MAX_PARTITIONS = 512
UNKNOWN_SUBMISSION = "unknown_submission"
_GZIP_RATIO = 8  # bytes of CSV per byte of its gzip, to size the partitions
_MERGE_ATTEMPTS = 3


@dataclass(frozen=True)
class ImportRequest:
    """What to import: the files and how to read them."""

    submissions: Path
    mapping: ImportMapping
    outcomes: Path | None = None

    def __post_init__(self) -> None:
        if self.outcomes is not None and self.mapping.outcomes is None:
            from learnscore.batch.import_mapping import MappingError

            raise MappingError("an outcomes file was given but the mapping has no outcomes: section; add one "
                               "naming its columns (see examples/mappings/)")


@dataclass
class FileSummary:
    """What happened to one file's rows."""

    path: str
    kind: str  # submissions or outcomes
    records: int = 0      # records read, malformed ones included
    events: int = 0       # submissions (outcomes) built from them
    staged: int = 0       # valid, to land
    refusals: Refusals = field(default_factory=Refusals)
    landed: int | None = None          # inserted into silver
    already_in_silver: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "records": self.records, "events": self.events, "valid": self.staged,
                "refused": dict(self.refusals.counts), "refused_rows": self.refusals.examples,
                "landed": self.landed, "already_in_silver": self.already_in_silver}


@dataclass
class StagedImport:
    """Validated events waiting in Parquet files under ``folder`` for :func:`land_import`."""

    import_id: str
    folder: Path
    submissions: FileSummary
    outcomes: FileSummary | None
    seconds: dict[str, float] = field(default_factory=dict)

    def files(self, kind: str) -> list[Path]:
        return sorted((self.folder / kind).glob("*.parquet"))


@dataclass
class ImportReport:
    import_id: str
    submissions: FileSummary
    outcomes: FileSummary | None
    quarantined: int
    versions: dict[str, int]
    dry_run: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"import_id": self.import_id, "dry_run": self.dry_run, "submissions": self.submissions.as_dict(),
                "outcomes": self.outcomes.as_dict() if self.outcomes else None, "quarantined": self.quarantined,
                "versions": self.versions, "seconds": self.seconds}

    def lines(self) -> list[str]:
        """The summary ``learnscore import`` prints."""
        out = [f"import {self.import_id}" + (" (dry run: nothing written)" if self.dry_run else "")]
        for summary, table in ((self.submissions, SUBMISSIONS.name), (self.outcomes, OUTCOMES.name)):
            if summary is None:
                continue
            out.append(f"{summary.kind:<12} {summary.path}: {summary.records:,} rows read → "
                       f"{summary.events:,} {summary.kind}, {summary.staged:,} valid")
            if summary.landed is not None:
                out.append(f"  landed     {summary.landed:,} new in {table}"
                           + (f" ({summary.already_in_silver:,} were there already)" if summary.already_in_silver
                              else ""))
            refused = summary.refusals
            if refused.total:
                out.append(f"  refused    {refused.total:,}" + ("" if self.dry_run else f" → {QUARANTINE.name}"))
                for code, count in refused.counts.most_common():
                    shown = refused.examples.get(code, [])
                    more = " …" if count > len(shown) else ""
                    label = "row" if len(shown) == 1 and shown[0].isdigit() and not more else "rows"
                    out.append(f"    {code:<24} {count:>8,}   {label} {'; '.join(shown)}{more}")
        if self.versions:
            out.append(", ".join(f"{name}@v{version}" for name, version in self.versions.items())
                       + f" ({self.quarantined:,} rows quarantined)")
        if self.seconds:
            out.append("time         " + ", ".join(f"{phase} {seconds:.1f} s"
                                                  for phase, seconds in self.seconds.items()))
        return out


# -- progress ----------------------------------------------------------------------------------


class ImportProgress:
    """Progress of the long phases: a bar on a terminal (rich), a log line every ``every_s`` else."""

    def __init__(self, bar: bool | None = None, every_s: float = 10.0):
        from rich.console import Console

        self._console = Console(stderr=True)
        self._bar = self._console.is_terminal if bar is None else bar
        self._every_s = every_s

    @contextmanager
    def phase(self, description: str, total: int, unit: str) -> Iterator[Callable[[int], None]]:
        """Yields ``advance_to(done)``."""
        started = time.monotonic()
        if self._bar:
            from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
            with Progress("{task.description}", BarColumn(), amount, TimeRemainingColumn(),
                          console=self._console, transient=False) as bar:
                task = bar.add_task(description, total=total or None)
                yield lambda done: bar.update(task, completed=done)
                bar.update(task, completed=total)
        else:
            next_line = [started + self._every_s]

            def advance_to(done: int) -> None:
                if time.monotonic() >= next_line[0]:
                    next_line[0] = time.monotonic() + self._every_s
                    share = f" ({100 * done / total:.0f}%)" if total else ""
                    log.info("%s: %s of %s %s%s", description, f"{done:,}", f"{total:,}", unit, share)

            yield advance_to
        log.info("%s: done in %.1f s", description, time.monotonic() - started)


# -- stage ---------------------------------------------------------------------------------------


def stage_import(request: ImportRequest, domain: Domain, folder: Path, *, now: datetime | None = None,
                 import_id: str | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 partition_rows: int = DEFAULT_PARTITION_ROWS, progress: ImportProgress | None = None) -> StagedImport:
    """Read, convert, group and validate everything; write the results under ``folder`` only.

    Raises :class:`InputFileError` or ``MappingError`` before anything is staged when a file
    cannot be read as mapped.
    """
    now = now or datetime.now(timezone.utc)
    import_id = import_id or str(uuid.uuid4())
    progress = progress or ImportProgress(bar=False)
    contracts = contracts_for(domain)
    mapping = request.mapping
    sources = _open_sources(request, chunk_rows)  # every file checked before any work
    folder.mkdir(parents=True, exist_ok=True)
    staged = StagedImport(import_id, folder, FileSummary(str(request.submissions), "submissions"),
                          FileSummary(str(request.outcomes), "outcomes") if request.outcomes else None)
    quarantine = _PartWriter(folder / "quarantine", QUARANTINE_ROWS)
    try:
        started = time.monotonic()
        lineage = _lineage(import_id, request.submissions)
        spill = _spill(sources["submissions"], staged.submissions, folder / "spill-submissions", SUBMISSION_ROWS,
                       lambda table: prepare_submission_rows(table, mapping.submissions, mapping.zone),
                       "event_id", lineage, quarantine, partition_rows, progress)
        nested = mapping.submissions.layout == "nested"
        _build(spill, staged.submissions, folder / "submissions", quarantine, progress,
               lambda rows: build_submissions(rows, nested=nested, contract=contracts.diagnostic_submitted,
                                              now=now, lineage=lineage))
        staged.seconds["stage submissions"] = round(time.monotonic() - started, 2)
        if request.outcomes is not None and mapping.outcomes is not None:
            started = time.monotonic()
            lineage = _lineage(import_id, request.outcomes)
            spill = _spill(sources["outcomes"], staged.outcomes, folder / "spill-outcomes", OUTCOME_ROWS,
                           lambda table: prepare_outcome_rows(table, mapping.outcomes, domain, mapping.zone),
                           "submission_event_id", lineage, quarantine, partition_rows, progress)
            _build(spill, staged.outcomes, folder / "outcomes", quarantine, progress,
                   lambda rows: build_outcomes(rows, contract=contracts.outcome_observed, now=now, lineage=lineage))
            staged.seconds["stage outcomes"] = round(time.monotonic() - started, 2)
    except BaseException:
        quarantine.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    quarantine.close()
    return staged


def _open_sources(request: ImportRequest, chunk_rows: int) -> dict[str, SourceFile]:
    mapping = request.mapping
    columns = mapping.submissions.columns
    if mapping.submissions.layout == "long":
        layout = Layout({**columns.submission_fields, **columns.response_fields})
    else:
        layout = Layout(columns.submission_fields, columns.responses, columns.response_fields)
    submissions_format = file_format(request.submissions, mapping.submissions.format)
    sources = {"submissions": SourceFile(request.submissions, submissions_format, layout, chunk_rows, mapping.csv)}
    if request.outcomes is not None and mapping.outcomes is not None:
        outcome_columns = {name: column for name, column in mapping.outcomes.columns.model_dump().items()
                           if column is not None}
        sources["outcomes"] = SourceFile(request.outcomes, file_format(request.outcomes, mapping.outcomes.format),
                                         Layout(outcome_columns, section="outcomes"), chunk_rows, mapping.csv)
    return sources


def _lineage(import_id: str, path: Path) -> Lineage:
    return Lineage(import_id, str(Path(path).resolve()), f"import:{Path(path).name}")


def _spill(source: SourceFile, summary: FileSummary, folder: Path, schema: pa.Schema,
           prepare: Callable[[pa.Table], pa.Table], key: str, lineage: Lineage, quarantine: _PartWriter,
           partition_rows: int, progress: ImportProgress) -> _Spill:
    """Pass 1: the file, chunk by chunk, converted and spread over partitions by ``key``."""
    spill: _Spill | None = None
    with progress.phase(f"reading {source.path.name}", source.total, source.unit) as advance_to:
        for chunk in source.chunks():
            summary.records += chunk.records
            if chunk.malformed:
                quarantine.write(pa.Table.from_pylist(
                    [quarantine_malformed(bad.row, bad.text, bad.reason_code, bad.reason, lineage)
                     for bad in chunk.malformed], schema=QUARANTINE_ROWS))
                for bad in chunk.malformed:
                    summary.refusals.add(bad.reason_code, str(bad.row))
            rows = prepare(chunk.table)
            if spill is None:
                spill = _Spill(folder, schema, _partitions_for(source, chunk, partition_rows))
            spill.write(rows, key)
            advance_to(chunk.done)
    if spill is None:
        spill = _Spill(folder, schema, 1)
    spill.close()
    return spill


def _build(spill: _Spill, summary: FileSummary, folder: Path, quarantine: _PartWriter, progress: ImportProgress,
           build: Callable[[pa.Table], Any]) -> None:
    """Pass 2: one partition at a time → validated events (staged) and refusals (quarantine)."""
    valid = _PartWriter(folder, None)
    with progress.phase(f"validating {summary.kind}", spill.rows, "rows") as advance_to:
        done = 0
        for path in spill.paths():
            rows = pq.read_table(path)
            built = build(rows)
            path.unlink()  # the disk holds the spill or its result, not both
            valid.write(built.valid)
            quarantine.write(built.refused)
            summary.events += built.events
            summary.staged += built.valid.num_rows
            summary.refusals.merge(built.refusals)
            done += rows.num_rows
            advance_to(done)
    valid.close()
    shutil.rmtree(spill.folder, ignore_errors=True)


def _partitions_for(source: SourceFile, first: Any, partition_rows: int) -> int:
    """How many partitions the file needs, estimated from its first chunk.

    Not from the bytes read so far: Arrow's CSV reader reads far ahead (60+ MB before its first
    batch of 100k rows, measured), which made a 2M-row file look like 170k rows and put it in
    one partition. The chunk's own Arrow bytes per row (offsets make them a little more than the
    text's) against the file's size; a gzip file is assumed to hold 8 times its size.
    """
    rows = first.table.num_rows
    if not rows or not first.done:
        return 1
    if source.format == "csv":
        text_bytes = sum(first.table.column(name).nbytes for name in first.table.column_names
                         if not name.startswith("_"))
        size = source.total * (_GZIP_RATIO if source.path.suffix.lower() == ".gz" else 1)
        estimated = rows * size / max(1, text_bytes)
    else:
        estimated = rows / first.done * source.total  # rows per byte (or per record) × the file
    return max(1, min(MAX_PARTITIONS, math.ceil(1.2 * estimated / partition_rows)))


def partition_of(keys: pa.Array, partitions: int) -> np.ndarray:
    """The partition of each key: CRC-32 of its text modulo ``partitions`` (null → 0); the same on
    every machine and run.

    >>> partition_of(pa.array(["a", "b", "a", None]), 4).tolist()
    [3, 1, 3, 0]
    """
    if partitions == 1:
        return np.zeros(len(keys), dtype=np.int64)
    encoded = pc.dictionary_encode(keys)
    buckets = pa.array([zlib.crc32(value.encode("utf-8")) % partitions
                        for value in encoded.dictionary.to_pylist()], pa.int64())
    return buckets.take(encoded.indices).fill_null(0).to_numpy(zero_copy_only=False)


class _Spill:
    """Rows spread over ``partitions`` Parquet files by a key column."""

    def __init__(self, folder: Path, schema: pa.Schema, partitions: int):
        self.folder, self.schema, self.partitions = folder, schema, partitions
        self.rows = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._writers: dict[int, pq.ParquetWriter] = {}

    def write(self, rows: pa.Table, key: str) -> None:
        if not rows.num_rows:
            return
        self.rows += rows.num_rows
        parts = partition_of(rows.column(key).combine_chunks(), self.partitions)
        order = np.argsort(parts, kind="stable")
        ordered, sorted_parts = rows.take(pa.array(order)), parts[order]
        bounds = np.searchsorted(sorted_parts, np.arange(self.partitions + 1))
        for part in range(self.partitions):
            start, end = int(bounds[part]), int(bounds[part + 1])
            if end > start:
                if part not in self._writers:
                    self._writers[part] = pq.ParquetWriter(self.folder / f"part-{part:05d}.parquet", self.schema)
                self._writers[part].write_table(ordered.slice(start, end - start))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def paths(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))


class _PartWriter:
    """Appends tables to Parquet files in a folder (a new file every ``rows_per_file`` rows)."""

    def __init__(self, folder: Path, schema: pa.Schema | None, rows_per_file: int = 1_000_000):
        self.folder, self.schema, self.rows_per_file = folder, schema, rows_per_file
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0
        self._files = 0

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self._writer is None or self._rows_in_file >= self.rows_per_file:
            self.close()
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"part-{self._files:05d}.parquet"
            self._writer = pq.ParquetWriter(path, self.schema or table.schema)
            self._files += 1
            self._rows_in_file = 0
        self._writer.write_table(table)
        self._rows_in_file += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# -- land ----------------------------------------------------------------------------------------


def land_import(spark, config: Config, staged: StagedImport) -> ImportReport:
    """Write a staged import into silver (see the module docstring for the order and why MERGE)."""
    from pyspark.sql import functions as F

    from learnscore.core.lake import delta_version, ensure_spark_tables

    started = time.monotonic()
    ensure_spark_tables(spark, config, [SUBMISSIONS.name, OUTCOMES.name, QUARANTINE.name])
    submissions = _read_staged(spark, staged.files("submissions"))
    outcomes = _read_staged(spark, staged.files("outcomes"))
    quarantine = _read_staged(spark, staged.files("quarantine"))
    checked = None
    if outcomes is not None:
        known = spark.read.format("delta").load(config.table_path(SUBMISSIONS.name)).select("event_id")
        if submissions is not None:
            known = known.unionByName(submissions.select("event_id"))
        known = known.distinct().select(F.col("event_id").alias("submission_event_id"), F.lit(True).alias("_known"))
        # Fixed once: the stream may land submissions meanwhile, and the counts below must be
        # the ones the writes use.
        checked = outcomes.join(known, "submission_event_id", "left").localCheckpoint(eager=True)
        unknown = checked.where(F.col("_known").isNull())
        if _count_unknown(unknown, staged.outcomes):
            refused = _unknown_submission_rows(unknown)
            quarantine = refused if quarantine is None else quarantine.unionByName(refused)
    quarantined = _merge_new(quarantine, config, QUARANTINE,
                             "t.source_topic = s.source_topic AND t.raw_value = s.raw_value")
    staged.submissions.landed = _merge_new(submissions, config, SUBMISSIONS, "t.event_id = s.event_id")
    staged.submissions.already_in_silver = staged.submissions.staged - staged.submissions.landed
    if staged.outcomes is not None:
        landed = checked.where(F.col("_known")) if checked is not None else None
        staged.outcomes.landed = _merge_new(landed, config, OUTCOMES,
                                            "t.submission_event_id = s.submission_event_id")
        staged.outcomes.already_in_silver = staged.outcomes.staged - staged.outcomes.landed
    versions = {name: delta_version(spark, config, name) for name in (SUBMISSIONS.name, OUTCOMES.name, QUARANTINE.name)}
    seconds = {**staged.seconds, "write silver": round(time.monotonic() - started, 2)}
    return ImportReport(staged.import_id, staged.submissions, staged.outcomes, quarantined, versions, seconds=seconds)


def _read_staged(spark, files: list[Path]):
    if not files:
        return None
    return spark.read.parquet(*[str(path) for path in files])


def _count_unknown(unknown, summary: FileSummary) -> int:
    """Count the outcomes of unknown submissions as refused, no longer valid, in the file's summary."""
    from pyspark.sql import functions as F

    count = unknown.count()
    if count:
        rows = [row.rows for row in unknown.select(F.get_json_object("import_lineage", "$.rows").alias("rows"))
                .orderBy(F.col("rows").cast("bigint")).limit(summary.refusals.keep).collect()]
        summary.refusals.counts[UNKNOWN_SUBMISSION] += count
        summary.refusals.examples[UNKNOWN_SUBMISSION] = rows
        summary.staged -= count
    return count


def _unknown_submission_rows(unknown):
    from pyspark.sql import functions as F

    file_name = F.regexp_extract(F.get_json_object("import_lineage", "$.file"), r"([^/\\]+)$", 1)
    return unknown.select(
        F.concat(F.lit("import:"), file_name).alias("source_topic"),
        F.lit(None).cast("int").alias("kafka_partition"), F.lit(None).cast("bigint").alias("kafka_offset"),
        F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        F.col("learner_id").cast("binary").alias("raw_key"), F.col("_raw_value").alias("raw_value"),
        F.col("event_id"), F.lit(UNKNOWN_SUBMISSION).alias("reason_code"),
        F.concat(F.lit("row "), F.get_json_object("import_lineage", "$.rows"), F.lit(" of "), file_name,
                 F.lit(": no submission of "), F.col("_reference"),
                 F.lit(" in this import or in silver.submissions (check the key columns: same learner, "
                       "assessment and submitted-at as in the submissions file)")).alias("reason"),
        F.lit(None).cast("timestamp").alias("quarantined_at"), F.lit(None).cast("bigint").alias("batch_id"),
        F.col("import_lineage"))


def _merge_new(rows, config: Config, table: Table, condition: str) -> int:
    """Insert the rows that ``condition`` finds no match for; returns how many were inserted."""
    from delta.exceptions import DeltaConcurrentModificationException
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    if rows is None:
        return 0
    stamped = {"ingested_at", "quarantined_at"}
    source = rows.select(*[(F.current_timestamp() if name in stamped else F.col(name)).cast(kind).alias(name)
                           for name, kind in table.stored_columns])
    for attempt in range(1, _MERGE_ATTEMPTS + 1):
        try:
            metrics = (DeltaTable.forPath(rows.sparkSession, config.table_path(table.name)).alias("t")
                       .merge(source.alias("s"), condition).whenNotMatchedInsertAll().execute())
            return int(metrics.first()["num_inserted_rows"])
        except DeltaConcurrentModificationException as exc:
            if attempt == _MERGE_ATTEMPTS:
                raise
            log.warning("%s: another writer committed during the MERGE (%s); trying again", table.name,
                        type(exc).__name__)
    return 0


# -- the whole import ----------------------------------------------------------------------------


@contextmanager
def staged_import(config: Config, request: ImportRequest, *, staging_dir: Path | None = None,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS, partition_rows: int = DEFAULT_PARTITION_ROWS,
                  progress: ImportProgress | None = None, now: datetime | None = None) -> Iterator[StagedImport]:
    """Stage an import (no Spark) and yield it; its folder is removed afterwards, also on an error.

    ``staging_dir`` must be readable by Spark's executors when the import is landed (local mode:
    any local folder; default ``<state_dir>/import``).
    """
    import_id = str(uuid.uuid4())
    folder = Path(staging_dir or Path(config.state_dir) / "import") / import_id
    try:
        yield stage_import(request, config.domain.contract(), folder, now=now, import_id=import_id,
                           chunk_rows=chunk_rows, partition_rows=partition_rows, progress=progress)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def dry_run_report(staged: StagedImport) -> ImportReport:
    """What a staged import would land (outcomes are not yet checked against silver)."""
    quarantined = sum(pq.ParquetFile(path).metadata.num_rows for path in staged.files("quarantine"))
    return ImportReport(staged.import_id, staged.submissions, staged.outcomes, quarantined, {}, dry_run=True,
                        seconds=staged.seconds)


def import_files(spark, config: Config, request: ImportRequest, **options: Any) -> ImportReport:
    """Stage and land one import (``options``: those of :func:`staged_import`)."""
    with staged_import(config, request, **options) as staged:
        return land_import(spark, config, staged)


def import_history(spark, config: Config, history_dir: str | Path, **options: Any) -> ImportReport:
    """Import a ``learnscore simulate history`` folder (events in the Kafka contract, one per line)."""
    files = {kind: path for kind, path in history_files(history_dir).items() if kind != "truth"}
    for path in files.values():
        if not path.exists():
            raise HistoryNotFound(f"{path} is listed in the manifest but missing; simulate the history again")
    request = ImportRequest(files["submissions"], kafka_contract_mapping(), files["outcomes"])
    return import_files(spark, config, request, **options)


__all__ = ["DEFAULT_CHUNK_ROWS", "DEFAULT_PARTITION_ROWS", "HistoryNotFound", "ImportProgress", "ImportReport",
           "ImportRequest", "InputFileError", "StagedImport", "dry_run_report", "history_files", "import_files",
           "import_history", "land_import", "partition_of", "stage_import", "staged_import"]
