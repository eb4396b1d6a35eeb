"""Warm start remaps rows by token: hand-made vocabularies and a tiny model, then the real
path through ``train(warm_start_from=...)`` on the tiny transform output."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer import model as model_lib
from trainer import train as train_lib
from trainer import warm_start as warm_start_lib
from transforms import config as cfg

PARAMS = cfg.TrainParams(hidden_units=(6, 3), embedding_dim=4)


def _inputs(app_tokens, tag_tokens):
    return (
        model_lib.ModelInput("app", cfg.CATEGORICAL, wide=True, deep=True,
                             cardinality=len(app_tokens) + 1, vocab_name="vocab_app",
                             oov_buckets=1),
        model_lib.ModelInput("tags", cfg.MULTIVALENT, wide=False, deep=True,
                             cardinality=len(tag_tokens) + 2, vocab_name="vocab_tags",
                             oov_buckets=2),
        model_lib.ModelInput("bucket", cfg.CATEGORICAL, wide=True, deep=False, cardinality=5),
        model_lib.ModelInput("score", cfg.NUMERIC, wide=True, deep=True),
    )


def _write_vocab(directory, name, tokens):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "w") as f:
        f.write("".join(f"{t}\n" for t in tokens))


def _previous_run(root, app_tokens, tag_tokens, params=PARAMS):
    """A finished model_dir whose every weight and accumulator is distinct random values."""
    layout = model_lib.ModelDir(str(root))
    model = model_lib.build_model(_inputs(app_tokens, tag_tokens), params)
    rng = np.random.default_rng(0)
    for variable in model_lib.model_variables(model).values():
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    for slots in model_lib.optimizer_slots(model).values():
        for slot in slots.values():
            slot.assign(rng.uniform(0.2, 2.0, size=slot.shape).astype(np.float32))
    model_lib.save_model(model, layout.keras_model)
    tf.train.CheckpointManager(model_lib.training_checkpoint(model), layout.checkpoints,
                               max_to_keep=1).save(checkpoint_number=7)
    _write_vocab(layout.vocab, "vocab_app", app_tokens)
    _write_vocab(layout.vocab, "vocab_tags", tag_tokens)
    return model


def _values(model):
    variables = {k: v.numpy().copy() for k, v in model_lib.model_variables(model).items()}
    slots = {(k, name): s.numpy().copy()
             for k, by_name in model_lib.optimizer_slots(model).items()
             for name, s in by_name.items()}
    return variables, slots


def test_rows_follow_their_token_and_new_tokens_stay_fresh(tmp_path):
    old = _previous_run(tmp_path / "old", ["a", "b", "c"], ["x", "y"])
    old_vars, old_slots = _values(old)

    new_vocab = str(tmp_path / "new" / "vocab")
    _write_vocab(new_vocab, "vocab_app", ["c", "d", "a"])       # b dropped, d new, reordered
    _write_vocab(new_vocab, "vocab_tags", ["y", "x", "z"])
    new = model_lib.build_model(_inputs(["c", "d", "a"], ["y", "x", "z"]), PARAMS)
    fresh_vars, fresh_slots = _values(new)
    lines = []
    report = warm_start_lib.warm_start(new, str(tmp_path / "old"), new_vocab, log=lines.append)
    new_vars, new_slots = _values(new)

    # (variable, new row <- old row) for tokens in both vocabularies and the OOV buckets.
    kept = [("wide/app", 2, 0), ("wide/app", 0, 2), ("wide/app", 3, 3),
            ("deep/embedding/app", 2, 0), ("deep/embedding/app", 0, 2),
            ("deep/embedding/app", 3, 3),
            ("deep/embedding/tags", 0, 1), ("deep/embedding/tags", 1, 0),
            ("deep/embedding/tags", 3, 2), ("deep/embedding/tags", 4, 3)]
    for key, new_row, old_row in kept:
        np.testing.assert_array_equal(new_vars[key][new_row], old_vars[key][old_row])
        slot_names = ["accumulator", "linear"] if key.startswith("wide/") else ["accumulator"]
        for slot in slot_names:
            np.testing.assert_array_equal(new_slots[(key, slot)][new_row],
                                          old_slots[(key, slot)][old_row])

    # New tokens keep the new model's own initialisation, optimizer state included.
    for key, new_row in [("wide/app", 1), ("deep/embedding/app", 1), ("deep/embedding/tags", 2)]:
        np.testing.assert_array_equal(new_vars[key][new_row], fresh_vars[key][new_row])
        for (slot_key, slot), value in new_slots.items():
            if slot_key == key:
                np.testing.assert_array_equal(value[new_row], fresh_slots[(key, slot)][new_row])
    assert not np.array_equal(fresh_vars["deep/embedding/app"][1],
                              old_vars["deep/embedding/app"][1])

    # Hashed buckets, numeric weights, dense layers and biases carry over as they are.
    for key in ["wide/bucket", "wide/score", "wide/bias", "deep/hidden_0/kernel",
                "deep/hidden_1/bias", "deep/logit/kernel"]:
        np.testing.assert_array_equal(new_vars[key], old_vars[key])
    np.testing.assert_array_equal(new_slots[("deep/hidden_0/kernel", "accumulator")],
                                  old_slots[("deep/hidden_0/kernel", "accumulator")])

    assert report["vocabularies"]["vocab_app"] == {"remapped": 2, "new": 1, "dropped": 1,
                                                   "oov_rows_carried": 1}
    assert report["vocabularies"]["vocab_tags"] == {"remapped": 2, "new": 1, "dropped": 0,
                                                    "oov_rows_carried": 2}
    assert report["hashed"]["bucket"] == {"hashed_rows_carried": 5}
    assert report["fresh"] == {}
    assert lines[0].startswith(f"warm start: from {tmp_path / 'old'} (ckpt-7)")
    assert ("warm start: vocab_app: 2 tokens remapped, 1 new, 1 dropped, 1 OOV rows carried"
            in lines)


def test_oov_rows_carry_over_positionally_when_their_count_changes():
    new_rows, old_rows, counts = warm_start_lib.token_row_map(
        [b"a", b"b"], [b"b", b"a", b"c"], old_oov=3, new_oov=2)
    assert dict(zip(new_rows.tolist(), old_rows.tolist())) == {0: 1, 1: 0, 3: 2, 4: 3}
    assert counts == {"remapped": 2, "new": 1, "dropped": 0, "oov_rows_carried": 2}


def test_changed_shapes_stay_fresh_and_are_reported(tmp_path):
    _previous_run(tmp_path / "old", ["a", "b"], ["x"])
    new_vocab = str(tmp_path / "vocab")
    _write_vocab(new_vocab, "vocab_app", ["a", "b"])
    _write_vocab(new_vocab, "vocab_tags", ["x"])
    wider = dataclasses.replace(PARAMS, hidden_units=(7, 3), embedding_dim=5)
    new = model_lib.build_model(_inputs(["a", "b"], ["x"]), wider)
    report = warm_start_lib.warm_start(new, str(tmp_path / "old"), new_vocab,
                                       log=lambda line: None)
    assert "row width changed (4 -> 5)" == report["fresh"]["deep/embedding/app"]
    assert report["fresh"]["deep/hidden_0/kernel"].startswith("shape changed")
    assert "wide/app" not in report["fresh"]     # the linear weights still carry over
    assert report["vocabularies"]["vocab_app"]["remapped"] == 2


def test_warm_start_from_a_directory_that_is_not_a_finished_run(tmp_path):
    new = model_lib.build_model(_inputs(["a"], ["x"]), PARAMS)
    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        warm_start_lib.warm_start(new, str(tmp_path), str(tmp_path), log=lambda line: None)


def test_train_warm_starts_from_a_previous_model_dir(transform_output, tmp_path):
    config, transform_dir = transform_output.config, transform_output.transform_dir
    params = dataclasses.replace(config.train, max_steps=3)
    train_lib.train(config, transform_dir, str(tmp_path / "first"), params=params,
                    log=lambda line: None)
    lines = []
    summary = train_lib.train(config, transform_dir, str(tmp_path / "second"), params=params,
                              warm_start_from=str(tmp_path / "first"), log=lines.append)
    report = summary["warm_start"]
    assert report["from"] == str(tmp_path / "first")
    vocab_dir = model_lib.ModelDir(str(tmp_path / "second")).vocab
    for vocab_name, counts in report["vocabularies"].items():
        size = len(warm_start_lib.read_vocabulary(os.path.join(vocab_dir, vocab_name)))
        assert counts == {"remapped": size, "new": 0, "dropped": 0, "oov_rows_carried": 1}
    assert set(report["vocabularies"]) == set(os.listdir(vocab_dir))
    assert report["fresh"] == {}
    assert any(line.startswith("warm start: from") for line in lines)
    assert "train: cold start (no warm_start_from)" not in lines


def _features(app_tokens, tag_tokens, rows=5):
    """A batch of every id of the tiny model's features."""
    rng = np.random.default_rng(1)
    return {
        "app": tf.constant(rng.integers(0, len(app_tokens) + 1, rows), tf.int64),
        "tags": tf.SparseTensor([[r, 0] for r in range(rows)],
                                tf.constant(rng.integers(0, len(tag_tokens) + 2, rows),
                                            tf.int64), [rows, 1]),
        "bucket": tf.constant(rng.integers(0, 5, rows), tf.int64),
        "score": tf.constant(rng.uniform(size=rows), tf.float32),
    }


