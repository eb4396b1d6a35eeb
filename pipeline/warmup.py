"""TF Serving's warmup file: real eval requests that ship inside every published version.

TF Serving runs the records of ``assets.extra/tf_serving_warmup_requests`` when it loads a
version, before that version takes traffic, so the first requests after a version swap do
not pay for TensorFlow's lazy initialisation (kernels, the vocabulary tables, memory pools).
The file is a TFRecord of ``PredictionLog`` records, at most 1,000, and should look like
real traffic (https://www.tensorflow.org/tfx/serving/saved_model_warmup). Publish writes it
from the raw eval examples into the copy it is about to dry-run, and the dry run replays it,
so what ships is what was checked.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from trainer.export import EXAMPLES_KEY, EXTRA_DIR, OUTPUT_KEY, SERVING_DEFAULT, WARMUP_FILE
from transforms import paths

LOG = logging.getLogger("widedeep")

# One candidate, a small page, and the paper's request of 200 candidates for one user
# (Cheng et al. 2016, section 4.3; bench/serve.py measures that batch): each size once per
# round. TF Serving runs each record once at load, so a few rounds is the whole cost.
WARMUP_BATCH_SIZES = (1, 32, 200)
WARMUP_ROUNDS = 5
MAX_WARMUP_RECORDS = 1000  # TF Serving reads no more than this


class WarmupError(ValueError):
    """A warmup file that TF Serving would choke on: the message names the file and record."""


def warmup_path(export_dir: str) -> str:
    return paths.join(export_dir, EXTRA_DIR, WARMUP_FILE)


def warmup_batches(serialized: Sequence[bytes], batch_sizes=WARMUP_BATCH_SIZES,
                   rounds: int = WARMUP_ROUNDS) -> list[list[bytes]]:
    """Consecutive examples in batches of each size in turn, wrapping around when there are
    fewer examples than the batches hold (each batch still holds real examples)."""
    if not serialized:
        raise ValueError("no raw examples to build the warmup requests from")
    batches, start = [], 0
    for _ in range(rounds):
        for size in batch_sizes:
            batches.append([serialized[(start + i) % len(serialized)] for i in range(size)])
            start += size
    if len(batches) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{len(batches)} warmup requests; TF Serving reads at most "
                         f"{MAX_WARMUP_RECORDS}")
    return batches


def prediction_log(examples: Sequence[bytes]) -> prediction_log_pb2.PredictionLog:
    """The Predict request a client sends to serving_default, as TF Serving logs it."""
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = SERVING_DEFAULT
    request.inputs[EXAMPLES_KEY].CopyFrom(tf.make_tensor_proto(list(examples), dtype=tf.string))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup_requests(export_dir: str, serialized: Sequence[bytes]) -> tuple[str, int]:
    """Writes the warmup file of `export_dir` from raw examples; returns (path, records).
    Not atomic by itself: publish writes it into its partial copy, which is the staging."""
    path = warmup_path(export_dir)
    paths.makedirs(paths.dirname(path))
    batches = warmup_batches(serialized)
    with tf.io.TFRecordWriter(path) as writer:  # TF's file system: local and gs:// alike
        for batch in batches:
            writer.write(prediction_log(batch).SerializeToString())
    return path, len(batches)


def read_warmup_requests(path: str) -> Iterator[tuple[int, predict_pb2.PredictRequest]]:
    """(record number, Predict request) of each record, or a WarmupError naming the record."""
    records = iter(tf.data.TFRecordDataset(path).as_numpy_iterator())
    number = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except tf.errors.OpError as e:  # a truncated file, a record whose CRC does not match
            raise WarmupError(f"{path}: record {number} is not a readable TFRecord: "
                              f"{e.message[:200]}") from None
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except DecodeError as e:
            raise WarmupError(f"{path}: record {number} is not a PredictionLog: {e}") from None
        if log.WhichOneof("log_type") != "predict_log":
            raise WarmupError(f"{path}: record {number} holds {log.WhichOneof('log_type')}, "
                              "not the predict_log this model's signatures take")
        yield number, log.predict_log.request
        number += 1


def replay_warmup_requests(loaded, path: str) -> tuple[int, int]:
    """Sends every request of the warmup file to its signature of the loaded SavedModel, as
    TF Serving will at load; returns (records, examples) or raises a WarmupError."""
    records = examples = 0
    for number, request in read_warmup_requests(path):
        name = request.model_spec.signature_name or SERVING_DEFAULT
        if name not in loaded.signatures:
            raise WarmupError(f"{path}: record {number} asks for signature {name!r}; the "
                              f"export has {', '.join(sorted(loaded.signatures))}")
        try:
            inputs = {key: tf.constant(tf.make_ndarray(tensor))
                      for key, tensor in request.inputs.items()}
            probabilities = loaded.signatures[name](**inputs)[OUTPUT_KEY].numpy()
        except Exception as e:
            raise WarmupError(f"{path}: record {number}: {name} failed on it: "
                              f"{type(e).__name__}: {str(e)[:200]}") from None
        if not np.all(np.isfinite(probabilities)):
            raise WarmupError(f"{path}: record {number}: {name} gave non-finite outputs")
        records, examples = records + 1, examples + len(probabilities)
    if not records:
        raise WarmupError(f"{path}: no records (TF Serving would warm up nothing)")
    return records, examples
