"""The data-generation job (paper section 4.1): raw impressions → transformed TFRecords.

Read and validate → split train/eval → TFT analyzes the *train* split only (vocabularies with
the min-count threshold, quantiles) and transforms both → sharded gzip TFRecords, the
transform graph, raw eval examples (the gate scores every model, old and new, from raw
input through its own transform graph) and stats.json.

Output is written to ``<dir>.partial`` and promoted only when complete, ``stats.json``
last (:mod:`pipeline.beam_job`), so a killed job never leaves a transform directory that
later stages could trust.
"""

from __future__ import annotations

import logging
import struct
import tempfile
import time
from typing import Callable, Sequence

import apache_beam as beam
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import beam_job
from pipeline import io as wd_io
from trainer import data
from transforms import config as cfg
from transforms import features
from transforms import paths

LOG = logging.getLogger("widedeep")
STATS_FILE = data.STATS_FILE  # written last: the output's completion marker
METRICS_NAMESPACE = beam_job.METRICS_NAMESPACE


class TransformError(beam_job.DataJobError):
    """The job ran but its output must not be used (e.g. too many rows dead-lettered)."""


def _count_rows(label: str):
    counter = beam.metrics.Metrics.counter(METRICS_NAMESPACE, label)

    def count(batch):
        counter.inc(batch.num_rows)
        return batch

    return count


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c  # ships with apache-beam[gcp]; C implementation

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def frame_tfrecords(records: list[bytes]) -> bytes:
    """Records in TFRecord framing (length, masked CRC32C of length, data, CRC of data)."""
    pack_crc = _CRC.pack
    headers: dict[int, bytes] = {}  # records of a batch share a handful of lengths
    parts: list[bytes] = []
    append = parts.append
    for record in records:
        size = len(record)
        header = headers.get(size)
        if header is None:
            length = _LENGTH.pack(size)
            header = headers[size] = length + pack_crc(_masked_crc32c(length))
        append(header)
        append(record)
        append(pack_crc(_masked_crc32c(record)))
    return b"".join(parts)


def _framed_examples(batch_and_passthrough) -> bytes:
    from tfx_bsl.coders import example_coder

    batch = batch_and_passthrough[0] if isinstance(batch_and_passthrough, tuple) else batch_and_passthrough
    return frame_tfrecords(example_coder.RecordBatchToExamples(batch))


class _FramedTFRecordSink(filebasedsink.FileBasedSink):
    """A TFRecord sink whose elements are already framed blocks of many records.

    WriteToTFRecord takes one element per record; at a million rows its per-element cost
    and a gzip call per record dominated the whole job. One element per record batch keeps
    the output byte-compatible TFRecords at a fraction of the cost.
    """

    def write_encoded_record(self, file_handle, value):
        file_handle.write(value)


class WriteExamples(beam.PTransform):
    """Record batches → sharded gzip TFRecords of tf.Examples (`<prefix>-SSSSS-of-NNNNN...`)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def expand(self, batches):
        sink = _FramedTFRecordSink(self.prefix, coder=beam.coders.BytesCoder(),
                                   file_name_suffix=".tfrecord.gz",
                                   mime_type="application/octet-stream",
                                   compression_type=CompressionTypes.GZIP)
        return (batches
                | "FrameExamples" >> beam.Map(_framed_examples)
                | "Write" >> beam.io.Write(sink))


def tensor_adapter_config(config: cfg.FeatureConfig):
    """TFXIO's description of our record batches, so TFT reads them as tensors directly."""
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.public import tfxio
    from tfx_bsl.tfxio import tensor_representation_util

    # The reader's Arrow layout, and tensors of the same raw feature spec TFT is given.
    schema = schema_utils.schema_from_feature_spec(features.raw_feature_spec(config))
    return tfxio.TensorAdapterConfig(
        wd_io.arrow_schema(config),
        tensor_representation_util.InferTensorRepresentationsFromSchema(schema))


