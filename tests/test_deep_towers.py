"""Deep towers (``train.deep_towers``): an ensemble of deep towers inside one model. Each
tower learns from its own loss on its own batch, exactly as a lone tower would; the wide
part from the mean of their gradients; the model predicts from wide + their mean. Warm start
between tower counts is in test_warm_start.py, export in test_export.py, resume in
test_trainer.py."""

import dataclasses

import numpy as np
import tensorflow as tf

from tests.test_trainer import _tiny_inputs
from trainer import model as model_lib
from transforms import config as cfg

# embedding_l2 on: each tower's penalty must weigh on its own gradient as on a lone tower's.
PARAMS = cfg.TrainParams(hidden_units=(8, 4), embedding_dim=3, embedding_l2=0.5,
                         deep_warmup_steps=0)
THREE = dataclasses.replace(PARAMS, deep_towers=3)


_inputs = _tiny_inputs  # the trainer tests' four inputs: one of each kind the towers read


def _batch(seed: int, rows: int = 6):
    rng = np.random.default_rng(seed)
    features = {
        "app": tf.constant(rng.integers(0, 5, rows), tf.int64),
        "apps": tf.SparseTensor([[r, 0] for r in range(rows)],
                                tf.constant(rng.integers(0, 6, rows), tf.int64), [rows, 1]),
        "pair": tf.SparseTensor([[r, 0] for r in range(rows)],
                                tf.constant(rng.integers(0, 7, rows), tf.int64), [rows, 1]),
        "score": tf.constant(rng.uniform(size=rows), tf.float32),
    }
    return features, tf.constant(rng.integers(0, 2, rows), tf.int64)


def _tower_key(key: str, k: int) -> str:
    """A one-tower model's variable key as tower k's (``deep/...`` -> ``deep_k/...``)."""
    return key.replace(model_lib.DEEP + "/", model_lib.tower_name(k) + "/", 1)


def _lone(model, k: int):
    """A one-tower model holding `model`'s wide part and its tower k (fresh optimizers, like
    `model`'s)."""
    lone = model_lib.build_model(_inputs(), PARAMS)
    weights = model_lib.model_variables(model)
    for key, variable in model_lib.model_variables(lone).items():
        variable.assign(weights[_tower_key(key, k)])
    return lone


def test_one_tower_is_the_model_as_before():
    assert cfg.TrainParams().deep_towers == 1
    model = model_lib.build_model(_inputs(), PARAMS)
    assert list(model.parts) == ["wide", "deep"] and model.towers == [model.deep]
    assert model.streams == 1
    assert all(key.split("/")[0] in ("wide", "deep") for key in model_lib.model_variables(model))


def test_towers_start_distinct_and_the_model_predicts_wide_plus_their_mean():
    model = model_lib.build_model(_inputs(), THREE)
    assert list(model.parts) == ["wide", "deep", "deep_1", "deep_2"]
    assert model.streams == 3 and set(model.optimizer) == {"wide", "deep"}
    keys = model_lib.model_variables(model)
    for k in (1, 2):  # tower 0 keeps the one-tower names; the others mirror them
        for key in ("deep/embedding/app", "deep/hidden_0/kernel", "deep/logit/kernel"):
            assert not np.array_equal(keys[key].numpy(), keys[_tower_key(key, k)].numpy())
    assert set(model_lib.id_tables(model)) >= {"deep/embedding/app", "deep_1/embedding/app",
                                               "deep_2/embedding/apps"}
    features, _ = _batch(0)
    expected = model.wide(features) + sum(t(features) for t in model.towers) / 3.0
    np.testing.assert_allclose(model.logits(features).numpy(), expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(model(features).numpy(), tf.sigmoid(expected).numpy(),
                               rtol=1e-5)


def test_each_tower_steps_exactly_as_a_lone_tower_on_its_own_batch():
    model = model_lib.build_model(_inputs(), THREE)
    batches = tuple(_batch(seed) for seed in (1, 2, 3))
    lones = [_lone(model, k) for k in range(3)]
    before = {k: v.numpy().copy() for k, v in model_lib.model_variables(model).items()}
    model.train_step(batches)
    # One step of each optimizer, whatever the number of towers (the deep warm-up reads it).
    assert int(model.optimizer["deep"].iterations) == 1
    assert int(model.optimizer["wide"].iterations) == 1
    after = model_lib.model_variables(model)
    for k, lone in enumerate(lones):
        lone.train_step(batches[k])
        for key, variable in model_lib.model_variables(lone).items():
            if key.startswith("deep/"):
                if "embedding" not in key:  # (rows no batch looked up stay put)
                    assert not np.array_equal(before[_tower_key(key, k)], variable.numpy())
                np.testing.assert_allclose(after[_tower_key(key, k)].numpy(), variable.numpy(),
                                           rtol=1e-5, atol=1e-7)


def test_the_wide_part_gets_the_mean_of_the_towers_gradients():
    # Three identical towers on one batch: the mean of their three (equal) gradients is a
    # lone tower's, so the wide part, FTRL state included, moves exactly as in a one-tower
    # model. A sum would move it (and its accumulators) by three times as much.
    model = model_lib.build_model(_inputs(), THREE)
    weights = model_lib.model_variables(model)
    for key, variable in weights.items():
        if key.startswith(("deep_1/", "deep_2/")):
            variable.assign(weights["deep/" + key.split("/", 1)[1]])
    lone = _lone(model, 0)
    batch = _batch(4)
    model.train_step(batch)
    lone.train_step(batch)
    lone_weights = model_lib.model_variables(lone)
    lone_slots, slots = model_lib.optimizer_slots(lone), model_lib.optimizer_slots(model)
    for key in ("wide/app", "wide/apps", "wide/pair", "wide/score", "wide/bias"):
        np.testing.assert_allclose(weights[key].numpy(), lone_weights[key].numpy(), rtol=1e-5,
                                   atol=1e-7)
        for name in ("accumulator", "linear"):
            np.testing.assert_allclose(slots[key][name].numpy(), lone_slots[key][name].numpy(),
                                       rtol=1e-5, atol=1e-9)
    assert np.any(weights["wide/app"].numpy() != 0)
