"""Feature engineering derived from the config: raw specs, the TFT preprocessing_fn, sizes.

The transformed feature of a column or cross keeps its config name, so a reader follows one
name from the config to the model's inputs. Vocabularies are written under stable names
(``vocab_<feature>``) because warm start remaps embedding rows by token through them.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from transforms import config as cfg

CROSS_SEPARATOR = "_X_"


TF_TYPES = {"bytes": tf.string, "float": tf.float32, "int": tf.int64}  # of cfg.Kind.value
FeatureSpec = dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature]


def _feature_spec(column: cfg.ColumnSpec, with_default: bool):
    kind = column.kind_info
    dtype = TF_TYPES[kind.value]
    if kind.multivalent:
        return tf.io.VarLenFeature(dtype)
    if not with_default:
        return tf.io.FixedLenFeature([], dtype)
    return tf.io.FixedLenFeature([], dtype, default_value=column.default
                                 if kind.value == "float" else "")


def raw_feature_spec(config: cfg.FeatureConfig) -> FeatureSpec:
    """Feature spec of validated raw rows (what the Beam job feeds TFT and writes as raw eval)."""
    return {c.name: _feature_spec(c, with_default=False) for c in config.raw_columns}


def serving_feature_spec(config: cfg.FeatureConfig) -> FeatureSpec:
    """Raw model inputs as serving receives them: no label, no keys, a default for each.

    Defaults make a tf.Example with a missing feature score as "unknown" (an OOV bucket or
    the numeric default) instead of failing the whole request.
    """
    return {c.name: _feature_spec(c, with_default=True) for c in config.feature_columns}


def _hashed(values, hash_buckets: int):
    if isinstance(values, tf.SparseTensor):
        return tf.SparseTensor(values.indices,
                               tf.strings.to_hash_bucket_fast(values.values, hash_buckets),
                               values.dense_shape)
    return tf.strings.to_hash_bucket_fast(values, hash_buckets)


def _quantile_bucket(values, column: cfg.ColumnSpec):
    """The column's quantile bucket (int64 in [0, quantile_buckets)), boundaries from the
    train split."""
    import tensorflow_transform as tft

    if column.clip is not None:
        values = tf.clip_by_value(values, column.clip[0], column.clip[1])
    if column.log:
        values = tf.math.log1p(tf.maximum(values, 0.0))
    boundaries = tft.quantiles(values, num_buckets=column.quantile_buckets,
                               epsilon=0.25 / column.quantile_buckets)
    return tft.apply_buckets(values, boundaries)


def _unit_interval(bucket, column: cfg.ColumnSpec):
    """Quantile bucket i of n mapped to (i - 1) / (n - 1), as the paper does (section 4.1)."""
    return tf.cast(bucket, tf.float32) / float(column.quantile_buckets - 1)


def _bucket_token(bucket):
    """A numeric column's token in a cross: its quantile bucket, e.g. "q7" (age bucket 7 in
    age_x_education_x_occupation's "q7_X_Bachelors_X_Sales")."""
    return tf.strings.join(["q", tf.strings.as_string(bucket)])


def _as_cross_input(values):
    if isinstance(values, tf.SparseTensor):
        return values
    return tf.reshape(values, [-1, 1])


def make_preprocessing_fn(config: cfg.FeatureConfig) -> Callable[[dict], dict]:
    """The TFT preprocessing_fn for a config: every model feature plus the label."""
    used = set(config.model_feature_names())

    crossed = {c for cross in config.crosses if cross.name in used for c in cross.columns}

    def preprocessing_fn(inputs: dict) -> dict:
        import tensorflow_transform as tft

        from transforms import vocabulary

        outputs = {}
        # One set of quantile boundaries per numeric column, shared by its [0, 1] feature
        # and the crosses that take its bucket.
        buckets = {c.name: _quantile_bucket(inputs[c.name], c) for c in config.feature_columns
                   if c.kind == cfg.NUMERIC and (c.name in used or c.name in crossed)}
        tokens = {}  # of every categorical feature, by name
        for column in config.feature_columns:
            if column.name in used and column.kind == cfg.NUMERIC:
                outputs[column.name] = _unit_interval(buckets[column.name], column)
            elif column.name in used:
                tokens[column.name] = inputs[column.name]
        for cross in config.crosses:
            if cross.name in used:
                parts = [_bucket_token(buckets[c]) if c in buckets else inputs[c]
                         for c in cross.columns]
                tokens[cross.name] = tf.sparse.cross([_as_cross_input(p) for p in parts],
                                                     separator=CROSS_SEPARATOR)
        specs = categorical_specs(config)
        vocabularies = {specs[n].vocab_name: n for n in tokens if not specs[n].hash_buckets}
        files = vocabulary.analyze({v: tokens[n] for v, n in vocabularies.items()},
                                   {v: specs[n].vocab_min_count for v, n in vocabularies.items()},
                                   cacheable=config.analysis.window_days > 1)
        for name, values in tokens.items():
            spec = specs[name]
            outputs[name] = (_hashed(values, spec.hash_buckets) if spec.hash_buckets else
                             tft.apply_vocabulary(values, files[spec.vocab_name],
                                                  num_oov_buckets=spec.oov_buckets))
        outputs[config.label.column] = inputs[config.label.column]
        return outputs

    return preprocessing_fn


def categorical_specs(config: cfg.FeatureConfig) -> dict[str, cfg.ColumnSpec | cfg.CrossSpec]:
    """Every categorical model feature (columns and crosses) by transformed name."""
    used = set(config.model_feature_names())
    specs: dict[str, cfg.ColumnSpec | cfg.CrossSpec] = {
        c.name: c for c in config.feature_columns if c.is_categorical and c.name in used}
    specs.update({x.name: x for x in config.crosses if x.name in used})
    return specs


def is_multivalent(config: cfg.FeatureConfig, name: str) -> bool:
    """Whether a transformed categorical feature holds a list per row (sparse)."""
    for cross in config.crosses:
        if cross.name == name:
            return True
    return config.column(name).kind == cfg.MULTIVALENT


def cardinality(spec: cfg.ColumnSpec | cfg.CrossSpec, tft_output) -> int:
    """Number of distinct ids a categorical feature can take (vocabulary + OOV, or buckets)."""
    if spec.hash_buckets:
        return spec.hash_buckets
    return tft_output.vocabulary_size_by_name(spec.vocab_name) + spec.oov_buckets
