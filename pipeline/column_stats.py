"""Statistics of every raw column, computed by the transform job in its one pass over the rows.

What a person (and later checks) needs to tell a broken night from a quiet one: per column
the row count and missing share; for categorical and key columns the distinct values and the
most frequent ones; for numeric columns min, max, mean, quantiles and the share of zeros; for
multivalent columns the list lengths and their tokens; for the label the positive rate. The
sketches are tfx_bsl's (the ones TFDV is built on): Misra-Gries for top values, KMV for
distinct counts, a quantiles sketch for numerics; each merges across bundles, so memory does
not grow with the rows. The price: in a column with over a thousand distinct values the
top-value counts are upper bounds, each over by at most ``top_counts_over_by_at_most``.
Saved as ``<transform dir>/column_stats.json``.

A numeric column's missing values are filled with its default by the reader, before the
statistics see them; the reader counts them instead, and :func:`add_numeric_missing` puts
those counts in once the job has finished.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tfx_bsl import sketches

from transforms import config as cfg
from transforms import paths

STATS_FILE = "column_stats.json"
TOP_VALUES = 20
QUANTILES = 10          # deciles
_SKETCH_BUCKETS = 1024  # KMV: distinct counts within about 3%
# Misra-Gries counts are exact while a column has fewer distinct values than buckets; past
# that each count may be over by up to values / (buckets + 1), and values whose count is
# not above that bound (a long tail of user ids) are not reported as top values at all.
_TOP_BUCKETS = 1000
_MAX_LENGTH = 64        # list lengths above this share the last histogram bucket


class _Column:
    """One column's accumulator."""

    def __init__(self, kind: cfg.Kind):
        self.kind, self.rows, self.missing = kind, 0, 0
        self.unseen = None  # values outside a reference vocabulary, when there is one
        if kind.value == "bytes":
            self.top = sketches.MisraGriesSketch(_TOP_BUCKETS)
            self.distinct = sketches.KmvSketch(_SKETCH_BUCKETS)
            self.lengths = np.zeros(_MAX_LENGTH + 1, np.int64)
            self.tokens = 0
        else:
            self.quantiles = sketches.QuantilesSketch(0.001, 2**32, 1)
            self.total, self.zeros = 0.0, 0
            self.low, self.high = np.inf, -np.inf

    def add(self, values: pa.Array, known: pa.Array | None = None) -> None:
        """``values``: the record batch's column (a list per row); ``known``: the reference
        vocabulary that unseen values are counted against."""
        self.rows += len(values)
        flat = values.flatten()
        if self.kind.value != "bytes":
            numbers = flat.to_numpy(zero_copy_only=False).astype(np.float64)
            if len(numbers):
                self.quantiles.AddValues(pa.array(numbers))
                self.total += float(numbers.sum())
                self.zeros += int((numbers == 0).sum())
                self.low, self.high = min(self.low, numbers.min()), max(self.high, numbers.max())
            return
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        self.lengths += np.bincount(np.minimum(lengths, _MAX_LENGTH), minlength=_MAX_LENGTH + 1)
        self.tokens += int(lengths.sum())
        if self.kind.multivalent:
            self.missing += int((lengths == 0).sum())
        else:
            self.missing += int(pc.sum(pc.equal(pc.binary_length(flat), 0)).as_py() or 0)
            flat = flat.filter(pc.greater(pc.binary_length(flat), 0))
        if len(flat):
            self.top.AddValues(flat)
            self.distinct.AddValues(flat)
        if known is not None:
            seen = pc.sum(pc.is_in(flat, value_set=known)).as_py() or 0
            self.unseen = (self.unseen or 0) + len(flat) - seen

    def merge(self, other: "_Column") -> None:
        self.rows += other.rows
        self.missing += other.missing
        if other.unseen is not None:
            self.unseen = (self.unseen or 0) + other.unseen
        if self.kind.value == "bytes":
            self.top.Merge(other.top)
            self.distinct.Merge(other.distinct)
            self.lengths += other.lengths
            self.tokens += other.tokens
        else:
            self.quantiles.Merge(other.quantiles)
            self.total += other.total
            self.zeros += other.zeros
            self.low, self.high = min(self.low, other.low), max(self.high, other.high)

    def result(self, kind: str) -> dict:
        out = {"kind": kind, "rows": self.rows,
               "missing_share": _share(self.missing, self.rows)}
        if self.kind.value != "bytes":
            count = self.rows  # one value per row
            quantiles = (self.quantiles.GetQuantiles(QUANTILES).to_pylist()[0]
                         if count else [])
            out.update(min=_number(self.low), max=_number(self.high),
                       mean=_number(self.total / count) if count else None,
                       zeros_share=_share(self.zeros, count),
                       quantiles=[_number(q) for q in quantiles])
            if kind == cfg.LABEL:
                out = {"kind": kind, "rows": self.rows,
                       "positive_rate": _number(self.total / count) if count else None}
            return out
        tokens = self.tokens  # not from the histogram, whose last bucket holds longer lists
        distinct = int(self.distinct.Estimate())
        values = tokens if self.kind.multivalent else self.rows - self.missing
        over_by = 0 if distinct < _TOP_BUCKETS else values // (_TOP_BUCKETS + 1)
        top = [{"value": t["values"].decode("utf-8", "backslashreplace"),
                "count": int(t["counts"])} for t in self.top.Estimate().to_pylist()
               if t["counts"] > over_by]
        out.update(distinct=distinct, top_values=top[:TOP_VALUES],
                   top_counts_over_by_at_most=over_by)
        if self.unseen is not None:
            out["unseen_share"] = _share(self.unseen, values)
        if self.kind.multivalent:
            nonzero = np.flatnonzero(self.lengths)
            out.update(tokens=tokens, mean_length=_number(tokens / self.rows) if self.rows
                       else None,
                       length_counts={f"{n}{'+' if n == _MAX_LENGTH else ''}":
                                      int(self.lengths[n]) for n in nonzero})
        return out


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def _number(value) -> float | None:
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


