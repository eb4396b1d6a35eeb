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

import dataclasses
import functools
import hashlib
import logging
import queue
import struct
import tempfile
import threading
import time
import uuid
import zlib
from typing import Callable, Sequence

import apache_beam as beam
import google_crc32c  # ships with apache-beam[gcp]; C implementation
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from tfx_bsl.coders import example_coder

from pipeline import beam_job
from pipeline import column_stats
from pipeline import io as wd_io
from trainer import data
from transforms import config as cfg
from transforms import features
from transforms import paths

LOG = logging.getLogger("widedeep")
STATS_FILE = data.STATS_FILE  # written last: the output's completion marker


class TransformError(beam_job.DataJobError):
    """The job ran but its output must not be used (e.g. too many rows dead-lettered)."""


ROWS_VALID_COUNTER = "rows_valid"  # the job's own input rows that parsed
CACHE_COMPLETE = "COMPLETE"  # in a day's analyzer-cache dir, once a job that wrote it passed


def check_no_rows_lost(counts: dict[str, int], window: "Window | None" = None,
                       multi_processing: bool = False) -> None:
    """Every valid row read must land in exactly one split. Measured: with the DirectRunner's
    multi_processing mode (Beam 2.77), a 1M-row single-file input lost 16,000 to 99,000 of
    its last day's rows, differently on each run, without an error; nothing downstream can
    tell, so the job stops here."""
    if window is not None and window.train_on == "window":
        return  # earlier days' rows join train and validation, not counted as input
    read = counts.get(ROWS_VALID_COUNTER, 0)
    written = {split: counts.get(f"rows_{split}", 0) for split in ("train", "eval", "validation")}
    if read != sum(written.values()):
        hint = (" This has been seen with --direct_running_mode=multi_processing: run in the "
                "default in_process mode." if multi_processing else "")
        raise TransformError(
            f"transform: {read} valid rows were read but {sum(written.values())} written "
            f"({', '.join(f'{k} {v}' for k, v in written.items())}): rows were lost inside the "
            f"pipeline, so its output is not used.{hint}")


def _count_rows(name: str, label_column: str = ""):
    """Counts a split's rows (``rows_<split>``) and, given the label, its positives
    (``positives_<split>``): a shifted eval day shows as a different positive rate."""
    rows = beam.metrics.Metrics.counter(beam_job.METRICS_NAMESPACE, name)
    positives = beam.metrics.Metrics.counter(beam_job.METRICS_NAMESPACE,
                                             name.replace("rows_", "positives_", 1))

    def count(batch):
        rows.inc(batch.num_rows)
        if label_column:
            positives.inc(int(pc.sum(batch.column(label_column).flatten()).as_py() or 0))
        return batch

    return count


def _masked_crc32c(data: bytes) -> int:
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


def _framed_examples(batch: pa.RecordBatch) -> bytes:
    return frame_tfrecords(example_coder.RecordBatchToExamples(batch))


# zlib level of the TFRecords (readers see standard gzip, any level). Beam's GZIP files
# are level 6, which was the job's largest per-row cost: 28 s of 147 per million rows of
# the Criteo-shaped log (40 features a row). Level 1 deflates 3-4x faster and the files
# grow by about a fifth; they are intermediate data, read once or twice by training.
GZIP_LEVEL = 1


class _GzipWriter:
    """A file handle that encodes (``encode``: e.g. record batch → framed tf.Examples) and
    gzips what is written to it at GZIP_LEVEL on a thread of its own.

    The DirectRunner runs a bundle on one thread: gzip was a tenth of the job and encoding
    a sixth of that thread. zlib lets go of the GIL while it deflates, and the bundle's
    thread lets go of it inside Arrow and the TF graph, so this thread's work overlaps the
    next batch's (a run that skipped both was no faster).
    """

    _QUEUED = 4  # blocks waiting to be deflated, at most: memory stays bounded

    def __init__(self, raw, encode: Callable[[object], bytes] | None = None):
        self.raw, self.encode = raw, encode
        self._blocks: queue.Queue = queue.Queue(maxsize=self._QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._deflate_all, name="gzip", daemon=True)
        self._thread.start()

    def _deflate_all(self) -> None:
        deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = b""
        try:
            while (block := self._blocks.get()) is not None:
                self.raw.write(deflate.compress(self.encode(block) if self.encode else block))
            self.raw.write(deflate.flush())
        except BaseException as error:  # raised in the writer's thread by encode, write or close
            self._error = error
            while block is not None:  # take the rest, so that no write() waits forever
                block = self._blocks.get()

    def write(self, data) -> None:
        if self._error is not None:
            raise self._error
        self._blocks.put(data)

    def close(self) -> None:
        self._blocks.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        self.raw.close()


