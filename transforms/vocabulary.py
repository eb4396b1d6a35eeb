"""The config's vocabularies as lean TFT analyzers: Arrow counts per batch, one merge, one write.

``tft.compute_and_apply_vocabulary`` adds about 80 Beam transforms per call (count per key,
threshold, pre-sort, order, write, wait), so a config with 29 vocabularies built a pipeline of
2,842 transforms, and the job's fixed cost (the pipeline proto, a bundle per stage) grew with
the columns: a Criteo-shaped config spent a minute before counting its first row. Here each
vocabulary is a ``tft.experimental.ptransform_analyzer``: a batch's tokens are counted
column-wise by Arrow (no Python per token), the counts merge in one combine, and the file is
written at the end, byte for byte what TFT writes (frequency descending, ties by token
descending; empty tokens and tokens with a line break left out; TFT's placeholder line when
nothing passes the threshold).

With a window of days (``[analysis] window_days > 1``) each is a
``CacheablePTransformAnalyzer`` (16 transforms), whose per-dataset accumulator is the token
counts: with TFT's analyzer cache a window is analysed by counting only the new day and
merging the cached counts of the others. Without one it is a single step of 7 transforms.
(One analyzer for all vocabularies would be leaner still, but TFT caches only single-output
analyzers, and each vocabulary is its own asset.)

Imported by the preprocessing_fn only (it loads TFT's Beam side).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.beam import experimental as tft_beam_experimental

from transforms import paths

# TFT's line for an empty vocabulary (analyzers.get_empy_vocabulary_dummy_value): a table
# cannot be initialised from an empty file.
EMPTY_VOCABULARY_TOKEN = b"49d0cd50-04bb-48c0-bc6f-5b575dce351a"
_COUNTS_SCHEMA = pa.schema([("token", pa.large_binary()), ("count", pa.int64())])
# Per-batch count tables buffered before they are merged into one.
_MERGE_EVERY = 16


def count_tokens(batch: Sequence[np.ndarray]) -> pa.Table:
    """(token, count) of one batch of a vocabulary's tokens (TFT passes a 1-tuple)."""
    (values,) = batch
    tokens = pa.array(np.asarray(values, dtype=object).ravel(), type=pa.large_binary())
    # As TFT: empty tokens and tokens with a line break cannot be a line of the file.
    unusable = pc.or_(pc.equal(pc.binary_length(tokens), 0),
                      pc.or_(pc.match_substring(tokens, "\n"), pc.match_substring(tokens, "\r")))
    counted = pc.value_counts(tokens.filter(pc.invert(unusable))).flatten()
    return pa.table(counted, schema=_COUNTS_SCHEMA)


