"""Batch scoring, the paper's ranking step (section 2): candidates → the top K items per query.

Each input row is one (query, candidate item) pair in the config's raw format: in the paper,
one of the ~100s of apps retrieval returned for a user in a context. Rows are read by the
project's reader (``pipeline.io``: the same validation, the same dead letters), scored by
the exported serving SavedModel through Beam's ``RunInference``, and reduced per query
(``serving.query_columns``) to the K best items (``serving.item_column``)::

    <out>/top_k-SSSSS-of-NNNNN.jsonl  {"query": {...}, "candidates": [{"item", "score"}, ...]}
                                      candidates sorted by score, best first
    <out>/dead_letter-*.jsonl         rows that did not parse: file, line, reason, raw row
    <out>/column_stats.json           the candidates' column statistics
    <out>/skew.json                   their drift from the model's training data, per column
    <out>/summary.json                rows scored, queries, dead letters, skew, seconds

The export is all it needs: the feature config is its copy in ``assets.extra/config.toml``.
Rows to score need no label; a label column, when a file has one, is not read (nor checked).
Output goes to ``<out>.partial`` and is promoted only when complete, ``summary.json`` last.

The unit of work is a record batch (up to ``pipeline.io.ROWS_PER_BATCH`` rows), from the
reader through the model to a first top-K inside the batch; only the rows that can still
make a query's top K become Python elements on their way to the per-query combine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Callable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions)
from tfx_bsl.coders import example_coder

from pipeline import beam_job
from pipeline import column_stats
from pipeline import io as wd_io
from pipeline import validation
from trainer import export
from transforms import config as cfg
from transforms import paths

LOG = logging.getLogger("widedeep")


def _fix_beam_memory_probe() -> None:
    """Beam 2.77 imports ``resource`` together with a torch-only module, so without torch
    RunInference warns "Resource module is not available" on every batch; the module is
    there on every POSIX host."""
    import resource

    from apache_beam.ml.inference import base

    if getattr(base, "resource", None) is None:
        base.resource = resource


_fix_beam_memory_probe()
SUMMARY_FILE = "summary.json"
SKEW_FILE = "skew.json"
TOP_K_PREFIX = "top_k"
# Rows per serving_default call: enough that the per-call overhead vanishes and the hidden
# layers' matmuls are big enough for TF to split across threads. On the default model the
# CPU time per row is flat from 2,048 to 16,384 rows; the activations (rows x 1024 floats)
# stay small.
ROWS_PER_CALL = 4096


class ScoreError(beam_job.DataJobError):
    """The scoring job ran but its output must not be used (no rows, too many dead letters)."""


def export_config(export_dir: str) -> cfg.FeatureConfig:
    """The feature config an export was trained with (its assets.extra copy), local or on
    gs:// (a Dataflow job reads its export from there)."""
    path = paths.join(export_dir, export.EXTRA_DIR, export.CONFIG_FILE)
    if not paths.exists(path):
        raise wd_io.InputError(
            f"{export_dir}: not a widedeep serving export ({path} is missing; exports written "
            f"by `widedeep run` carry their feature config there)")
    with paths.local_copy(path) as local:
        return dataclasses.replace(cfg.load_config(local), source=path)


def scoring_config(config: cfg.FeatureConfig) -> cfg.FeatureConfig:
    """The config for reading rows to score: the label column is ignored, not validated."""
    columns = tuple(dataclasses.replace(c, kind=cfg.IGNORE) if c.kind == cfg.LABEL else c
                    for c in config.columns)
    return dataclasses.replace(config, columns=columns)


def _check_serving_columns(config: cfg.FeatureConfig) -> None:
    serving = config.serving
    if not serving.item_column:
        raise cfg.ConfigError(f"{config.source}: key 'serving.item_column': is required to "
                              "score (the column that names a candidate)")
    if not serving.query_columns:
        raise cfg.ConfigError(f"{config.source}: key 'serving.query_columns': is required to "
                              "score (the columns that name a query, e.g. user and context)")
    for key, names in (("query_columns", serving.query_columns),
                       ("item_column", (serving.item_column,))):
        for name in names:
            kind = config.column(name).kind
            if kind in (cfg.IGNORE, cfg.LABEL):
                raise cfg.ConfigError(f"{config.source}: key 'serving.{key}': '{name}' is "
                                      f"the {kind} column, which scoring does not read")