class _ExampleTFRecordSink(filebasedsink.FileBasedSink):
    """A gzip TFRecord sink whose elements are whole record batches, each written as its
    rows' tf.Examples.

    WriteToTFRecord takes one element per record; at a million rows its per-element cost
    and a gzip call per record dominated the whole job. One element per record batch keeps
    the output byte-compatible TFRecords at a fraction of the cost, and the batch is
    encoded on the file's writer thread (:class:`_GzipWriter`), not the bundle's.
    """

    def open(self, temp_path):
        return _GzipWriter(FileSystems.create(temp_path, self.mime_type,
                                              CompressionTypes.UNCOMPRESSED),
                           encode=_framed_examples)

    def write_record(self, file_handle, value):
        file_handle.write(value)  # no coder: the writer thread encodes the batch


class WriteExamples(beam.PTransform):
    """Record batches → sharded gzip TFRecords of tf.Examples (`<prefix>-SSSSS-of-NNNNN...`)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def expand(self, batches):
        sink = _ExampleTFRecordSink(self.prefix, coder=beam.coders.BytesCoder(),
                                    file_name_suffix=".tfrecord.gz",
                                    mime_type="application/octet-stream",
                                    compression_type=CompressionTypes.UNCOMPRESSED)
        return batches | "Write" >> beam.io.Write(sink)


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
    options = beam_job.options_from(pipeline_args)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "DirectRunner"
    return options


@dataclasses.dataclass(frozen=True)
class Window:
    """The days the analyzers see on a nightly run (``[analysis] window_days``): the job's
    own input is the new day; ``earlier`` maps each earlier day to its input files.

    A day is analysed once: its token counts and quantile sketches go to TFT's analyzer
    cache under ``cache_dir`` (one per config digest), and a later night whose window
    holds that day reads them instead of its rows.
    """
    new_day: str
    earlier: dict[str, list[str]]
    cache_dir: str
    train_on: str = "new_day"

    @functools.cached_property
    def earlier_keys(self) -> dict[str, str]:
        """Each earlier day's cache key (:func:`day_key`), listed once per job."""
        return {day: day_key(day, day_paths) for day, day_paths in self.earlier.items()}

    def _marker(self, key: str) -> str:
        from tensorflow_transform.beam import analyzer_cache

        return paths.join(self.cache_dir, analyzer_cache.DatasetKey(key).key, CACHE_COMPLETE)

    def cached_days(self) -> list[str]:
        """Earlier days whose cache a finished job wrote. (TFT writes a day's MANIFEST when
        the pipeline is built, before its entries exist: a killed job leaves one behind.)"""
        return [day for day, key in self.earlier_keys.items()
                if paths.exists(self._marker(key))]

    def mark_cached(self, new_day_key: str, cached: Sequence[str]) -> None:
        """After a job passed its checks: the days it analysed have a complete cache."""
        for day, key in [*self.earlier_keys.items(), (self.new_day, new_day_key)]:
            if day not in cached:
                paths.write_text(self._marker(key), "")


def cache_key(config: cfg.FeatureConfig) -> str:
    """Which analyzer cache a config reads: another config (or TFT, or this module's
    accumulator format) is another cache, so nothing stale is ever merged in."""
    import tensorflow_transform as tft

    return f"{config.digest}-tft{tft.__version__}-v1"