class ColumnStatsFn(beam.CombineFn):
    """Record batches of valid raw rows → {column: statistics} (see the module docstring).

    ``known_values``: per column, the vocabulary of the model serving now; each such
    column's ``unseen_share`` is the share of its values outside it."""

    def __init__(self, config: cfg.FeatureConfig,
                 known_values: dict[str, list[bytes]] | None = None):
        self.columns = [(c.name, c.kind) for c in config.raw_columns]
        self.known_values = known_values or {}
        self._known: dict[str, pa.Array] = {}

    def setup(self):
        self._known = {name: pa.array(values, pa.large_binary())
                       for name, values in self.known_values.items()}

    def create_accumulator(self):
        return {name: _Column(cfg.KINDS[kind]) for name, kind in self.columns}

    def add_input(self, accumulator, batch: pa.RecordBatch):
        if self.known_values and not self._known:
            self.setup()
        for name, _ in self.columns:
            accumulator[name].add(batch.column(name), self._known.get(name))
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            for name, column in accumulator.items():
                merged[name].merge(column)
        return merged

    def extract_output(self, accumulator):
        return {name: accumulator[name].result(kind) for name, kind in self.columns}


class ColumnStatistics(beam.PTransform):
    """Record batches (one PCollection, or a tuple of them, e.g. a job's main and eval
    input) → ``<output_dir>/column_stats.json``, in the job reading them.

    Each input is summarized where it is read, and only the summaries are merged: a
    Flatten of the rows themselves would make the DirectRunner hold every row in memory
    (344 MB a million app-store rows, measured)."""

    def __init__(self, config: cfg.FeatureConfig, output_dir: str,
                 known_values: dict[str, list[bytes]] | None = None):
        super().__init__()
        self.config, self.output_dir, self.known_values = config, output_dir, known_values

    def expand(self, batches):
        inputs = batches if isinstance(batches, tuple) else (batches,)
        summaries = [rows | f"Summarize{i}" >> beam.CombineGlobally(
                         _Summaries(self.config, self.known_values))
                     for i, rows in enumerate(inputs)]
        return (tuple(summaries) | "Summaries" >> beam.Flatten()
                | "Merge" >> beam.CombineGlobally(_MergedSummaries(self.config))
                | "Write" >> beam.Map(_write_json, paths.join(self.output_dir, STATS_FILE)))


class _Summaries(ColumnStatsFn):
    """A ColumnStatsFn whose output is its accumulator, for merging with other inputs'."""

    def extract_output(self, accumulator):
        return accumulator


class _MergedSummaries(ColumnStatsFn):
    """Merges the inputs' accumulators into the statistics."""

    def add_input(self, accumulator, summary):
        return self.merge_accumulators([accumulator, summary])


def _write_json(value, path: str) -> str:
    return paths.write_json(path, value)


def add_numeric_missing(stats_path: str, missing_by_column: dict[str, int]) -> None:
    """Sets each numeric column's missing share from the reader's counts of filled fields."""
    stats = paths.read_json(stats_path)
    for name, column in stats.items():
        if column["kind"] == cfg.NUMERIC and column["rows"]:
            column["missing_share"] = _share(missing_by_column.get(name, 0), column["rows"])
    paths.write_json(stats_path, stats)
