"""Reading an export in chunks: CSV, Parquet or JSON lines, long or nested, never whole.

Every reader yields :class:`Chunk` s of at most about ``chunk_rows`` records: an Arrow table with
one row per answered item (a nested file is flattened here) and the columns named by the
mapping's *fields*, as the file gave them (conversion comes later), plus ``_row``, the record's
number in the file (1 = the first record after a CSV header, the first line of JSON lines, the
first row of Parquet), and ``_pos``, the item's place in its submission's list (nested; -1 marks a
submission whose list was empty, 0 for long rows). Records that cannot be read at all (a CSV row
with too few fields, a line that is not JSON) come back as :class:`MalformedRow` s: they are
quarantined, not fatal. A file that cannot be read, or lacks a mapped column, raises
:class:`InputFileError` before a single row is used.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from learnscore.batch.import_mapping import CsvOptions, FileFormat

_TEXT_LIMIT = 2000  # characters of a malformed record kept for the quarantine
_CSV_BYTES_PER_ROW = 128  # to size CSV blocks from chunk_rows (exports run 60-120 bytes a row)


class InputFileError(ValueError):
    """A file cannot be imported as mapped; the message names the file, the column or line, and
    what to do."""


@dataclass(frozen=True)
class MalformedRow:
    row: int
    text: str
    reason_code: str
    reason: str


@dataclass(frozen=True)
class Chunk:
    table: pa.Table
    malformed: tuple[MalformedRow, ...]
    records: int  # records of the file in this chunk, malformed ones included
    done: int     # progress so far, in the unit of :attr:`SourceFile.unit`


@dataclass(frozen=True)
class Layout:
    """Which fields to read, from where: ``fields`` are top-level columns (every field of a long
    file); ``item_fields`` are keys inside each element of ``list_column`` (nested files)."""

    fields: dict[str, str]
    list_column: str | None = None
    item_fields: dict[str, str] = field(default_factory=dict)
    section: str = "submissions"  # the mapping section, for messages

    def describe(self, name: str) -> str:
        where = "columns" if name in self.fields else f"columns (inside {self.list_column})"
        return f"{self.section}.{where}.{name}"


@dataclass
class SourceFile:
    """One input file; :meth:`chunks` reads it once, front to back."""

    path: Path
    format: FileFormat
    layout: Layout
    chunk_rows: int
    csv: CsvOptions
    total: int = 0
    unit: str = "bytes"

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise InputFileError(f"{self.path} not found (or not a file); check the path")
        if self.format == "parquet":
            self._parquet = _open_parquet(self.path)
            self.total, self.unit = self._parquet.metadata.num_rows, "rows"
            _check_parquet_columns(self._parquet.schema_arrow, self.path, self.layout)
        else:
            self.total = self.path.stat().st_size
            if self.format == "csv":
                _check_csv_header(self.path, self.layout, self.csv)

    def chunks(self) -> Iterator[Chunk]:
        if self.format == "parquet":
            return _parquet_chunks(self._parquet, self.path, self.layout, self.chunk_rows)
        if self.format == "csv":
            return _csv_chunks(self.path, self.layout, self.chunk_rows, self.csv)
        return _jsonl_chunks(self.path, self.layout, self.chunk_rows)


# -- Parquet ---------------------------------------------------------------------------------


def _open_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(f"cannot read {path} as Parquet ({exc}); check the file, or set format in "
                             f"the mapping if it is CSV or JSON lines") from None


def _check_parquet_columns(schema: pa.Schema, path: Path, layout: Layout) -> None:
    names = schema.names
    for name, column in layout.fields.items():
        if column not in names:
            raise _missing_column(path, column, layout.describe(name), names)
    if layout.list_column is None:
        return
    if layout.list_column not in names:
        raise _missing_column(path, layout.list_column, f"{layout.section}.columns.responses", names)
    kind = schema.field(layout.list_column).type
    element = kind.value_type if pa.types.is_list(kind) or pa.types.is_large_list(kind) else None
    if element is None or not pa.types.is_struct(element):
        raise InputFileError(f"column {layout.list_column!r} of {path} is {kind}, not a list of records; "
                             f"a nested file keeps each submission's responses as a list of records")
    keys = [element.field(i).name for i in range(element.num_fields)]
    for name, key in layout.item_fields.items():
        if key not in keys:
            raise _missing_column(path, key, layout.describe(name), keys, inside=layout.list_column)


def _parquet_chunks(parquet, path: Path, layout: Layout, chunk_rows: int) -> Iterator[Chunk]:
    columns = [*dict.fromkeys([*layout.fields.values(), *([layout.list_column] if layout.list_column else [])])]
    first = 1
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
            rows = np.arange(first, first + batch.num_rows, dtype=np.int64)
            first += batch.num_rows
            table = (_flatten_arrow(batch, rows, layout) if layout.list_column
                     else _long_table({name: batch.column(column) for name, column in layout.fields.items()}, rows))
            yield Chunk(table, (), batch.num_rows, first - 1)
    except pa.ArrowException as exc:
        raise InputFileError(f"cannot read {path} past row {first - 1}: {exc}; the file is damaged or "
                             f"not Parquet") from None


def _flatten_arrow(batch: pa.RecordBatch, rows: np.ndarray, layout: Layout) -> pa.Table:
    lists = batch.column(layout.list_column)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    items = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    positions = np.arange(len(parents), dtype=np.int64) - starts[parents]
    empty = np.flatnonzero(lengths == 0)
    parent_all = np.concatenate([parents, empty])
    columns: dict[str, pa.Array] = {}
    for name, column in layout.fields.items():
        columns[name] = batch.column(column).take(pa.array(parent_all))
    for name, key in layout.item_fields.items():
        values = pc.struct_field(items, key)
        columns[name] = pa.concat_arrays([values, pa.nulls(len(empty), values.type)])
    return pa.table({**columns, "_row": rows[parent_all], "_pos": np.concatenate([positions, np.full(len(empty), -1)])})


def _long_table(columns: dict[str, Any], rows: np.ndarray) -> pa.Table:
    return pa.table({**columns, "_row": rows, "_pos": np.zeros(len(rows), dtype=np.int64)})


# -- CSV -------------------------------------------------------------------------------------


class _Counting(io.RawIOBase):
    """A raw file that counts the bytes read from it (the progress of a streaming reader)."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        read = self.raw.readinto(buffer)
        self.count += read or 0
        return read

    def close(self) -> None:
        self.raw.close()
        super().close()


