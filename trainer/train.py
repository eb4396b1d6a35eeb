"""Training: joint Wide & Deep on the transform output, with checkpoints, resume and warm start.

``train`` owns one model_dir (layout in :class:`trainer.model.ModelDir`)::

    checkpoints/   model + both optimizers + weight average + step counters, every N steps
                   and at the end (the last one holds the averaged weights the run ends on)
    tensorboard/   train/ and eval/ scalars
    hparams.json   the TrainParams this run used
    vocab/         copies of the vocabularies trained on (warm start remaps against them
                   after the transform dir is gone)
    history.json   per-epoch train, validation and eval metrics
    progress.jsonl the train log loss, AUC and examples/s every N steps (JSON lines)
    warm_start.json  what warm start did (only when it ran)
    keras_model/   the final model (model.json + weights), renamed into place when complete
    summary.json, DONE   written last

A run that finds a checkpoint in its model_dir continues from it: same step, same position
in the epoch (the input order is deterministic, so it skips exactly the batches it had
trained on), same optimizer state.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import tempfile
import time
from typing import Callable

import tensorflow as tf
import tf_keras as keras
from tensorflow.core.framework import summary_pb2

from trainer import data
from trainer import distribute
from trainer import model as model_lib
from trainer import warm_start as warm_start_lib
from transforms import config as cfg
from transforms import paths

# Hyperparameters that may differ when resuming: they extend or pace the run, the
# checkpointed variables do not depend on them.
RESUMABLE_CHANGES = ("epochs", "max_steps", "checkpoint_every_steps")


def load_trained_model(model_dir: str) -> model_lib.WideDeepModel:
    """The final model of a finished run: call it on a batch of transformed features to get
    P(label = 1) of shape [batch, 1]. Needs only ``model_dir``."""
    return model_lib.load_model(model_lib.ModelDir(model_dir).keras_model)


# tf.summary.scalar lives in the tensorboard package, which TF 2.21 no longer installs;
# tf.summary.write with the scalars plugin's metadata writes the same event, readable by
# any TensorBoard.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def _write_scalars(writer, step: int, scalars: dict[str, float]) -> None:
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _check_resumable(layout: model_lib.ModelDir, params: cfg.TrainParams,
                     inputs, tft_output) -> None:
    """A checkpoint is only resumed by the same model on the same transform output."""
    previous = paths.read_json(layout.hparams)
    if previous is not None:
        current = model_lib.params_to_json(params)
        # A field added since the checkpoint was written had its default there.
        defaults = model_lib.params_to_json(cfg.TrainParams())
        changed = sorted(k for k in current if k not in RESUMABLE_CHANGES
                         and json.dumps(previous.get(k, defaults[k])) != json.dumps(current[k]))
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ValueError(
                f"{layout.root} holds a checkpoint trained with other hyperparameters "
                f"({details}); resume needs the same ones. Use a new model_dir (and "
                f"warm_start_from={layout.root!r} to start from it).")
    for f in inputs:
        if not f.vocab_name:
            continue
        kept = layout.vocab_file(f.vocab_name)
        if not paths.exists(kept):
            continue
        if paths.read_bytes(kept) != paths.read_bytes(
                tft_output.vocabulary_file_by_name(f.vocab_name)):
            raise ValueError(
                f"{layout.root} holds a checkpoint trained on another transform output "
                f"({kept} differs from this transform's {f.vocab_name}); resume needs "
                f"the same one. Use a new model_dir with warm_start_from={layout.root!r} "
                f"to remap onto the new vocabularies.")


def _copy_vocabularies(inputs, tft_output, layout: model_lib.ModelDir) -> None:
    paths.makedirs(layout.vocab)
    for vocab_name in sorted({f.vocab_name for f in inputs if f.vocab_name}):
        paths.copy(tft_output.vocabulary_file_by_name(vocab_name), layout.vocab_file(vocab_name))


def _save_final_model(model: model_lib.WideDeepModel, layout: model_lib.ModelDir) -> None:
    """Saved beside and moved into place, so keras_model/ is never half a model (on GCS the
    move is a copy; DONE, written after it, is what readers wait for there)."""
    tmp = f"{layout.keras_model}.tmp-{os.getpid()}"
    model_lib.save_model(model, tmp)
    paths.replace_dir(tmp, layout.keras_model)


class _Progress:
    """One log line every ``every`` steps: step, loss, examples/s over the interval, ETA.

    The same points go to TensorBoard and, as JSON lines, to ``progress.jsonl`` (what the
    report plots), written with each checkpoint (:meth:`save`) rather than every interval:
    a resume drops the points after its checkpoint anyway, and a rewrite per interval
    would cost a whole-file upload on GCS and grow with the run.
    """

    def __init__(self, log, every: int, total_steps: int, epochs: int, writer, path: str,
                 resumed_at_step: int):
        self.log, self.every = log, max(every, 1)
        self.total_steps, self.epochs = total_steps, epochs
        self.writer, self.path = writer, path
        self.points = [p for p in paths.read_json_lines(path) if p["step"] <= resumed_at_step]
        self.restart_clock()

    def restart_clock(self) -> None:
        """Eval and checkpoint time is not training time; the next interval starts now."""
        self.started, self.examples, self.steps = time.perf_counter(), 0, 0

    def update(self, step: int, epoch: int, examples: int, logs) -> None:
        self.examples += examples
        self.steps += 1
        if step % self.every:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.examples / elapsed
        eta = (self.total_steps - step) * elapsed / self.steps
        loss, auc = float(logs["log_loss"]), float(logs["auc"])
        self.log(f"train: step {step}/{self.total_steps} (epoch {epoch + 1}/{self.epochs}) "
                 f"log loss {loss:.4f} auc {auc:.4f} {rate:,.0f} examples/s "
                 f"ETA {_format_seconds(eta)}")
        scalars = {"log_loss": loss, "auc": auc, "examples_per_second": rate}
        _write_scalars(self.writer, step, scalars)
        self.points.append({"step": step, "epoch": epoch + 1, **scalars})
        self.restart_clock()

    def save(self) -> None:
        paths.write_json_lines(self.path, self.points)


def _evaluate(model: model_lib.WideDeepModel, eval_fn, dataset) -> dict[str, float]:
    model.reset_metrics()
    for batch in dataset:
        eval_fn(batch)
    # Read here, not from the last step's logs: with several workers the metrics' variables
    # are summed across them when read outside a step.
    metrics = {m.name: float(m.result()) for m in model.metrics}
    metrics["examples"] = int(model.positive_rate.count.read_value())
    if metrics["positive_rate"] in (0.0, 1.0):  # Keras says 0.0; AUC needs both classes
        metrics["auc"] = float("nan")
    model.reset_metrics()
    return metrics


def _best_epoch(history: list[dict]) -> dict | None:
    """The complete epoch with the lowest validation log loss (the first of equals)."""
    scored = [h for h in history if h.get("complete") and "validation" in h]
    return min(scored, key=lambda h: h["validation"]["log_loss"]) if scored else None


def _early_stop(history: list[dict], patience: int) -> bool:
    """Whether `patience` complete epochs have passed since the best one."""
    best = _best_epoch(history) if patience else None
    if best is None:
        return False
    later = [h for h in history if h.get("complete") and h["epoch"] > best["epoch"]]
    return len(later) >= patience


def _auc_text(metrics: dict) -> str:
    if metrics["auc"] == metrics["auc"]:
        return f"{metrics['auc']:.4f}"
    only = "positive" if metrics["positive_rate"] == 1.0 else "negative"
    return f"n/a (the eval split has only {only} examples)"


@dataclasses.dataclass(frozen=True)
class TrainInputs:
    """The transform output as training reads it, checked before the model_dir is touched."""
    tft_output: object
    model_inputs: tuple
    feature_spec: dict
    label: str
    train_files: list
    eval_files: list
    train_examples: int
    validation_files: list


def read_inputs(config: cfg.FeatureConfig, transform_dir: str) -> TrainInputs:
    import tensorflow_transform as tft

    if not paths.is_complete(transform_dir, data.STATS_FILE):
        raise FileNotFoundError(f"{transform_dir} is not a complete transform output (no "
                                f"{data.STATS_FILE}, which the transform job writes last); "
                                f"run the transform job first")
    tft_output = tft.TFTransformOutput(transform_dir)
    inputs = model_lib.model_inputs(config, tft_output)
    label = config.label.column
    transformed_spec = tft_output.transformed_feature_spec()
    if label not in transformed_spec:
        raise ValueError(f"{config.source}: the label column '{label}' is missing from the "
                         f"transform output {transform_dir}")
    feature_spec = {f.name: transformed_spec[f.name] for f in inputs}
    feature_spec[label] = transformed_spec[label]
    train_files = data.split_files(transform_dir, data.TRAIN)
    train_examples = data.count_examples(train_files)
    if train_examples == 0:
        raise ValueError(f"no train examples in {', '.join(train_files)}")
    return TrainInputs(tft_output, inputs, feature_spec, label, train_files,
                       data.split_files(transform_dir, data.EVAL), train_examples,
                       data.optional_split_files(transform_dir, data.VALIDATION))


def _initialise(model, checkpoint, counters, layout: model_lib.ModelDir,
                out: model_lib.ModelDir, warm_start_from: str | None, log
                ) -> tuple[dict | None, int | None]:
    """Resume (from ``layout``), warm start or cold start; returns (warm-start report, step
    resumed from). The warm-start report goes to ``out``."""
    resume_from = layout.latest_checkpoint()
    if resume_from:
        checkpoint.restore(resume_from).assert_consumed()
        step, epoch, batch_in_epoch = (int(counters[k]) for k in
                                       ("step", "epoch", "batch_in_epoch"))
        log(f"train: resuming from {resume_from} at step {step} (epoch {epoch + 1}, "
            f"{batch_in_epoch} batches of it done)")
        if warm_start_from:
            log(f"train: not warm-starting from {warm_start_from}: the checkpoint already "
                f"holds this run's initialisation")
        return paths.read_json(layout.warm_start_report), step
    if warm_start_from:
        report = warm_start_lib.warm_start(model, warm_start_from, out.vocab, log=log)
        paths.write_json(out.warm_start_report, report)
        return report, None
    paths.remove(out.warm_start_report)
    log("train: cold start (no warm_start_from)")
    return None, None


def _local(strategy: tf.distribute.Strategy, per_replica):
    """This worker's value of a step's result (one replica per worker here)."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0],
                                 per_replica)