class ServingSignatureHandler(ModelHandler[pa.RecordBatch, PredictionResult, Callable]):
    """RunInference's handler for our export: a record batch of raw rows → their scores.

    Why not Beam's stock ``TFModelHandlerNumpy``/``TFModelHandlerTensor``: they load a Keras
    model (``tf.keras.models.load_model``), ``tf.stack`` one numpy array or tensor per
    element and call ``model(batch)``. Our export is a ``tf.Module`` whose entry point is
    its ``serving_default`` signature on *serialized raw tf.Examples*: it parses them itself
    (the config's serving feature spec, with a default for each missing feature) and runs
    the TFT transform graph before the model, exactly as serving does. Here the unit of
    work is a whole Arrow record batch from the reader, encoded to tf.Examples in C++
    (``tfx_bsl``'s ``RecordBatchToExamples``) and sent in slices to that signature: no
    Python per row. The reader's batches already are batches, so Beam's BatchElements is
    skipped (it would only wrap each record batch in a list).
    """

    def __init__(self, export_dir: str, feature_columns: Sequence[str]):
        super().__init__()
        self.export_dir = export_dir
        self.feature_columns = list(feature_columns)

    def load_model(self):
        return export.load_predict_fn(self.export_dir)

    def run_inference(self, batch: pa.RecordBatch, model, inference_args=None):
        # Only model inputs go into the examples: keys and ignored columns would just be
        # serialized and parsed again for nothing.
        serialized = example_coder.RecordBatchToExamples(batch.select(self.feature_columns))
        return [PredictionResult(batch, export.predict_in_batches(model, serialized,
                                                                  ROWS_PER_CALL))]

    def get_num_bytes(self, batch: pa.RecordBatch) -> int:
        return batch.nbytes  # the default pickles the batch just to measure it

    def should_skip_batching(self) -> bool:
        return True


def _scalar_column(batch: pa.RecordBatch, column: cfg.ColumnSpec) -> pa.Array:
    """One value per row: the single value of a list column, a multivalent one joined."""
    values = batch.column(column.name)
    if column.kind == cfg.MULTIVALENT:
        return pc.binary_join(values, column.separator.encode())
    return values.flatten()


def _python_values(values: pa.Array) -> list:
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        return [v.decode("utf-8") for v in values.to_pylist()]
    return values.to_pylist()


class TopCandidatesInBatch(beam.DoFn):
    """Scored record batch → (query, (-score, item)) for each row still in its query's top K.

    A first top K inside the batch, vectorised in Arrow: a row that is not among the K best
    of its query in its own batch cannot be among the K best of all batches, so only the
    survivors become Python elements for the per-query combine. Ties in score go to the
    smaller item, as in the final combine, so the result does not depend on batching.
    """

    def __init__(self, query_columns: Sequence[cfg.ColumnSpec], item_column: cfg.ColumnSpec,
                 top_k: int):
        self.query_columns = tuple(query_columns)
        self.item_column = item_column
        self.top_k = top_k
        self.rows_scored = beam.metrics.Metrics.counter(beam_job.METRICS_NAMESPACE, "rows_scored")

    def process(self, result: PredictionResult):
        batch, scores = result.example, np.asarray(result.inference, dtype=np.float32)
        n = batch.num_rows
        self.rows_scored.inc(n)
        if n == 0:
            return
        query_names = [f"q{i}" for i in range(len(self.query_columns))]
        table = pa.table([_scalar_column(batch, c) for c in self.query_columns]
                         + [pa.array(scores), _scalar_column(batch, self.item_column)],
                         names=query_names + ["score", "item"])
        order = pc.sort_indices(table, sort_keys=[(q, "ascending") for q in query_names]
                                + [("score", "descending"), ("item", "ascending")])
        table = table.take(order)
        # Rank of each row within its query: rows since the query's first (sorted) row.
        new_query = np.zeros(n, dtype=bool)
        new_query[0] = True
        for name in query_names:
            values = table.column(name).combine_chunks()
            new_query[1:] |= pc.not_equal(values[1:], values[:-1]).to_numpy(
                zero_copy_only=False)
        positions = np.arange(n)
        rank = positions - np.maximum.accumulate(np.where(new_query, positions, 0))
        table = table.filter(pa.array(rank < self.top_k))
        queries = zip(*(_python_values(table.column(q).combine_chunks()) for q in query_names))
        items = _python_values(table.column("item").combine_chunks())
        for query, score, item in zip(queries, table.column("score").to_pylist(), items):
            yield query, (-score, item)


