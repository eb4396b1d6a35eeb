"""Serving export: raw tf.Example in, probabilities out, self-contained.

The SavedModel carries the TFT transform graph (TFT's ``transform_features_layer``) and its
vocabulary assets, so it needs nothing from the work dir once written. Two signatures:

- ``serving_default``: serialized raw ``tf.Example`` (``examples``) → ``probabilities``;
- ``predict_raw``: raw features as named dense tensors (multivalent ones as a [batch, n]
  string matrix padded with ""), which TF Serving's JSON/REST API can send directly.

``assets.extra/`` (TF Serving reads only its warmup file there) holds ``widedeep.json``
(where the model came from, for warm start and people) and ``config.toml`` (so ``widedeep
score`` can read raw rows with nothing but the export). Publishing an export into serving,
and its dry run: :mod:`pipeline.serving`; the warmup file each published version gets:
:mod:`pipeline.warmup`.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import tensorflow as tf

from transforms import config as cfg
from transforms import features
from transforms import paths

LOG = logging.getLogger("widedeep")
SERVING_DEFAULT = "serving_default"
PREDICT_RAW = "predict_raw"
EXAMPLES_KEY = "examples"  # serving_default's input: serialized raw tf.Examples
OUTPUT_KEY = "probabilities"
EXTRA_DIR = "assets.extra"
METADATA_FILE = "widedeep.json"
CONFIG_FILE = "config.toml"
WARMUP_FILE = "tf_serving_warmup_requests"  # the name TF Serving looks for in assets.extra
MODEL_DIR_IN_WORK_DIR = "model_dir_in_work_dir"


class ServingModule(tf.Module):
    """The trained model behind the transform graph, with both serving signatures."""

    def __init__(self, model, tft_output, config: cfg.FeatureConfig):
        super().__init__(name="widedeep_serving")
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        self._example_spec = features.serving_feature_spec(config)
        self._multivalent = [c.name for c in config.feature_columns if c.kind == cfg.MULTIVALENT]
        self._numeric_defaults = {c.name: c.default for c in config.feature_columns
                                  if c.kind == cfg.NUMERIC}
        raw_specs = {name: tf.TensorSpec([None, None], tf.string, name=name)
                     if name in self._multivalent else tf.TensorSpec([None], spec.dtype, name=name)
                     for name, spec in self._example_spec.items()}
        self.serve_examples = tf.function(
            self._serve_examples,
            input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_KEY)])
        self.serve_raw = tf.function(self._serve_raw, input_signature=[raw_specs])

    def _predict(self, raw_features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        raw_features = dict(raw_features)
        # Training never sees NaN or ±inf (the reader dead-letters them); quantile buckets
        # would put them in the top bucket. At serving they count as missing: the default.
        for name, default in self._numeric_defaults.items():
            values = raw_features[name]
            raw_features[name] = tf.where(tf.math.is_finite(values), values,
                                          tf.constant(default, values.dtype))
        transformed = self.tft_layer(raw_features)
        probabilities = self.model(transformed, training=False)
        return {OUTPUT_KEY: tf.reshape(probabilities, [-1])}

    def _serve_examples(self, examples):
        return self._predict(tf.io.parse_example(examples, self._example_spec))

    def _serve_raw(self, raw):
        raw = dict(raw)
        for name in self._multivalent:
            raw[name] = tf.sparse.from_dense(raw[name])  # "" padding is not a token
        return self._predict(raw)

    def signatures(self) -> dict:
        return {SERVING_DEFAULT: self.serve_examples.get_concrete_function(),
                PREDICT_RAW: self.serve_raw.get_concrete_function()}


def export_model(config: cfg.FeatureConfig, model_dir: str, transform_dir: str,
                 export_dir: str, metadata: Mapping | None = None,
                 work_dir: str | None = None) -> str:
    """Writes the serving SavedModel of a trained model dir to `export_dir`.

    The metadata names the source model dir (warm start reads it) absolutely, and, when it
    is inside `work_dir`, relative to it too: a work dir copied or moved elsewhere then
    warm-starts from its own models, not from those at the old place.
    """
    import tensorflow_transform as tft
    from trainer.train import load_trained_model  # Keras: not loaded by serving's readers

    module = ServingModule(load_trained_model(model_dir), tft.TFTransformOutput(transform_dir),
                           config)
    paths.rmtree(export_dir)
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
    extra = paths.join(export_dir, EXTRA_DIR)
    paths.makedirs(extra)
    source = {"model_dir": paths.absolute(model_dir)}
    in_work_dir = paths.relative_to(model_dir, work_dir) if work_dir else None
    if in_work_dir:
        source[MODEL_DIR_IN_WORK_DIR] = in_work_dir
    paths.write_json(paths.join(extra, METADATA_FILE),
                     {**source, "config_digest": config.digest, **(metadata or {})})
    if paths.exists(config.source):
        paths.copy(config.source, paths.join(extra, CONFIG_FILE))
    return export_dir


def source_model_dir(metadata: Mapping, work_dir: str) -> str:
    """The model dir an export came from, found in `work_dir` when it was recorded there."""
    if metadata.get(MODEL_DIR_IN_WORK_DIR):
        return paths.join(work_dir, *metadata[MODEL_DIR_IN_WORK_DIR].split("/"))
    return metadata["model_dir"]


def read_metadata(export_dir: str) -> dict:
    path = paths.join(export_dir, EXTRA_DIR, METADATA_FILE)
    metadata = paths.read_json(path)
    if metadata is None:
        raise FileNotFoundError(f"{path}: missing (not an export written by widedeep?)")
    return metadata


def load_predict_fn(export_dir: str):
    """serving_default of an export as a function: serialized raw examples → probabilities."""
    loaded = tf.saved_model.load(export_dir)
    signature = loaded.signatures[SERVING_DEFAULT]

    def predict(serialized: list[bytes]) -> np.ndarray:
        return signature(**{EXAMPLES_KEY: tf.constant(serialized)})[OUTPUT_KEY].numpy()

    predict.loaded = loaded  # keeps the SavedModel's resources alive with the function
    return predict


def predict_in_batches(predict, serialized: list[bytes], batch_size: int = 2048) -> np.ndarray:
    if not serialized:
        return np.zeros([0], np.float32)
    return np.concatenate([predict(serialized[i:i + batch_size])
                           for i in range(0, len(serialized), batch_size)])