def train(config: cfg.FeatureConfig, transform_dir: str, model_dir: str, *,
          params: cfg.TrainParams | None = None, warm_start_from: str | None = None,
          log: Callable[[str], None] = print, log_every_steps: int = 100,
          worker: distribute.Worker | None = None) -> dict:
    """Trains (or resumes training) into ``model_dir``; returns the run's summary.

    ``params`` defaults to the config's [train]; ``warm_start_from`` is a previous run's
    model_dir to initialise from (ignored when resuming: the interrupted run already did).
    ``log`` gets one line per event; progress comes every ``log_every_steps`` steps. A
    finished model_dir (DONE) with the same params is left alone and its summary returned.

    ``worker`` (:func:`trainer.distribute.worker_from_env`) makes this process one worker of
    a synchronous multi-worker run; every worker calls ``train`` with the same arguments and
    ``model_dir`` must be one directory they all see. Only the chief writes it.
    """
    worker = worker or distribute.SINGLE
    strategy = distribute.strategy_for(worker)  # before any TF op runs
    if not worker.is_chief:
        base_log = log
        log = lambda line: base_log(f"{worker.task}: {line}")  # noqa: E731
    params = params or config.train
    layout = model_lib.ModelDir(model_dir)
    finished = paths.read_json(layout.summary) if paths.exists(layout.done) else None
    # Compared as TrainParams: the summary's JSON holds lists where params hold tuples.
    if (finished is not None and "params" in finished
            and model_lib.params_from_json(finished["params"]) == params):
        log(f"train: {model_dir} is already trained ({finished['steps']} steps); nothing to do")
        return finished
    run = _TrainingRun(read_inputs(config, transform_dir), layout, params, worker, strategy,
                       log)
    run.initialise(warm_start_from, log_every_steps)
    run.train_epochs()
    return run.finish()