def _tower_variables(values, tower):
    """{key without the tower: value} of one tower's variables (or its slots)."""
    prefix = tower + "/"
    return {(k[0].removeprefix(prefix), *k[1:]) if isinstance(k, tuple)
            else k.removeprefix(prefix): v for k, v in values.items()
            if (k[0] if isinstance(k, tuple) else k).startswith(prefix)}


def _assert_same(new_values, new_tower, old_values, old_tower):
    new, old = (_tower_variables(new_values, new_tower),
                _tower_variables(old_values, old_tower))
    assert new and new.keys() == old.keys()
    for key in new:
        np.testing.assert_array_equal(new[key], old[key], err_msg=f"{new_tower} {key}")


def test_deep_towers_start_from_their_counterpart_or_a_copy_of_the_previous(tmp_path):
    apps, tags = ["a", "b", "c"], ["x", "y"]
    vocab = str(tmp_path / "vocab")
    _write_vocab(vocab, "vocab_app", apps)
    _write_vocab(vocab, "vocab_tags", tags)
    three = dataclasses.replace(PARAMS, deep_towers=3)

    # One tower -> three: every tower a copy of the previous one, optimizer state included,
    # so the new model predicts exactly as the previous one until it trains.
    one = _previous_run(tmp_path / "one", apps, tags)
    old_vars, old_slots = _values(one)
    new = model_lib.build_model(_inputs(apps, tags), three)
    lines = []
    report = warm_start_lib.warm_start(new, str(tmp_path / "one"), vocab, log=lines.append)
    new_vars, new_slots = _values(new)
    for tower in ("deep", "deep_1", "deep_2"):
        _assert_same(new_vars, tower, old_vars, "deep")
        _assert_same(new_slots, tower, old_slots, "deep")
    assert report["towers"] == {"deep_1": "deep", "deep_2": "deep"}
    assert report["fresh"] == {}
    assert ("warm start: tower deep_1 from deep, tower deep_2 from deep (the previous model "
            "has 1 deep tower(s))") in lines
    features = _features(apps, tags)
    np.testing.assert_allclose(new(features).numpy(), one(features).numpy(), rtol=1e-6)

    # Three -> three: tower k from tower k (all distinct in the previous model).
    previous = _previous_run(tmp_path / "three", apps, tags, params=three)
    old_vars, old_slots = _values(previous)
    new = model_lib.build_model(_inputs(apps, tags), three)
    report = warm_start_lib.warm_start(new, str(tmp_path / "three"), vocab,
                                       log=lambda line: None)
    new_vars, new_slots = _values(new)
    for tower in ("deep", "deep_1", "deep_2"):
        _assert_same(new_vars, tower, old_vars, tower)
        _assert_same(new_slots, tower, old_slots, tower)
    assert report["towers"] == {} and report["fresh"] == {}
    np.testing.assert_allclose(new(features).numpy(), previous(features).numpy(), rtol=1e-6)

    # Three -> five: towers 3 and 4 from 0 and 1; three -> one: tower 0 from tower 0.
    five = model_lib.build_model(_inputs(apps, tags), dataclasses.replace(three, deep_towers=5))
    report = warm_start_lib.warm_start(five, str(tmp_path / "three"), vocab,
                                       log=lambda line: None)
    assert report["towers"] == {"deep_3": "deep", "deep_4": "deep_1"}
    _assert_same(_values(five)[0], "deep_4", old_vars, "deep_1")
    single = model_lib.build_model(_inputs(apps, tags), PARAMS)
    report = warm_start_lib.warm_start(single, str(tmp_path / "three"), vocab,
                                       log=lambda line: None)
    assert report["towers"] == {} and report["fresh"] == {}
    _assert_same(_values(single)[0], "deep", old_vars, "deep")


def test_towers_copied_from_one_part_ways_in_training(transform_output, tmp_path):
    # Each tower reads its own order of the data: identical at the start, they differ after
    # a few steps (reading one order, they would stay identical for ever).
    config, transform_dir = transform_output.config, transform_output.transform_dir
    params = dataclasses.replace(config.train, max_steps=3)
    train_lib.train(config, transform_dir, str(tmp_path / "one"), params=params,
                    log=lambda line: None)
    summary = train_lib.train(config, transform_dir, str(tmp_path / "three"),
                              params=dataclasses.replace(params, deep_towers=3, max_steps=5),
                              warm_start_from=str(tmp_path / "one"), log=lambda line: None)
    assert summary["warm_start"]["towers"] == {"deep_1": "deep", "deep_2": "deep"}
    assert summary["warm_start"]["fresh"] == {}
    model = train_lib.load_trained_model(str(tmp_path / "three"))
    kernels = [tower.hidden[0].kernel.numpy() for tower in model.towers]
    assert len(kernels) == 3
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
