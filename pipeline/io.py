"""Reading raw impressions into Arrow record batches, with a dead-letter output.

Every input format (CSV/TSV, Parquet, TFRecord of tf.Example; local or any Beam filesystem
such as gs://) ends up as record batches in TFXIO's layout (one list column per raw feature),
which is what TFT consumes without per-row Python dicts. A row that does not parse is never
dropped silently: it goes to the dead-letter output with its file, line and reason.

Columns named in ``optional_columns`` may be absent from a file (rows to score need no
label); they are then read as missing values. Every other configured column must be there.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import gzip
import itertools
import json
import math
import queue
import re
import threading
import zlib
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import config as cfg

DEAD_LETTER = "dead_letter"
# Counters of numeric fields read as missing, by column: the reader fills them with the
# column's default, so the column statistics cannot see them (see pipeline.column_stats).
MISSING_NUMERIC_NAMESPACE = "widedeep_missing_numeric"
ROWS_PER_BATCH = 16384
# Room for a raw row in a dead letter; a longer row keeps its head and says how long it was.
DEAD_LETTER_RAW_CHARS = 4096


class InputError(ValueError):
    """The input as a whole is unusable (no files, wrong header, wrong Parquet schema)."""


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    file: str
    line: int        # 1-based line (CSV) or record index (Parquet row, TFRecord record)
    reason: str      # short code, counted in stats.json
    detail: str      # what a person needs to fix it
    raw: str

    def to_json(self) -> str:
        raw = self.raw
        if len(raw) > DEAD_LETTER_RAW_CHARS:
            raw = raw[:DEAD_LETTER_RAW_CHARS] + f"... [{len(self.raw)} chars in all]"
        return json.dumps({"file": self.file, "line": self.line, "reason": self.reason,
                           "detail": self.detail, "raw": raw}, ensure_ascii=False)


def match_input(pattern: str) -> list[str]:
    """Files matching a glob on any Beam filesystem; a clear error when there are none."""
    try:
        results = FileSystems.match([pattern])
    except Exception as e:  # Beam raises BeamIOError with the cause inside
        raise InputError(f"input '{pattern}': cannot list files: {e}") from None
    paths = sorted(m.path for r in results for m in r.metadata_list if m.size_in_bytes >= 0)
    if not paths:
        raise InputError(f"input '{pattern}': no files match")
    return paths


ARROW_TYPES = {"bytes": pa.large_binary(), "float": pa.float32(), "int": pa.int64()}


def arrow_schema(config: cfg.FeatureConfig) -> pa.Schema:
    """TFXIO's Arrow layout of the raw columns: a large_list column per feature, of the
    column kind's value type (cfg.KINDS)."""
    return pa.schema([pa.field(c.name, pa.large_list(ARROW_TYPES[c.kind_info.value]))
                      for c in config.raw_columns])


# A number as CSV writers mean it, and as Arrow's string-to-float cast reads it: ASCII
# digits, an optional sign, point and exponent ("nan"/"inf" are caught as not finite).
PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


class RowValidator:
    """Turns one row's fields (in config column order) into typed values, or says why not."""

    def __init__(self, config: cfg.FeatureConfig):
        self.columns = config.columns
        self.missing = set(config.input.missing_values)
        self.strip = config.input.strip
        self.max_chars = config.input.max_field_chars
        self.positive = set(config.label.positive)
        self.negative = set(config.label.negative)
        self.missing_numeric: dict[str, int] = {}  # of the rows accepted, by column

    def __call__(self, fields: Sequence[Any]) -> tuple[list | None, str, str]:
        """Returns (values, "", "") or (None, reason, detail)."""
        if len(fields) != len(self.columns):
            return None, "wrong_field_count", (f"expected {len(self.columns)} fields, "
                                               f"got {len(fields)}")
        values, filled = [], []
        for column, field in zip(self.columns, fields):
            kind = column.kind
            if kind == cfg.IGNORE:
                continue
            if isinstance(field, str) and len(field) > self.max_chars:
                return None, "field_too_long", (f"column '{column.name}': {len(field)} "
                                                f"characters, over input.max_field_chars "
                                                f"({self.max_chars})")
            if isinstance(field, str) and self.strip:
                field = field.strip()
            if kind == cfg.NUMERIC:
                if field is None or field == "" or field in self.missing:
                    values.append(column.default)
                    filled.append(column.name)
                    continue
                if isinstance(field, str) and not PLAIN_NUMBER.fullmatch(field):
                    # float() also takes "1_000", Arabic-Indic or full-width digits: not what
                    # a CSV means by a number (and not what the Arrow fast path accepts).
                    if field.lower().lstrip("+-") in ("nan", "inf", "infinity"):
                        return None, "not_finite", f"column '{column.name}': {field!r} is not finite"
                    return None, "not_a_number", f"column '{column.name}': {field!r} is not a number"
                try:
                    number = float(field)
                except (TypeError, ValueError):
                    return None, "not_a_number", f"column '{column.name}': {field!r} is not a number"
                if not math.isfinite(number):
                    return None, "not_finite", f"column '{column.name}': {field!r} is not finite"
                values.append(number)
            elif kind == cfg.LABEL:
                label = "" if field is None else str(field)
                if label in self.positive:
                    values.append(1)
                elif label in self.negative:
                    values.append(0)
                elif label == "":
                    return None, "empty_label", f"column '{column.name}': label is empty"
                else:
                    return None, "unknown_label", (
                        f"column '{column.name}': label {label!r} is not one of "
                        f"{sorted(self.positive | self.negative)}")
            elif kind == cfg.MULTIVALENT:
                if field is None:
                    tokens = []
                elif isinstance(field, (list, tuple, np.ndarray)):
                    tokens = [str(t) for t in field]
                else:
                    tokens = str(field).split(column.separator)
                # Stripped before filtering, as the fast path does: "a| |b" is ["a", "b"].
                tokens = [t.strip() if self.strip else t for t in tokens]
                values.append([t for t in tokens if t and t not in self.missing])
            else:
                text = "" if field is None else str(field)
                values.append("" if text in self.missing else text)
        for name in filled:
            self.missing_numeric[name] = self.missing_numeric.get(name, 0) + 1
        return values, "", ""


