"""What every benchmark shares: the Keras mode and quiet TensorFlow logs before TensorFlow
loads, the repository importable, the CPU model (every figure is printed with it), the
synthetic app-store log written and transformed, and ``bench/results.json`` updated one
benchmark's key at a time.

Import it first, as ``import common`` (the scripts run as ``python bench/<name>.py``, so
this folder is on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_FILE = os.path.join(ROOT, "bench", "results.json")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from transforms import paths  # noqa: E402  (first: the Keras mode, transforms/__init__.py)
from configs import shipped_config  # noqa: E402
from transforms import config as cfg  # noqa: E402


def log(line: str) -> None:
    print(f"bench: {line}", flush=True)


def cpu_model() -> str:
    """``lscpu``'s model name: hosts differ by up to 2x, so figures travel with it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "unknown")


def merge_results(path: str, key: str, figures: dict) -> None:
    """Updates one key of the results file, keeping what other benchmarks wrote there."""
    try:
        results = paths.read_json(path, default={})
    except json.JSONDecodeError as e:
        raise SystemExit(f"bench: {path} is not valid JSON ({e}); fix or remove it "
                         "(it holds the figures of every benchmark)") from None
    results[key] = figures
    paths.write_text(path, json.dumps(results, indent=2) + "\n")  # never half a file


@contextlib.contextmanager
def work_dir(kept: str | None, prefix: str):
    """``kept`` (a script's --work-dir) when given, else a temporary directory that is
    removed at the end."""
    path = kept or tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        if not kept:
            shutil.rmtree(path, ignore_errors=True)


SYNTHETIC = ("appstore", "criteo_like")
# The unit tests' model size: a --smoke run checks that a script runs, not its speed.
SMOKE_MODEL = {"hidden_units": (16, 8), "embedding_dim": 4, "batch_size": 128}


def load_config(path: str | None = None, *, smoke_train: dict | None = None):
    """A feature config (default: the shipped appstore.toml), with `smoke_train`'s values
    in its [train] when given."""
    config = cfg.load_config(path or shipped_config("appstore.toml"))
    if not smoke_train:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **smoke_train))


def write_synthetic(name: str, raw_dir: str, rows: int, *, seed: int = 0,
                    shards: int = 4) -> tuple[str, str]:
    """Writes a synthetic log under ``raw_dir`` (emptied first): the built-in app-store log
    (one day) or the Criteo-shaped click log; returns (its shipped config, input glob)."""
    from transforms import synthetic, synthetic_ctr

    shutil.rmtree(raw_dir, ignore_errors=True)
    if name == "appstore":
        synthetic.write_log(raw_dir, days=1, rows_per_day=rows, seed=seed, shards=shards)
        return shipped_config("appstore.toml"), os.path.join(raw_dir, "day=*", "*.csv")
    if name == "criteo_like":
        path = os.path.join(raw_dir, "log.csv")
        synthetic_ctr.write_csv(path, rows, seed=seed)
        return shipped_config("criteo_like.toml"), path
    raise SystemExit(f"bench: no synthetic dataset {name!r} (there are {', '.join(SYNTHETIC)})")


def synthetic_transform(config, work_dir: str, rows: int, *, seed: int = 0,
                        shards: int = 1) -> tuple[str, dict]:
    """Writes ``rows`` rows of the synthetic app-store log (one day) under ``work_dir/raw``
    and transforms them into ``work_dir/transform``; returns (transform dir, stats)."""
    from pipeline import transform_job

    transform_job.quiet_beam_logs()
    _, input_glob = write_synthetic("appstore", os.path.join(work_dir, "raw"), rows, seed=seed,
                                    shards=shards)
    transform_dir = os.path.join(work_dir, "transform")
    stats = transform_job.run_transform(config, input_glob, transform_dir, log=log)
    return transform_dir, stats


def eval_predictions(config, transform_dir: str, model_dir: str):
    """(labels, predicted probabilities) of a trained model on the transformed eval split."""
    import tensorflow_transform as tft

    from trainer import data
    from trainer.train import load_trained_model

    model = load_trained_model(model_dir)
    spec = tft.TFTransformOutput(transform_dir).transformed_feature_spec()
    needed = {f.name for f in model.model_inputs} | {config.label.column}
    dataset = data.make_dataset(data.split_files(transform_dir, data.EVAL),
                                {k: v for k, v in spec.items() if k in needed},
                                config.label.column, 4096, shuffle=False)
    labels, probabilities = [], []
    for features, batch_labels in dataset:
        probabilities.append(model(features, training=False).numpy().ravel())
        labels.append(batch_labels.numpy().ravel())
    return np.concatenate(labels), np.concatenate(probabilities)


def read_split(files: list[str], feature_spec: dict, label: str):
    """(columns, labels) of transformed examples as numpy, in file order; a multivalent
    column as (ids, ids per row)."""
    import tensorflow as tf

    columns: dict[str, list] = {name: [] for name in feature_spec if name != label}
    labels = []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8192):
        parsed = tf.io.parse_example(batch, feature_spec)
        labels.append(parsed.pop(label).numpy().ravel())
        for name, value in parsed.items():
            columns[name].append(
                (value.values.numpy(), np.bincount(value.indices[:, 0].numpy(),
                                                   minlength=int(value.dense_shape[0])))
                if isinstance(value, tf.SparseTensor) else value.numpy())
    return {name: tuple(map(np.concatenate, zip(*parts))) if isinstance(parts[0], tuple)
            else np.concatenate(parts) for name, parts in columns.items()}, np.concatenate(labels)
