"""Wide & Deep (Cheng et al. 2016) as a tf_keras model built from the transformed features.

The model reads the feature config and the TFT output once, into :class:`ModelInput`s (name,
kind, cardinality, which part uses it); nothing here names a feature. The two parts follow
the paper's section 3:

- **wide**: a generalized linear model over the one-hot ids and cross-product ids the config
  marks wide, one ``[cardinality, 1]`` weight table per feature (a multivalent feature sums
  its rows), a weight per quantile bucket of a numeric feature; trained with FTRL and L1/L2.
- **deep**: an embedding per categorical feature (mean of the rows for a multivalent one),
  concatenated with the [0, 1] numeric features, then ReLU layers; trained with AdaGrad.

Joint training (section 3.2): one logistic loss on the *sum* of both logits, back-propagated
into both parts at once; each optimizer then updates only its own part's variables. What is
evaluated and exported is a moving average of the weights (:class:`WeightAverage`), not the
last step's.

With ``train.deep_towers = N`` > 1 the deep part is N towers of the same shape with their
own seeds, an ensemble inside the model: tower k is trained jointly with the wide part on
its own logistic loss of wide + deep_k, on its own shuffle of the train data (one batch per
tower each step), so no tower sees another; the wide part gets the mean of the N losses'
gradients; the model predicts from wide + the mean of the towers' logits. On MovieLens five
towers reached the validation log loss of averaging three separately trained models' logits
(configs/movielens.toml); towers reading one shared order gained nothing, their logits 0.986
correlated.

Variables get stable names (``wide_deep/wide/<feature>``, ``wide_deep/deep/embedding/<feature>``,
``wide_deep/deep/hidden_0/kernel``; tower k > 0: ``wide_deep/deep_k/...``) because warm start
pairs old and new variables by name.
Like TF's canned ``DNNLinearCombinedClassifier``, each part keeps its own bias, so the
``wide`` and ``deep`` ablations are complete models on their own.

The trained model is stored as ``model.json`` (inputs and hyperparameters) plus weights, so
:func:`load_model` rebuilds it without the transform output it was trained on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Mapping, Sequence

import tensorflow as tf
import tf_keras as keras

from transforms import config as cfg
from transforms import features
from transforms import paths

MODEL_NAME = "wide_deep"
WIDE = "wide"
DEEP = "deep"
MODEL_SPEC_FILE = "model.json"
WEIGHTS_PREFIX = "weights"


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """One transformed feature as the model reads it."""
    name: str
    kind: str                 # cfg.CATEGORICAL, cfg.MULTIVALENT or cfg.NUMERIC
    wide: bool
    deep: bool
    # Categorical ids lie in [0, cardinality). A numeric feature in the wide part with a
    # cardinality reads its quantile bucket there, one weight per bucket (the indicator
    # columns of a hand-written logistic regression); 0 (models from before): one weight.
    cardinality: int = 0
    vocab_name: str = ""      # "" for hashed and numeric features
    oov_buckets: int = 0      # trailing rows of the table that are OOV buckets, not tokens

    @property
    def is_categorical(self) -> bool:
        return cfg.KINDS[self.kind].categorical


def _as_input(value: ModelInput | Mapping) -> ModelInput:
    """Inputs come back from a JSON or Keras config as dicts."""
    return value if isinstance(value, ModelInput) else ModelInput(**value)


def model_inputs(config: cfg.FeatureConfig, tft_output) -> tuple[ModelInput, ...]:
    """What the model reads, from the config's [model] lists and the transformed feature spec."""
    spec = tft_output.transformed_feature_spec()
    categorical = features.categorical_specs(config)
    wide, deep = set(config.wide), set(config.deep)
    inputs = []
    for name in config.model_feature_names():
        if name not in spec:
            raise ValueError(
                f"{config.source}: feature '{name}' (in [model]) is missing from the transform "
                f"output, which has {', '.join(sorted(spec))}; was it produced with this "
                f"config?")
        feature_spec = spec[name]
        if name in categorical:
            column = categorical[name]
            kind = cfg.MULTIVALENT if features.is_multivalent(config, name) else cfg.CATEGORICAL
            _expect_spec(config, name, feature_spec, tf.int64,
                         var_len=kind == cfg.MULTIVALENT)
            inputs.append(ModelInput(
                name=name, kind=kind, wide=name in wide, deep=name in deep,
                cardinality=features.cardinality(column, tft_output),
                vocab_name="" if column.hash_buckets else column.vocab_name,
                oov_buckets=0 if column.hash_buckets else column.oov_buckets))
        else:
            _expect_spec(config, name, feature_spec, tf.float32, var_len=False)
            inputs.append(ModelInput(name=name, kind=cfg.NUMERIC, wide=name in wide,
                                     deep=name in deep,
                                     cardinality=config.column(name).quantile_buckets
                                     if name in wide else 0))
    return tuple(inputs)