class TopCandidatesPerQuery(beam.PTransform):
    """Scored record batches → (query tuple, [(-score, item), ...] best first, ≤ K)."""

    def __init__(self, config: cfg.FeatureConfig, top_k: int):
        super().__init__()
        self.query_columns = [config.column(c) for c in config.serving.query_columns]
        self.item_column = config.column(config.serving.item_column)
        self.top_k = top_k

    def expand(self, scored):
        return (scored
                | "TopInBatch" >> beam.ParDo(TopCandidatesInBatch(
                    self.query_columns, self.item_column, self.top_k))
                # Smallest (-score, item): best score first, ties to the smaller item.
                | "TopPerQuery" >> beam.combiners.Top.SmallestPerKey(self.top_k))


def _ranking_to_json(query_columns: Sequence[str]):
    counter = beam.metrics.Metrics.counter(beam_job.METRICS_NAMESPACE, "queries")

    def to_json(query_and_candidates) -> str:
        query, candidates = query_and_candidates
        counter.inc()
        return json.dumps({"query": dict(zip(query_columns, query)),
                           "candidates": [{"item": item, "score": -negative_score}
                                          for negative_score, item in candidates]},
                          ensure_ascii=False)

    return to_json


def build_pipeline(pipeline: beam.Pipeline, config: cfg.FeatureConfig, export_dir: str,
                   input_paths: Sequence[str], output_dir: str, top_k: int) -> None:
    """Adds the scoring job to `pipeline`, writing into `output_dir`.

    `config` is the export's feature config; rows are read with its label ignored.
    """
    read_config = scoring_config(config)
    rows, dead = pipeline | "ReadCandidates" >> wd_io.ReadImpressions(
        read_config, input_paths, optional_columns=(config.label.column,), count_missing=True)
    _ = rows | "ColumnStats" >> column_stats.ColumnStatistics(read_config, output_dir)
    handler = ServingSignatureHandler(export_dir, [c.name for c in config.feature_columns])
    _ = (rows
         | "Score" >> RunInference(handler)
         | "TopKPerQuery" >> TopCandidatesPerQuery(config, top_k)
         | "RankingToJson" >> beam.Map(_ranking_to_json(config.serving.query_columns))
         | "WriteTopK" >> beam.io.WriteToText(paths.join(output_dir, TOP_K_PREFIX),
                                              file_name_suffix=".jsonl"))
    _ = (dead
         | "DeadLetterToJson" >> beam.Map(beam_job.count_dead_letter)
         | "WriteDeadLetters" >> beam.io.WriteToText(
             paths.join(output_dir, "dead_letter"), file_name_suffix=".jsonl"))