def day_key(day: str, day_paths: Sequence[str]) -> str:
    """A day's cache key: its date and a digest of its files' names and sizes, so a day
    whose export was redone is analysed again rather than read from a stale cache."""
    files = sorted((m.path, m.size_in_bytes) for r in FileSystems.match(list(day_paths))
                   for m in r.metadata_list)
    return f"day-{day}-{hashlib.sha256(repr(files).encode()).hexdigest()[:12]}"


def _train_parts(pipeline, config: cfg.FeatureConfig, name: str, input_paths: Sequence[str],
                 eval_paths: Sequence[str] = (), counter: str = "", counted: bool = True,
                 read_rows: list | None = None, eval_days: list | None = None):
    """(fit, validation or None, eval, dead letters) of one input: read, split, held out.
    ``counter`` counts the valid rows read, which the splits must account for; a read
    that is not ``counted`` (the second one of the same files) leaves the reader's counters
    alone. ``read_rows`` gets the rows of each read, before any split, and ``eval_days`` the
    days a "day" split sends to eval (:class:`pipeline.io.EvalDays`)."""
    def read(label: str, input_paths: Sequence[str]):
        rows, dead = pipeline | label >> wd_io.ReadImpressions(
            config, input_paths, count_missing=bool(counter), counted=counted)
        return (rows | f"Count{label}" >> beam.Map(_count_rows(counter)) if counter
                else rows), dead

    rows, dead = read(f"Read{name}", input_paths)
    if read_rows is not None:
        read_rows.append(rows)
    if eval_paths:
        train_rows = rows
        eval_rows, eval_dead = read(f"Read{name}Eval", eval_paths)
        if read_rows is not None:
            read_rows.append(eval_rows)
        dead = (dead, eval_dead) | f"DeadLetters{name}" >> beam.Flatten()
    else:
        days = None
        if config.split.method == "day":
            # From a read of their own: eval days computed from the very rows they split
            # would make the DirectRunner hold every one of them until the days are known
            # (0.8 GB a million Criteo-shaped rows). That read converts only the day
            # column, so a row with another field malformed still counts its day.
            day_rows, _ = pipeline | f"ReadDays{name}" >> wd_io.ReadImpressions(
                wd_io.only_columns(config, [config.split.day_column]), input_paths,
                counted=False)
            days = day_rows | f"EvalDays{name}" >> wd_io.EvalDays(config.split)
            if eval_days is not None:
                eval_days.append(days)
        train_rows, eval_rows = rows | f"Split{name}" >> wd_io.SplitTrainEval(config.split, days)
    validation_rows = None
    if config.split.validation_fraction:
        kept = ("train", "validation")
        parts = (train_rows | f"HoldOut{name}" >> wd_io.TagSplits(config, "train")
                 | f"RouteHoldOut{name}" >> beam.FlatMap(_route_splits, kept)
                 .with_outputs(*kept))
        train_rows, validation_rows = parts["train"], parts["validation"]
    return train_rows, validation_rows, eval_rows, dead


def _rows_to_transform(pipeline, config: cfg.FeatureConfig, input_paths: Sequence[str],
                       eval_paths: Sequence[str], eval_days=None) -> list[tuple]:
    """[(record batches with each row's split in wd_io.SPLIT_COLUMN, the splits they hold)].

    The rows are read a second time: the first read streams into the analyzers and
    statistics, while rows kept for after the analysis would wait in the DirectRunner's
    memory, all of them (about 2.4 GB a million app-store rows, measured by bench/scale.py).
    Reading the files again costs seconds a million rows. A separate eval input is a read
    of its own (joining two reads would be a Flatten, which the DirectRunner materializes);
    a "day" split takes the eval days the first split used (``eval_days``).
    """
    fitted = ("train", "validation") if config.split.validation_fraction else ("train",)

    def read(label: str, input_paths: Sequence[str], rows: str):
        batches, _ = pipeline | f"Read{label}" >> wd_io.ReadImpressions(
            config, input_paths, counted=False)
        return batches | f"Tag{label}" >> wd_io.TagSplits(config, rows, eval_days)

    if eval_paths:
        return [(read("ToTransform", input_paths, "train"), fitted),
                (read("EvalToTransform", eval_paths, "eval"), ("eval",))]
    return [(read("ToTransform", input_paths, "split"), (fitted[0], "eval", *fitted[1:]))]