def _expect_spec(config, name, feature_spec, dtype, *, var_len: bool) -> None:
    is_var_len = isinstance(feature_spec, tf.io.VarLenFeature)
    if feature_spec.dtype != dtype or is_var_len != var_len:
        expected = f"{'VarLen' if var_len else 'FixedLen'} {dtype.name}"
        raise ValueError(f"{config.source}: transformed feature '{name}' is {feature_spec}, "
                         f"the model expects {expected}; the transform output does not match "
                         f"this config")


def _lookup(table: tf.Variable, ids, combiner: str) -> tf.Tensor:
    """Rows of ``table`` for dense ids [batch] or sparse ids [batch, n] (combined per row)."""
    if isinstance(ids, tf.SparseTensor):
        # safe_: rows with no ids (a user with no installed apps) give zeros instead of
        # being dropped from the batch.
        return tf.nn.safe_embedding_lookup_sparse(table, ids, combiner=combiner)
    return tf.gather(table, ids)


def numeric_bucket(unit_values: tf.Tensor, buckets: int) -> tf.Tensor:
    """The quantile bucket back from its [0, 1] value (the transform maps bucket i of n to
    i / (n - 1), exactly)."""
    ids = tf.cast(tf.round(tf.reshape(unit_values, [-1]) * float(buckets - 1)), tf.int64)
    return tf.clip_by_value(ids, 0, buckets - 1)


class WideLinear(keras.layers.Layer):
    """The wide part: a linear model over sparse ids (one-hot and crosses) and numerics."""

    def __init__(self, inputs: Sequence[ModelInput], **kwargs):
        super().__init__(**kwargs)
        self._inputs = tuple(_as_input(f) for f in inputs)

    def get_config(self):
        return {**super().get_config(), "inputs": [dataclasses.asdict(f) for f in self._inputs]}

    def build(self, input_shape):
        # FTRL's sparsity comes from starting at zero (as the canned linear model does).
        self.tables = {
            f.name: self.add_weight(name=f.name, initializer="zeros",
                                    shape=[f.cardinality or 1, 1])
            for f in self._inputs}
        self.bias = self.add_weight(name="bias", shape=[1], initializer="zeros")
        super().build(input_shape)

    def call(self, features):
        terms = []
        for f in self._inputs:
            values = features[f.name]
            if f.is_categorical:
                terms.append(_lookup(self.tables[f.name], values, combiner="sum"))
            elif f.cardinality:
                terms.append(tf.gather(self.tables[f.name], numeric_bucket(values, f.cardinality)))
            else:
                terms.append(tf.reshape(values, [-1, 1]) * self.tables[f.name][0])
        return tf.add_n(terms) + self.bias


