"""Transform cost: our Beam + TFT job next to a plain pyarrow/numpy version of it, per config.

For each synthetic dataset (``appstore``, the built-in log with its shipped config;
``criteo_like``, 13 counts and 26 hashed categoricals with ``configs/criteo_like.toml``) at two
sizes, both sides read the same CSV files and do the work the config asks for: split
train/eval by the config's rule, learn vocabularies (min count, frequency order), quantile
boundaries and crosses on the train split, and apply them to both splits. The reference
follows the config too (it is not written for one dataset): one Python process doing
whole-column Arrow and numpy operations (Arrow's CSV reader may use its thread pool), no
Beam, no TF graph, no row validation: the practical speed limit of this work on this
machine. It writes gzip Parquet at Beam's gzip level, so it does not win by skipping output
(ours writes gzip TFRecords of both splits plus the raw eval rows). Its hashes are its own,
not TF's fingerprint: hashed ids differ, vocabularies and split sizes must not.

Two sizes give each side's cost as a line: a fixed part (pipeline construction, tracing,
graph loads; for the reference next to nothing) and a per-row part, from the two points.

Before any figure is trusted, the two must agree: the vocabularies TFT wrote
(``transform_fn/assets/vocab_<name>``) hold the same tokens as the reference's, and the
split sizes match ``stats["rows_out"]``. The script exits 1 when they do not.

Printed: per run the reference's phases, then a Markdown table per dataset, the goal lines
and one JSON line, which is also merged into ``--out`` under the key "transform". The
machine may be busy: both sides run in the same invocation so that they see the same
neighbours; the ratios are what to compare across machines.

    python bench/transform.py [--datasets appstore,criteo_like] [--sizes 200000,1000000]
                              [--shards 4] [--repeats 2] [--multi-processing] [--work-dir DIR]
                              [--out bench/results.json] [--smoke] [--runner-args BEAM_ARG ...]

Arguments after ``--runner-args`` (and any the script does not know) go to Beam's
PipelineOptions, e.g. ``--runner-args --direct_num_workers=2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tfx_bsl.coders import example_coder

import common  # noqa: E402  (first: the Keras mode, the repository on sys.path)
from common import merge_results  # noqa: E402
from pipeline import io as wd_io  # noqa: E402
from pipeline import orchestrate  # noqa: E402
from pipeline import transform_job  # noqa: E402
from transforms import config as cfg  # noqa: E402
from transforms import synthetic  # noqa: E402
from transforms.features import CROSS_SEPARATOR  # noqa: E402

MILLION = 1_000_000
# Per dataset (issue 16): seconds for 1M rows, the fixed part, and ours / reference at 1M.
GOALS = {"appstore": {"million_rows_seconds": 25.0, "ratio": 3.0},
         "criteo_like": {"fixed_seconds": 20.0, "million_rows_seconds": 60.0, "ratio": 3.0}}
DEFAULT_SIZES = "200000,1000000"
WINDOW_GOAL_RATIO = 1.3  # a night with window_days = 7 against a one-day night
SMOKE_SIZES = (1500, 3000)
IN_PROCESS = "in_process"
MULTI_PROCESSING = "multi_processing"
MULTI_PROCESSING_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
# The level our TFRecords are written at (Arrow's own gzip default is 9, far slower).
GZIP_LEVEL = transform_job.GZIP_LEVEL
EXAMPLE_BATCH_ROWS = wd_io.ROWS_PER_BATCH  # the batches ours encodes
DEFAULT_OUT = common.RESULTS_FILE
RESULTS_KEY = "transform"


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(common.SYNTHETIC),
                        help=f"synthetic datasets (default {','.join(common.SYNTHETIC)})")
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"two row counts to run each at (default {DEFAULT_SIZES})")
    parser.add_argument("--shards", type=int, default=4,
                        help="CSV files of the app-store log (default 4)")
    parser.add_argument("--multi-processing", action="store_true",
                        help="also run our job with " + " ".join(MULTI_PROCESSING_ARGS))
    parser.add_argument("--work-dir", default=None,
                        help="keep the logs and all outputs here (default: a temporary "
                             "directory, removed at the end)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="JSON file to merge the figures into, under key "
                             f"'{RESULTS_KEY}' (default: bench/results.json)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{' and '.join(map(str, SMOKE_SIZES))} rows: checks the script "
                             "runs and agrees")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each side at each size (and of each night of the "
                             "window figure), interleaved; the faster counts (default 2; 1 "
                             "with --smoke)")
    parser.add_argument("--window-days", type=int, default=7,
                        help="also time a night with [analysis] window_days = N against a "
                             "one-day night on the app-store log (0: skip; default 7)")
    parser.add_argument("--window-rows", type=int, default=200_000,
                        help="rows per day of that log (default 200000)")
    parser.add_argument("--runner-args", nargs=argparse.REMAINDER, default=[],
                        help="everything after this goes to Beam's PipelineOptions")
    args, unknown = parser.parse_known_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    if args.smoke:
        args.window_rows = min(args.window_rows, 400)
        args.repeats = 1
    args.sizes = list(SMOKE_SIZES) if args.smoke else sorted(int(n) for n in
                                                             args.sizes.split(","))
    if len(args.sizes) != 2 or args.sizes[0] < 1 or args.sizes[0] == args.sizes[1]:
        parser.error("--sizes takes two different row counts, e.g. 200000,1000000")
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args, unknown + list(args.runner_args)


# ---------------------------------------------------------------------------------------
# Our job


def run_ours(config, input_glob: str, output_dir: str, pipeline_args, mode: str) -> dict:
    """Wall time of ``run_transform`` (what ``widedeep transform`` runs) and its stats."""
    started = time.perf_counter()
    stats = transform_job.run_transform(
        config, input_glob, output_dir, pipeline_args=list(pipeline_args),
        log=lambda line: print(f"bench: ours ({mode}): {line}", flush=True))
    seconds = time.perf_counter() - started
    return {"mode": mode, "pipeline_args": list(pipeline_args), "seconds": round(seconds, 2),
            "rows_per_second": round(stats["rows_in"] / seconds, 1),
            "job_seconds": stats["seconds"], "rows_in": stats["rows_in"],
            "rows_out": stats["rows_out"], "output_dir": output_dir}


# ---------------------------------------------------------------------------------------
# The reference: the same analysis and transformation as whole-column Arrow/numpy work


class _ListColumn:
    """A list-of-strings column as numpy row offsets (from 0) and its flat tokens."""

    def __init__(self, offsets: np.ndarray, flat):
        self.offsets, self.flat = offsets, flat

    @classmethod
    def of(cls, values) -> "_ListColumn":
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            offsets = values.offsets.to_numpy().astype(np.int64)
            return cls(offsets - offsets[0], values.flatten())
        # A single-valued column is a list of one per row: tf.sparse.cross sees it that way.
        return cls(np.arange(len(values) + 1, dtype=np.int64), values)

    def with_ids(self, ids: np.ndarray):
        return pa.ListArray.from_arrays(pa.array(self.offsets.astype(np.int32)), pa.array(ids))


def _cross(columns: list[_ListColumn], separator: str) -> _ListColumn:
    """Per row, every combination of the columns' tokens, joined by the separator."""
    result = columns[0]
    for other in columns[1:]:
        left_lengths, right_lengths = np.diff(result.offsets), np.diff(other.offsets)
        lengths = left_lengths * right_lengths
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        row = np.repeat(np.arange(len(lengths)), lengths)
        position = np.arange(offsets[-1]) - offsets[row]
        right_length = right_lengths[row]
        left = result.flat.take(result.offsets[row] + position // right_length)
        right = other.flat.take(other.offsets[row] + position % right_length)
        result = _ListColumn(offsets, pc.binary_join_element_wise(left, right, separator))
    return result


def _hash_ids(strings, buckets: int) -> np.ndarray:
    """A fast vectorised string hash into [0, buckets): weighted byte sums, then a mixer.

    Not TF's fingerprint (the brief allows any hash); it only has to cost what a hash
    costs. Tokens are hashed in chunks so the per-byte temporaries stay small.
    """
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    n = len(strings)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets = np.frombuffer(strings.buffers()[1], dtype=offset_type)[
        strings.offset:strings.offset + n + 1].astype(np.int64)
    data_buffer = strings.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else None
    lengths = np.diff(offsets)
    weights = np.random.default_rng(0).integers(1, 2**63, size=max(int(lengths.max()), 1),
                                                dtype=np.uint64) | np.uint64(1)
    hashes = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    chunk = 1 << 20
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        low, high = offsets[start], offsets[stop]
        if high == low:
            continue
        starts = offsets[start:stop] - low
        chunk_lengths = lengths[start:stop]
        position = np.arange(high - low) - np.repeat(starts, chunk_lengths)
        products = data[low:high].astype(np.uint64) * weights[position]
        nonempty = chunk_lengths > 0
        hashes[start:stop][nonempty] += np.add.reduceat(products, starts[nonempty])
    # splitmix64's finaliser: every input bit reaches every output bit.
    hashes ^= hashes >> np.uint64(30)
    hashes *= np.uint64(0xBF58476D1CE4E5B9)
    hashes ^= hashes >> np.uint64(27)
    hashes *= np.uint64(0x94D049BB133111EB)
    hashes ^= hashes >> np.uint64(31)
    return (hashes % np.uint64(buckets)).astype(np.int64)


def _vocabulary(tokens, min_count: int):
    """Tokens seen at least min_count times, most frequent first, ties by token descending.

    That is TFT's order; like TFT (analyzers._EMPTY_STRING_OR_NEWLINE_CHARS_REGEX), empty
    tokens and tokens with a newline are left out, since a text vocabulary file cannot
    hold them.
    """
    counts = pc.value_counts(tokens).flatten()
    table = pa.table({"token": counts[0], "count": counts[1]})
    keep = pc.and_(pc.greater_equal(table["count"], min_count),
                   pc.invert(pc.match_substring_regex(table["token"], r"^$|[\n\r]")))
    table = table.filter(keep).sort_by([("count", "descending"), ("token", "descending")])
    return table["token"].combine_chunks()


def _vocabulary_ids(tokens, vocabulary, oov_buckets: int) -> np.ndarray:
    ids = pc.index_in(tokens, value_set=vocabulary)
    unknown = ids.is_null().to_numpy(zero_copy_only=False)
    ids = ids.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if unknown.any():
        oov = (_hash_ids(pc.filter(tokens, unknown), oov_buckets) if oov_buckets > 1
               else np.zeros(int(unknown.sum()), dtype=np.int64))
        ids[unknown] = len(vocabulary) + oov
    return ids


def _read_log(config, paths: list[str], columns: list[str]):
    """The CSV files as one Arrow table: numeric columns as float32, the rest as strings."""
    spec = config.input
    types = {c.name: pa.float32() if c.kind == cfg.NUMERIC else pa.string()
             for c in config.columns if c.name in columns}
    read_options = pacsv.ReadOptions(
        skip_rows=spec.skip_lines,
        column_names=None if spec.header else list(config.column_names))
    convert_options = pacsv.ConvertOptions(
        column_types=types, include_columns=columns,
        null_values=[""] + list(spec.missing_values),
        strings_can_be_null=False, quoted_strings_can_be_null=False)
    parse_options = pacsv.ParseOptions(delimiter=spec.delimiter)
    tables = [pacsv.read_csv(path, read_options=read_options, parse_options=parse_options,
                             convert_options=convert_options) for path in paths]
    return pa.concat_tables(tables).combine_chunks()


def _prepared_table(config, raw, columns: list[str]):
    """Typed columns as the job's reader makes them: trimmed, missing values blanked,
    multivalent split into lists, numerics defaulted, clipped and log-scaled, label 0/1."""
    spec = config.input
    missing = pa.array(list(spec.missing_values) + [""], pa.string())
    prepared = {}
    for name in columns:
        column = config.column(name)
        values = raw.column(name).combine_chunks()
        if column.kind == cfg.NUMERIC:
            numbers = values.fill_null(column.default).to_numpy(zero_copy_only=False)
            if column.clip is not None:
                numbers = np.clip(numbers, *column.clip)
            if column.log:
                numbers = np.log1p(np.maximum(numbers, 0.0))
            prepared[name] = pa.array(numbers.astype(np.float32))
            continue
        if spec.strip:
            values = pc.utf8_trim_whitespace(values)
        if column.kind == cfg.LABEL:
            prepared[name] = pc.cast(pc.is_in(values, pa.array(config.label.positive)),
                                     pa.int64())
        elif column.kind == cfg.MULTIVALENT:
            lists = pc.split_pattern(values, column.separator)
            parents = pc.list_parent_indices(lists).to_numpy()
            flat = lists.flatten()
            if spec.strip:
                flat = pc.utf8_trim_whitespace(flat)
            keep = pc.invert(pc.is_in(flat, missing))
            counts = np.bincount(parents[keep.to_numpy(zero_copy_only=False)],
                                 minlength=len(values))
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
            prepared[name] = pa.ListArray.from_arrays(pa.array(offsets), flat.filter(keep))
        elif spec.missing_values:
            prepared[name] = pc.if_else(pc.is_in(values, missing), "", values)
        else:
            prepared[name] = values
    return pa.table(prepared)


def _eval_mask(config, prepared) -> np.ndarray:
    """The job's split rule (pipeline/io.py SplitTrainEval), computed once per distinct key."""
    split = config.split
    if split.method == "hash":
        encoded = pc.dictionary_encode(prepared.column(split.key).combine_chunks())
        fractions = wd_io.hash_fraction(encoded.dictionary.cast(pa.binary()).to_pylist())
        return fractions[encoded.indices.to_numpy()] < split.eval_fraction
    if split.method == "day":
        days = prepared.column(split.day_column)
        distinct = sorted(pc.unique(days).to_pylist())
        eval_days = distinct[-split.eval_days:] if len(distinct) > split.eval_days else []
        return pc.is_in(days, pa.array(eval_days, pa.string())).to_numpy(zero_copy_only=False)
    raise SystemExit(f"bench: {config.source}: split.method = \"{split.method}\" needs a "
                     "second input; the benchmark generates one log (use \"hash\" or \"day\")")


def _reference_analyze(columns, crosses, train):
    """(vocabularies, quantile boundaries, the train split's cross tokens) of the train split."""
    vocabularies, boundaries, train_crosses = {}, {}, {}
    for column in columns:
        if column.kind == cfg.NUMERIC:
            values = train.column(column.name).to_numpy()
            quantiles = np.linspace(0, 1, column.quantile_buckets + 1)[1:-1]
            boundaries[column.name] = (np.quantile(values, quantiles) if len(values)
                                       else np.zeros(len(quantiles)))
        elif not column.hash_buckets:
            vocabularies[column.vocab_name] = _vocabulary(
                _ListColumn.of(train.column(column.name)).flat, column.vocab_min_count)
    for cross in crosses:
        tokens = _cross([_ListColumn.of(train.column(c)) for c in cross.columns],
                        CROSS_SEPARATOR)
        train_crosses[cross.name] = tokens  # reused by the apply phase, not rebuilt
        if not cross.hash_buckets:
            vocabularies[cross.vocab_name] = _vocabulary(tokens.flat, cross.vocab_min_count)
    return vocabularies, boundaries, train_crosses


def _reference_apply(config, columns, crosses, splits, vocabularies, boundaries,
                     train_crosses) -> dict:
    """Both splits through the analysis: ids, [0, 1] buckets and cross ids, as tables."""
    outputs = {}
    for split_name, table in splits.items():
        out = {}
        for column in columns:
            values = table.column(column.name)
            if column.kind == cfg.NUMERIC:
                buckets = np.searchsorted(boundaries[column.name], values.to_numpy(),
                                          side="right")
                out[column.name] = pa.array(
                    (buckets / (column.quantile_buckets - 1)).astype(np.float32))
                continue
            lists = _ListColumn.of(values)
            if column.hash_buckets:
                ids = _hash_ids(lists.flat, column.hash_buckets)
            else:
                ids = _vocabulary_ids(lists.flat, vocabularies[column.vocab_name],
                                      column.oov_buckets)
            out[column.name] = lists.with_ids(ids) if column.kind == cfg.MULTIVALENT else ids
        for cross in crosses:
            tokens = (train_crosses[cross.name] if split_name == "train" else
                      _cross([_ListColumn.of(table.column(c)) for c in cross.columns],
                             CROSS_SEPARATOR))
            ids = (_hash_ids(tokens.flat, cross.hash_buckets) if cross.hash_buckets else
                   _vocabulary_ids(tokens.flat, vocabularies[cross.vocab_name],
                                   cross.oov_buckets))
            out[cross.name] = tokens.with_ids(ids)
        out[config.label.column] = table.column(config.label.column)
        outputs[split_name] = pa.table(out)
    return outputs


def _write_examples(outputs: dict, output_dir: str) -> dict[str, int]:
    """The reference's output tables as gzip TFRecords of tf.Examples, the format ours
    writes (tfx-bsl's encoder, TFRecord framing, zlib at GZIP_LEVEL); records per split."""
    written = {}
    for split_name, table in outputs.items():
        deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        written[split_name] = 0
        with open(os.path.join(output_dir, f"{split_name}.tfrecord.gz"), "wb") as out:
            for batch in table.to_batches(max_chunksize=EXAMPLE_BATCH_ROWS):
                # A tf.Example feature is a list: single values become lists of one.
                columns = [column if pa.types.is_list(column.type) else
                           pa.ListArray.from_arrays(np.arange(len(column) + 1, dtype=np.int32),
                                                    column)
                           for column in batch.columns]
                records = example_coder.RecordBatchToExamples(
                    pa.RecordBatch.from_arrays(columns, batch.schema.names))
                out.write(deflate.compress(transform_job.frame_tfrecords(records)))
                written[split_name] += len(records)
            out.write(deflate.flush())
    return written


def run_reference(config, paths: list[str], output_dir: str) -> dict:
    """The reference, phase by phase; returns its times, split sizes and vocabularies."""
    used = set(config.model_feature_names())
    columns = [c for c in config.feature_columns if c.name in used]
    crosses = [x for x in config.crosses if x.name in used]
    needed = {c.name for c in columns} | {c for x in crosses for c in x.columns}
    needed |= {config.label.column} | {n for n in (config.split.key, config.split.day_column) if n}
    read_columns = [name for name in config.column_names if name in needed]

    phases = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[phase] = round(now - clock, 3)
        clock = now

    started = clock
    raw = _read_log(config, paths, read_columns)
    lap("read_csv")
    prepared = _prepared_table(config, raw, read_columns)
    del raw
    lap("parse")
    is_eval = _eval_mask(config, prepared)
    splits = {"train": prepared.filter(pa.array(~is_eval)),
              "eval": prepared.filter(pa.array(is_eval))}
    del prepared
    lap("split")

    # Analyze: statistics of the train split only (as TFT's AnalyzeAndTransformDataset).
    vocabularies, boundaries, train_crosses = _reference_analyze(columns, crosses,
                                                                 splits["train"])
    lap("analyze")

    outputs = _reference_apply(config, columns, crosses, splits, vocabularies, boundaries,
                               train_crosses)
    del train_crosses
    lap("apply")

    os.makedirs(output_dir, exist_ok=True)
    output_bytes = 0
    for split_name, table in outputs.items():
        path = os.path.join(output_dir, f"{split_name}.parquet")
        pq.write_table(table, path, compression="gzip", compression_level=GZIP_LEVEL)
        output_bytes += os.path.getsize(path)
    lap("write")
    seconds = clock - started

    examples_written = _write_examples(outputs, output_dir)
    lap("write_examples")
    rows_in = sum(t.num_rows for t in splits.values())
    # The same work writing our output format instead of Parquet: what the format costs
    # by itself, with no Beam and no TF graph (phases["write_examples"] for phases["write"]).
    examples_format_seconds = seconds - phases["write"] + phases["write_examples"]
    return {"seconds": round(seconds, 2), "rows_per_second": round(rows_in / seconds, 1),
            "examples_format_seconds": round(examples_format_seconds, 2),
            "examples_written": examples_written, "phases": phases, "rows_in": rows_in,
            "rows_out": {name: t.num_rows for name, t in splits.items()},
            "output": f"gzip (level {GZIP_LEVEL}) Parquet "
                      f"({', '.join(f'{s}.parquet' for s in outputs)}), {output_bytes:,} bytes",
            "vocabularies": {name: vocab.cast(pa.binary()).to_pylist()
                             for name, vocab in vocabularies.items()}}


# ---------------------------------------------------------------------------------------
# Agreement, report, results file


def agreement(ours: dict, reference: dict) -> dict:
    """Where the two must agree: split sizes and the token sets of the vocabularies."""
    import tensorflow_transform as tft

    tft_output = tft.TFTransformOutput(ours["output_dir"])
    vocabularies = {}
    for name, tokens in reference["vocabularies"].items():
        ours_tokens = tft_output.vocabulary_by_name(name)
        vocabularies[name] = {"ours": len(ours_tokens), "reference": len(tokens),
                              "same_tokens": set(ours_tokens) == set(tokens),
                              "same_order": list(ours_tokens) == list(tokens)}
    return {"rows_agree": (ours["rows_in"] == reference["rows_in"]
                           and ours["rows_out"] == reference["rows_out"]
                           == reference["examples_written"]),
            "rows_out": {"ours": ours["rows_out"], "reference": reference["rows_out"]},
            "vocab_agree": all(v["same_tokens"] for v in vocabularies.values()),
            "vocabularies": vocabularies}


def cost_line(runs: list[dict], key: str) -> tuple[float, float]:
    """(fixed seconds, seconds per million rows) of the line through the two runs."""
    (small, large) = sorted(runs, key=lambda r: r["rows"])
    per_row = (large[key] - small[key]) / (large["rows"] - small["rows"])
    return small[key] - per_row * small["rows"], per_row * MILLION


def goals(name: str, summary: dict) -> dict[str, str]:
    goal = GOALS.get(name, {})
    largest = summary["runs"][-1]
    verdicts = {}
    if "fixed_seconds" in goal:
        fixed = summary["ours_fixed_seconds"]
        verdicts[f"fixed cost at most {goal['fixed_seconds']:g} s"] = (
            f"{'PASS' if fixed <= goal['fixed_seconds'] else 'MISS'} ({fixed:.1f} s)")
    if "million_rows_seconds" in goal:
        key = f"1M rows in at most {goal['million_rows_seconds']:g} s"
        verdicts[key] = (f"{'PASS' if largest['ours_seconds'] <= goal['million_rows_seconds'] else 'MISS'}"
                         f" ({largest['ours_seconds']:.1f} s)" if largest["rows"] == MILLION
                         else f"n/a (largest run {largest['rows']:,} rows)")
    if "ratio" in goal:
        ratio = largest["ours_vs_reference"]
        verdicts[f"at most {goal['ratio']:g}x the reference at {largest['rows']:,} rows"] = (
            f"{'PASS' if ratio <= goal['ratio'] else 'MISS'} ({ratio:.2f}x)")
    return verdicts


def markdown_table(name: str, summary: dict) -> str:
    lines = [f"| {name} | rows | ours s | ours rows/s | reference s | reference rows/s "
             "| ours / reference | reference writing tf.Examples s | ours / that |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in summary["runs"]:
        examples_format = run["reference_examples_format_seconds"]
        for mode, ours in run["ours"].items():
            lines.append(f"| {mode} | {run['rows']:,} | {ours['seconds']:.1f} | "
                         f"{ours['rows_per_second']:,.0f} | {run['reference_seconds']:.1f} | "
                         f"{run['reference_rows_per_second']:,.0f} | "
                         f"{ours['seconds'] / run['reference_seconds']:.2f}x | "
                         f"{examples_format:.1f} | {ours['seconds'] / examples_format:.2f}x |")
    lines.append(f"| cost line ({IN_PROCESS}) | fixed + per 1M rows | "
                 f"{summary['ours_fixed_seconds']:.1f} s + {summary['ours_seconds_per_million']:.1f} s"
                 f" | | {summary['reference_fixed_seconds']:.1f} s + "
                 f"{summary['reference_seconds_per_million']:.1f} s | | | | |")
    return "\n".join(lines)


def _print_checks(name: str, rows: int, checks: dict) -> None:
    print(f"bench: {name} {rows:,} rows: agreement: rows "
          f"{'OK' if checks['rows_agree'] else 'DIFFER'} {checks['rows_out']}; vocabularies "
          + ", ".join(f"{vocab} {v['ours']}/{v['reference']} "
                      f"{'same' if v['same_tokens'] else 'DIFFER'}"
                      f"{' (same order)' if v['same_order'] else ''}"
                      for vocab, v in checks["vocabularies"].items()), flush=True)


def run_size(name: str, rows: int, args, pipeline_args, work_dir: str) -> dict:
    """One dataset at one size: generate, reference, ours (each mode), agreement."""
    started = time.perf_counter()
    config_path, input_glob = common.write_synthetic(name, os.path.join(work_dir, "raw"), rows,
                                                     shards=args.shards)
    generate_seconds = time.perf_counter() - started
    config = common.load_config(config_path)
    # The reference splits train/eval only; compare like with like.
    config = dataclasses.replace(config, split=dataclasses.replace(config.split,
                                                                   validation_fraction=0.0))
    paths = wd_io.match_input(input_glob)
    common.log(f"{name}: generated {rows:,} rows in {len(paths)} CSV file(s) "
               f"({sum(os.path.getsize(p) for p in paths):,} bytes) in {generate_seconds:.1f} s")
    modes = {IN_PROCESS: pipeline_args}
    if args.multi_processing:
        modes[MULTI_PROCESSING] = list(pipeline_args) + list(MULTI_PROCESSING_ARGS)
    # Each side `repeats` times, interleaved, the faster run counting: one run moves by
    # 10-20% when a neighbour takes the second core for a moment.
    runs = [(run_reference(config, paths, os.path.join(work_dir, "reference")),
             {mode: run_ours(config, input_glob, os.path.join(work_dir, f"transform_{mode}"),
                             mode_args, mode) for mode, mode_args in modes.items()})
            for _ in range(args.repeats)]
    reference = dict(min((r for r, _ in runs), key=lambda r: r["seconds"]),
                     examples_format_seconds=min(r["examples_format_seconds"] for r, _ in runs))
    ours = {mode: min((o[mode] for _, o in runs), key=lambda o: o["seconds"]) for mode in modes}
    common.log(f"{name}: reference: {reference['seconds']:.1f} s "
               f"({reference['rows_per_second']:,.0f} rows/s), phases {reference['phases']}, "
               f"output {reference['output']}")
    checks = agreement(ours[IN_PROCESS], reference)
    _print_checks(name, rows, checks)
    return {"rows": rows, "config": config.source, "config_digest": config.digest,
            "generate_seconds": round(generate_seconds, 2),
            "ours_seconds": ours[IN_PROCESS]["seconds"],
            "reference_seconds": reference["seconds"],
            "reference_rows_per_second": reference["rows_per_second"],
            "ours_vs_reference": round(ours[IN_PROCESS]["seconds"] / reference["seconds"], 3),
            "reference_examples_format_seconds": reference["examples_format_seconds"],
            "ours_vs_reference_examples_format": round(
                ours[IN_PROCESS]["seconds"] / reference["examples_format_seconds"], 3),
            "ours": {mode: {k: v for k, v in run.items() if k != "output_dir"}
                     for mode, run in ours.items()},
            "reference": {k: v for k, v in reference.items() if k != "vocabularies"},
            "checks": checks}


def run_dataset(name: str, args, pipeline_args, work_dir: str) -> dict:
    runs = [run_size(name, rows, args, pipeline_args, os.path.join(work_dir, name))
            for rows in args.sizes]
    summary = {"runs": runs}
    for side in ("ours", "reference"):
        fixed, per_million = cost_line(runs, f"{side}_seconds")
        summary[f"{side}_fixed_seconds"] = round(fixed, 2)
        summary[f"{side}_seconds_per_million"] = round(per_million, 2)
    summary["goals"] = goals(name, summary)
    return summary


def _vocabulary_files(transform_dir: str) -> dict[str, bytes]:
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(transform_dir)
    assets = os.path.join(transform_dir, "transform_fn", "assets")
    files = {}
    for name in sorted(n for n in os.listdir(assets) if n.startswith("vocab_")):
        with open(output.vocabulary_file_by_name(name), "rb") as f:
            files[name] = f.read()
    return files


def run_window(args, work_dir: str) -> dict:
    """A night with ``[analysis] window_days = N`` (its earlier days in the analyzer cache)
    against a one-day night, and its vocabularies against one analysis of all N days."""
    root = os.path.join(work_dir, "window")
    shutil.rmtree(root, ignore_errors=True)
    synthetic.write_log(os.path.join(root, "logs"), days=args.window_days,
                        rows_per_day=args.window_rows, seed=0, shards=args.shards)
    template = os.path.join(root, "logs", "day={date}", "*.csv")
    dates = orchestrate.available_days(template)
    one_day = common.load_config()
    windowed = dataclasses.replace(one_day, analysis=cfg.AnalysisParams(
        window_days=args.window_days))

    def night(config, date: str, name: str, input_glob: str | None = None) -> float:
        window = orchestrate.analysis_window(config, os.path.join(root, "work"), template, date)
        started = time.perf_counter()
        transform_job.run_transform(config, input_glob or template.replace("{date}", date),
                                    os.path.join(root, name), window=window,
                                    log=lambda line: common.log(f"window: {name}: {line}"))
        return time.perf_counter() - started

    # The nights before: one run whose window is the first N - 1 days fills the cache.
    warm = night(windowed, dates[-2], "warm")
    # Each night `repeats` times, interleaved, the faster of each: one run of 10-15 s moves
    # by more than the 1.3x being judged when a neighbour takes the second core for a moment.
    # (The new day is never read from the cache, so a second windowed night does the same.)
    windowed_night, one_day_night = (min(times) for times in zip(*(
        (night(windowed, dates[-1], "windowed"), night(one_day, dates[-1], "one_day"))
        for _ in range(args.repeats))))
    full = night(one_day, dates[-1], "full", template.replace("{date}", "*"))
    ratio = windowed_night / one_day_night
    same = _vocabulary_files(os.path.join(root, "windowed")) == _vocabulary_files(
        os.path.join(root, "full"))
    result = {"window_days": args.window_days, "rows_per_day": args.window_rows,
              "one_day_night_seconds": round(one_day_night, 2),
              "window_night_seconds": round(windowed_night, 2),
              "window_vs_one_day": round(ratio, 3),
              "cache_fill_seconds": round(warm, 2), "full_analysis_seconds": round(full, 2),
              "vocabularies_equal_full_analysis": same,
              "goal": f"at most {WINDOW_GOAL_RATIO:g}x a one-day night: "
                      f"{'PASS' if ratio <= WINDOW_GOAL_RATIO else 'MISS'} ({ratio:.2f}x); "
                      f"vocabularies equal a full {args.window_days}-day analysis: "
                      f"{'yes' if same else 'NO'}"}
    common.log(f"window: {result['goal']}")
    return result


def main(argv=None) -> dict:
    args, pipeline_args = parse_args(argv)
    # Imports before any clock starts: neither side is charged for loading TFT (or Arrow,
    # imported with this module).
    import tensorflow_transform.beam  # noqa: F401

    transform_job.quiet_beam_logs()
    common.log(f"{os.cpu_count()} CPU(s), {common.cpu_model()}")
    with common.work_dir(args.work_dir, "bench-transform-") as work_dir:
        datasets = {name: run_dataset(name, args, pipeline_args, work_dir)
                    for name in args.datasets}
        window = run_window(args, work_dir) if args.window_days > 1 else None
    print()
    for name, summary in datasets.items():
        print(markdown_table(name, summary))
        print()
        for goal, verdict in summary["goals"].items():
            print(f"- {name}: {goal}: {verdict}")
        print()
    if window is not None:
        print(f"- window_days = {window['window_days']} ({window['rows_per_day']:,} rows a "
              f"day): night {window['window_night_seconds']:.1f} s, one-day night "
              f"{window['one_day_night_seconds']:.1f} s; {window['goal']}")
        print()
    result = {"bench": "transform", "smoke": args.smoke, "sizes": args.sizes,
              "shards": args.shards, "cpus": os.cpu_count(), "cpu_model": common.cpu_model(),
              "datasets": datasets, "window": window}
    print(json.dumps(result), flush=True)
    merge_results(args.out, RESULTS_KEY, result)
    disagree = [f"{name} at {run['rows']:,} rows" for name, s in datasets.items()
                for run in s["runs"]
                if not (run["checks"]["rows_agree"] and run["checks"]["vocab_agree"])]
    if window is not None and not window["vocabularies_equal_full_analysis"]:
        disagree.append(f"the {window['window_days']}-day window's vocabularies")
    if disagree:
        raise SystemExit(f"bench: the reference and our job disagree ({', '.join(disagree)}; "
                         "see 'agreement' above); their times are not a fair comparison")
    return result


if __name__ == "__main__":
    main()