def _open_binary(path: Path) -> tuple[BinaryIO, _Counting]:
    counting = _Counting(open(path, "rb"))  # noqa: SIM115 - closed by the caller
    buffered = io.BufferedReader(counting, buffer_size=1 << 20)
    if path.suffix.lower() == ".gz":
        return gzip.GzipFile(fileobj=buffered), counting
    return buffered, counting


def _check_csv_header(path: Path, layout: Layout, options: CsvOptions) -> None:
    stream, _ = _open_binary(path)
    try:
        # The first line alone: a decoding error further down belongs to its row, found later.
        with stream:
            first_line = stream.readline().decode("utf-8").removeprefix("\ufeff")
        header = next(csv.reader([first_line], delimiter=options.delimiter, quotechar=options.quote), None)
    except (UnicodeDecodeError, OSError, EOFError, csv.Error) as exc:
        raise InputFileError(f"cannot read the header of {path} ({exc}); a CSV export must be UTF-8 text "
                             f"with a header row") from None
    if not header:
        raise InputFileError(f"{path} is empty: a CSV export needs a header row naming its columns")
    for name, column in layout.fields.items():
        if column not in header:
            raise _missing_column(path, column, layout.describe(name), header)


def _csv_chunks(path: Path, layout: Layout, chunk_rows: int, options: CsvOptions) -> Iterator[Chunk]:
    import pyarrow.csv as pcsv

    columns = list(dict.fromkeys(layout.fields.values()))
    malformed: list[MalformedRow] = []

    def skip(row) -> str:
        # row.number counts records from the header (1): the header is not a data row.
        text = (row.text or "")[:_TEXT_LIMIT]
        malformed.append(MalformedRow(row.number - 1, text, "malformed_row",
                                      f"{row.actual_columns} fields where the header has {row.expected_columns}"))
        return "skip"

    stream, counting = _open_binary(path)
    # One thread: the handler above then sees a block's bad rows before that block's batch is
    # returned, which is what numbering the good rows below relies on.
    reader_options = pcsv.ReadOptions(use_threads=False, block_size=max(1 << 16, chunk_rows * _CSV_BYTES_PER_ROW))
    parse = pcsv.ParseOptions(delimiter=options.delimiter, quote_char=options.quote, newlines_in_values=True,
                              invalid_row_handler=skip)
    convert = pcsv.ConvertOptions(column_types={column: pa.string() for column in columns}, include_columns=columns,
                                  strings_can_be_null=True, null_values=list(options.null_values))
    next_row, reported = 1, 0
    try:
        reader = pcsv.open_csv(stream, read_options=reader_options, parse_options=parse, convert_options=convert)
        for batch in reader:
            bad = malformed[reported:]
            reported = len(malformed)
            rows, next_row = _numbers_around(next_row, batch.num_rows, {m.row for m in bad})
            table = _long_table({name: batch.column(column) for name, column in layout.fields.items()}, rows)
            yield Chunk(table, tuple(bad), batch.num_rows + len(bad), counting.count)
        if len(malformed) > reported:  # bad rows at the very end
            yield Chunk(_long_table({name: pa.array([], pa.string()) for name in layout.fields},
                                    np.array([], np.int64)), tuple(malformed[reported:]),
                        len(malformed) - reported, counting.count)
    except pa.ArrowException as exc:
        raise InputFileError(f"cannot read {path} near row {next_row}: {exc}; a CSV export must be UTF-8 "
                             f"text with one record per row (set csv.delimiter / csv.quote in the mapping "
                             f"if they differ)") from None
    finally:
        stream.close()