class DeepTower(keras.layers.Layer):
    """The deep part: embeddings and numerics, then ReLU layers down to one logit."""

    def __init__(self, inputs: Sequence[ModelInput], embedding_dim: int,
                 hidden_units: Sequence[int], seed: int, embedding_l2: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self._inputs = tuple(_as_input(f) for f in inputs)
        self._embedding_dim = embedding_dim
        self._hidden_units = tuple(hidden_units)
        self._seed = seed
        self._embedding_l2 = embedding_l2
        self.hidden = [keras.layers.Dense(units, activation="relu", name=f"hidden_{i}",
                                          kernel_initializer=keras.initializers.GlorotUniform(
                                              seed=seed + 1000 + i))
                       for i, units in enumerate(hidden_units)]
        self.logit = keras.layers.Dense(1, name="logit",
                                        kernel_initializer=keras.initializers.GlorotUniform(
                                            seed=seed + 2000))

    def get_config(self):
        return {**super().get_config(), "inputs": [dataclasses.asdict(f) for f in self._inputs],
                "embedding_dim": self._embedding_dim, "hidden_units": list(self._hidden_units),
                "seed": self._seed, "embedding_l2": self._embedding_l2}

    def build(self, input_shape):
        # The canned DNN estimators' embedding init: N(0, 1/sqrt(dim)) truncated.
        stddev = 1.0 / math.sqrt(self._embedding_dim)
        self.embeddings = {}
        with tf.name_scope("embedding"):
            for i, f in enumerate(self._inputs):
                if f.is_categorical:
                    self.embeddings[f.name] = self.add_weight(
                        name=f.name, shape=[f.cardinality, self._embedding_dim],
                        initializer=keras.initializers.TruncatedNormal(
                            stddev=stddev, seed=self._seed + i))
        super().build(input_shape)

    def call(self, features, training=False):
        columns, squares = [], []
        for f in self._inputs:
            values = features[f.name]
            if f.is_categorical:
                columns.append(_lookup(self.embeddings[f.name], values, combiner="mean"))
                squares.append(tf.reduce_sum(tf.square(columns[-1]), axis=1))
            else:
                columns.append(tf.reshape(tf.cast(values, tf.float32), [-1, 1]))
        if training and self._embedding_l2 and squares:
            # A batch mean like the log loss, which train_step adds it to (model.losses).
            self.add_loss(self._embedding_l2 * tf.reduce_mean(tf.add_n(squares)))
        hidden = tf.concat(columns, axis=1)
        for layer in self.hidden:
            hidden = layer(hidden)
        return self.logit(hidden)


def tower_name(k: int) -> str:
    """Deep tower k's name: tower 0 is ``deep`` (a one-tower model's names are the paper
    model's, so warm start pairs it with either), then ``deep_1``, ``deep_2``, ..."""
    return DEEP if k == 0 else f"{DEEP}_{k}"


# Tower k's initializers use seeds from seed + k * TOWER_SEED_STRIDE on: a DeepTower takes
# seed + i per embedding, seed + 1000 + i per layer and seed + 2000, all below the stride.
TOWER_SEED_STRIDE = 10_000


def tower_seed(seed: int, k: int) -> int:
    return seed + k * TOWER_SEED_STRIDE


def optimizer_key(part_name: str) -> str:
    """The optimizer that trains a part: FTRL the wide one, AdaGrad every deep tower."""
    return WIDE if part_name == WIDE else DEEP


def _scaled(gradient, factor: float):
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * factor, gradient.indices, gradient.dense_shape)
    return gradient * factor


