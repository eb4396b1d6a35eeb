"""Metrics and the blessing decision; a label-shuffled candidate never reaches serving."""

import dataclasses
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pipeline import gate
from transforms.config import GateParams

GATE = GateParams(min_auc=0.6, max_calibration_error=0.1, max_auc_drop=0.002,
                  max_logloss_increase=0.002)


def test_auc_and_calibration_against_hand_computed_values():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    # pairs (pos, neg): 9; pos>neg: 0.35>0.1, 0.8>all 3, 0.4>0.1, 0.4 ties two 0.4s
    assert gate.roc_auc(labels, scores) == pytest.approx((1 + 3 + 1 + 1) / 9)
    m = gate.metrics(labels, scores)
    assert m["calibration"] == pytest.approx(np.mean(scores) / 0.5)
    assert m["log_loss"] == pytest.approx(-np.mean(
        labels * np.log(scores) + (1 - labels) * np.log(1 - scores)))
    assert np.isnan(gate.roc_auc(np.ones(3), np.ones(3)))


def test_slices_report_each_value():
    labels = np.array([0, 1] * 60)
    scores = np.where(labels == 1, 0.9, 0.1)
    sliced = gate.sliced_metrics(labels, scores, {"country": ["US"] * 100 + ["DE"] * 20})
    assert list(sliced["country"]) == ["US", "DE"]
    assert sliced["country"]["US"]["auc"] == 1.0
    assert np.isnan(sliced["country"]["DE"]["auc"])  # too few rows to report an AUC
    assert sliced["country"]["DE"]["examples"] == 20


def metrics_of(auc, log_loss=0.3, calibration=1.0):
    return {"auc": auc, "log_loss": log_loss, "calibration": calibration}


def test_first_model_is_blessed_on_absolute_thresholds_only():
    decision = gate.decide(metrics_of(0.7), None, GATE)
    assert decision.blessed and decision.reason.startswith("first model")
    decision = gate.decide(metrics_of(0.55), None, GATE)
    assert not decision.blessed and "AUC 0.5500 < minimum 0.6" in decision.reason


def test_relative_thresholds_give_readable_reasons():
    baseline = metrics_of(0.7125, 0.30)
    worse = gate.decide(metrics_of(0.7012, 0.31), baseline, GATE)
    assert not worse.blessed
    assert "AUC 0.7012 < baseline 0.7125 - 0.002" in worse.reason
    assert "log loss 0.3100 > baseline 0.3000 + 0.002" in worse.reason
    assert gate.decide(metrics_of(0.7110, 0.301), baseline, GATE).blessed  # within epsilon
    miscalibrated = gate.decide(metrics_of(0.8, 0.2, calibration=1.4), baseline, GATE)
    assert not miscalibrated.blessed and "calibration 1.400 outside 1 ± 0.1" in miscalibrated.reason
    drifted = gate.decide({**metrics_of(0.8, 0.2, calibration=1.31), "positive_rate": 0.17},
                          baseline, GATE, train_positive_rate=0.223)
    assert not drifted.blessed
    assert ("calibration 1.310 outside 1 ± 0.1 (positive rate 0.170 in eval vs 0.223 in "
            "train: the eval data's rate moved 24%; drift" in drifted.reason)
    nan = gate.decide(metrics_of(float("nan")), baseline, GATE)
    assert not nan.blessed and "not finite" in nan.reason


def shuffled_label_copy(transform_dir, label, target, seed=0):
    """A copy of a transform output whose training labels are shuffled among rows."""
    shutil.copytree(transform_dir, target)
    rng = np.random.default_rng(seed)
    for path in glob.glob(os.path.join(target, "train-*.tfrecord.gz")):
        examples = [tf.train.Example.FromString(r) for r in
                    tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator()]
        labels = [e.features.feature[label].int64_list.value[0] for e in examples]
        rng.shuffle(labels)
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for example, value in zip(examples, labels):
                example.features.feature[label].int64_list.value[:] = [value]
                writer.write(example.SerializeToString())
    return target


def test_candidate_trained_on_shuffled_labels_is_rejected(transform_output, tmp_path):
    from trainer import export
    from trainer.train import train

    config = transform_output.config
    params = dataclasses.replace(config.train, epochs=3)
    raw_eval = gate.read_raw_eval(config, transform_output.transform_dir)
    evaluated = {}
    for name, transform_dir in (
            ("honest", transform_output.transform_dir),
            ("shuffled", shuffled_label_copy(transform_output.transform_dir, config.label.column,
                                             str(tmp_path / "shuffled_transform")))):
        model_dir = str(tmp_path / name)
        train(config, transform_dir, model_dir, params=params, log=lambda *_: None)
        export_dir = export.export_model(config, model_dir, transform_dir,
                                         str(tmp_path / f"{name}_export"))
        evaluated[name] = gate.evaluate_export(export_dir, raw_eval)[0]
    honest, shuffled = evaluated["honest"], evaluated["shuffled"]
    assert honest["auc"] > shuffled["auc"] + 0.05
    decision = gate.decide(shuffled, honest, dataclasses.replace(GATE, min_auc=0.5))
    assert not decision.blessed
    assert f"< baseline {honest['auc']:.4f}" in decision.reason