def _numbers_around(first: int, count: int, taken: set[int]) -> tuple[np.ndarray, int]:
    """``count`` consecutive numbers from ``first`` that skip ``taken`` (rows reported malformed).

    >>> _numbers_around(1, 4, {2, 3})
    (array([1, 4, 5, 6]), 7)
    """
    numbers = []
    row = first
    while len(numbers) < count:
        if row not in taken:
            numbers.append(row)
        row += 1
    while row in taken:
        row += 1
    return np.asarray(numbers, dtype=np.int64), row


# -- JSON lines --------------------------------------------------------------------------------


def _jsonl_chunks(path: Path, layout: Layout, chunk_rows: int) -> Iterator[Chunk]:
    stream, counting = _open_binary(path)
    line_number, checked = 0, False
    try:
        while True:
            records: list[tuple[int, dict]] = []
            malformed: list[MalformedRow] = []
            read = 0
            for line in stream:
                line_number += 1
                read += 1
                if line.strip():
                    _parse_line(line, line_number, records, malformed)
                if read >= chunk_rows:
                    break
            if not read:
                return
            if not checked and records:
                _check_json_keys(path, layout, [record for _, record in records])
                checked = True
            yield Chunk(_json_table(records, layout), tuple(malformed), read, counting.count)
    except (OSError, EOFError) as exc:
        raise InputFileError(f"cannot read {path} near line {line_number}: {exc}") from None
    finally:
        stream.close()


def _parse_line(line: bytes, number: int, records: list, malformed: list) -> None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        text = line.decode("utf-8", "replace").rstrip("\r\n")[:_TEXT_LIMIT]
        malformed.append(MalformedRow(number, text, "not_json", f"not a JSON document: {exc}"[:200]))
        return
    if not isinstance(value, dict):
        text = line.decode("utf-8", "replace").rstrip("\r\n")[:_TEXT_LIMIT]
        malformed.append(MalformedRow(number, text, "not_an_object", "the line must be a JSON object"))
        return
    records.append((number, value))


def _check_json_keys(path: Path, layout: Layout, records: list[dict]) -> None:
    seen = set().union(*(record.keys() for record in records))
    for name, key in layout.fields.items():
        if key not in seen:
            raise _missing_column(path, key, layout.describe(name), sorted(seen), lines=len(records))
    if layout.list_column is None:
        return
    if layout.list_column not in seen:
        raise _missing_column(path, layout.list_column, f"{layout.section}.columns.responses", sorted(seen),
                              lines=len(records))
    items = [item for record in records for item in (record.get(layout.list_column) or ())
             if isinstance(item, dict)]
    if not items:
        return
    inside = set().union(*(item.keys() for item in items))
    for name, key in layout.item_fields.items():
        if key not in inside:
            raise _missing_column(path, key, layout.describe(name), sorted(inside), lines=len(records),
                                  inside=layout.list_column)


def _json_table(records: list[tuple[int, dict]], layout: Layout) -> pa.Table:
    if layout.list_column is None:
        rows = np.fromiter((number for number, _ in records), np.int64, len(records))
        columns = {name: _array_of([record.get(key) for _, record in records]) for name, key in layout.fields.items()}
        return _long_table(columns, rows)
    top: dict[str, list] = {name: [] for name in layout.fields}
    inner: dict[str, list] = {name: [] for name in layout.item_fields}
    rows_out: list[int] = []
    positions: list[int] = []
    for number, record in records:
        items = record.get(layout.list_column)
        # An empty (or absent) list still makes a submission: the contract refuses it, by name.
        placed = list(enumerate(items)) if isinstance(items, list) and items else [(-1, None)]
        for position, item in placed:
            rows_out.append(number)
            positions.append(position)
            for name, key in layout.fields.items():
                top[name].append(record.get(key))
            for name, key in layout.item_fields.items():
                inner[name].append(item.get(key) if isinstance(item, dict) else None)
    columns = {name: _array_of(values) for name, values in {**top, **inner}.items()}
    return pa.table({**columns, "_row": np.asarray(rows_out, np.int64), "_pos": np.asarray(positions, np.int64)})


def _array_of(values: list) -> pa.Array:
    """Values of one JSON key as an Arrow array; mixed kinds (5 and "5") become texts for the
    parsers to judge one by one."""
    try:
        array = pa.array(values)
    except (pa.ArrowException, TypeError, OverflowError):
        array = None
    if array is None or pa.types.is_nested(array.type):
        return pa.array([None if value is None else _as_text(value) for value in values], pa.string())
    return array


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _missing_column(path: Path, column: str, mapped_as: str, available: list[str], *, lines: int | None = None,
                    inside: str | None = None) -> InputFileError:
    guess = difflib.get_close_matches(column, available, n=1)
    hint = f" Did you mean {guess[0]!r}?" if guess else ""
    where = f" in the elements of {inside!r}" if inside else ""
    shown = ", ".join(available[:40]) + (" …" if len(available) > 40 else "")
    if lines:
        found = f"none of the first {lines} records of {path} has the key {column!r}{where}"
    else:
        found = f"{path} has no column {column!r}{where}"
    return InputFileError(f"{found} (the mapping's {mapped_as}).{hint} It has: {shown}. "
                          f"Fix the mapping, or export that column.")
