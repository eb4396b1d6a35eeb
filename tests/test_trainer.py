"""The trainer on the tiny transform output: learning, the two optimizers, save/reload,
ablations, and resuming a run killed with SIGKILL."""

import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from trainer import data
from trainer import model as model_lib
from trainer import train as train_lib
from transforms import config as cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(transform_output, **changes) -> cfg.TrainParams:
    return dataclasses.replace(transform_output.config.train, **changes)


@pytest.fixture(scope="module")
def trained(transform_output, tmp_path_factory):
    """One complete three-epoch run, shared by the tests that only read its results."""
    model_dir = str(tmp_path_factory.mktemp("trained") / "model")
    params = _params(transform_output, epochs=3)
    lines = []
    summary = train_lib.train(transform_output.config, transform_output.transform_dir,
                              model_dir, params=params, log=lines.append, log_every_steps=10)
    return types.SimpleNamespace(model_dir=model_dir, summary=summary, lines=lines,
                                 params=params)


def test_a_finished_run_is_not_trained_again_with_the_same_params(trained, transform_output):
    """A rerun of a finished stage (cron retrying a night) costs nothing and changes nothing;
    other params train again."""
    layout = model_lib.ModelDir(trained.model_dir)
    before = os.path.getmtime(layout.summary)
    lines = []
    again = train_lib.train(transform_output.config, transform_output.transform_dir,
                            trained.model_dir, params=trained.params, log=lines.append)
    assert again["steps"] == trained.summary["steps"]
    assert any("already trained" in line for line in lines), lines
    assert os.path.getmtime(layout.summary) == before


def _eval_batches(transform_output, n=3):
    config = transform_output.config
    tft_output = tft.TFTransformOutput(transform_output.transform_dir)
    spec = tft_output.transformed_feature_spec()
    dataset = data.make_dataset(data.split_files(transform_output.transform_dir, data.EVAL),
                                spec, config.label.column, 64, shuffle=False)
    return list(dataset.take(n))


