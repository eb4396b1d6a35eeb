"""Training on several machines: ``tf.distribute.MultiWorkerMirroredStrategy`` from ``TF_CONFIG``.

Synchronous data parallelism, as every worker holds the whole model: each step, every worker
computes gradients on its own slice of the same global batch, the gradients are summed across
workers (all-reduce; sparse embedding and wide-table gradients as all-gathered rows), and every
worker applies the same update. The hyperparameters keep their single-machine meaning:
``batch_size`` is the *global* batch and the loss is averaged over it, so two workers take the
same steps one process would, each doing half the work.

``TF_CONFIG`` is the standard cluster description that Vertex AI, Kubernetes operators and
``tf.distribute`` all use::

    {"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}

The chief (``chief`` task, or worker 0 when the cluster has none) writes the model_dir; the
others write their checkpoint copies to a scratch directory (every worker must take part in a
save, because metrics are summed across workers when read) and delete it.
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

TF_CONFIG = "TF_CONFIG"
TRAINING_TASK_TYPES = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in the cluster."""
    index: int          # 0 for the chief, then the workers in TF_CONFIG's order
    count: int          # training tasks in the cluster (chief + workers)
    task: str           # e.g. "worker 1"

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.count > 1


SINGLE = Worker(index=0, count=1, task="single process")


def worker_from_env(environ=os.environ) -> Worker:
    """Where this process stands according to ``TF_CONFIG``; :data:`SINGLE` when unset.

    Errors name TF_CONFIG and what is wrong with it: a typo there would otherwise hang every
    worker waiting for a peer that never comes.
    """
    raw = environ.get(TF_CONFIG, "").strip()
    if not raw:
        return SINGLE
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, task_index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{TF_CONFIG} is not a cluster description ({e!r}); expected "
                         f'{{"cluster": {{"worker": ["host:port", ...]}}, "task": '
                         f'{{"type": "worker", "index": 0}}}}, got {raw[:200]!r}') from None
    unknown = sorted(set(cluster) - set(TRAINING_TASK_TYPES) - {"evaluator", "ps"})
    if unknown:
        raise ValueError(f"{TF_CONFIG}: unknown task types {unknown} in its cluster")
    if cluster.get("ps"):
        raise ValueError(f"{TF_CONFIG} names parameter servers; widedeep trains with "
                         f"MultiWorkerMirroredStrategy (chief and workers only), see the "
                         f"README's 'Training beyond one machine'")
    ordered = [(kind, i) for kind in TRAINING_TASK_TYPES
               for i in range(len(cluster.get(kind, [])))]
    if (task_type, task_index) not in ordered:
        raise ValueError(f"{TF_CONFIG}: task {task_type} {task_index} is not in its cluster "
                         f"({', '.join(f'{k} {i}' for k, i in ordered)})")
    return Worker(index=ordered.index((task_type, task_index)), count=len(ordered),
                  task=f"{task_type} {task_index}")


def strategy_for(worker: Worker) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy for a cluster, the default (no-op) strategy otherwise.

    It must come before this process runs any TensorFlow op: collective ops are configured
    when the TF runtime starts.
    """
    if not worker.distributed:
        return tf.distribute.get_strategy()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:
        raise RuntimeError(f"{TF_CONFIG} names {worker.count} workers, but this process ran "
                           f"TensorFlow before training started, so it cannot join the "
                           f"cluster ({e}); run `widedeep train` in its own process") from e