class WideDeepModel(keras.Model):
    """Joint Wide & Deep: ``call`` gives P(label = 1) of shape [batch, 1].

    ``compile`` takes ``optimizer={"wide": ..., "deep": ...}`` (see :func:`build_model`);
    ``train_step`` differentiates the one loss once and hands each optimizer its own part
    (AdaGrad trains every deep tower).
    """

    def __init__(self, inputs: Sequence[ModelInput], params: cfg.TrainParams, **kwargs):
        super().__init__(name=MODEL_NAME, **kwargs)
        self.model_inputs = tuple(_as_input(f) for f in inputs)
        self.params = params
        wide_inputs = [f for f in self.model_inputs if f.wide]
        deep_inputs = [f for f in self.model_inputs if f.deep]
        self.wide = (WideLinear(wide_inputs, name=WIDE)
                     if params.model_type in ("wide_deep", "wide") and wide_inputs else None)
        self.deep = None  # tower 0; towers 1.. are attributes deep_1, deep_2, ...
        if params.model_type in ("wide_deep", "deep") and deep_inputs:
            for k in range(params.deep_towers):
                # Set one by one (no list attribute): a one-tower model tracks exactly the
                # objects it did before towers, so its checkpoints stay what they were.
                setattr(self, tower_name(k), DeepTower(
                    deep_inputs, params.embedding_dim, params.hidden_units,
                    tower_seed(params.seed, k), params.embedding_l2, name=tower_name(k)))
        self.log_loss = keras.metrics.BinaryCrossentropy(name="log_loss", from_logits=True)
        self.auc = keras.metrics.AUC(name="auc", num_thresholds=1000)
        self.accuracy = keras.metrics.BinaryAccuracy(name="accuracy")
        self.mean_prediction = keras.metrics.Mean(name="mean_prediction")
        self.positive_rate = keras.metrics.Mean(name="positive_rate")

    def get_config(self):
        return {"inputs": [dataclasses.asdict(f) for f in self.model_inputs],
                "params": params_to_json(self.params)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(config["inputs"], params_from_json(config["params"]))

    @property
    def towers(self) -> list[DeepTower]:
        """The deep towers, tower 0 (``deep``) first; none for a wide-only model."""
        if self.deep is None:
            return []
        return [getattr(self, tower_name(k)) for k in range(self.params.deep_towers)]

    @property
    def parts(self) -> dict[str, keras.layers.Layer]:
        """The parts this model_type trains, by name ("wide", "deep", "deep_1", ...)."""
        parts = {WIDE: self.wide} if self.wide is not None else {}
        parts.update((tower.name, tower) for tower in self.towers)
        return parts

    @property
    def metrics(self):
        return [self.log_loss, self.auc, self.accuracy, self.mean_prediction,
                self.positive_rate]

    def _part_logits(self, features, training) -> tuple[tf.Tensor | None, list[tf.Tensor]]:
        """(the wide logit or None, each tower's deep logit)."""
        wide = self.wide(features, training=training) if self.wide is not None else None
        return wide, [tower(features, training=training) for tower in self.towers]

    @staticmethod
    def _combine(wide, towers: list[tf.Tensor]) -> tf.Tensor:
        """The model's logit: wide + the mean of the towers' logits."""
        deep = ([towers[0]] if len(towers) == 1
                else [tf.add_n(towers) / float(len(towers))] if towers else [])
        return tf.add_n(([wide] if wide is not None else []) + deep)

    def logits(self, features, training=False) -> tf.Tensor:
        return self._combine(*self._part_logits(features, training))

    def call(self, features, training=False):
        return tf.sigmoid(self.logits(features, training=training))

    @property
    def streams(self) -> int:
        """How many train batches a step takes: one per deep tower (each tower reads its own
        shuffle of the train split), or one."""
        return max(len(self.towers), 1)

    def train_step(self, data):
        """One step on ``(features, labels)``, or on a tuple of :attr:`streams` such pairs,
        tower k's batch k (a single pair with several towers: every tower reads it).

        One tower: the paper's joint training, one logistic loss on wide + deep. Several: a
        loss per tower, on wide + deep_k over its own batch, summed: tower k's gradient is
        exactly that of a lone tower, and no tower sees another's output, so they do not
        co-adapt; the wide part reads every batch and gets the mean of the towers' gradients
        (the scale of a one-tower model's, which FTRL's L1 and L2 are set against).
        """
        batches = [data] if isinstance(data[0], Mapping) else list(data)
        batches = [(features, tf.reshape(tf.cast(labels, tf.float32), [-1, 1]))
                   for features, labels in batches]
        towers = self.towers
        if len(batches) == 1:
            batches *= max(len(towers), 1)
        elif len(batches) != len(towers):
            raise ValueError(f"train_step got {len(batches)} batches for {len(towers)} towers")
        variables = {name: part.trainable_variables for name, part in self.parts.items()}
        # The mean over the *global* batch: with several workers (trainer.distribute) each
        # holds a slice of it, and the optimizers sum the workers' gradients.
        rows = tf.cast(tf.shape(batches[0][1])[0], tf.float32)
        replica = tf.distribute.get_replica_context()
        global_rows = replica.all_reduce(tf.distribute.ReduceOp.SUM, rows) if replica else rows
        with tf.GradientTape() as tape:
            wide_logits, deep_logits = [], []  # each part's on the batch its tower reads
            for k, (features, _) in enumerate(batches):
                shared = k and batches[k] is batches[0]  # one batch for all: one wide logit
                wide_logits.append(wide_logits[0] if shared else
                                   None if self.wide is None else
                                   self.wide(features, training=True))
                deep_logits.append(towers[k](features, training=True) if towers else None)
            own_logits = [self._combine(wide, [deep] if deep is not None else [])
                          for wide, deep in zip(wide_logits, deep_logits)]
            loss = tf.add_n([
                tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels,
                                                                      logits=logits))
                for (_, labels), logits in zip(batches, own_logits)]) / tf.maximum(global_rows,
                                                                                  1.0)
            if self.losses:  # penalties (embedding_l2): this worker's batch means
                loss += tf.add_n(self.losses) * rows / tf.maximum(global_rows, 1.0)
        # The train metrics are the model's prediction (wide + the mean of the towers) on
        # batch 0, before this step's update, as with one tower.
        features, labels = batches[0]
        logits = own_logits[0] if len(towers) <= 1 else self._combine(wide_logits[0], [
            deep_logits[0]] + [deep if batches[k] is batches[0]
                               else towers[k](features, training=False)
                               for k, deep in enumerate(deep_logits) if k])
        gradients = tape.gradient(loss, variables)
        if len(towers) > 1 and WIDE in gradients:
            gradients[WIDE] = [_scaled(g, 1.0 / len(towers)) for g in gradients[WIDE]]
        # Each optimizer steps once per step (its step counter paces the deep warm-up), over
        # every part it trains.
        by_optimizer: dict[str, list] = {}
        for name, part_variables in variables.items():
            by_optimizer.setdefault(optimizer_key(name), []).extend(
                zip(gradients[name], part_variables))
        for key, pairs in by_optimizer.items():
            if pairs:  # a frozen part has none, and its optimizer does nothing
                self.optimizer[key].apply_gradients(pairs)
        return self._update_metrics(labels, logits)

    def test_step(self, data):
        features, labels = data
        labels = tf.reshape(tf.cast(labels, tf.float32), [-1, 1])
        return self._update_metrics(labels, self.logits(features, training=False))

    def _update_metrics(self, labels, logits):
        probabilities = tf.sigmoid(logits)
        self.log_loss.update_state(labels, logits)
        self.auc.update_state(labels, probabilities)
        self.accuracy.update_state(labels, probabilities)
        self.mean_prediction.update_state(probabilities)
        self.positive_rate.update_state(labels)
        return {m.name: m.result() for m in self.metrics}