def _rows_of_split(batch: pa.RecordBatch, name: str):
    """The rows of one split, without the split column (nothing when the batch has none)."""
    ids = batch.column(wd_io.SPLIT_COLUMN).flatten().to_numpy()
    mask = ids == wd_io.SPLIT_NAMES.index(name)
    batch = batch.drop_columns([wd_io.SPLIT_COLUMN])
    if mask.all():
        yield batch
    elif mask.any():
        yield batch.filter(pa.array(mask))


def _route_splits(batch_and_passthrough, kept: Sequence[str]):
    """Each kept split's rows of a tagged record batch (or of TFT's (record batch,
    passthrough features)), as a tagged output of that name."""
    batch = (batch_and_passthrough[0] if isinstance(batch_and_passthrough, tuple)
             else batch_and_passthrough)
    for name in kept:
        for rows in _rows_of_split(batch, name):
            yield beam.pvalue.TaggedOutput(name, rows)


class TransformSplits(beam.PTransform):
    """Raw record batches tagged with their rows' splits → {split: transformed batches},
    through one ``TransformDataset``: each one loads the transform graph in every worker
    (about a second for a 40-column config), so the splits share one, and the split column
    passes through TFT to route the rows after it."""

    def __init__(self, adapter, transform_fn, kept: Sequence[str]):
        super().__init__()
        self.adapter, self.transform_fn, self.kept = adapter, transform_fn, tuple(kept)

    def expand(self, rows):
        import tensorflow_transform.beam as tft_beam
        from tfx_bsl.public import tfxio

        adapter = tfxio.TensorAdapterConfig(
            self.adapter.arrow_schema.append(pa.field(wd_io.SPLIT_COLUMN,
                                                      pa.large_list(pa.int64()))),
            self.adapter.tensor_representations)
        with tft_beam.Context(passthrough_keys={wd_io.SPLIT_COLUMN}):
            transformed, _ = (((rows, adapter), self.transform_fn)
                              | "TransformDataset" >> tft_beam.TransformDataset(
                                  output_record_batches=True))
        parts = transformed | "Route" >> beam.FlatMap(_route_splits, self.kept).with_outputs(
            *self.kept)
        return {name: parts[name] for name in self.kept}


def _flatten(pcolls: list, name: str):
    return pcolls[0] if len(pcolls) == 1 else tuple(pcolls) | name >> beam.Flatten()


def build_pipeline(pipeline: beam.Pipeline, config: cfg.FeatureConfig, input_paths: Sequence[str],
                   output_dir: str, eval_paths: Sequence[str] = (),
                   window: Window | None = None,
                   known_values: dict[str, list[bytes]] | None = None) -> None:
    """Adds the whole job to `pipeline`, writing into `output_dir`; ``known_values`` (the
    serving model's vocabularies) is what the column statistics count unseen values by."""
    import tensorflow_transform.beam as tft_beam

    read_rows: list = []
    eval_days: list = []
    train_rows, validation_rows, _, dead = _train_parts(
        pipeline, config, "Impressions", input_paths, eval_paths, counter=ROWS_VALID_COUNTER,
        read_rows=read_rows, eval_days=eval_days)
    # Every valid row of the job's own input (the window's earlier days are not in them).
    _ = tuple(read_rows) | "ColumnStats" >> column_stats.ColumnStatistics(
        config, output_dir, known_values)
    adapter = tensor_adapter_config(config)
    preprocessing_fn = features.make_preprocessing_fn(config)
    if window is None:
        transform_fn = (train_rows, adapter) | "Analyze" >> tft_beam.AnalyzeDataset(
            preprocessing_fn)
        trained, validated, dead_letters = [train_rows], [validation_rows], [dead]
    else:
        transform_fn, trained, validated, dead_letters = _analyze_window(
            pipeline, config, window, input_paths, adapter, preprocessing_fn, train_rows,
            validation_rows, dead)
    reads = _rows_to_transform(pipeline, config, input_paths, eval_paths,
                               eval_days[0] if eval_days else None)
    if len(trained) > 1:  # training on the window: its earlier days join train and validation
        earlier = [rows | f"TagEarlier{name}{i}" >> beam.Map(wd_io.with_split_ids,
                                                             wd_io.SPLIT_NAMES.index(name))
                   for name, parts in (("train", trained[1:]), ("validation", validated[1:]))
                   for i, rows in enumerate(parts) if rows is not None]
        rows, kept = reads[0]
        reads[0] = ((rows, *earlier) | "TrainOnWindow" >> beam.Flatten(), kept)
    splits: dict = {}
    for i, (rows, kept) in enumerate(reads):
        splits.update(rows | f"Transform{'Eval' if i else ''}" >> TransformSplits(
            adapter, transform_fn, kept))
    for name, transformed in splits.items():
        title = name.title()
        _ = (transformed
             | f"Count{title}" >> beam.Map(_count_rows(f"rows_{name}", config.label.column))
             | f"Write{title}" >> WriteExamples(paths.join(output_dir, name)))
    raw_eval = reads[-1][0] | "RawEval" >> beam.FlatMap(_rows_of_split, "eval")
    dead = _flatten(dead_letters, "AllDeadLetters")
    _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output_dir)
    _ = raw_eval | "WriteRawEval" >> WriteExamples(paths.join(output_dir, "eval_raw"))
    _ = (dead
         | "DeadLetterToJson" >> beam.Map(beam_job.count_dead_letter)
         | "WriteDeadLetters" >> beam.io.WriteToText(
             paths.join(output_dir, "dead_letter"), file_name_suffix=".jsonl"))