def pipeline_options(pipeline_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the arguments widedeep did not parse; the DirectRunner by default.

    Everything a user passes (``--runner DataflowRunner --project ... --setup_file``)
    reaches the runner unchanged. Workers get our code from the package that
    ``--setup_file`` builds. (Beam 2.77 also saves the main session by default on Dataflow,
    as cloudpickle is its default pickler; widedeep needs nothing from it.)
    """
    options = PipelineOptions(list(pipeline_args))
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "DirectRunner"
    return options


def build_pipeline(pipeline: beam.Pipeline, config: cfg.FeatureConfig, input_paths: Sequence[str],
                   output_dir: str, eval_paths: Sequence[str] = ()) -> None:
    """Adds the whole job to `pipeline`, writing into `output_dir`."""
    import tensorflow_transform.beam as tft_beam

    rows, dead = pipeline | "ReadImpressions" >> wd_io.ReadImpressions(config, input_paths)
    if eval_paths:
        train_rows = rows
        eval_rows, eval_dead = pipeline | "ReadEvalImpressions" >> wd_io.ReadImpressions(
            config, eval_paths)
        dead = (dead, eval_dead) | "AllDeadLetters" >> beam.Flatten()
    else:
        train_rows, eval_rows = rows | "SplitTrainEval" >> wd_io.SplitTrainEval(config.split)
    validation_rows = None
    if config.split.validation_fraction:
        train_rows, validation_rows = train_rows | "HoldOutValidation" >> wd_io.HoldOut(
            config, config.split.validation_fraction)
        validation_rows = validation_rows | "CountValidation" >> beam.Map(
            _count_rows("rows_validation"))
    train_rows = train_rows | "CountTrain" >> beam.Map(_count_rows("rows_train"))
    eval_rows = eval_rows | "CountEval" >> beam.Map(_count_rows("rows_eval"))

    adapter = tensor_adapter_config(config)
    (transformed_train, _), transform_fn = (
        (train_rows, adapter)
        | "AnalyzeAndTransformTrain" >> tft_beam.AnalyzeAndTransformDataset(
            features.make_preprocessing_fn(config), output_record_batches=True))
    transformed_eval, _ = (
        ((eval_rows, adapter), transform_fn)
        | "TransformEval" >> tft_beam.TransformDataset(output_record_batches=True))

    if validation_rows is not None:
        transformed_validation, _ = (
            ((validation_rows, adapter), transform_fn)
            | "TransformValidation" >> tft_beam.TransformDataset(output_record_batches=True))
        _ = transformed_validation | "WriteValidation" >> WriteExamples(
            paths.join(output_dir, "validation"))

    _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output_dir)
    _ = transformed_train | "WriteTrain" >> WriteExamples(paths.join(output_dir, "train"))
    _ = transformed_eval | "WriteEval" >> WriteExamples(paths.join(output_dir, "eval"))
    _ = eval_rows | "WriteRawEval" >> WriteExamples(paths.join(output_dir, "eval_raw"))
    _ = (dead
         | "DeadLetterToJson" >> beam.Map(beam_job.count_dead_letter)
         | "WriteDeadLetters" >> beam.io.WriteToText(
             paths.join(output_dir, "dead_letter"), file_name_suffix=".jsonl"))


def run_transform(config: cfg.FeatureConfig, input_pattern: str, output_dir: str, *,
                  eval_input_pattern: str | None = None, pipeline_args: Sequence[str] = (),
                  log: Callable[[str], None] = LOG.info) -> dict | None:
    """Runs the job; returns stats (also written to ``<output_dir>/stats.json``), or None
    when ``--template_location`` only built a Dataflow template."""
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    if config.split.method == "eval_input" and not eval_input_pattern:
        raise wd_io.InputError(f"{config.source}: split.method = \"eval_input\" needs "
                               "--eval-input GLOB")
    options = pipeline_options(pipeline_args)
    beam_job.check_workers_can_reach(options, input=input_pattern,
                                     eval_input=eval_input_pattern, work_dir=output_dir)
    input_paths = wd_io.match_input(input_pattern)
    eval_paths = wd_io.match_input(eval_input_pattern) if eval_input_pattern else []
    wd_io.check_headers(input_paths + eval_paths, config)
    log(f"transform: {len(input_paths)} input file(s) from {input_pattern}"
        + (f", {len(eval_paths)} eval file(s) from {eval_input_pattern}" if eval_paths else ""))

    partial_dir = beam_job.fresh_partial_dir(output_dir)
    temp_location = options.get_all_options().get("temp_location")

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="widedeep-tft-") as local_tmp:
        tft_temp = temp_location or local_tmp
        pipeline = beam.Pipeline(options=options)
        with tft_beam.Context(temp_dir=tft_temp):
            build_pipeline(pipeline, config, input_paths, partial_dir, eval_paths)
        counts = beam_job.run(pipeline)
    elapsed = time.time() - started
    if counts is None:
        log(beam_job.template_message("transform", options, output_dir))
        return None

    job = beam_job.JobCounts.of(counts)
    main, rows_read = job.main, job.rows_read
    rows_dead, dead_by_reason = job.rows_dead, job.dead_by_reason
    tft_output = tft.TFTransformOutput(partial_dir)
    stats = {
        "input": input_pattern,
        "eval_input": eval_input_pattern,
        "input_files": len(input_paths) + len(eval_paths),
        "rows_in": rows_read,
        "rows_out": {"train": main.get("rows_train", 0), "eval": main.get("rows_eval", 0),
                     **({"validation": main.get("rows_validation", 0)}
                        if config.split.validation_fraction else {})},
        **job.dead_letter_summary(),
        "vocabulary_sizes": {spec.vocab_name: tft_output.vocabulary_size_by_name(spec.vocab_name)
                             for spec in features.categorical_specs(config).values()
                             if not spec.hash_buckets},
        "seconds": round(elapsed, 2),
        "rows_per_second": round(rows_read / elapsed, 1) if elapsed else None,
        "config_digest": config.digest,
    }
    # Written even when the checks below fail, for the report; but then never promoted.
    paths.write_json(paths.join(partial_dir, STATS_FILE), stats)
    if rows_read == 0:
        raise TransformError(f"transform: no rows in {input_pattern}")
    # Dead letters first: when every row is malformed, an empty split is only the symptom.
    if rows_dead == rows_read:
        raise TransformError(f"transform: all {rows_read} rows were dead-lettered, by reason: "
                             f"{dead_by_reason}; see {partial_dir}/dead_letter-*.jsonl")
    beam_job.check_dead_letter_limit("transform", job, config, partial_dir, TransformError)
    if stats["rows_out"]["train"] == 0 or stats["rows_out"]["eval"] == 0:
        raise TransformError(f"transform: the split left train={stats['rows_out']['train']} "
                             f"eval={stats['rows_out']['eval']} rows; both need rows "
                             f"(check [split] in {config.source})")
    paths.promote(partial_dir, output_dir, marker=STATS_FILE)
    log(f"transform: {rows_read} rows in {elapsed:.1f}s ({stats['rows_per_second']:.0f} rows/s): "
        + ", ".join(f"{split} {n}" for split, n in stats["rows_out"].items()) + ", "
        f"dead-lettered {rows_dead}" + (f" {dead_by_reason}" if rows_dead else "")
        + f" → {output_dir}")
    return stats


def quiet_beam_logs() -> None:
    """Beam and TF log every bundle and graph at INFO/WARNING; people want our lines."""
    for name in ("apache_beam", "tensorflow", "absl", "tensorflow_transform", "tfx_bsl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # A failing DoFn is logged with its traceback by the worker, then raised again to the
    # driver, which reports it in one line (pipeline.beam_job.run): log it once, not thrice.
    for name in ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
