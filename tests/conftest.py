"""Shared fixtures: small real data through the real components (no mocks)."""

import dataclasses
import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import transforms  # noqa: F401,E402  (the Keras mode, before TensorFlow loads)
import pytest  # noqa: E402

from configs import shipped_config
from transforms.config import TrainParams, load_config

TINY_ROWS = 4000


def tiny_appstore_config():
    """The shipped app-store config with a model small enough for unit tests."""
    config = load_config(shipped_config("appstore.toml"))
    # From TrainParams' defaults, not the shipped [train]: tuning the shipped model must not
    # change what the unit tests train.
    # One epoch unless a test asks for more: the default is an upper bound for early
    # stopping (10), which would multiply the suite's training time.
    train = dataclasses.replace(TrainParams(), hidden_units=(16, 8), embedding_dim=4,
                                batch_size=128, checkpoint_every_steps=10, epochs=1)
    return dataclasses.replace(config, train=train)


@pytest.fixture(scope="session")
def transform_output(tmp_path_factory):
    """Tiny synthetic app-store log run through the real transform job, once per session."""
    from pipeline import transform_job
    from transforms import synthetic

    root = tmp_path_factory.mktemp("appstore")
    synthetic.write_log(str(root / "raw"), days=1, rows_per_day=TINY_ROWS, seed=7, shards=2)
    config = tiny_appstore_config()
    transform_dir = str(root / "transform")
    stats = transform_job.run_transform(config, str(root / "raw" / "day=*" / "*.csv"),
                                        transform_dir)
    return types.SimpleNamespace(config=config, transform_dir=transform_dir, stats=stats,
                                 root=str(root))


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """A Google Cloud Storage emulator on 127.0.0.1 for the session (tests/gcs.py); skips if it
    can't start. `.env`: the variables a process needs for gs://; `.create_bucket()`."""
    from tests import gcs as gcs_harness

    try:
        server = gcs_harness.Server.start(tmp_path_factory.mktemp("gcs-emulator"))
    except gcs_harness.StartError as e:
        pytest.skip(str(e))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gcs(gcs_server, monkeypatch):
    """A fresh bucket on the session's emulator, with its env set in os.environ for the test.
    `.bucket`, `.url(path)` -> gs://bucket/path, `.list(prefix)`, `.env` for subprocesses."""
    from tests import gcs as gcs_harness

    for key, value in gcs_server.env.items():
        monkeypatch.setenv(key, value)
    return gcs_harness.Bucket(gcs_server, gcs_server.create_bucket(), dict(os.environ))