def _write_cache_entry(value: bytes, prefix: str) -> str:
    path = f"{prefix}-{uuid.uuid4().hex[:12]}-of-00001.gz"
    writer = _GzipWriter(FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED))
    writer.write(frame_tfrecords([value]))
    writer.close()
    return path


class _CacheEntrySink(beam.PTransform):
    """Writes a cache entry (one or a few encoded accumulators) as gzip TFRecord files that
    TFT's cache reader matches (``<prefix>-*-of-*``): one Beam transform where TFT's own
    WriteToTFRecord is 17, for every analyzer of every new day."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def expand(self, entries):
        return entries | "WriteCacheEntry" >> beam.Map(_write_cache_entry, self.prefix)


def _read_tfrecords(path: str) -> list[bytes]:
    with FileSystems.open(path, compression_type=CompressionTypes.GZIP) as f:
        data = f.read()
    records, at = [], 0
    while at < len(data):
        (size,) = _LENGTH.unpack_from(data, at)
        records.append(data[at + 12:at + 12 + size])  # after length and its CRC
        at += 12 + size + 4
    return records


class _ReadCacheEntries(beam.DoFn):
    def __init__(self, patterns: dict[str, str]):
        self.patterns = patterns  # by output tag

    def process(self, unused_impulse):
        for tag, pattern in self.patterns.items():
            (matched,) = FileSystems.match([pattern])
            for path in sorted(m.path for m in matched.metadata_list):
                for record in _read_tfrecords(path):
                    yield beam.pvalue.TaggedOutput(tag, record)


class ReadWindowCache(beam.PTransform):
    """The cached days' analyzer entries, as TFT's ``ReadAnalysisCacheFromFS`` gives them,
    from two Beam transforms: TFT's reads each entry of each day with a source of its own
    and each day's metadata with another (312 transforms for six cached days of the
    app-store config), and every transform costs the whole job time to translate and run.
    The metadata (the day's input size) only feeds a TFT counter, so it is left out, and
    not written (:func:`_without_metadata`)."""

    def __init__(self, cache_dir: str, dataset_keys):
        super().__init__()
        self.cache_dir, self.dataset_keys = cache_dir, sorted(dataset_keys)

    def expand(self, pbegin):
        from tensorflow_transform.beam import analyzer_cache

        tags_by_day, patterns = {}, {}
        for day, dataset_key in enumerate(self.dataset_keys):
            directory = paths.join(self.cache_dir, dataset_key.key)
            # TFT's own manifest reader: the entry key -> file index map it wrote.
            manifest = analyzer_cache._ManifestFile(directory).read()  # noqa: SLF001
            tags_by_day[dataset_key] = {key: f"day{day}_entry{index}"
                                        for key, index in manifest.items()}
            patterns.update({f"day{day}_entry{index}": paths.join(directory, f"{index}-*-of-*")
                             for index in manifest.values()})
        if not patterns:
            return {}
        entries = (pbegin | "Impulse" >> beam.Impulse()
                   | "ReadEntries" >> beam.ParDo(_ReadCacheEntries(patterns)).with_outputs(
                       *patterns))
        return {key: analyzer_cache.DatasetCache({entry: entries[tag]
                                                  for entry, tag in tags.items()}, None)
                for key, tags in tags_by_day.items() if tags}


def _without_metadata(output_cache: dict) -> dict:
    from tensorflow_transform.beam import analyzer_cache

    return {key: analyzer_cache.DatasetCache(cache.cache_dict, None)
            for key, cache in output_cache.items()}


def _analyze_window(pipeline, config, window: Window, input_paths, adapter, preprocessing_fn,
                    train_rows, validation_rows, dead):
    """TFT's AnalyzeDatasetWithCache over one dataset per day: the new day's train rows,
    an earlier day's rows only when its cache is missing (or when training on the window)."""
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.beam import analyzer_cache

    cached = set(window.cached_days())
    keys = {day: analyzer_cache.DatasetKey(key) for day, key in
            [*window.earlier_keys.items(), (window.new_day, day_key(window.new_day, input_paths))]}
    analysed = {keys[window.new_day]: train_rows}
    trained, validated, dead_letters = [train_rows], [validation_rows], [dead]
    for day, day_paths in window.earlier.items():
        if day in cached and window.train_on != "window":
            analysed[keys[day]] = None  # its counts and sketches come from the cache
            continue
        fit, validation, _, day_dead = _train_parts(pipeline, config, f"[{day}]", day_paths)
        analysed[keys[day]] = None if day in cached else fit
        dead_letters.append(day_dead)
        if window.train_on == "window":
            trained.append(fit)
            validated.append(validation)
    input_cache = pipeline | "ReadAnalysisCache" >> ReadWindowCache(
        window.cache_dir, [keys[day] for day in cached])
    transform_fn, output_cache = (
        (analysed, input_cache, adapter)
        | "AnalyzeWindow" >> tft_beam.AnalyzeDatasetWithCache(preprocessing_fn))
    _ = (_without_metadata(output_cache)
         | "WriteAnalysisCache" >> analyzer_cache.WriteAnalysisCacheToFS(
             pipeline, window.cache_dir, dataset_keys=list(keys.values()),
             sink=_CacheEntrySink))
    return transform_fn, trained, validated, dead_letters


def _describe_window(window: Window, config: cfg.FeatureConfig, log) -> dict:
    """The window's days, checked and logged: which come from the cache, which are read."""
    wd_io.check_headers([p for day_paths in window.earlier.values() for p in day_paths], config)
    cached = window.cached_days()
    read = [d for d in window.earlier if d not in cached or window.train_on == "window"]
    log(f"transform: vocabularies and quantiles over {len(window.earlier) + 1} day(s): "
        f"{window.new_day} read, {len(cached)} earlier from the analyzer cache"
        + (f", {len(read)} earlier read ({', '.join(read)})" if read else ""))
    return {"new_day": window.new_day, "earlier_days": list(window.earlier),
            "from_cache": cached, "read": read, "train_on": window.train_on,
            "cache_dir": window.cache_dir}


def _check_output(stats: dict, job, config: cfg.FeatureConfig, partial_dir: str,
                  window: Window | None, multi_processing: bool) -> None:
    """The checks an output must pass before it is promoted (stats.json is already written,
    for the report)."""
    if job.rows_read == 0:
        raise TransformError(f"transform: no rows in {stats['input']}")
    # Dead letters first: when every row is malformed, an empty split is only the symptom.
    if job.rows_dead == job.rows_read:
        raise TransformError(f"transform: all {job.rows_read} rows were dead-lettered, by "
                             f"reason: {job.dead_by_reason}; see "
                             f"{partial_dir}/dead_letter-*.jsonl")
    beam_job.check_dead_letter_limit("transform", job, config, partial_dir, TransformError)
    check_no_rows_lost(job.main, window, multi_processing)
    rows_out = stats["rows_out"]
    if rows_out["train"] == 0 or rows_out["eval"] == 0:
        raise TransformError(f"transform: the split left train={rows_out['train']} "
                             f"eval={rows_out['eval']} rows; both need rows "
                             f"(check [split] in {config.source})")


def run_transform(config: cfg.FeatureConfig, input_pattern: str, output_dir: str, *,
                  eval_input_pattern: str | None = None, pipeline_args: Sequence[str] = (),
                  window: Window | None = None,
                  known_values: dict[str, list[bytes]] | None = None,
                  log: Callable[[str], None] = LOG.info) -> dict | None:
    """Runs the job; returns stats (also written to ``<output_dir>/stats.json``), or None
    when ``--template_location`` only built a Dataflow template. With a ``window`` the
    analyzers see its earlier days too (from the analyzer cache where it has them)."""
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
    window_stats = _describe_window(window, config, log) if window is not None else None

    partial_dir = beam_job.fresh_partial_dir(output_dir)
    temp_location = options.get_all_options().get("temp_location")

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="widedeep-tft-") as local_tmp:
        tft_temp = temp_location or local_tmp
        pipeline = beam_job.new_pipeline(options)
        with tft_beam.Context(temp_dir=tft_temp):
            build_pipeline(pipeline, config, input_paths, partial_dir, eval_paths, window,
                           known_values)
        counts = beam_job.run(pipeline)
    elapsed = time.time() - started
    if counts is None:
        log(beam_job.template_message("transform", options, output_dir))
        return None

    job = beam_job.JobCounts.of(counts)
    main, rows_read = job.main, job.rows_read
    tft_output = tft.TFTransformOutput(partial_dir)
    rows_out = {split: main.get(f"rows_{split}", 0) for split in (
        "train", "eval", *(["validation"] if config.split.validation_fraction else []))}
    stats = {
        "input": input_pattern,
        "eval_input": eval_input_pattern,
        "input_files": len(input_paths) + len(eval_paths),
        "rows_in": rows_read,
        "rows_out": rows_out,
        # Of each split's labels: a shifted eval day shows here, beside the gate's calibration.
        "positive_rate": {split: round(main.get(f"positives_{split}", 0) / n, 6) if n else None
                          for split, n in rows_out.items()},
        "column_stats": column_stats.STATS_FILE,
        **job.dead_letter_summary(),
        "vocabulary_sizes": {spec.vocab_name: tft_output.vocabulary_size_by_name(spec.vocab_name)
                             for spec in features.categorical_specs(config).values()
                             if not spec.hash_buckets},
        "seconds": round(elapsed, 2),
        "rows_per_second": round(rows_read / elapsed, 1) if elapsed else None,
        "config_digest": config.digest,
        **({"window": window_stats} if window_stats else {}),
    }
    # Written even when the checks below fail, for the report; but then never promoted.
    column_stats.add_numeric_missing(paths.join(partial_dir, column_stats.STATS_FILE),
                                     counts.get(wd_io.MISSING_NUMERIC_NAMESPACE, {}))
    paths.write_json(paths.join(partial_dir, STATS_FILE), stats)
    _check_output(stats, job, config, partial_dir, window,
                  multi_processing="multi_processing" in " ".join(pipeline_args))
    if window is not None:
        window.mark_cached(day_key(window.new_day, input_paths), window_stats["from_cache"])
    paths.promote(partial_dir, output_dir, marker=STATS_FILE)
    log(f"transform: {rows_read} rows in {elapsed:.1f}s ({stats['rows_per_second']:.0f} rows/s): "
        + ", ".join(f"{split} {n}" for split, n in stats["rows_out"].items()) + ", "
        f"dead-lettered {job.rows_dead}" + (f" {job.dead_by_reason}" if job.rows_dead else "")
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