class RecordBatchBuilder:
    """Accumulates validated rows and emits TFXIO-layout record batches."""

    def __init__(self, config: cfg.FeatureConfig):
        self.schema = arrow_schema(config)
        self.kinds = [c.kind for c in config.raw_columns]
        self.rows: list[list] = []

    def add(self, values: list) -> None:
        self.rows.append(values)

    def __len__(self) -> int:
        return len(self.rows)

    def flush(self) -> pa.RecordBatch | None:
        if not self.rows:
            return None
        n = len(self.rows)
        columns = list(zip(*self.rows))
        self.rows = []
        arrays = []
        scalar_offsets = pa.array(np.arange(n + 1, dtype=np.int64))
        for kind, field, values in zip(self.kinds, self.schema, columns):
            item_type = field.type.value_type
            if kind == cfg.MULTIVALENT:
                lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=n)
                offsets = np.concatenate([[0], np.cumsum(lengths)])
                flat = [t.encode("utf-8") for v in values for t in v]
                arrays.append(pa.LargeListArray.from_arrays(
                    pa.array(offsets), pa.array(flat, type=item_type)))
            else:
                if item_type == pa.large_binary():
                    values = [v.encode("utf-8") for v in values]
                arrays.append(pa.LargeListArray.from_arrays(
                    scalar_offsets, pa.array(values, type=item_type)))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


# ---------------------------------------------------------------------------------------
# Per-format readers: each yields (line_number, fields | None, raw_text, error_reason, detail)


@contextlib.contextmanager
def _open_text_source(path: str):
    """Opens a possibly compressed file; a truncated gzip must fail, not end early.

    Beam's own decompressing reader stops quietly at a gzip cut short (rows would be lost
    without a word); Python's gzip raises EOFError there.
    """
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw) as handle:
                yield handle
        elif CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
            raw.close()
            with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
                yield handle
        else:
            yield raw


UTF8_BOM = b"\xef\xbb\xbf"  # Excel's "CSV UTF-8" starts every file with one


def check_headers(input_paths: Sequence[str], config: cfg.FeatureConfig,
                  optional: Sequence[str] = (), threads: int = 16) -> None:
    """Checks every file's header (CSV) or schema (Parquet) against the config before a job
    starts: a file the config cannot read is an InputError naming it, raised here in one
    line rather than from inside a Beam worker. Reads a few bytes per file (the Parquet
    footer), in parallel for object stores."""
    if config.input.format == "tfrecord":
        return  # no header: every record is checked as a row
    check = _check_parquet_schema if config.input.format == "parquet" else _check_csv_header
    with concurrent.futures.ThreadPoolExecutor(max(1, min(threads, len(input_paths)))) as pool:
        for _ in pool.map(lambda path: check(path, config, optional), input_paths):
            pass


def _check_csv_header(path: str, config: cfg.FeatureConfig, optional: Sequence[str]) -> None:
    if not config.input.header:
        return
    with _open_text_source(path) as handle:
        try:
            for lines in _csv_line_blocks(handle, config.input, _HEADER_READ_BYTES):
                if len(lines):
                    _header_columns(path, lines.split(1)[0].data, config, optional)
                    return
        except (EOFError, OSError, zlib.error) as e:
            raise InputError(f"{path}: unreadable before its header (truncated or corrupt "
                             f"file?): {e}") from None
    raise InputError(f"{path}: empty file, expected a header line")


def _check_parquet_schema(path: str, config: cfg.FeatureConfig,
                          optional: Sequence[str]) -> None:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        _checked_parquet(path, handle, config, optional)