class SparseFtrl(keras.optimizers.Ftrl):
    """tf_keras' FTRL, updating only the rows a batch touched.

    ``Ftrl.update_step`` densifies a sparse gradient and rewrites every row of every table
    on each step, so a step costs as much as the largest cross space (a million hash
    buckets). For an ``IndexedSlices`` gradient (already deduplicated by ``apply_gradients``)
    this applies the same update to the batch's rows only, with TF's fused sparse FTRL
    kernel, as the canned linear estimators did. The rows left out would come out of the
    dense update unchanged: with a zero gradient (and no L2 shrinkage) FTRL recomputes a
    weight from an unchanged ``linear`` and accumulator.
    """

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices) or self.l2_shrinkage_regularization_strength:
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        learning_rate = tf.cast(self.learning_rate, dtype)
        index = self._index_dict[self._var_key(variable)]
        tf.raw_ops.ResourceSparseApplyFtrlV2(
            var=variable.handle, accum=self._accumulators[index].handle,
            linear=self._linears[index].handle, grad=gradient.values, indices=gradient.indices,
            lr=learning_rate, l1=tf.cast(self.l1_regularization_strength, dtype),
            # As Ftrl.update_step folds beta into L2.
            l2=tf.cast(self.l2_regularization_strength, dtype) + self.beta / (2.0 * learning_rate),
            l2_shrinkage=tf.constant(0.0, dtype),
            lr_power=tf.cast(self.learning_rate_power, dtype))


# The initial accumulator (a prior on the sum of squared gradients) of TF1's canned Wide &
# Deep, whose loss was the batch *sum* (DNNLinearCombinedClassifier(loss_reduction=SUM)).
SUMMED_LOSS_INITIAL_ACCUMULATOR = 0.1


