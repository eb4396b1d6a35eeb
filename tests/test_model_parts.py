"""Parts of the model a user's results depend on: the deep warm-up and numeric columns read
by quantile bucket in the wide part."""

import numpy as np
import tensorflow as tf

from trainer import model as model_lib
from transforms import config as cfg


def test_the_deep_rate_ramps_up_then_holds_and_zero_steps_means_none():
    schedule = model_lib.LinearWarmup(0.05, 100)
    rates = [float(schedule(tf.constant(step))) for step in (0, 49, 99, 100, 10_000)]
    np.testing.assert_allclose(rates, [0.0005, 0.025, 0.05, 0.05, 0.05], rtol=1e-6)
    assert float(model_lib.LinearWarmup(0.05, 0)(tf.constant(0))) == np.float32(0.05)
    params = cfg.TrainParams(deep_learning_rate=0.02, deep_warmup_steps=10)
    deep = model_lib.make_optimizers(params)[model_lib.DEEP]
    assert float(deep.learning_rate) == np.float32(0.002)  # step 0 of 10


def test_a_numeric_wide_feature_has_one_weight_per_quantile_bucket():
    buckets = 7
    unit = tf.constant(np.arange(buckets) / (buckets - 1), tf.float32)  # the transform's values
    np.testing.assert_array_equal(model_lib.numeric_bucket(unit, buckets).numpy(),
                                  np.arange(buckets))
    price = model_lib.ModelInput(name="price", kind=cfg.NUMERIC, wide=True, deep=False,
                                 cardinality=buckets)
    wide = model_lib.WideLinear([price])
    wide.build(None)
    assert wide.tables["price"].shape == (buckets, 1)
    wide.tables["price"].assign(np.arange(buckets, dtype=np.float32).reshape(-1, 1) ** 2)
    logits = wide({"price": unit}).numpy().ravel()
    np.testing.assert_allclose(logits, np.arange(buckets) ** 2)  # non-monotone: any shape
    # A model saved before buckets (cardinality 0) keeps its one weight per numeric feature.
    old = model_lib.WideLinear([model_lib.ModelInput(name="price", kind=cfg.NUMERIC,
                                                     wide=True, deep=False)])
    old.build(None)
    assert old.tables["price"].shape == (1, 1)