class _CsvChunk:
    """Up to ROWS_PER_BATCH data lines of a CSV file: their bytes end to end (``data``, what
    Arrow parses in one call), where each line ends in them, and each line's number (what a
    dead letter names). Iterating gives (line number, raw line) for the row-by-row path."""

    def __init__(self, data: bytes, ends: np.ndarray, line_numbers: np.ndarray):
        self.data, self.ends, self.line_numbers = data, ends, line_numbers

    def __len__(self) -> int:
        return len(self.line_numbers)

    def __iter__(self):
        start = 0
        for end, line_number in zip(self.ends.tolist(), self.line_numbers.tolist()):
            yield line_number, self.data[start:end]
            start = end

    def split(self, rows: int) -> tuple["_CsvChunk", "_CsvChunk"]:
        cut = int(self.ends[rows - 1]) if rows else 0
        return (_CsvChunk(self.data[:cut], self.ends[:rows], self.line_numbers[:rows]),
                _CsvChunk(self.data[cut:], self.ends[rows:] - cut, self.line_numbers[rows:]))

    @staticmethod
    def join(chunks: Sequence["_CsvChunk"]) -> "_CsvChunk":
        if len(chunks) == 1:
            return chunks[0]
        offsets = np.cumsum([0] + [len(c.data) for c in chunks[:-1]])
        return _CsvChunk(b"".join(c.data for c in chunks),
                         np.concatenate([c.ends + o for c, o in zip(chunks, offsets)]),
                         np.concatenate([c.line_numbers for c in chunks]))


_READ_BYTES = 8 << 20  # one read of a CSV file; its lines are found by numpy, not per line
_HEADER_READ_BYTES = 64 << 10  # a header check reads little of each file (gs://: many files)
_BLANK_BYTES = np.frombuffer(b" \t\n\r\x0b\x0c", np.uint8)  # what bytes.strip() strips


def _csv_line_blocks(handle, spec: cfg.InputSpec, read_bytes: int | None = None):
    """The lines of a CSV file (header and rows), ``read_bytes`` at a time, as _CsvChunks:
    banner lines (skip_lines), comments and a byte-order mark left out. Lines are found with
    numpy over whole reads rather than a Python call per line (1M lines: seconds)."""
    comment = spec.comment_prefix.encode()
    carry, lines_before = b"", 0
    while True:
        block = handle.read(read_bytes or _READ_BYTES)
        data = carry + block if carry else block
        if not data:
            return
        codes = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(codes == 10) + 1  # each line ends after its b"\n"
        if not block:  # end of file: a last line without a line break
            ends = np.append(ends, len(data)).astype(np.int64)
        if not len(ends):
            carry = data
            continue
        carry = data[ends[-1]:]
        starts = np.concatenate([[0], ends[:-1]])
        numbers = np.arange(lines_before + 1, lines_before + 1 + len(ends))
        if lines_before == 0 and data.startswith(UTF8_BOM):
            starts[0] = len(UTF8_BOM)
        lines_before += len(ends)
        keep = numbers > spec.skip_lines
        if comment:
            for i in np.flatnonzero(codes[np.minimum(starts, len(data) - 1)] == comment[0]):
                keep[i] &= not data.startswith(comment, int(starts[i]))
        yield _lines_chunk(data, starts[keep], ends[keep], numbers[keep])
        if not block:
            return


def _lines_chunk(data: bytes, starts: np.ndarray, ends: np.ndarray,
                 numbers: np.ndarray) -> _CsvChunk:
    """The lines data[starts[i]:ends[i]] as one chunk: a slice of ``data`` when they follow
    one another (nearly always), joined when lines were left out between them."""
    if not len(starts):
        return _CsvChunk(b"", ends[:0], numbers)
    if (starts[1:] == ends[:-1]).all():
        first = int(starts[0])
        return _CsvChunk(data[first:int(ends[-1])], ends - first, numbers)
    return _CsvChunk(b"".join(data[s:e] for s, e in zip(starts.tolist(), ends.tolist())),
                     np.cumsum(ends - starts), numbers)


def _without_blank_lines(chunk: _CsvChunk) -> _CsvChunk:
    """Blank lines (e.g. the trailing one of adult.data) are not rows. Only a line that
    starts with a blank byte can be one, so only those are looked at in Python."""
    if not chunk.data:  # no lines, or only empty ones
        return _CsvChunk(b"", chunk.ends[:0], chunk.line_numbers[:0])
    starts = np.concatenate([[0], chunk.ends[:-1]])
    codes = np.frombuffer(chunk.data, np.uint8)
    maybe = np.flatnonzero((chunk.ends == starts)
                           | np.isin(codes[np.minimum(starts, len(codes) - 1)], _BLANK_BYTES))
    blank = [i for i in maybe.tolist() if not chunk.data[starts[i]:chunk.ends[i]].strip()]
    if not blank:
        return chunk
    keep = np.ones(len(chunk), bool)
    keep[blank] = False
    return _lines_chunk(chunk.data, starts[keep], chunk.ends[keep], chunk.line_numbers[keep])