def initial_accumulator(batch_size: int) -> float:
    """FTRL's and AdaGrad's initial accumulator for this trainer's loss, the batch *mean*.

    Its gradients are 1 / batch_size of the summed loss's, so the same prior is 0.1 /
    batch_size². The Keras default, 0.1, is that prior 260,000 times over at batch 512:
    measured on the app-store log, every accumulator but the two biases' was still at 0.1
    after an epoch, which turns both optimizers into plain SGD at 3.2x the learning rate,
    without the per-coordinate step sizes the paper chose them for (a rare cross or app id
    learned as slowly as the bias). With this prior they adapt, and Wide & Deep reached in
    two epochs the AUC that took five.
    """
    return SUMMED_LOSS_INITIAL_ACCUMULATOR / batch_size ** 2


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """`rate` reached linearly over the first `steps` optimizer steps, then constant.

    Why: with the small accumulator prior (:func:`initial_accumulator`) AdaGrad's first
    update is close to ``rate * sign(gradient)`` on every coordinate. On embeddings that is
    the point (a rare id learns as fast as a frequent one), but on a 1024-wide ReLU layer all
    its weights move by the full rate together: measured on the Criteo-shaped log, the log
    loss of step 2 was 181 (the app-store log: 4.1, against 0.31 for a constant guess), then
    recovered. Ramping the rate over 100 steps removes the spike (the first 50 steps stay
    below the step-1 loss on both) without the cost of a large prior, which turns AdaGrad
    into plain SGD (app-store AUC 0.761 instead of 0.780). The schedule reads the optimizer's
    step counter, which checkpoints keep, so a resumed run continues it exactly.
    """

    def __init__(self, rate: float, steps: int):
        self.rate, self.steps = float(rate), int(steps)

    def __call__(self, step):
        if self.steps <= 0:
            return tf.constant(self.rate)
        ramp = tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / float(self.steps))
        return self.rate * ramp

    def get_config(self):
        return {"rate": self.rate, "steps": self.steps}


def make_optimizers(params: cfg.TrainParams) -> dict[str, keras.optimizers.Optimizer]:
    """The paper's optimizers: FTRL with L1/L2 for the wide part, AdaGrad for the deep part."""
    accumulator = initial_accumulator(params.batch_size)
    return {
        WIDE: SparseFtrl(learning_rate=params.wide_learning_rate,
                         l1_regularization_strength=params.wide_l1,
                         l2_regularization_strength=params.wide_l2,
                         initial_accumulator_value=accumulator,
                         name="wide_ftrl"),
        DEEP: keras.optimizers.Adagrad(learning_rate=LinearWarmup(params.deep_learning_rate,
                                                                  params.deep_warmup_steps),
                                       initial_accumulator_value=accumulator,
                                       name="deep_adagrad"),
    }


def example_batch(inputs: Sequence[ModelInput]) -> dict[str, tf.Tensor | tf.SparseTensor]:
    """A one-row batch of id 0 / value 0, shaped like a parsed transformed batch."""
    batch = {}
    for f in inputs:
        if f.kind == cfg.MULTIVALENT:
            batch[f.name] = tf.SparseTensor(indices=[[0, 0]], values=tf.constant([0], tf.int64),
                                            dense_shape=[1, 1])
        elif f.kind == cfg.CATEGORICAL:
            batch[f.name] = tf.zeros([1], tf.int64)
        else:
            batch[f.name] = tf.zeros([1], tf.float32)
    return batch


def build_model(inputs: Sequence[ModelInput], params: cfg.TrainParams) -> WideDeepModel:
    """A compiled model with its variables and optimizer slots created.

    Everything is created eagerly here, so variable names never depend on where the first
    call happens, and a checkpoint can be restored (or warm-started into) right away.
    """
    model = WideDeepModel(inputs, params)
    model(example_batch(model.model_inputs))
    # Warm start pairs variables by these names; they must be unique and scoped.
    names = [v.name for part in model.parts.values() for v in part.weights]
    if len(set(names)) != len(names) or not all(n.startswith(MODEL_NAME + "/") for n in names):
        raise RuntimeError(f"model variable names are not unique and scoped: {sorted(names)}")
    optimizers = make_optimizers(params)
    trained: dict[str, list] = {}  # an optimizer builds its slots once, for all its parts
    for name, part in model.parts.items():
        trained.setdefault(optimizer_key(name), []).extend(part.trainable_variables)
    model.compile(optimizer={key: optimizers[key] for key in trained})
    for key, part_variables in trained.items():
        model.optimizer[key].build(part_variables)
    return model


