"""Multi-worker training: TF_CONFIG parsing, and two real workers on 127.0.0.1."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from configs import shipped_config
from trainer import distribute

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_TIMEOUT_SECONDS = 300

TINY_TRAIN = """[train]
hidden_units = [16, 8]
embedding_dim = 4
batch_size = 128
epochs = 2
checkpoint_every_steps = 20

"""


def _tf_config(workers, task_type="worker", index=0, **cluster):
    return json.dumps({"cluster": {"worker": workers, **cluster},
                       "task": {"type": task_type, "index": index}})


def test_no_tf_config_is_one_process():
    assert distribute.worker_from_env({}) == distribute.SINGLE
    assert not distribute.SINGLE.distributed and distribute.SINGLE.is_chief


def test_chief_comes_first_then_the_workers_in_order():
    env = {"TF_CONFIG": _tf_config(["h1:1", "h2:2"], "worker", 1, chief=["h0:0"])}
    worker = distribute.worker_from_env(env)
    assert (worker.index, worker.count, worker.task, worker.is_chief) == (2, 3, "worker 1", False)
    env = {"TF_CONFIG": _tf_config(["h1:1", "h2:2"], "chief", 0, chief=["h0:0"])}
    assert distribute.worker_from_env(env).is_chief
    # Without a chief task, worker 0 is the chief.
    assert distribute.worker_from_env({"TF_CONFIG": _tf_config(["h1:1", "h2:2"])}).is_chief


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "not a cluster description"),
    (json.dumps({"cluster": {"worker": ["h:1"]}}), "not a cluster description"),
    (_tf_config(["h1:1", "h2:2"], "worker", 2), "task worker 2 is not in its cluster"),
    (_tf_config(["h1:1"], ps=["p:1"]), "parameter servers"),
    (_tf_config(["h1:1"], wroker=["h2:2"]), "unknown task types ['wroker']"),
])
def test_a_bad_tf_config_is_refused_naming_it(tf_config, message):
    with pytest.raises(ValueError, match="TF_CONFIG") as error:
        distribute.worker_from_env({"TF_CONFIG": tf_config})
    assert message in str(error.value)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_the_model_one_process_trains(transform_output, tmp_path):
    """Same global batch, same data, loss averaged over the global batch: two workers
    taking half of each batch must end where one process does."""
    from trainer import train as trainer
    from transforms.config import load_config

    text = open(shipped_config("appstore.toml")).read()
    config_path = tmp_path / "tiny.toml"
    config_path.write_text(re.sub(r"\[train\].*?(?=\[gate\])", TINY_TRAIN, text, flags=re.S))
    config = load_config(str(config_path))

    single = trainer.train(config, transform_output.transform_dir, str(tmp_path / "single"),
                           log=lambda line: None)

    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    scratch = tmp_path / "worker_tmp"
    scratch.mkdir()
    model_dir = tmp_path / "distributed"
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=_tf_config(workers, "worker", index),
                   TMPDIR=str(scratch))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "train", "--config", str(config_path),
             "--transform-dir", transform_output.transform_dir, "--model-dir", str(model_dir)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=WORKER_TIMEOUT_SECONDS)[0])
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail("the workers did not finish in time:\n" +
                    "\n".join(p.communicate()[0][-3000:] for p in processes))
    for index, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"worker {index} failed:\n{output[-3000:]}"

    assert "worker 0 of a 2-worker cluster (chief), MultiWorkerMirroredStrategy" in outputs[0]
    assert "worker 1: train: done at step" in outputs[1]
    # The chief wrote the model_dir; the other worker's scratch copies are gone.
    summary = json.loads((model_dir / "summary.json").read_text())
    assert (model_dir / "DONE").exists() and not list(scratch.iterdir())
    assert summary["steps"] == single["steps"]
    # Each worker evaluated half of the eval split; the metrics cover all of it once.
    assert summary["final_eval"]["examples"] == single["final_eval"]["examples"]
    assert summary["final_eval"]["auc"] == pytest.approx(single["final_eval"]["auc"], abs=1e-3)
    assert summary["final_eval"]["log_loss"] == pytest.approx(single["final_eval"]["log_loss"],
                                                              abs=1e-3)

    from trainer import data

    batch, _ = next(iter(data.make_dataset(
        data.split_files(transform_output.transform_dir, data.EVAL),
        trainer.read_inputs(config, transform_output.transform_dir).feature_spec,
        config.label.column, 512, shuffle=False)))
    single_model = trainer.load_trained_model(str(tmp_path / "single"))
    distributed_model = trainer.load_trained_model(str(model_dir))
    np.testing.assert_allclose(distributed_model(batch).numpy(), single_model(batch).numpy(),
                               atol=1e-4)