def _csv_chunks(path: str, config: cfg.FeatureConfig, optional: Sequence[str] = ()):
    """Yields (the file's columns, a _CsvChunk of up to ROWS_PER_BATCH data lines)."""
    spec = config.input
    file_columns = None if spec.header else list(config.column_names)
    columns_from_first_row = not spec.header and bool(optional)
    pending: list[_CsvChunk] = []
    pending_rows = line_number = 0
    with _open_text_source(path) as handle:
        try:
            for block in _csv_line_blocks(handle, spec):
                if len(block):
                    line_number = int(block.line_numbers[-1])
                if file_columns is None and len(block):
                    header, block = block.split(1)
                    file_columns = _header_columns(path, header.data, config, optional)
                block = _without_blank_lines(block)
                if columns_from_first_row and len(block):
                    file_columns = _headerless_columns(next(iter(block))[1], config, optional)
                    columns_from_first_row = False
                pending.append(block)
                pending_rows += len(block)
                while pending_rows >= ROWS_PER_BATCH:
                    chunk, rest = _CsvChunk.join(pending).split(ROWS_PER_BATCH)
                    yield file_columns, chunk
                    pending, pending_rows = [rest], len(rest)
        except (EOFError, OSError, zlib.error) as e:
            raise InputError(f"{path}: unreadable after line {line_number} "
                             f"(truncated or corrupt file?): {e}") from None
    if file_columns is None:
        raise InputError(f"{path}: empty file, expected a header line")
    if pending_rows:
        yield file_columns, _CsvChunk.join(pending)


def _csv_rows_of_chunk(file_columns: list[str], chunk, config: cfg.FeatureConfig):
    """The slow, exact path: one row at a time, so each bad row gets its own reason."""
    # Field size is judged by RowValidator (input.max_field_chars), with a clearer reason
    # than the csv module's own 128 KiB limit gives.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    order = [file_columns.index(c) if c in file_columns else None for c in config.column_names]
    present = sum(i is not None for i in order)
    for line_number, raw in chunk:
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            yield (line_number, None, raw.decode("utf-8", "backslashreplace").rstrip("\r\n"),
                   "bad_encoding", f"not UTF-8 at byte {e.start}")
            continue
        try:
            fields = next(csv.reader([text], delimiter=config.input.delimiter))
        except csv.Error as e:
            yield line_number, None, text, "unparseable", f"CSV: {e}"
            continue
        if len(fields) != present:
            yield (line_number, None, text, "wrong_field_count",
                   f"expected {present} fields, got {len(fields)}")
            continue
        yield line_number, [None if i is None else fields[i] for i in order], text, "", ""