def merge_counts(tables: Sequence[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if len(tables) < 2:
        return tables[0] if tables else _COUNTS_SCHEMA.empty_table()
    merged = pa.concat_tables(tables).group_by("token", use_threads=False).aggregate(
        [("count", "sum")])
    return pa.table([merged["token"], merged["count_sum"]], schema=_COUNTS_SCHEMA)


def vocabulary_file_bytes(counts: pa.Table, min_count: int) -> bytes:
    """The vocabulary file: tokens seen at least `min_count` times, one per line, most
    frequent first, ties by token descending (TFT's order)."""
    kept = counts.filter(pc.greater_equal(counts["count"], min_count))
    tokens = kept.sort_by([("count", "descending"), ("token", "descending")])["token"]
    return b"".join(token + b"\n" for token in tokens.to_pylist() or [EMPTY_VOCABULARY_TOKEN])


class _MergeCounts(beam.CombineFn):
    def create_accumulator(self):
        return []

    def add_input(self, buffered, counts):
        buffered.append(counts)
        return [merge_counts(buffered)] if len(buffered) >= _MERGE_EVERY else buffered

    def merge_accumulators(self, accumulators):
        return [merge_counts([t for buffered in accumulators for t in buffered])]

    def extract_output(self, buffered):
        return merge_counts(buffered)


class _Stable:
    """TFT keys an analyzer's cache entries by its fields' text, this object among them:
    Beam's default text holds the object's address, which differs in every process, so no
    cache entry would ever be found again."""

    def __repr__(self):
        return f"<{type(self).__name__}>"

    __str__ = __repr__


class _CountBatches(_Stable, beam.PTransform):
    def expand(self, batches):
        return batches | "CountTokens" >> beam.Map(count_tokens)


class _MergeAll(_Stable, beam.PTransform):
    """TFT's local merge (per dataset: what its cache keeps) and its global merge (all
    datasets and cached days). No element for no input: a combine with that default is 9
    Beam transforms, not 4; the writer reads the counts as a list that may be empty."""

    def expand(self, counts):
        return counts | "MergeCounts" >> beam.CombineGlobally(_MergeCounts()).without_defaults()


class _CountsCoder:
    """The cached accumulator (a day's token counts) as Arrow IPC bytes."""

    def encode_cache(self, counts: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, _COUNTS_SCHEMA) as writer:
            writer.write_table(counts)
        return sink.getvalue().to_pybytes()

    def decode_cache(self, encoded: bytes) -> pa.Table:
        return pa.ipc.open_stream(encoded).read_all()

    def __repr__(self):
        return "<VocabularyCountsCoder>"


def _write_file(unused_element, counts: list, directory: str, name: str,
                min_count: int) -> np.ndarray:
    path = paths.write_bytes(paths.join(directory, name),
                             vocabulary_file_bytes(merge_counts(counts), min_count))
    return np.array(path.encode())


class _WriteVocabulary(_Stable, tft_beam_experimental.PTransformAnalyzer):
    """Merged counts → the vocabulary file in TFT's temp dir; outputs its path."""

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.min_count}>"

    __str__ = __repr__

    def __init__(self, name: str, min_count: int):
        super().__init__()
        self.name, self.min_count = name, min_count

    def expand(self, counts):
        return (counts.pipeline
                | "Once" >> beam.Impulse()
                | "WriteVocabularyFile" >> beam.Map(
                    _write_file, beam.pvalue.AsList(counts), self.base_temp_dir, self.name,
                    self.min_count))


class _CountMergeWrite(_WriteVocabulary):
    """The whole vocabulary in one analyzer, for a job without the analyzer cache: TFT
    wraps a cacheable analyzer's three steps in transforms of its own (16 in all), while
    this is 7; a Criteo-shaped config has 26 vocabularies."""

    def expand(self, batches):
        return super().expand(batches | "Count" >> _CountBatches() | "Merge" >> _MergeAll())


def _analyzer(name: str, min_count: int, cacheable: bool):
    if not cacheable:
        return _CountMergeWrite(name, min_count)
    return tft.experimental.CacheablePTransformAnalyzer(
        make_accumulators_ptransform=_CountBatches(),
        merge_accumulators_ptransform=_MergeAll(),
        extract_output_ptransform=_WriteVocabulary(name, min_count),
        cache_coder=_CountsCoder())


def analyze(tokens: Mapping[str, object], min_counts: Mapping[str, int],
            cacheable: bool) -> dict:
    """{vocabulary file name: its deferred path tensor} for {file name: string tensor of
    tokens (dense, or a SparseTensor's values)}; call inside a preprocessing_fn. Only a
    ``cacheable`` vocabulary's counts can come from TFT's analyzer cache (a window of days)."""
    files = {}
    for name, values in tokens.items():
        flat = values.values if isinstance(values, tf.SparseTensor) else tf.reshape(values, [-1])
        (files[name],) = tft.experimental.ptransform_analyzer(
            [flat], _analyzer(name, min_counts[name], cacheable), output_dtypes=[tf.string],
            output_shapes=[[]], output_asset_default_values=[EMPTY_VOCABULARY_TOKEN], name=name)
        tft.annotate_asset(name, name)
    return files