class _TrainingRun:
    """One call of :func:`train`, in named phases: set up the model_dir and the model
    (``__init__``), resume / warm start / cold start (``initialise``), the epochs
    (``train_epochs``: ``_train_epoch`` then ``_end_epoch`` with eval, validation, history,
    checkpoint), then the best epoch's weights, the final model and the summary
    (``finish``). A hand-written loop rather than ``Model.fit``: a resumed run must skip
    exactly the batches of the epoch it had trained on, with the weight average and the
    counters in the same checkpoint. ``fit`` with BackupAndRestore(save_freq=N) restores the
    step counter but starts a fresh iterator over the epoch (tf_keras 2.21 DataHandler), so
    it would train the epoch's first batches twice and its last ones never.
    """

    def __init__(self, inputs: TrainInputs, layout: model_lib.ModelDir, params: cfg.TrainParams,
                 worker: distribute.Worker, strategy: tf.distribute.Strategy, log):
        self.inputs, self.layout, self.params, self.worker, self.strategy, self.log = (
            inputs, layout, params, worker, strategy, log)
        self.out = self._prepare_model_dir()
        # Plain variables: only this process's loop reads them, and every worker counts alike.
        self.step, self.epoch, self.batch_in_epoch = (
            tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
            for name in ("step", "epoch", "batch_in_epoch"))
        with strategy.scope():
            keras.utils.set_random_seed(params.seed)
            self.model = model_lib.build_model(inputs.model_inputs, params)
            # Evaluated and exported: the average of the last steps' weights, not the last
            # step's.
            self.average = model_lib.WeightAverage(self.model)
            self.checkpoint = model_lib.training_checkpoint(
                self.model, average=self.average, step=self.step, epoch=self.epoch,
                batch_in_epoch=self.batch_in_epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.out.checkpoints,
                                                  max_to_keep=3, step_counter=self.step)
        self.steps_per_epoch = math.ceil(inputs.train_examples / params.batch_size)
        self.total_steps = params.epochs * self.steps_per_epoch
        if params.max_steps:
            self.total_steps = min(self.total_steps, params.max_steps)
        self._make_datasets()
        self.writers = {split: tf.summary.create_file_writer(paths.join(self.out.tensorboard,
                                                                        split))
                        for split in ("train", "eval", "validation")}
        self.steps_this_run, self.examples_this_run, self.train_seconds = 0, 0, 0.0

    def _prepare_model_dir(self) -> model_lib.ModelDir:
        """The directory this process writes: the model_dir on the chief, else a temp one."""
        layout, worker = self.layout, self.worker
        if worker.is_chief:
            out = layout
            paths.remove(layout.done)
            paths.makedirs(layout.root)
            for stale in paths.glob(f"{layout.keras_model}.tmp-*"):
                paths.rmtree(stale)
            if layout.latest_checkpoint():
                _check_resumable(layout, self.params, self.inputs.model_inputs,
                                 self.inputs.tft_output)
        else:
            # Every worker writes its checkpoints (each save reads the metrics, summed across
            # workers); the others' copies go here and are deleted at the end.
            out = model_lib.ModelDir(tempfile.mkdtemp(prefix=f"widedeep-worker{worker.index}-"))
            atexit.register(paths.rmtree, out.root)  # also if training fails
        _copy_vocabularies(self.inputs.model_inputs, self.inputs.tft_output, out)
        paths.write_json(out.hparams, model_lib.params_to_json(self.params))
        return out

    def _make_datasets(self) -> None:
        inputs, params, worker, strategy = self.inputs, self.params, self.worker, self.strategy

        def dataset(files, **options):
            return data.make_dataset(files, inputs.feature_spec, inputs.label,
                                     params.batch_size, num_workers=worker.count,
                                     worker_index=worker.index, **options)

        streams = self.model.streams

        def train_dataset(epoch_index: int, skip: int) -> tf.data.Dataset:
            # With several deep towers each reads its own shuffle of the train split, seeded
            # like its initialisation; a step takes a batch of each. Measured on MovieLens,
            # towers reading one order stayed 0.986 correlated and their mean gained nothing
            # over one tower; their own orders are what set apart models of other seeds.
            orders = [dataset(inputs.train_files, shuffle=True, skip_batches=skip,
                              seed=model_lib.tower_seed(params.seed, k) + epoch_index)
                      for k in range(streams)]
            return orders[0] if streams == 1 else tf.data.Dataset.zip(tuple(orders))

        self.train_dataset = train_dataset
        self.eval_dataset = dataset(inputs.eval_files, shuffle=False)
        self.validation_dataset = (dataset(inputs.validation_files, shuffle=False)
                                   if inputs.validation_files else None)
        self.patience = params.early_stopping_patience if self.validation_dataset else 0
        signature = [self.eval_dataset.element_spec]
        train_signature = [signature[0] if streams == 1 else (signature[0],) * streams]

        def train_and_average(batch):
            logs = strategy.run(self.model.train_step, args=(batch,))
            self.average.update()  # on the updated weights, which every worker holds alike
            return _local(strategy, logs)

        def evaluate_batch(batch):
            return _local(strategy, strategy.run(self.model.test_step, args=(batch,)))

        self.train_fn = tf.function(train_and_average, input_signature=train_signature)
        self.eval_fn = tf.function(evaluate_batch, input_signature=signature)

    def initialise(self, warm_start_from: str | None, log_every_steps: int) -> None:
        counters = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}
        self.warm_report, self.resumed_from_step = _initialise(
            self.model, self.checkpoint, counters, self.layout, self.out, warm_start_from,
            self.log)
        if self.resumed_from_step is None:
            self.average.reset()
        self.progress = _Progress(self.log, log_every_steps, self.total_steps,
                                  self.params.epochs, self.writers["train"], self.out.progress,
                                  int(self.step))
        # Epochs already completed keep their history; the current one is redone from here.
        self.history = [h for h in (paths.read_json(self.layout.history) or [])
                        if h["epoch"] <= int(self.epoch)]
        params, worker = self.params, self.worker
        parameters = sum(int(tf.size(v)) for v in model_lib.model_variables(self.model).values())
        self.log(f"train: {params.model_type} model ({parameters:,} parameters), "
                 f"{self.inputs.train_examples:,} train examples in "
                 f"{len(self.inputs.train_files)} file(s), batch {params.batch_size}, "
                 f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps in all → "
                 f"{self.layout.root}")
        if worker.distributed:
            self.log(f"train: {worker.task} of a {worker.count}-worker cluster"
                     f"{' (chief)' if worker.is_chief else ''}, MultiWorkerMirroredStrategy: "
                     f"each step, {params.batch_size} examples split between the workers, "
                     f"gradients summed across them")

    def _save_checkpoint(self) -> None:
        self.progress.save()  # first: a resume from this checkpoint then finds all its points
        path = self.manager.save(checkpoint_number=int(self.step))
        self.log(f"train: checkpoint saved at step {int(self.step)}: {path}")
        self.progress.restart_clock()

    def train_epochs(self) -> None:
        while (int(self.epoch) < self.params.epochs and int(self.step) < self.total_steps
               and not _early_stop(self.history, self.patience)):
            epoch_index = int(self.epoch)
            complete = self._train_epoch(epoch_index)
            self._end_epoch(epoch_index, complete)
            if not complete:
                break
        for writer in self.writers.values():
            writer.flush()

    def _train_epoch(self, epoch_index: int) -> bool:
        """Trains the rest of this epoch; False when max_steps stopped it first."""
        step, batch_in_epoch, params = self.step, self.batch_in_epoch, self.params
        if int(batch_in_epoch) == 0:
            self.model.reset_metrics()
        complete = True
        started = time.perf_counter()
        for batch in self.train_dataset(epoch_index, int(batch_in_epoch)):
            if int(step) >= self.total_steps:
                complete = False
                break
            logs = self.train_fn(batch)
            step.assign_add(1)
            batch_in_epoch.assign_add(1)
            # The global batch, about (with several towers, tower 0's: each tower reads the
            # split once an epoch, as one tower does).
            labels = batch[1] if self.model.streams == 1 else batch[0][1]
            examples = int(labels.shape[0]) * self.worker.count
            self.steps_this_run += 1
            self.examples_this_run += examples
            self.progress.update(int(step), epoch_index, examples, logs)
            if int(batch_in_epoch) == 1 or self.steps_this_run == 1:
                self.progress.restart_clock()  # tracing and the shuffle buffer's fill
            # The last step of an epoch is saved after its eval instead, so a checkpoint
            # at an epoch's end always has that epoch's history written before it.
            if (int(step) % params.checkpoint_every_steps == 0
                    and int(batch_in_epoch) < self.steps_per_epoch
                    and int(step) < self.total_steps):
                self._save_checkpoint()
        self.train_seconds += time.perf_counter() - started
        return complete

    def _end_epoch(self, epoch_index: int, complete: bool) -> None:
        """Eval and validation on the weight average, the history, then the checkpoint."""
        step = int(self.step)
        train_metrics = {m.name: float(m.result()) for m in self.model.metrics}
        entry = {"epoch": epoch_index + 1, "complete": complete, "step": step,
                 "train": train_metrics}
        with self.average.applied():  # what is evaluated (and kept) is the weight average
            entry["eval"] = eval_metrics = _evaluate(self.model, self.eval_fn, self.eval_dataset)
            if self.validation_dataset is not None:
                entry["validation"] = _evaluate(self.model, self.eval_fn,
                                                self.validation_dataset)
                if self.patience and _best_epoch(self.history + [entry]) is entry:
                    # Before the history says so.
                    model_lib.save_model(self.model, self.out.best_model)
        self.history.append(entry)
        if (step >= self.total_steps or _early_stop(self.history, self.patience)
                or (complete and epoch_index + 1 >= self.params.epochs)):
            self.average.commit()
        paths.write_json(self.out.history, self.history)
        _write_scalars(self.writers["eval"], step, eval_metrics)
        if "validation" in entry:
            _write_scalars(self.writers["validation"], step, entry["validation"])
        self.log(f"train: epoch {epoch_index + 1}/{self.params.epochs} "
                 f"{'done' if complete else 'stopped by max_steps'} at step {step}: "
                 f"eval auc {_auc_text(eval_metrics)} log loss {eval_metrics['log_loss']:.4f} "
                 f"accuracy {eval_metrics['accuracy']:.4f} "
                 f"({eval_metrics['examples']:,} examples); "
                 + (f"validation log loss {entry['validation']['log_loss']:.4f}; "
                    if "validation" in entry else "")
                 + f"train log loss {train_metrics['log_loss']:.4f}")
        if complete:
            self.epoch.assign_add(1)
            self.batch_in_epoch.assign(0)
        self._save_checkpoint()

    def finish(self) -> dict:
        """The kept weights (the best epoch's), the final model, the summary and DONE."""
        if self.steps_this_run == 0:  # nothing left to train (e.g. max_steps already reached)
            self.average.commit()  # a no-op unless the checkpoint resumed from was not a run's last
            self._save_checkpoint()
        history, patience, layout = self.history, self.patience, self.layout
        best = _best_epoch(history) if patience else None
        if best is not None and best is not history[-1]:
            model_lib.load_weights(self.model, self.out.best_model)
            self.log(f"train: keeping epoch {best['epoch']}'s weights, the best by validation "
                     f"log loss ({best['validation']['log_loss']:.4f}; the last epoch's: "
                     f"{history[-1]['validation']['log_loss']:.4f})"
                     + (f"; stopped early after {patience} epoch(s) without improvement"
                        if _early_stop(history, patience) else ""))
            final_eval = best["eval"]
        elif history:
            final_eval = history[-1]["eval"]
        else:  # still report metrics
            final_eval = _evaluate(self.model, self.eval_fn, self.eval_dataset)
        _save_final_model(self.model, self.out)
        summary = self._summary(best, final_eval)
        step = int(self.step)
        if not self.worker.is_chief:
            paths.rmtree(self.out.root)
            self.log(f"train: done at step {step}; the chief writes the model to {layout.root}")
            return summary
        paths.write_json(layout.summary, summary)
        paths.write_text(layout.done, f"{step}\n")
        # In keras_model now if it was the best; only a resume read it.
        paths.rmtree(layout.best_model)
        self.log(f"train: done at step {step}: eval auc {_auc_text(final_eval)} log loss "
                 f"{final_eval['log_loss']:.4f}; model in {layout.keras_model}")
        return summary

    def _summary(self, best: dict | None, final_eval: dict) -> dict:
        history, layout = self.history, self.layout
        return {
            "model_dir": layout.root,
            "model_type": self.params.model_type,
            "steps": int(self.step),
            "epochs_completed": int(self.epoch),
            "steps_per_epoch": self.steps_per_epoch,
            "train_examples": self.inputs.train_examples,
            "resumed_from_step": self.resumed_from_step,
            "steps_this_run": self.steps_this_run,
            "examples_per_second": (round(self.examples_this_run / self.train_seconds, 1)
                                    if self.train_seconds else None),
            "final_eval": final_eval,
            "best_epoch": best["epoch"] if best is not None else None,
            # What model selection (early stopping, `widedeep tune`) compares: the kept epoch's.
            "best_validation": (best or (history[-1] if history else {})).get("validation"),
            "stopped_early": _early_stop(history, self.patience),
            # The last epoch's mean label: beside the eval positive rate it tells drift from a
            # broken model when calibration fails.
            "train_positive_rate": (history[-1]["train"].get("positive_rate")
                                    if history else None),
            "warm_start": self.warm_report,
            "params": model_lib.params_to_json(self.params),
            "paths": {"keras_model": layout.keras_model,
                      "checkpoint": self.manager.latest_checkpoint,
                      "hparams": layout.hparams, "history": layout.history,
                      "progress": layout.progress, "tensorboard": layout.tensorboard,
                      "vocab": layout.vocab},
        }