def test_loss_falls_and_the_run_leaves_its_model_dir_complete(trained, transform_output):
    history = json.load(open(os.path.join(trained.model_dir, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train"]["log_loss"] < history[0]["train"]["log_loss"]
    assert trained.summary["final_eval"] == history[-1]["eval"]
    assert set(trained.summary["final_eval"]) >= {"auc", "log_loss", "accuracy"}

    layout = model_lib.ModelDir(trained.model_dir)
    assert os.path.exists(layout.done)
    assert json.load(open(layout.summary))["steps"] == trained.summary["steps"]
    hparams = model_lib.params_from_json(json.load(open(layout.hparams)))
    assert hparams == trained.params
    assert layout.latest_checkpoint().endswith(f"ckpt-{trained.summary['steps']}")
    for split in ("train", "eval"):
        assert os.listdir(os.path.join(layout.tensorboard, split))
    progress = [json.loads(line) for line in open(layout.progress)]
    assert [p["step"] for p in progress] == list(range(10, trained.summary["steps"] + 1, 10))
    assert all(p["log_loss"] > 0 and 0 <= p["auc"] <= 1 for p in progress)
    tft_output = tft.TFTransformOutput(transform_output.transform_dir)
    for vocab_name in os.listdir(layout.vocab):
        with open(layout.vocab_file(vocab_name), "rb") as kept, tf.io.gfile.GFile(
                tft_output.vocabulary_file_by_name(vocab_name), "rb") as original:
            assert kept.read() == original.read()
    assert "train: cold start (no warm_start_from)" in trained.lines
    assert any("examples/s" in line and "ETA" in line for line in trained.lines)
    assert all("\n" not in line for line in trained.lines)


def test_reloaded_model_gives_identical_predictions(trained, transform_output, tmp_path):
    # Only keras_model/ is copied: the reloaded model needs no transform output.
    moved = tmp_path / "moved"
    shutil.copytree(os.path.join(trained.model_dir, "keras_model"), moved / "keras_model")
    reloaded = train_lib.load_trained_model(str(moved))

    layout = model_lib.ModelDir(trained.model_dir)
    from_checkpoint = model_lib.build_model(reloaded.model_inputs, reloaded.params)
    model_lib.training_checkpoint(from_checkpoint).restore(
        layout.latest_checkpoint()).expect_partial()
    for features, labels in _eval_batches(transform_output):
        expected = from_checkpoint(features).numpy()
        np.testing.assert_array_equal(reloaded(features).numpy(), expected)
        assert expected.shape == (labels.shape[0], 1)
        assert np.all((expected > 0) & (expected < 1))


def _tiny_inputs():
    return (
        model_lib.ModelInput("app", cfg.CATEGORICAL, wide=True, deep=True, cardinality=5),
        model_lib.ModelInput("apps", cfg.MULTIVALENT, wide=True, deep=True, cardinality=6),
        model_lib.ModelInput("pair", cfg.MULTIVALENT, wide=True, deep=False, cardinality=7),
        model_lib.ModelInput("score", cfg.NUMERIC, wide=True, deep=True),
    )


def _tiny_batch():
    features = {
        "app": tf.constant([0, 1, 4, 2], tf.int64),
        "apps": tf.SparseTensor([[0, 0], [0, 1], [2, 0]], tf.constant([1, 3, 5], tf.int64),
                                [4, 2]),
        "pair": tf.SparseTensor([[1, 0], [3, 0]], tf.constant([2, 6], tf.int64), [4, 1]),
        "score": tf.constant([0.0, 0.5, 1.0, 0.25]),
    }
    return features, tf.constant([1, 0, 1, 0], tf.int64)


def _snapshot(layer):
    return [v.numpy().copy() for v in layer.trainable_variables]


def _changed(layer, before):
    return [not np.array_equal(v.numpy(), b) for v, b in zip(layer.trainable_variables, before)]


def test_each_optimizer_updates_only_its_own_part():
    params = cfg.TrainParams(hidden_units=(8, 4), embedding_dim=3, wide_l1=0.01, wide_l2=0.02)
    model = model_lib.build_model(_tiny_inputs(), params)
    wide_opt, deep_opt = model.optimizer["wide"], model.optimizer["deep"]
    assert isinstance(wide_opt, keras.optimizers.Ftrl)
    assert isinstance(deep_opt, keras.optimizers.Adagrad)
    assert wide_opt.l1_regularization_strength == 0.01
    assert wide_opt.l2_regularization_strength == 0.02
    slots = model_lib.optimizer_slots(model)
    assert slots["wide/app"].keys() == {"accumulator", "linear"}        # FTRL
    assert slots["deep/embedding/app"].keys() == {"accumulator"}       # AdaGrad
    assert set(model_lib.model_variables(model)) >= {
        "wide/app", "wide/apps", "wide/pair", "wide/score", "deep/embedding/app",
        "deep/embedding/apps", "deep/hidden_0/kernel", "deep/logit/kernel"}
    batch = _tiny_batch()

    # Joint step: one loss, both parts move, each optimizer stepped once.
    wide_before, deep_before = _snapshot(model.wide), _snapshot(model.deep)
    model.train_step(batch)
    assert any(_changed(model.wide, wide_before)) and any(_changed(model.deep, deep_before))
    assert int(wide_opt.iterations) == 1 and int(deep_opt.iterations) == 1
    assert np.any(slots["wide/app"]["linear"].numpy() != 0)

    # No gradient reaches a frozen part: its variables and its optimizer stay put.
    model.deep.trainable = False
    wide_before, deep_before = _snapshot(model.wide), _snapshot(model.deep)
    model.train_step(batch)
    assert not any(_changed(model.deep, deep_before)) and any(_changed(model.wide, wide_before))
    assert int(deep_opt.iterations) == 1 and int(wide_opt.iterations) == 2

    model.deep.trainable, model.wide.trainable = True, False
    wide_before, deep_before = _snapshot(model.wide), _snapshot(model.deep)
    model.train_step(batch)
    assert not any(_changed(model.wide, wide_before)) and any(_changed(model.deep, deep_before))
    assert int(wide_opt.iterations) == 2 and int(deep_opt.iterations) == 2


def test_embedding_l2_shrinks_only_the_rows_a_batch_looked_up():
    params = cfg.TrainParams(hidden_units=(4,), embedding_dim=3, embedding_l2=100.0)
    model = model_lib.build_model(_tiny_inputs(), params)
    table = model.deep.embeddings["app"]
    before = table.numpy().copy()
    model.train_step(_tiny_batch())  # "app" ids 0, 1, 4, 2: row 3 is not looked up
    after = table.numpy()
    np.testing.assert_array_equal(after[3], before[3])
    looked_up = [0, 1, 2, 4]
    assert np.all(np.abs(after[looked_up]) < np.abs(before[looked_up]))


def test_sparse_ftrl_makes_the_same_updates_as_the_dense_one():
    settings = dict(learning_rate=0.1, l1_regularization_strength=0.01,
                    l2_regularization_strength=0.02)
    dense_opt, sparse_opt = keras.optimizers.Ftrl(**settings), model_lib.SparseFtrl(**settings)
    dense_table, sparse_table = tf.Variable(tf.zeros([6, 1])), tf.Variable(tf.zeros([6, 1]))
    for ids, values in [([0, 3, 3], [0.5, -1.0, 0.3]), ([3, 5], [2.0, -0.1]), ([0], [-0.7])]:
        gradient = tf.IndexedSlices(tf.constant(values)[:, None], tf.constant(ids),
                                    tf.constant([6, 1]))
        dense_opt.apply_gradients([(tf.convert_to_tensor(gradient), dense_table)])
        sparse_opt.apply_gradients([(gradient, sparse_table)])
    np.testing.assert_allclose(sparse_table.numpy(), dense_table.numpy(), rtol=1e-6)
    assert np.count_nonzero(sparse_table.numpy()) == 3
    for dense_slot, sparse_slot in zip(dense_opt.variables, sparse_opt.variables):
        np.testing.assert_allclose(sparse_slot.numpy(), dense_slot.numpy(), rtol=1e-6)


def test_an_empty_multivalent_row_is_scored_not_dropped():
    model = model_lib.build_model(_tiny_inputs(), cfg.TrainParams(hidden_units=(4,),
                                                                  embedding_dim=2))
    features, _ = _tiny_batch()  # row 3 has no "apps", rows 0 and 2 no "pair"
    assert model(features).shape == (4, 1)


@pytest.mark.parametrize("model_type", ["wide", "deep"])
def test_ablations_train_only_their_part(model_type, transform_output, tmp_path):
    params = _params(transform_output, model_type=model_type, max_steps=4)
    summary = train_lib.train(transform_output.config, transform_output.transform_dir,
                              str(tmp_path), params=params, log=lambda line: None)
    assert summary["steps"] == 4 and "auc" in summary["final_eval"]
    model = train_lib.load_trained_model(str(tmp_path))
    assert set(model.parts) == {model_type}
    assert set(model.optimizer) == {model_type}
    assert all(key.startswith(model_type + "/") for key in model_lib.model_variables(model))


def test_skipped_batches_are_exactly_the_ones_already_trained(transform_output):
    config = transform_output.config
    spec = tft.TFTransformOutput(transform_output.transform_dir).transformed_feature_spec()
    files = data.split_files(transform_output.transform_dir, data.TRAIN)

    def batches(skip):
        dataset = data.make_dataset(files, spec, config.label.column, 50, shuffle=True,
                                    seed=3, skip_batches=skip)
        return [{name: tf.sparse.to_dense(value).numpy()
                 if isinstance(value, tf.SparseTensor) else value.numpy()
                 for name, value in dict(features, label=labels).items()}
                for features, labels in dataset]

    full, resumed = batches(0), batches(4)
    assert len(resumed) == len(full) - 4
    for expected, actual in zip(full[4:], resumed):
        assert expected.keys() == actual.keys()
        for name in expected:
            np.testing.assert_array_equal(expected[name], actual[name])


# The child trains, and after its first checkpoint blocks in its log callable, so the test
# can SIGKILL it at a known step.
_CHILD = """
import pickle, sys, time
from trainer import train
config, transform_dir, model_dir, params = pickle.load(open(sys.argv[1], "rb"))

def log(line):
    print(line, flush=True)
    if line.startswith("train: checkpoint saved at step"):
        time.sleep(600)

train.train(config, transform_dir, model_dir, params=params, log=log)
"""


@pytest.mark.parametrize("deep_towers", [1, 3])  # 3: each tower skips in its own order
def test_a_killed_run_resumes_from_its_checkpoint_step(deep_towers, transform_output, tmp_path):
    params = _params(transform_output, epochs=2, checkpoint_every_steps=10,
                     deep_towers=deep_towers)
    model_dir = str(tmp_path / "model")
    job = tmp_path / "job.pkl"
    job.write_bytes(pickle.dumps((transform_output.config, transform_output.transform_dir,
                                  model_dir, params)))
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(job)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(120, child.kill)
    watchdog.start()
    output = []
    try:
        for line in child.stdout:
            output.append(line)
            if line.startswith("train: checkpoint saved at step"):
                break
        assert child.poll() is None, "".join(output)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        watchdog.cancel()
        child.kill()
    assert output[-1].startswith("train: checkpoint saved at step 10:"), "".join(output)
    assert not os.path.exists(os.path.join(model_dir, "DONE"))

    lines = []
    summary = train_lib.train(transform_output.config, transform_output.transform_dir,
                              model_dir, params=params, log=lines.append)
    assert any(line.startswith("train: resuming from") and "at step 10 " in line
               for line in lines), lines
    assert "train: cold start (no warm_start_from)" not in lines
    assert summary["resumed_from_step"] == 10
    assert summary["steps"] == 2 * summary["steps_per_epoch"]
    assert summary["steps_this_run"] == summary["steps"] - 10
    history = json.load(open(os.path.join(model_dir, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2]

    # Same data order, same optimizer state: the same model as a run never interrupted.
    uninterrupted = train_lib.train(transform_output.config, transform_output.transform_dir,
                                    str(tmp_path / "uninterrupted"), params=params,
                                    log=lambda line: None)
    for metric in ("log_loss", "auc"):
        assert summary["final_eval"][metric] == pytest.approx(
            uninterrupted["final_eval"][metric], rel=1e-4)


def test_early_stopping_rule_counts_complete_epochs_after_the_best():
    def epoch(n, loss, complete=True):
        return {"epoch": n, "complete": complete, "validation": {"log_loss": loss}}
    history = [epoch(1, 0.50), epoch(2, 0.45), epoch(3, 0.46), epoch(4, 0.45)]
    assert train_lib._best_epoch(history)["epoch"] == 2  # the first of equals
    assert not train_lib._early_stop(history[:3], patience=2)
    assert train_lib._early_stop(history, patience=2)
    assert not train_lib._early_stop(history, patience=0)  # off
    assert not train_lib._early_stop(history[:3] + [epoch(4, 0.47, complete=False)], 2)
    assert train_lib._best_epoch([{"epoch": 1, "complete": True}]) is None  # no holdout


def test_early_stopping_keeps_the_best_epochs_weights(transform_output, tmp_path):
    """A rate high enough (and an L2 low enough) to overfit these 4,000 rows after one
    epoch: training stops one epoch later and the model it leaves is epoch 1's, not the
    last one's."""
    params = _params(transform_output, epochs=6, early_stopping_patience=1,
                     deep_learning_rate=0.5, wide_learning_rate=0.5, wide_l2=0.0001)
    model_dir = str(tmp_path / "model")
    lines = []
    summary = train_lib.train(transform_output.config, transform_output.transform_dir,
                              model_dir, params=params, log=lines.append)
    history = json.load(open(os.path.join(model_dir, "history.json")))
    losses = [h["validation"]["log_loss"] for h in history]
    best = summary["best_epoch"]
    assert losses[best - 1] == min(losses) and summary["stopped_early"]
    assert len(history) == best + 1 < params.epochs  # stopped one epoch after the best
    assert any(f"keeping epoch {best}'s weights" in line for line in lines)
    assert summary["final_eval"] == history[best - 1]["eval"]
    # The saved model is the best epoch's: it scores eval as that epoch did.
    model = train_lib.load_trained_model(model_dir)
    labels, probabilities = [], []
    for features, batch_labels in _eval_batches(transform_output, n=1000):
        probabilities.append(model(features, training=False).numpy().ravel())
        labels.append(batch_labels.numpy().ravel())
    from pipeline import gate
    loss = gate.log_loss(np.concatenate(labels), np.concatenate(probabilities))
    assert abs(loss - history[best - 1]["eval"]["log_loss"]) < 1e-4
    assert abs(loss - history[-1]["eval"]["log_loss"]) > 1e-4
    assert not os.path.exists(os.path.join(model_dir, "best_model"))  # cleaned up after DONE