def _csv_fast_batch(file_columns: list[str], chunk, config: cfg.FeatureConfig,
                    schema: pa.Schema, missing_numeric: dict[str, int]) -> pa.RecordBatch | None:
    """The fast path: a whole chunk parsed and validated column-wise by Arrow.

    Returns None when anything in the chunk is off; the caller then takes the row-by-row
    path, which finds and explains the bad rows. Clean chunks (nearly all) never touch
    Python per row. Numeric fields read as missing are added to `missing_numeric` once the
    chunk is accepted.
    """
    spec = config.input
    try:
        table = pacsv.read_csv(
            pa.py_buffer(chunk.data),
            read_options=pacsv.ReadOptions(column_names=file_columns, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=spec.delimiter, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in file_columns},
                include_columns=[c.name for c in config.raw_columns],
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    n = table.num_rows
    if n != len(chunk):
        return None
    missing = pa.array(list(spec.missing_values) + [""], pa.string())
    scalar_offsets = pa.array(np.arange(n + 1, dtype=np.int64))
    arrays, filled = [], {}
    for column, field in zip(config.raw_columns, schema):
        values = table.column(column.name).combine_chunks()
        value_offsets = _string_offsets(values)
        byte_lengths = np.diff(value_offsets)
        if (n and byte_lengths.max() > spec.max_field_chars  # a character is a byte or more
                and pc.max(pc.utf8_length(values)).as_py() > spec.max_field_chars):
            return None
        if spec.strip and _may_need_trimming(values, value_offsets):
            values = pc.utf8_trim_whitespace(values)
        offsets = scalar_offsets
        if column.kind == cfg.NUMERIC:
            is_missing = pc.is_in(values, missing)
            filled[column.name] = pc.sum(is_missing).as_py() or 0
            try:
                numbers = pc.cast(pc.if_else(is_missing, None, values)
                                  if filled[column.name] else values, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
            numbers = numbers.fill_null(column.default)
            if not pc.all(pc.is_finite(numbers)).as_py():
                return None
            values = pc.cast(numbers, pa.float32())
        elif column.kind == cfg.LABEL:
            positive = pc.is_in(values, pa.array(config.label.positive, pa.string()))
            negative = pc.is_in(values, pa.array(config.label.negative, pa.string()))
            if not pc.all(pc.or_(positive, negative)).as_py():
                return None
            values = pc.cast(positive, pa.int64())
        elif column.kind == cfg.MULTIVALENT:
            tokens = pc.split_pattern(values, column.separator)
            parents = pc.list_parent_indices(tokens).to_numpy()
            flat = tokens.flatten()
            if spec.strip:
                flat = pc.utf8_trim_whitespace(flat)
            keep = pc.invert(pc.is_in(flat, missing))
            counts = np.bincount(parents[keep.to_numpy(zero_copy_only=False)], minlength=n)
            offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
            values = pc.cast(flat.filter(keep), pa.large_binary())
        else:
            is_missing = pc.is_in(values, missing)
            if pc.any(is_missing).as_py():
                values = pc.if_else(is_missing, "", values)
            values = pc.cast(values, pa.large_binary())
        arrays.append(pa.LargeListArray.from_arrays(offsets, values))
    for name, count in filled.items():
        missing_numeric[name] = missing_numeric.get(name, 0) + count
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# Bytes that may start or end a whitespace character: ASCII whitespace (as str.strip() sees
# it) and every byte of a multi-byte UTF-8 character (U+00A0, U+3000, ... are whitespace).
_MAY_BE_WHITESPACE = np.zeros(256, bool)
_MAY_BE_WHITESPACE[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_MAY_BE_WHITESPACE[0x80:] = True


def _string_offsets(values: pa.StringArray) -> np.ndarray:
    """Where each value of a string array starts in its data buffer, and where the last ends."""
    offsets = np.frombuffer(values.buffers()[1], np.int32)
    return offsets[values.offset:values.offset + len(values) + 1]


def _may_need_trimming(values: pa.StringArray, offsets: np.ndarray) -> bool:
    """Whether a value of the column may start or end with whitespace, judged by its first
    and last byte: trimming a column that needs none (nearly always) rewrote every value."""
    nonempty = offsets[1:] > offsets[:-1]
    if not nonempty.any():
        return False
    data = np.frombuffer(values.buffers()[2], np.uint8)
    return bool(_MAY_BE_WHITESPACE[data[offsets[:-1][nonempty]]].any()
                or _MAY_BE_WHITESPACE[data[offsets[1:][nonempty] - 1]].any())


def _header_columns(path: str, raw: bytes, config: cfg.FeatureConfig,
                    optional: Sequence[str] = ()) -> list[str]:
    """The file's column names from its header, checked against the config."""
    header = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
    names = [n.strip() for n in next(csv.reader([header], delimiter=config.input.delimiter))]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # which copy would be read? Neither parser can say, so neither guesses
        raise InputError(f"{path}: the header names column(s) {repeated} more than once; "
                         f"each column must appear once")
    expected = list(config.column_names)
    missing = [c for c in expected if c not in names and c not in optional]
    extra = [c for c in names if c not in expected]
    if missing or extra:
        found = f"header has {len(names)} column(s): {names[:20]}"
        problems = []
        if missing:
            problems.append(f"missing configured column(s) {missing}")
        if extra:
            problems.append(f"unconfigured column(s) {extra} (add them with kind = \"ignore\")")
        hint = ""
        if len(names) == 1 and len(expected) > 1:
            hint = f"; is input.delimiter ({config.input.delimiter!r}) right?"
        raise InputError(f"{path}: the header does not match the config {config.source}: "
                         f"{'; '.join(problems)}; {found}{hint}")
    return names


def _headerless_columns(raw: bytes, config: cfg.FeatureConfig,
                        optional: Sequence[str]) -> list[str]:
    """A header-less file's columns: all configured ones, or, when its first row has exactly
    as many fields as there are non-optional columns, those (e.g. rows to score, no label)."""
    text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
    fields = next(csv.reader([text], delimiter=config.input.delimiter), [])
    required = [c for c in config.column_names if c not in optional]
    return required if len(fields) == len(required) else list(config.column_names)


def _parquet_rows(path: str, config: cfg.FeatureConfig, optional: Sequence[str] = ()):
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        parquet = _checked_parquet(path, handle, config, optional)
        names = parquet.schema_arrow.names
        present = [c for c in config.column_names if c in names]
        row = 0
        for batch in parquet.iter_batches(batch_size=ROWS_PER_BATCH, columns=present):
            columns = [batch.column(c).to_pylist() if c in names else [None] * batch.num_rows
                       for c in config.column_names]
            for fields in zip(*columns):
                row += 1
                yield row, list(fields), _repr_row(config, fields), "", ""


def _checked_parquet(path: str, handle, config: cfg.FeatureConfig, optional: Sequence[str]):
    """The open ParquetFile, its schema checked against the config."""
    try:
        parquet = pq.ParquetFile(handle)
    except Exception as e:
        raise InputError(f"{path}: not a readable Parquet file: {e}") from None
    names = parquet.schema_arrow.names
    missing = [c for c in config.column_names if c not in names and c not in optional]
    if missing:
        raise InputError(f"{path}: Parquet file lacks configured column(s) {missing}; "
                         f"it has {names}")
    for c in config.columns:
        if c.kind == cfg.IGNORE or c.name not in names:
            continue
        arrow_type = parquet.schema_arrow.field(c.name).type
        if not _parquet_type_fits(c.kind_info, arrow_type):
            raise InputError(f"{path}: column '{c.name}' is {arrow_type}, which does not "
                             f"fit a {c.kind} column")
    return parquet


def _parquet_type_fits(kind: cfg.Kind, arrow_type: pa.DataType) -> bool:
    if kind.value == "float":
        return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
    if kind.multivalent:
        return (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
                or pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))
    return not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
                or pa.types.is_struct(arrow_type))


def _tfrecord_rows(path: str, config: cfg.FeatureConfig, optional: Sequence[str] = ()):
    import tensorflow as tf

    record = 0
    try:
        for serialized in tf.data.TFRecordDataset(
                path, compression_type="GZIP" if path.endswith(".gz") else "").as_numpy_iterator():
            record += 1
            try:
                example = tf.train.Example.FromString(serialized)
            except Exception as e:
                yield record, None, repr(serialized[:200]), "unparseable", f"not a tf.Example: {e}"
                continue
            fields, missing = [], []
            for column in config.columns:
                feature = example.features.feature.get(column.name)
                if feature is None:
                    missing.append(column.name)
                    fields.append(None)
                    continue
                kind = feature.WhichOneof("kind")
                values = list(getattr(feature, kind).value) if kind else []
                values = [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v
                          for v in values]
                fields.append(values if column.kind == cfg.MULTIVALENT
                              else (values[0] if values else None))
            raw = _repr_row(config, fields)
            if missing and any(config.column(m).kind not in (cfg.IGNORE, cfg.MULTIVALENT)
                               and m not in optional for m in missing):
                yield record, None, raw, "missing_feature", f"missing feature(s) {missing}"
                continue
            yield record, fields, raw, "", ""
    except tf.errors.DataLossError as e:
        raise InputError(f"{path}: corrupt TFRecord after record {record}: {e.message}") from None


def _repr_row(config: cfg.FeatureConfig, fields) -> str:
    return json.dumps(dict(zip(config.column_names, fields)), default=str, ensure_ascii=False)


_ROW_READERS = {"parquet": _parquet_rows, "tfrecord": _tfrecord_rows}


_END = object()  # what read_ahead's thread puts last: (_END, the error that ended it or None)


def read_ahead(items: Iterable, depth: int = 2):
    """Yields what ``items`` yields, produced up to ``depth`` items ahead on a thread of its
    own. The DirectRunner runs a bundle on one thread; reading and validating a file is
    mostly Arrow, which lets go of the GIL, so the next batch is read while this one goes
    through the transform. An error of ``items`` is raised here, in the bundle's thread;
    a consumer that stops early stops the thread (and closes ``items``) too."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        error = None
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as e:  # re-raised by the consumer
            error = e
        finally:
            if stop.is_set() and hasattr(items, "close"):
                items.close()
        put((_END, error))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _ReadAndValidateFile(beam.DoFn):
    """Reads one file: record batches of good rows, dead letters for the rest."""

    def __init__(self, config: cfg.FeatureConfig, optional_columns: Sequence[str] = (),
                 count_missing: bool = False, counted: bool = True):
        self.config = config
        self.optional = tuple(optional_columns)
        self.count_missing = count_missing
        self.counted = counted
        self.rows_read = beam.metrics.Metrics.counter("widedeep", "rows_read")
        self.rows_dead = beam.metrics.Metrics.counter("widedeep", "rows_dead_lettered")

    def setup(self):
        self.validate = RowValidator(self.config)
        self.schema = arrow_schema(self.config)

    def process(self, path: str):
        read = dead = 0
        for item in read_ahead(self._batches_and_bad_rows(path)):
            if isinstance(item, DeadLetter):
                dead += 1
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, item)
            else:
                read += item.num_rows
                yield item
        if self.counted:
            self.rows_read.inc(read + dead)
            self.rows_dead.inc(dead)
        if self.count_missing:
            for name, count in self.validate.missing_numeric.items():
                beam.metrics.Metrics.counter(MISSING_NUMERIC_NAMESPACE, name).inc(count)
        self.validate.missing_numeric.clear()

    def _batches_and_bad_rows(self, path: str):
        if self.config.input.format == "csv":
            for file_columns, chunk in _csv_chunks(path, self.config, self.optional):
                batch = _csv_fast_batch(file_columns, chunk, self.config, self.schema,
                                        self.validate.missing_numeric)
                if batch is not None:
                    yield batch
                else:
                    yield from self._validate_rows(path, _csv_rows_of_chunk(file_columns, chunk,
                                                                            self.config))
        else:
            yield from self._validate_rows(path, _ROW_READERS[self.config.input.format](
                path, self.config, self.optional))

    def _validate_rows(self, path: str, rows):
        builder = RecordBatchBuilder(self.config)
        for line, fields, raw, reason, detail in rows:
            values = None
            if not reason:
                values, reason, detail = self.validate(fields)
            if values is None:
                yield DeadLetter(path, line, reason, detail, raw)
                continue
            builder.add(values)
            if len(builder) >= ROWS_PER_BATCH:
                yield builder.flush()
        batch = builder.flush()
        if batch is not None:
            yield batch


class ReadImpressions(beam.PTransform):
    """Files of a glob → (record batches of valid rows, dead letters).

    ``optional_columns`` may be absent from a file (read as missing values).
    ``count_missing``: count numeric fields read as missing (MISSING_NUMERIC_NAMESPACE);
    not ``counted``: leave the rows-read and dead-letter counters alone (a second read of
    files already counted).
    """

    def __init__(self, config: cfg.FeatureConfig, paths: Sequence[str],
                 optional_columns: Sequence[str] = (), count_missing: bool = False,
                 counted: bool = True):
        super().__init__()
        self.paths = list(paths)
        self.read = _ReadAndValidateFile(config, optional_columns, count_missing, counted)

    def expand(self, pipeline):
        results = (pipeline
                   | "ListFiles" >> beam.Create(self.paths)
                   | "SpreadFiles" >> beam.Reshuffle()
                   | "ReadAndValidate" >> beam.ParDo(self.read)
                   .with_outputs(DEAD_LETTER, main="rows"))
        return results.rows, results[DEAD_LETTER]


def hash_fraction(keys: Iterable[bytes], salt: bytes = b"") -> np.ndarray:
    """Stable per-key position in [0, 1), crc32(salt + key) / 2**32: the same key always
    lands in the same split. zlib carries the salt's CRC on over each key, so there is no
    concatenation and no Python call per key."""
    crcs = np.fromiter(map(zlib.crc32, keys, itertools.repeat(zlib.crc32(salt))), np.uint32)
    return crcs / 2**32


def _key_fraction(keys: pa.Array, salt: bytes = b"", repeated: bool = True) -> np.ndarray:
    """hash_fraction(key, salt) of each row's key. Keys that repeat (a batch of 16,384
    app-store rows has a few thousand users) are hashed once each; keys made of a whole
    row's fields hardly ever repeat, and finding the distinct ones would cost more than
    it saves."""
    if not repeated:
        return hash_fraction(keys.to_pylist(), salt)
    encoded = pc.dictionary_encode(keys)
    return hash_fraction(encoded.dictionary.to_pylist(), salt)[encoded.indices.to_numpy()]


def only_columns(config: cfg.FeatureConfig, names: Sequence[str]) -> cfg.FeatureConfig:
    """The config reading every other column as ``ignore``: a reader of it still splits
    each line into its fields but converts and checks only these (a quarter of a full
    read of the Criteo-shaped log)."""
    return dataclasses.replace(config, columns=tuple(
        column if column.name in names else dataclasses.replace(column, kind=cfg.IGNORE)
        for column in config.columns))


class EvalDays(beam.PTransform):
    """Record batches → the set of days a "day" split sends to eval (the newest ones).

    A side input computed from the very rows it splits makes the DirectRunner hold all of
    them until it is known, so the transform job computes it from a read of its own and
    splits both of its reads of the rows by it."""

    def __init__(self, split: cfg.SplitSpec):
        super().__init__()
        self.split = split

    def expand(self, batches):
        split = self.split
        return (batches
                | "Days" >> beam.FlatMap(lambda b: pc.unique(_flat(b, split.day_column))
                                         .to_pylist())
                | "DistinctDays" >> beam.Distinct()
                | "AllDays" >> beam.combiners.ToList()
                | "EvalDays" >> beam.Map(lambda ds: set(sorted(ds)[-split.eval_days:])
                                         if len(ds) > split.eval_days else set()))


def _eval_masks(batches, split: cfg.SplitSpec, eval_days=None):
    """Record batches → (batch, whether each row is eval) by hash of a key column or by the
    newest days (``eval_days``, from :class:`EvalDays`: of these rows when not given)."""
    if split.method != "day":
        return batches | "MaskByKeyHash" >> beam.Map(
            lambda b: (b, _key_fraction(b.column(split.key).flatten()) < split.eval_fraction))
    eval_days = eval_days or batches | "EvalDays" >> EvalDays(split)
    return batches | "MaskByDay" >> beam.Map(
        lambda b, ed: (b, _in_days(b, split.day_column, ed)),
        beam.pvalue.AsSingleton(eval_days))


class SplitTrainEval(beam.PTransform):
    """Record batches → (train, eval) by hash of a key column or by the newest days."""

    def __init__(self, split: cfg.SplitSpec, eval_days=None):
        super().__init__()
        self.split, self.eval_days = split, eval_days

    def expand(self, batches):
        parts = (_eval_masks(batches, self.split, self.eval_days)
                 | "Route" >> beam.FlatMap(_route).with_outputs("eval", main="train"))
        return parts.train, parts.eval


VALIDATION_SALT = b"validation\0"  # independent of the train/eval split's hash


def _holdout_key_columns(config: cfg.FeatureConfig) -> list[str]:
    key = config.split.key
    return [key] if key else [c.name for c in config.raw_columns if c.kind != cfg.MULTIVALENT]


SPLIT_COLUMN = "__widedeep_split__"  # not a config column: TFT passes it through
SPLIT_NAMES = ("train", "eval", "validation")  # a row's split id indexes this


def with_split_ids(batch: pa.RecordBatch, ids) -> pa.RecordBatch:
    """The batch with SPLIT_COLUMN: a split id per row (an array), or one for every row."""
    ids = np.broadcast_to(np.asarray(ids, dtype=np.int64), (batch.num_rows,))
    offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int64))
    return batch.append_column(SPLIT_COLUMN, pa.LargeListArray.from_arrays(
        offsets, pa.array(ids, pa.int64())))


def _with_split_ids(batch_and_eval, key_columns: Sequence[str], fraction: float):
    """The validation holdout: a deterministic `fraction` of the rows not in eval, by the
    hash of the split key when there is one (a user's rows stay together), else of the
    row's single-valued fields."""
    batch, is_eval = batch_and_eval
    ids = np.where(is_eval, SPLIT_NAMES.index("eval"), SPLIT_NAMES.index("train"))
    if fraction:
        held_out = _key_fraction(_row_keys(batch, key_columns), VALIDATION_SALT,
                                 repeated=len(key_columns) == 1) < fraction
        ids[~is_eval & held_out] = SPLIT_NAMES.index("validation")
    return with_split_ids(batch, ids)


class TagSplits(beam.PTransform):
    """Record batches → the same batches with each row's split (an index into SPLIT_NAMES)
    in one more column, by the rule of SplitTrainEval and the validation holdout, so that
    every split can go through one TFT transform and be told apart after it. ``rows`` says
    what the input is: "split" (split it by the config's rule; ``eval_days`` as for
    SplitTrainEval), "train" (train rows: train and validation) or "eval" (a separate eval
    input)."""

    def __init__(self, config: cfg.FeatureConfig, rows: str = "split", eval_days=None):
        super().__init__()
        self.config, self.rows, self.eval_days = config, rows, eval_days

    def expand(self, batches):
        if self.rows == "split":
            masks = _eval_masks(batches, self.config.split, self.eval_days)
        else:
            every = self.rows == "eval"
            masks = batches | "Mask" >> beam.Map(lambda b: (b, np.full(b.num_rows, every)))
        fraction = self.config.split.validation_fraction if self.rows != "eval" else 0.0
        return masks | "Tag" >> beam.Map(_with_split_ids, _holdout_key_columns(self.config),
                                         fraction)


_EXACT_WHOLE_FLOATS = 2**24  # float32 and float64 whole numbers up to this print as integers


def _number_text(flat: pa.Array) -> pa.Array:
    """A number column's values as the text Arrow's cast gives them. A float column of
    whole numbers (counts, ids: most of them) goes through int64, which prints three
    times faster; every whole number within ±2**24 prints the same either way (checked
    for each of them, as float32 and float64), and -0 does not, so it stays a float."""
    if pa.types.is_floating(flat.type) and flat.null_count == 0:
        values = flat.to_numpy()
        if ((np.abs(values) <= _EXACT_WHOLE_FLOATS).all() and (values == np.trunc(values)).all()
                and not np.signbit(values[values == 0]).any()):
            flat = pc.cast(flat, pa.int64())
    return pc.cast(pc.cast(flat, pa.large_string()), pa.large_binary())


def _row_keys(batch: pa.RecordBatch, columns: Sequence[str]) -> pa.Array:
    values = []
    for column in columns:
        flat = batch.column(column).flatten()
        if not pa.types.is_large_binary(flat.type):  # numbers and the label: their text
            flat = _number_text(flat)
        values.append(flat)
    if len(values) == 1:
        return values[0]
    return pc.binary_join_element_wise(*values, pa.scalar(b"\x1f", pa.large_binary()))


def _flat(batch: pa.RecordBatch, column: str) -> pa.Array:
    """A single-valued column's values, one per row."""
    return batch.column(column).flatten()


def _in_days(batch: pa.RecordBatch, column: str, days) -> np.ndarray:
    """Whether each row's day is one of ``days``."""
    values = _flat(batch, column)
    return pc.is_in(values, value_set=pa.array(sorted(days), values.type)).to_numpy(
        zero_copy_only=False)


def _route(batch_and_mask):
    batch, is_eval = batch_and_mask
    if is_eval.any():
        yield beam.pvalue.TaggedOutput("eval", batch.filter(pa.array(is_eval)))
    if not is_eval.all():
        yield batch.filter(pa.array(~is_eval))