def variable_key(variable: tf.Variable) -> str:
    """A model variable's name without the model scope and ":0", e.g. ``wide/installed_apps``."""
    name = variable.name.split(":")[0]
    return name.removeprefix(MODEL_NAME + "/")


def model_variables(model: WideDeepModel) -> dict[str, tf.Variable]:
    """The model's weights by :func:`variable_key`."""
    return {variable_key(v): v for part in model.parts.values() for v in part.weights}


def id_tables(model: WideDeepModel) -> dict[str, ModelInput]:
    """The variables whose rows are indexed by a feature's ids, by :func:`variable_key`."""
    by_name = {f.name: f for f in model.model_inputs}
    tables = [*(model.wide.tables.items() if model.wide is not None else ()),
              *(item for tower in model.towers for item in tower.embeddings.items())]
    # A wide numeric feature's table is indexed by its quantile bucket, not by ids.
    return {variable_key(table): by_name[name] for name, table in tables
            if by_name[name].is_categorical}


def optimizer_slots(model: WideDeepModel) -> dict[str, dict[str, tf.Variable]]:
    """Optimizer state per model variable: ``{variable_key: {slot_name: variable}}``.

    tf_keras names a slot ``<slot>/<model variable name>`` (``Optimizer.
    add_variable_from_reference``), which ties it to its variable without the optimizer's
    private index.
    """
    by_name = {v.name: variable_key(v) for v in model_variables(model).values()}
    slots: dict[str, dict[str, tf.Variable]] = {}
    for optimizer in model.optimizer.values():
        for slot in optimizer.variables:
            slot_name, _, target = slot.name.partition("/")
            if target in by_name:
                slots.setdefault(by_name[target], {})[slot_name] = slot
    return slots


# Per step. With the warm-up in WeightAverage.update a short run is averaged from its start;
# a long one over roughly its last 1 / (1 - decay) = 100 steps.
AVERAGE_DECAY = 0.99


class WeightAverage(tf.Module):
    """An exponential moving average of the model's weights (Polyak averaging, as
    ``tf.train.ExponentialMovingAverage(decay, num_updates)``): the weights that are
    evaluated, and that a run ends on, so they are what is checkpointed last and exported.

    Why not the last step's weights: a step moves the *level* of the logit (the mean
    prediction) by a multiple of its batch's error ``mean(p - label)``, because every weight
    on an always-present path (each part's bias, frequent ids, the deep tower's weights: ReLU
    outputs are >= 0) moves it the same way. Measured on the app-store log (200k rows, batch
    512, the shipped learning rates), one step moves the level by 12x the batch's error, and
    a batch's label rate varies by ±0.013 around 0.094, so the last step's level wanders by
    ±0.14 logits (±15% in mean prediction) from step to step. Without this average (and at
    learning rate 0.3) the final model carried the *last batch's* label rate: mean
    prediction 0.063 after a last batch at 0.067, calibration 0.64, while the running mean
    over the epoch looked right (0.094). The average over the last ~100 steps cancels these
    swings (calibration within 6% on train rows) and costs no AUC.
    """

    def __init__(self, model: WideDeepModel, decay: float = AVERAGE_DECAY):
        super().__init__(name="weight_average")
        self.decay = decay
        self._weights = list(model_variables(model).values())
        self.averages = [tf.Variable(w, trainable=False) for w in self._weights]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False)

    def update(self) -> None:
        """One averaging step, after a training step (call it inside that step's tf.function)."""
        self.updates.assign_add(1)
        updates = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + updates) / (10.0 + updates))
        for average, weight in zip(self.averages, self._weights):
            average.assign_sub((1.0 - decay) * (average - weight))

    def reset(self) -> None:
        """Starts the average at the current weights (after a cold or a warm start)."""
        for average, weight in zip(self.averages, self._weights):
            average.assign(weight)
        self.updates.assign(0)

    def commit(self) -> None:
        """Ends a run on the averaged weights: the model's weights become the average."""
        for average, weight in zip(self.averages, self._weights):
            weight.assign(average)

    @contextlib.contextmanager
    def applied(self):
        """The averaged weights in the model while the block runs (to evaluate them)."""
        last = [tf.identity(weight) for weight in self._weights]
        self.commit()
        try:
            yield
        finally:
            for weight, value in zip(self._weights, last):
                weight.assign(value)