def scoring_options(pipeline_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the command line; locally, worker threads on every CPU by default.

    Threads, not processes: TensorFlow releases the GIL while the model runs, so one worker
    thread reads and encodes the next record batch while another is in the model, and all
    threads share one loaded model (a process per worker would load it again).
    """
    options = beam_job.options_from(pipeline_args)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "DirectRunner"
        direct = options.view_as(DirectOptions)
        given = " ".join(pipeline_args)
        if "--direct_running_mode" not in given:
            direct.direct_running_mode = "multi_threading"
        if "--direct_num_workers" not in given:
            direct.direct_num_workers = os.cpu_count() or 1
    return options


def training_skew(config: cfg.FeatureConfig, export_dir: str, out_dir: str,
                  missing_numeric: dict[str, int], log: Callable[[str], None]) -> dict | None:
    """The candidates' columns against the model's training data, by the measures (and
    thresholds) of the nightly drift check; written to ``<out>/skew.json``. Warns, never
    stops: the model serves these rows either way, and a person should know."""
    stats_path = paths.join(out_dir, column_stats.STATS_FILE)
    column_stats.add_numeric_missing(stats_path, missing_numeric)
    training_path = paths.join(export_dir, export.EXTRA_DIR, column_stats.STATS_FILE)
    if not paths.exists(training_path):
        log(f"score: no training statistics in {export_dir} (an older export); skew not "
            "measured")
        return None
    table = validation.drift(config, paths.read_json(stats_path), paths.read_json(training_path))
    paths.write_json(paths.join(out_dir, SKEW_FILE), table)
    over = validation.over_threshold(table)
    if over:
        log(f"score: WARNING: {len(over)} column(s) unlike the model's training data: "
            + ", ".join(f"{name} ({entry['measure']} {entry['value']:.2f} > "
                        f"{entry['threshold']:g})" for name, entry in over.items())
            + f"; details in {paths.join(out_dir, SKEW_FILE)}")
    return {"file": SKEW_FILE, "columns": len(table), "over_threshold": sorted(over)}


def run_score(export_dir: str, input_pattern: str, out_dir: str, *, top_k: int | None = None,
              pipeline_args: Sequence[str] = (),
              log: Callable[[str], None] = LOG.info) -> dict | None:
    """Scores the rows of `input_pattern` with an export; returns the summary (also written
    to ``<out_dir>/summary.json``), or None when ``--template_location`` only built a
    Dataflow template."""
    config = export_config(export_dir)
    _check_serving_columns(config)
    top_k = config.serving.top_k if top_k is None else top_k
    if top_k < 1:
        raise cfg.ConfigError(f"top K must be >= 1, got {top_k} (--top-k, or serving.top_k "
                              f"in {config.source})")
    options = scoring_options(pipeline_args)
    beam_job.check_workers_can_reach(options, model=export_dir, input=input_pattern, out=out_dir)
    input_paths = wd_io.match_input(input_pattern)
    wd_io.check_headers(input_paths, scoring_config(config), optional=(config.label.column,))
    log(f"score: {len(input_paths)} input file(s) from {input_pattern}, top {top_k} "
        f"{config.serving.item_column} per {'+'.join(config.serving.query_columns)}")

    partial_dir = beam_job.fresh_partial_dir(out_dir)

    started = time.time()
    pipeline = beam_job.new_pipeline(options)
    build_pipeline(pipeline, config, paths.absolute(export_dir), input_paths, partial_dir,
                   top_k)
    counts = beam_job.run(pipeline)
    elapsed = time.time() - started
    if counts is None:
        log(beam_job.template_message("score", options, out_dir))
        return None

    job = beam_job.JobCounts.of(counts)
    rows_scored = job.main.get("rows_scored", 0)
    summary = {
        "export_dir": paths.absolute(export_dir),
        "input": input_pattern,
        "input_files": len(input_paths),
        "top_k": top_k,
        "query_columns": list(config.serving.query_columns),
        "item_column": config.serving.item_column,
        "rows_in": job.rows_read,
        "rows_scored": rows_scored,
        "queries": job.main.get("queries", 0),
        **job.dead_letter_summary(),
        "seconds": round(elapsed, 2),
        "candidates_per_second": round(rows_scored / elapsed, 1) if elapsed else None,
        "config_digest": config.digest,
        "skew": training_skew(config, export_dir, partial_dir,
                              counts.get(wd_io.MISSING_NUMERIC_NAMESPACE, {}), log),
    }
    paths.write_json(paths.join(partial_dir, SUMMARY_FILE), summary)
    if job.rows_read == 0:
        raise ScoreError(f"score: no rows in {input_pattern}")
    beam_job.check_dead_letter_limit("score", job, config, partial_dir, ScoreError)
    paths.promote(partial_dir, out_dir, marker=SUMMARY_FILE)
    log(f"score: {rows_scored} candidates in {elapsed:.1f}s "
        f"({summary['candidates_per_second']:.0f}/s), {summary['queries']} queries, "
        f"dead-lettered {job.rows_dead}" + (f" {job.dead_by_reason}" if job.rows_dead else "")
        + f" → {out_dir}")
    return summary
