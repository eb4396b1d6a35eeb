"""Serving export, dry run and atomic publishing, on a tiny trained model."""

import dataclasses
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pipeline import gate
from pipeline import serving
from pipeline import warmup
from trainer import export
from trainer import model as model_lib
from trainer.train import load_trained_model, train


@pytest.fixture(scope="module")
def trained(transform_output, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    params = dataclasses.replace(transform_output.config.train, max_steps=30)
    model_dir = str(root / "model")
    train(transform_output.config, transform_output.transform_dir, model_dir, params=params,
          log=lambda *_: None)
    export_dir = export.export_model(transform_output.config, model_dir,
                                     transform_output.transform_dir, str(root / "export"))
    raw_eval = gate.read_raw_eval(transform_output.config, transform_output.transform_dir,
                                  limit=300)
    return root, model_dir, export_dir, raw_eval


def raw_feature_tensors(config, serialized):
    """The raw eval examples as the named dense tensors a REST client would send."""
    from transforms.features import serving_feature_spec

    parsed = tf.io.parse_example(serialized, serving_feature_spec(config))
    return {name: tf.sparse.to_dense(value, default_value="")
            if isinstance(value, tf.SparseTensor) else value for name, value in parsed.items()}


def test_both_signatures_give_the_same_probabilities(transform_output, trained):
    _, _, export_dir, raw_eval = trained
    loaded = tf.saved_model.load(export_dir)
    from_examples = loaded.signatures[export.SERVING_DEFAULT](
        examples=tf.constant(raw_eval.serialized))[export.OUTPUT_KEY].numpy()
    from_tensors = loaded.signatures[export.PREDICT_RAW](
        **raw_feature_tensors(transform_output.config, raw_eval.serialized))[export.OUTPUT_KEY].numpy()
    assert from_examples.shape == (len(raw_eval.serialized),)
    assert np.all((from_examples >= 0) & (from_examples <= 1))
    np.testing.assert_allclose(from_examples, from_tensors, atol=1e-6)


def test_export_matches_the_trained_model_on_transformed_data(transform_output, trained):
    import tensorflow_transform as tft

    _, model_dir, export_dir, raw_eval = trained
    from transforms.features import serving_feature_spec

    tft_output = tft.TFTransformOutput(transform_output.transform_dir)
    parsed = tf.io.parse_example(raw_eval.serialized[:50],
                                 serving_feature_spec(transform_output.config))
    direct = load_trained_model(model_dir)(tft_output.transform_features_layer()(parsed)).numpy().ravel()
    served = export.load_predict_fn(export_dir)(raw_eval.serialized[:50])
    np.testing.assert_allclose(direct, served, atol=1e-6)


def test_a_three_tower_model_exports_and_serves_its_mean(transform_output, tmp_path):
    import tensorflow_transform as tft

    from transforms.features import serving_feature_spec

    config = transform_output.config
    params = dataclasses.replace(config.train, max_steps=10, deep_towers=3)
    model_dir = str(tmp_path / "model")
    train(config, transform_output.transform_dir, model_dir, params=params,
          log=lambda *_: None)
    export_dir = export.export_model(config, model_dir, transform_output.transform_dir,
                                     str(tmp_path / "export"))
    raw_eval = gate.read_raw_eval(config, transform_output.transform_dir, limit=50)
    transformed = tft.TFTransformOutput(transform_output.transform_dir).transform_features_layer()(
        tf.io.parse_example(raw_eval.serialized, serving_feature_spec(config)))
    model = load_trained_model(model_dir)
    assert len(model.towers) == 3
    towers = [tower(transformed).numpy() for tower in model.towers]
    mean = tf.sigmoid(model.wide(transformed) + sum(towers) / 3).numpy().ravel()
    served = export.load_predict_fn(export_dir)(raw_eval.serialized)
    np.testing.assert_allclose(served, mean, atol=1e-6)
    assert not np.allclose(served, tf.sigmoid(model.wide(transformed) + towers[0]).numpy().ravel(),
                           atol=1e-4)  # not tower 0 alone
    from_tensors = tf.saved_model.load(export_dir).signatures[export.PREDICT_RAW](
        **raw_feature_tensors(config, raw_eval.serialized))[export.OUTPUT_KEY].numpy()
    np.testing.assert_allclose(from_tensors, served, atol=1e-6)


def test_export_is_self_contained_once_transform_output_is_gone(transform_output, trained,
                                                                tmp_path):
    _, model_dir, _, raw_eval = trained
    transform_copy = str(tmp_path / "transform")
    shutil.copytree(transform_output.transform_dir, transform_copy)
    export_dir = export.export_model(transform_output.config, model_dir, transform_copy,
                                     str(tmp_path / "export"))
    expected = export.load_predict_fn(export_dir)(raw_eval.serialized)
    shutil.rmtree(transform_copy)
    passed, reason = serving.dry_run(export_dir, raw_eval.serialized, expected, str(tmp_path))
    assert passed, reason


def test_missing_feature_and_unseen_category_at_serving_time_still_score(trained):
    _, _, export_dir, raw_eval = trained
    example = tf.train.Example.FromString(raw_eval.serialized[0])
    del example.features.feature["country"]
    example.features.feature["impression_app"].bytes_list.value[:] = [b"app-never-seen"]
    probability = export.load_predict_fn(export_dir)([example.SerializeToString()])
    assert probability.shape == (1,) and 0 <= probability[0] <= 1


def test_dry_run_rejects_a_model_with_nan_weights(transform_output, trained, tmp_path):
    _, model_dir, _, raw_eval = trained
    model = load_trained_model(model_dir)
    for variable in model.deep.trainable_variables[-2:]:
        variable.assign(tf.fill(variable.shape, np.nan))
    broken_dir = str(tmp_path / "broken_model")
    shutil.copytree(model_dir, broken_dir)
    model_lib.save_model(model, model_lib.ModelDir(broken_dir).keras_model)
    export_dir = export.export_model(transform_output.config, broken_dir,
                                     transform_output.transform_dir, str(tmp_path / "export"))
    passed, reason = serving.dry_run(export_dir, raw_eval.serialized, None, str(tmp_path))
    assert not passed
    assert "not finite" in reason


def test_dry_run_rejects_an_export_missing_its_vocabulary_assets(trained, tmp_path):
    _, _, export_dir, raw_eval = trained
    broken = str(tmp_path / "broken")
    shutil.copytree(export_dir, broken)
    shutil.rmtree(os.path.join(broken, "assets"))
    passed, reason = serving.dry_run(broken, raw_eval.serialized, None, str(tmp_path))
    assert not passed
    assert reason


def another_run(export_dir, tmp_path, number):
    """The export as another run's: publishing the same export twice gives one version."""
    copy = tmp_path / f"export-of-run-{number}"
    shutil.copytree(export_dir, copy)
    metadata = copy / export.EXTRA_DIR / export.METADATA_FILE
    metadata.write_text(metadata.read_text().replace("{", f'{{"run_id": "run {number}", ', 1))
    return str(copy)


def test_publish_versions_increase_keep_k_and_a_crash_before_rename_leaves_nothing(
        trained, tmp_path):
    _, _, export_dir, raw_eval = trained
    serving_root = str(tmp_path / "serving")
    examples = raw_eval.serialized[:20]
    kwargs = dict(keep_versions=2, dry_run_examples=examples, expected=None,
                  scratch_dir=str(tmp_path / "scratch"))
    assert serving.publish(another_run(export_dir, tmp_path, 1), serving_root, **kwargs)[0] == 1
    assert serving.publish(another_run(export_dir, tmp_path, 2), serving_root, **kwargs)[0] == 2

    def crash(partial_dir):
        assert os.path.isdir(partial_dir)
        raise KeyboardInterrupt("killed between writing and renaming")

    with pytest.raises(KeyboardInterrupt):
        serving.publish(export_dir, serving_root, before_rename=crash, **kwargs)
    assert serving.serving_versions(serving_root) == [1, 2]  # no version 3, whole or partial
    assert serving.publish(another_run(export_dir, tmp_path, 3), serving_root, **kwargs)[0] == 3
    assert serving.serving_versions(serving_root) == [2, 3]  # keep_versions = 2
    assert sorted(os.listdir(serving_root)) == ["2", "3"]  # the crashed copy was cleaned up


def test_junk_in_serving_is_neither_a_version_nor_deleted(trained, tmp_path):
    """An empty `3/` or a `007/` (TF Serving reads it as 7) is not a version: retention
    keeps its hands off, and the next version goes past both."""
    _, _, export_dir, raw_eval = trained
    serving_root = tmp_path / "serving"
    kwargs = dict(keep_versions=1, dry_run_examples=raw_eval.serialized[:20], expected=None,
                  scratch_dir=str(tmp_path / "scratch"))
    assert serving.publish(export_dir, str(serving_root), **kwargs)[0] == 1
    (serving_root / "3").mkdir()
    shutil.copytree(export_dir, serving_root / "007")
    assert serving.serving_versions(str(serving_root)) == [1]
    next_run = another_run(export_dir, tmp_path, 2)
    assert serving.publish(next_run, str(serving_root), **kwargs)[0] == 8
    assert serving.serving_versions(str(serving_root)) == [8]  # keep_versions = 1
    assert sorted(os.listdir(serving_root)) == ["007", "3", "8"]


def test_published_version_carries_warmup_requests_that_replay(trained, tmp_path):
    """TF Serving replays assets.extra/tf_serving_warmup_requests at load: it must hold real
    eval examples as serving_default requests, and score them as a direct call does."""
    from tensorflow_serving.apis import prediction_log_pb2

    _, _, export_dir, raw_eval = trained
    serving_root = str(tmp_path / "serving")
    examples = raw_eval.serialized[:40]
    kwargs = dict(keep_versions=1, dry_run_examples=examples, expected=None,
                  scratch_dir=str(tmp_path / "scratch"))
    version, reason = serving.publish(export_dir, serving_root, **kwargs)
    assert version == 1, reason
    assert "warmup requests" in reason and "replayed" in reason
    version_dir = os.path.join(serving_root, "1")
    warmup_file = os.path.join(version_dir, export.EXTRA_DIR, export.WARMUP_FILE)
    assert os.path.isfile(warmup_file)
    assert not os.path.exists(os.path.join(export_dir, export.EXTRA_DIR, export.WARMUP_FILE))

    records = list(tf.data.TFRecordDataset(warmup_file).as_numpy_iterator())
    requests = [prediction_log_pb2.PredictionLog.FromString(r).predict_log.request
                for r in records]
    batches = [list(tf.make_ndarray(r.inputs[export.EXAMPLES_KEY])) for r in requests]
    assert {r.model_spec.signature_name for r in requests} == {export.SERVING_DEFAULT}
    assert len(requests) == len(warmup.WARMUP_BATCH_SIZES) * warmup.WARMUP_ROUNDS
    assert sorted({len(b) for b in batches}) == sorted(warmup.WARMUP_BATCH_SIZES)
    assert set(sum(batches, [])) == set(examples)  # real eval examples, every one of them

    loaded = tf.saved_model.load(version_dir)
    predict = export.load_predict_fn(export_dir)
    for request, batch in zip(requests, batches):
        inputs = {key: tf.constant(tf.make_ndarray(t)) for key, t in request.inputs.items()}
        replayed = loaded.signatures[request.model_spec.signature_name](**inputs)
        np.testing.assert_allclose(replayed[export.OUTPUT_KEY].numpy(), predict(batch),
                                   atol=1e-6)

    # The warmup file is not part of the model's identity: a rerun does not publish again.
    assert serving.export_identity(version_dir) == serving.export_identity(export_dir)
    assert serving.publish(export_dir, serving_root, **kwargs)[0] == 1


def corrupt_warmup_copy(export_dir, tmp_path, examples, bad_record):
    """A copy of the export whose warmup file holds `bad_record` as its record 1."""
    copy = str(tmp_path / "export-with-bad-warmup")
    shutil.copytree(export_dir, copy)
    path = warmup.warmup_path(copy)
    with tf.io.TFRecordWriter(path) as writer:
        for record in (warmup.prediction_log(examples[:2]).SerializeToString(), bad_record):
            writer.write(record)
    return copy, path


def test_dry_run_rejects_a_warmup_record_that_is_not_a_prediction_log(trained, tmp_path):
    _, _, export_dir, raw_eval = trained
    copy, path = corrupt_warmup_copy(export_dir, tmp_path, raw_eval.serialized,
                                     b"not a PredictionLog")
    passed, reason = serving.dry_run(copy, raw_eval.serialized[:20], None, str(tmp_path))
    assert not passed
    assert path in reason and "record 1 is not a PredictionLog" in reason, reason


def test_warmup_replay_names_the_file_and_record_that_fail(trained, tmp_path):
    """In-process (the dry run's subprocess calls the same replay): an unreadable TFRecord,
    and a request for a signature the export does not have."""
    _, _, export_dir, raw_eval = trained
    loaded = tf.saved_model.load(export_dir)
    bad_signature = warmup.prediction_log(raw_eval.serialized[:1])
    bad_signature.predict_log.request.model_spec.signature_name = "serving_typo"
    copy, path = corrupt_warmup_copy(export_dir, tmp_path, raw_eval.serialized,
                                     bad_signature.SerializeToString())
    with pytest.raises(warmup.WarmupError, match=r"record 1 asks for signature 'serving_typo'"):
        warmup.replay_warmup_requests(loaded, path)
    with open(path, "r+b") as f:  # flip a byte of record 1's payload: its CRC no longer matches
        f.seek(-10, os.SEEK_END)
        byte = f.read(1)
        f.seek(-10, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(warmup.WarmupError, match=re.escape(path) + ": record 1 is not a readable TFRecord"):
        warmup.replay_warmup_requests(loaded, path)