# ---------------------------------------------------------------------------------------
# The trained model on disk: model.json (inputs + hyperparameters) and weights.


def params_to_json(params: cfg.TrainParams) -> dict:
    return dataclasses.asdict(params)


def params_from_json(data: Mapping) -> cfg.TrainParams:
    fields = {f.name: f for f in dataclasses.fields(cfg.TrainParams)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
    return cfg.TrainParams(**values)


def save_model(model: WideDeepModel, path: str) -> None:
    """Writes ``model.json`` and the parts' weights (no optimizer state) under ``path``."""
    paths.makedirs(path)
    spec = model.get_config()
    tf.train.Checkpoint(**model.parts).write(paths.join(path, WEIGHTS_PREFIX))
    paths.write_json(paths.join(path, MODEL_SPEC_FILE), spec)


def load_weights(model: WideDeepModel, path: str) -> None:
    """Puts the weights saved by :func:`save_model` at `path` into `model` (same inputs)."""
    tf.train.Checkpoint(**model.parts).read(paths.join(path, WEIGHTS_PREFIX)).expect_partial()


def load_model(path: str) -> WideDeepModel:
    """Rebuilds a model written by :func:`save_model`; needs no transform output."""
    spec_path = paths.join(path, MODEL_SPEC_FILE)
    spec = paths.read_json(spec_path)
    if spec is None:
        raise FileNotFoundError(f"{spec_path}: no trained model here (expected "
                                f"{MODEL_SPEC_FILE} and {WEIGHTS_PREFIX}.* written by "
                                f"training)")
    model = build_model(spec["inputs"], params_from_json(spec["params"]))
    tf.train.Checkpoint(**model.parts).read(
        paths.join(path, WEIGHTS_PREFIX)).assert_existing_objects_matched()
    return model


def training_checkpoint(model: WideDeepModel, **counters: tf.Variable | tf.Module
                        ) -> tf.train.Checkpoint:
    """What ``checkpoints/`` holds: the model with its optimizers' state, plus counters (and
    the :class:`WeightAverage`, which only resuming reads).

    Training resumes from it and warm start reads optimizer accumulators from it, so both
    must build it here, the same way. The last checkpoint of a run holds its final (averaged)
    weights.
    """
    return tf.train.Checkpoint(model=model, **counters)


@dataclasses.dataclass(frozen=True)
class ModelDir:
    """The layout of a training run's model_dir, shared by training, warm start and export."""
    root: str

    checkpoints = paths.under("checkpoints")
    tensorboard = paths.under("tensorboard")
    hparams = paths.under("hparams.json")
    vocab = paths.under("vocab", doc="Copies of the vocabularies trained on, so warm start "
                                     "can remap against them later.")
    history = paths.under("history.json")
    progress = paths.under("progress.jsonl", doc="Per-step train log loss, AUC and speed as "
                                                 "JSON lines (what the report plots).")
    warm_start_report = paths.under("warm_start.json")
    keras_model = paths.under("keras_model", doc="The final trained model (save_model), "
                                                 "written last but for the summary.")
    best_model = paths.under("best_model", doc="The best epoch's weights so far, by "
                                               "validation log loss (early stopping).")
    summary = paths.under("summary.json")
    done = paths.under("DONE")

    def vocab_file(self, vocab_name: str) -> str:
        return paths.join(self.root, "vocab", vocab_name)

    def latest_checkpoint(self) -> str | None:
        return tf.train.latest_checkpoint(self.checkpoints)
