"""`widedeep run`: the whole loop over one work dir, with a manifest a person can read.

Each run has an id and ``runs/<run_id>/manifest.json`` recording every stage's start, end
and outcome. Stages are idempotent: rerunning a run id skips the stages that completed and
redoes the one that failed. A lock file keeps two overlapping runs (cron!) apart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import re
import subprocess
import time
from typing import Any, Callable, Sequence

from pipeline import gate
from pipeline import report
from pipeline import serving
from pipeline import validation
from pipeline.lock import LockedError, work_dir_lock
from pipeline.run_dir import RunDir, WorkDir
from transforms import config as cfg
from transforms import paths

LOG = logging.getLogger("widedeep")
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the work dir; cron can simply try later
EXIT_ANOMALIES = 65  # EX_DATAERR: the night's data failed its checks; serving untouched


class StageError(RuntimeError):
    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"stage '{stage}' failed: {cause}")
        self.stage = stage


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def code_version() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Manifest:
    """The run record, rewritten atomically and durably after every change."""

    def __init__(self, run_dir: str):
        self.path = paths.join(run_dir, RunDir.MANIFEST)
        self.reserve_path = paths.join(run_dir, RunDir.RESERVE)
        self.data: dict[str, Any] = RunDir(run_dir).manifest() or {}
        # Once a stage runs, every later stage runs too: they read what it just rewrote.
        self._ran_a_stage = False

    def save(self) -> None:
        paths.write_json(self.path, self.data)

    def reserve(self) -> None:
        """Sets aside disk space for the record's last word: a stage that fails because the
        disk is full must still be recorded as failed, not left "running"."""
        if not paths.is_remote(self.path) and not paths.exists(self.reserve_path):
            paths.write_bytes(self.reserve_path, os.urandom(RESERVE_BYTES))  # not sparse

    def save_failure(self) -> None:
        """Saves a failure, freeing the reserve if the disk is full; never raises (the
        stage's own error is the one to report)."""
        try:
            self.save()
            return
        except OSError as e:
            error = e
        if paths.exists(self.reserve_path):
            _release_reserve(paths.dirname(self.path))
            try:
                self.save()
                return
            except OSError as e:
                error = e
        LOG.error("run record: could not save %s (%s); it still says the stage is running",
                  self.path, error)

    def run_stage(self, name: str, fn: Callable[[], dict | None], output: str = "") -> dict:
        """Runs a stage, or skips it when this run finished it and its `output` (the file
        the stage writes last) is still there."""
        stages = self.data.setdefault("stages", {})
        if stages.get(name, {}).get("outcome") == "done" and not self._ran_a_stage:
            if not output or paths.exists(output):
                LOG.info("%s: already done in this run, skipping", name)
                return stages[name].get("result") or {}
            LOG.warning("%s: done in this run's record, but its output %s is gone; redoing it "
                        "and the stages after it", name, output)
        self._ran_a_stage = True
        record = stages[name] = {"started": _now(), "outcome": "running"}
        self.save()
        started = time.time()
        try:
            result = fn() or {}
        except validation.DataAnomalies as e:
            record.update(ended=_now(), outcome="anomalies", error=str(e),
                          anomalies=[a.key for a in e.anomalies],
                          seconds=round(time.time() - started, 2))
            self.save_failure()
            raise
        except Exception as e:
            record.update(ended=_now(), outcome="failed", error=f"{type(e).__name__}: {e}",
                          seconds=round(time.time() - started, 2))
            self.save_failure()
            raise StageError(name, e) from e
        record.update(ended=_now(), outcome="done", seconds=round(time.time() - started, 2),
                      result=result)
        self.save()
        return result


def _usable_model_dir(model_dir: str) -> str:
    """'' if a model dir can be warm-started from, else why not."""
    from trainer import model as model_lib

    layout = model_lib.ModelDir(model_dir)
    if not paths.exists(layout.done):
        return f"{model_dir} has no finished training run (no DONE marker)"
    try:
        model_lib.load_model(layout.keras_model)
    except Exception as e:  # any corruption: say so and look further back
        return f"{model_dir} does not load ({type(e).__name__}: {str(e)[:200]})"
    return ""


def resolve_warm_start(work_dir: str, current_run: str, setting: str = "auto") -> str | None:
    """The model dir to warm-start from: `none`, a PATH, or `auto`.

    auto: the model behind the newest usable serving version (the blessed one), else the
    newest finished training run, else a cold start. Unusable candidates (corrupted on
    disk, unfinished) are reported and skipped, never silently used.
    """
    if setting == "none":
        return None
    if setting != "auto":
        problem = _usable_model_dir(setting)
        if problem:
            raise ValueError(f"--warm-start {setting}: {problem}")
        return setting
    from trainer import export  # TensorFlow

    serving_root = WorkDir(work_dir).serving
    for version in reversed(serving.serving_versions(serving_root)):
        try:
            model_dir = export.source_model_dir(
                export.read_metadata(paths.join(serving_root, str(version))), work_dir)
        except (OSError, ValueError, KeyError) as e:
            LOG.warning("warm start: serving version %d has no readable metadata (%s); "
                        "trying an older one", version, e)
            continue
        problem = _usable_model_dir(model_dir)
        if not problem:
            LOG.info("warm start: from the model of serving version %d (%s)", version, model_dir)
            return model_dir
        LOG.warning("warm start: serving version %d is unusable: %s; trying an older one",
                    version, problem)
    for model_dir in reversed(WorkDir(work_dir).run_models()):
        if paths.basename(paths.dirname(model_dir)) == current_run:
            continue
        if not _usable_model_dir(model_dir):
            LOG.info("warm start: no blessed model; from the newest trained one (%s)", model_dir)
            return model_dir
    return None


def run(config: cfg.FeatureConfig, *, work_dir: str, input_pattern: str | None = None,
        eval_input_pattern: str | None = None, run_id: str | None = None,
        synth_rows: int = 200_000, warm_start: str = "auto", ablations: bool = False,
        pipeline_args: Sequence[str] = (), window=None,
        allow_anomalies: Sequence[str] = ()) -> int:
    """The whole loop; returns the process exit code. Every run, failed or not, ends
    with its report (runs/<run_id>/report.html). ``window`` (a
    :class:`pipeline.transform_job.Window`) lets the analyzers see earlier days too;
    ``allow_anomalies`` accepts known changes in the data (see :mod:`pipeline.validation`)."""
    run_id = run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = WorkDir(work_dir)
    inputs = {"input": input_pattern or work.raw_input, "eval_input": eval_input_pattern}
    if window is not None:
        inputs["analysis_window"] = [*window.earlier, window.new_day]
    ctx = RunContext(config, work, work.run(run_id), inputs, input_pattern is None, synth_rows,
                     warm_start, ablations, pipeline_args, window, tuple(allow_anomalies))
    try:
        with work_dir_lock(work_dir):
            try:
                return _run_locked(ctx)
            except validation.DataAnomalies as e:
                LOG.error("run %s stopped before training: %s", run_id, e)
                for anomaly in e.anomalies:
                    LOG.error("  %s: %s", anomaly.key, anomaly.reason)
                LOG.error("serving unchanged. If this is a known change, accept it with "
                          "--allow-anomalies %s", ",".join(a.key for a in e.anomalies))
                return EXIT_ANOMALIES
            except StageError as e:
                LOG.error("run %s failed: %s", run_id, e)
                return 1
            except ResumeError as e:
                LOG.error("error: %s", e)
                return 2
            except OSError as e:  # the run's own records or dirs (disk full, read-only)
                LOG.error("run %s failed: %s", run_id, _os_error_text(e))
                return 1
            finally:
                _release_reserve(ctx.run.root)
                _write_report(ctx.run.root)
    except LockedError as e:
        LOG.error("%s", e)
        return EXIT_LOCKED
    except OSError as e:  # the lock itself: a read-only or missing mount
        LOG.error("run %s: cannot use the work dir %s: %s", run_id, work_dir, _os_error_text(e))
        return 1


def _release_reserve(run_dir: str) -> None:
    path = paths.join(run_dir, RunDir.RESERVE)
    try:
        paths.remove(path)
    except OSError as e:
        LOG.warning("run record: could not remove %s (%s)", path, e)


def _os_error_text(e: OSError) -> str:
    return f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)


def _write_report(run_dir: str) -> None:
    try:
        ablations = paths.read_json(RunDir(run_dir).path(RunDir.ABLATIONS))
        LOG.info("report: %s", report.write_report(run_dir, ablations=ablations))
    except Exception as e:  # the run's outcome stands; a broken report must not hide it
        LOG.warning("report: could not be written (%s: %s)", type(e).__name__, e)


class ResumeError(ValueError):
    """A run id is being resumed with another config or input than it started with."""


def _check_resumable(manifest: Manifest, run_id: str, config: cfg.FeatureConfig,
                     inputs: dict) -> None:
    """Finished stages are reused only by the run they belong to: same config, same input
    (else a model built on yesterday's vocabularies would be recorded as today's)."""
    if not any(stage.get("outcome") == "done"
               for stage in (manifest.data.get("stages") or {}).values()):
        return
    changes = []
    if manifest.data.get("config_digest") not in (None, config.digest):
        changes.append(f"the config ({manifest.data.get('config')} digest "
                       f"{manifest.data['config_digest']} → {config.source} digest "
                       f"{config.digest})")
    recorded = manifest.data.get("inputs")
    if recorded is not None and recorded != inputs:
        changes += [f"--{key.replace('_', '-')} ({recorded.get(key)!r} → {value!r})"
                    for key, value in inputs.items() if recorded.get(key) != value]
    if changes:
        raise ResumeError(
            f"run {run_id} was started with another {' and '.join(changes)}; its finished "
            f"stages cannot be reused. Give a new --run-id, or delete "
            f"{paths.dirname(manifest.path)} to redo this one")


@dataclasses.dataclass
class RunContext:
    """What every stage of one run reads: the config, where things go, what came before."""
    config: cfg.FeatureConfig
    work: WorkDir
    run: RunDir
    inputs: dict[str, str | None]  # as the manifest records them
    synthetic: bool  # no --input: the synth stage writes the input
    synth_rows: int
    warm_start: str
    ablations: bool
    pipeline_args: Sequence[str]
    window: Any = None  # pipeline.transform_job.Window (its module loads Beam)
    allow_anomalies: tuple[str, ...] = ()
    results: dict[str, dict] = dataclasses.field(default_factory=dict)  # by stage name

    @functools.cached_property
    def blessed_run(self) -> RunDir | None:
        """The newest other run that published a model: what this run's data is checked
        against (found once; it reads every run's manifest)."""
        blessed = validation.blessed_runs(self.work, self.run.run_id)
        return blessed[0] if blessed else None


# The stages import TensorFlow, TFT and Beam (seconds each) inside: `widedeep history`, the
# lock and the report must not pay for them.

def _synth(ctx: RunContext) -> dict:
    from transforms import synthetic
    written = synthetic.write_log(ctx.work.raw, days=1, rows_per_day=ctx.synth_rows, seed=0)
    LOG.info("synth: %d rows in %d file(s) → %s", ctx.synth_rows, len(written), ctx.work.raw)
    return {"rows": ctx.synth_rows, "files": len(written), "dir": ctx.work.raw}


def _transform(ctx: RunContext) -> dict:
    from pipeline import transform_job
    known = (validation.vocabularies(ctx.config, ctx.blessed_run.transform)
             if ctx.blessed_run else None)
    return transform_job.run_transform(ctx.config, ctx.inputs["input"], ctx.run.transform,
                                       eval_input_pattern=ctx.inputs["eval_input"],
                                       pipeline_args=ctx.pipeline_args, window=ctx.window,
                                       known_values=known, log=LOG.info)


def _validate(ctx: RunContext) -> dict:
    """The night's data against the schema, the last blessed run and the recent volume."""
    blessed = ctx.blessed_run
    schema_file = validation.schema_path(ctx.config, ctx.work)
    if ctx.config.validation.schema and not paths.exists(schema_file):
        raise FileNotFoundError(f"validation.schema in {ctx.config.source}: no file "
                                f"{schema_file} (write one with `widedeep schema`)")
    schema = paths.read_json(schema_file)  # None when there is none yet
    record = validation.validate(
        ctx.config, paths.read_json(ctx.run.path(RunDir.COLUMN_STATS)), schema=schema,
        previous=validation.read_stats(blessed) if blessed else None,
        recent_rows=validation.recent_row_counts(ctx.work, ctx.run.run_id,
                                                 ctx.config.validation.volume_history),
        allowed=ctx.allow_anomalies)
    record.update(schema_file=schema_file if schema else None,
                  blessed_run=blessed.run_id if blessed else None)
    path = paths.write_json(ctx.run.path(RunDir.VALIDATION), record)
    for anomaly in record["anomalies"]:
        (LOG.warning if anomaly["allowed"] else LOG.error)(
            "validate: %s%s: %s", anomaly["anomaly"],
            " (allowed)" if anomaly["allowed"] else "", anomaly["reason"])
    stopping = validation.stopping(record)
    if stopping:
        raise validation.DataAnomalies(stopping, path)
    LOG.info("validate: %s", validation.summary(record))
    return {"file": path, "anomalies": [a["anomaly"] for a in record["anomalies"]],
            "blessed_run": record["blessed_run"]}


def _train(ctx: RunContext) -> dict:
    from trainer import train as trainer
    warm = resolve_warm_start(ctx.work.root, ctx.run.run_id, ctx.warm_start)
    summary = trainer.train(ctx.config, ctx.run.transform, ctx.run.model, warm_start_from=warm,
                            log=LOG.info)
    return {"warm_start_from": warm, **summary}


def _export(ctx: RunContext) -> dict:
    from trainer import export
    export.export_model(ctx.config, ctx.run.model, ctx.run.transform, ctx.run.export,
                        metadata={"run_id": ctx.run.run_id}, work_dir=ctx.work.root)
    # What `widedeep score` measures its candidates' skew against.
    paths.copy(ctx.run.path(RunDir.COLUMN_STATS), paths.join(
        ctx.run.export, export.EXTRA_DIR, paths.basename(RunDir.COLUMN_STATS)))
    LOG.info("export: candidate SavedModel → %s", ctx.run.export)
    return {"export_dir": ctx.run.export}


def _evaluate(ctx: RunContext) -> dict:
    raw_eval = gate.read_raw_eval(ctx.config, ctx.run.transform)
    candidate, probabilities = gate.evaluate_export(ctx.run.export, raw_eval)
    paths.makedirs(ctx.run.eval)
    paths.write_npy(ctx.run.path(RunDir.PROBABILITIES), probabilities)
    baseline, baseline_version = _evaluate_baseline(ctx.work.serving, raw_eval)
    result = {"candidate": candidate, "baseline": baseline,
              "baseline_version": baseline_version, "eval_examples": len(raw_eval.labels)}
    paths.write_json(ctx.run.path(RunDir.METRICS), result)
    LOG.info("evaluate: candidate AUC %.4f, log loss %.4f, calibration %.3f on %d eval "
             "examples%s", candidate["auc"], candidate["log_loss"], candidate["calibration"],
             len(raw_eval.labels),
             f"; baseline (serving version {baseline_version}) AUC {baseline['auc']:.4f}, "
             f"log loss {baseline['log_loss']:.4f}" if baseline else "; no baseline")
    return {"metrics_file": ctx.run.path(RunDir.METRICS), "candidate": _headline(candidate),
            "baseline": _headline(baseline), "baseline_version": baseline_version}


def _ablations(ctx: RunContext) -> dict:
    """The paper's Table 1 beside tonight's model: wide-only and deep-only, same data and
    budget, cold-started so neither inherits the joint model's weights."""
    from trainer import export
    from trainer import train as trainer
    raw_eval = gate.read_raw_eval(ctx.config, ctx.run.transform)
    results = {}
    for model_type in ("wide", "deep"):
        ablation_dir = ctx.run.ablation_model(model_type)
        trainer.train(ctx.config, ctx.run.transform, ablation_dir, log=LOG.info,
                      params=dataclasses.replace(ctx.config.train, model_type=model_type))
        ablation_export = export.export_model(ctx.config, ablation_dir, ctx.run.transform,
                                              ablation_dir + "_export")
        results[model_type] = gate.evaluate_export(ablation_export, raw_eval)[0]
        LOG.info("ablations: %s-only AUC %.4f, log loss %.4f", model_type,
                 results[model_type]["auc"], results[model_type]["log_loss"])
    paths.write_json(ctx.run.path(RunDir.ABLATIONS), results)
    return {k: _headline(v) for k, v in results.items()}


def _gate(ctx: RunContext) -> dict:
    result = paths.read_json(ctx.results["evaluate"]["metrics_file"])
    decision = gate.decide(result["candidate"], result["baseline"], ctx.config.gate,
                           train_positive_rate=ctx.results["train"].get("train_positive_rate"))
    LOG.info("gate: %s: %s", "BLESSED" if decision.blessed else "REJECTED", decision.reason)
    paths.write_json(ctx.run.path(RunDir.GATE), decision.to_json())
    return decision.to_json()


def _publish(ctx: RunContext) -> dict:
    raw_eval = gate.read_raw_eval(ctx.config, ctx.run.transform, limit=DRY_RUN_EXAMPLES)
    expected = paths.read_npy(ctx.run.path(RunDir.PROBABILITIES))
    version, reason = serving.publish(
        ctx.run.export, ctx.work.serving, keep_versions=ctx.config.serving.keep_versions,
        dry_run_examples=raw_eval.serialized, expected=expected[:len(raw_eval.serialized)],
        scratch_dir=ctx.run.path(RunDir.DRY_RUN))
    if not version:
        LOG.warning("dry run: REJECTED: %s; serving left untouched", reason)
        return {"version": 0, "dry_run": reason}
    path = paths.join(ctx.work.serving, str(version))
    LOG.info("dry run: passed (%s)", reason)
    LOG.info("publish: serving version %d → %s", version, path)
    _capture_schema(ctx)
    return {"version": version, "path": path, "dry_run": reason}


def _capture_schema(ctx: RunContext) -> None:
    """The first blessed run's data becomes the schema later nights are checked against
    (unless the config names a schema of its own)."""
    schema_file = validation.schema_path(ctx.config, ctx.work)
    if ctx.config.validation.schema or paths.exists(schema_file):
        return
    schema = validation.infer_schema(paths.read_json(ctx.run.path(RunDir.COLUMN_STATS)),
                                     source=f"run {ctx.run.run_id}")
    paths.write_json(schema_file, schema)
    LOG.info("schema: captured from this run → %s (edit it to tighten or loosen a rule)",
             schema_file)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[RunContext], dict]
    # The file the stage writes last: a done stage whose output is gone is redone.
    output: Callable[[RunContext], str] = lambda ctx: ""
    runs_if: Callable[[RunContext], bool] = lambda ctx: True


STAGES = (
    Stage("synth", _synth, lambda ctx: ctx.work.raw, lambda ctx: ctx.synthetic),
    Stage("transform", _transform, lambda ctx: ctx.run.path(RunDir.TRANSFORM_STATS)),
    Stage("validate", _validate, lambda ctx: ctx.run.path(RunDir.VALIDATION)),
    Stage("train", _train, lambda ctx: ctx.run.path(RunDir.MODEL_DONE)),
    Stage("export", _export,
          lambda ctx: paths.join(ctx.run.export, serving.SAVED_MODEL_FILE)),
    Stage("evaluate", _evaluate, lambda ctx: ctx.run.path(RunDir.METRICS)),
    Stage("ablations", _ablations, lambda ctx: ctx.run.path(RunDir.ABLATIONS),
          lambda ctx: ctx.ablations),
    Stage("gate", _gate, lambda ctx: ctx.run.path(RunDir.GATE)),
    Stage("publish", _publish, runs_if=lambda ctx: ctx.results["gate"]["blessed"]),
)


def _run_locked(ctx: RunContext) -> int:
    paths.makedirs(ctx.run.root)
    manifest = Manifest(ctx.run.root)
    _check_resumable(manifest, ctx.run.run_id, ctx.config, ctx.inputs)
    manifest.data.setdefault("run_id", ctx.run.run_id)
    manifest.data.setdefault("created", _now())
    manifest.data.update(config=ctx.config.source, config_digest=ctx.config.digest,
                         code_version=code_version(), inputs=ctx.inputs)
    manifest.save()
    manifest.reserve()
    LOG.info("run %s: work dir %s", ctx.run.run_id, ctx.work.root)
    try:
        for stage in STAGES:
            if stage.runs_if(ctx):
                ctx.results[stage.name] = manifest.run_stage(stage.name, lambda: stage.fn(ctx),
                                                             output=stage.output(ctx))
            if stage.name == "gate":
                manifest.data["gate"] = ctx.results["gate"]
    except validation.DataAnomalies as e:
        # Decided, not crashed: cron does not retry the day; a person accepts the change
        # (--allow-anomalies) or fixes the export, then reruns it with --date.
        manifest.data.update(blessed=False, anomalies=[a.key for a in e.anomalies],
                             finished=_now())
        manifest.save()
        raise
    _record_outcome(ctx, manifest)
    return 0


def _record_outcome(ctx: RunContext, manifest: Manifest) -> None:
    decision, published = ctx.results["gate"], ctx.results.get("publish")
    manifest.data.pop("anomalies", None)  # an earlier attempt's, since allowed
    if published is not None:
        manifest.data["blessed"] = bool(published["version"])
        manifest.data["serving_version"] = published["version"] or None
        if not published["version"]:
            manifest.data["gate"] = {**decision, "blessed": False,
                                     "reason": "dry run failed: " + published["dry_run"]}
    else:
        manifest.data["blessed"] = False
        versions = serving.serving_versions(ctx.work.serving)
        LOG.info("serving unchanged: %s", f"serving version {versions[-1]} in "
                 f"{ctx.work.serving}" if versions else "nothing in serving")
    manifest.data["finished"] = _now()
    manifest.save()
    LOG.info("run %s done: %s; record in %s", ctx.run.run_id,
             f"blessed as serving version {manifest.data['serving_version']}"
             if manifest.data["blessed"] else "candidate rejected", manifest.path)


RESERVE_BYTES = 256 * 1024  # the manifest is a few kB; room for it many times over
DRY_RUN_EXAMPLES = 1000
DATE_TOKEN = "{date}"


def _template_regex(template: str) -> "re.Pattern":
    """`.../day={date}/*.csv` → a regex capturing the date from a matched path."""
    parts = [re.escape(part).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
             for part in template.split(DATE_TOKEN)]
    return re.compile(r"(?P<date>\d{4}-\d{2}-\d{2})".join(parts) + "$")


def available_days(input_template: str) -> list[str]:
    """Days for which the input template matches files (any Beam filesystem), oldest first."""
    from apache_beam.io.filesystems import FileSystems

    if DATE_TOKEN not in input_template:
        raise ValueError(f"--input-template {input_template!r} has no {DATE_TOKEN} placeholder")
    pattern = input_template.replace(DATE_TOKEN, "*")
    matches = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    regex = _template_regex(input_template)
    return sorted({match.group("date") for path in matches
                   if (match := regex.search(path)) is not None})


def history(work_dir: str) -> list[dict]:
    """One line per run, oldest first: what was trained, from what, and what serves."""
    rows = []
    for run_dir in WorkDir(work_dir).runs():
        record = run_dir.manifest()
        if record is None:
            rows.append({"run_id": run_dir.run_id,
                         "outcome": "unreadable", "auc": None, "baseline_auc": None,
                         "warm_start_from": None,
                         "reason": f"{run_dir.path(RunDir.MANIFEST)} cannot be read"})
            continue
        stages = record.get("stages", {})
        train = stages.get("train", {}).get("result") or {}
        evaluation = stages.get("evaluate", {}).get("result") or {}
        failed = [name for name, stage in stages.items() if stage.get("outcome") == "failed"]
        stopped = [stage.get("error", "") for stage in stages.values()
                   if stage.get("outcome") == "anomalies"]
        rows.append({
            "run_id": record.get("run_id"),
            "outcome": (f"failed at {failed[0]}" if failed else
                        "data anomalies" if stopped else
                        f"blessed v{record['serving_version']}" if record.get("blessed") else
                        "rejected" if "gate" in record else "incomplete"),
            "auc": (evaluation.get("candidate") or {}).get("auc"),
            "baseline_auc": (evaluation.get("baseline") or {}).get("auc"),
            "warm_start_from": train.get("warm_start_from"),
            "reason": stopped[0] if stopped else (record.get("gate") or {}).get("reason", ""),
        })
    return rows


def format_history(rows: list[dict]) -> str:
    lines = [f"{'run':<18} {'outcome':<14} {'AUC':>7} {'baseline':>8}  warm start from / reason"]
    for row in rows:
        auc = f"{row['auc']:.4f}" if row["auc"] is not None else "-"
        base = f"{row['baseline_auc']:.4f}" if row["baseline_auc"] is not None else "-"
        source = paths.basename(paths.dirname(row["warm_start_from"] or "")) or "cold start"
        lines.append(f"{row['run_id']:<18} {row['outcome']:<14} {auc:>7} {base:>8}  "
                     f"{source}; {row['reason']}")
    return "\n".join(lines)


def nightly_run_id(day: str) -> str:
    return f"day-{day}"


def processed_days(work_dir: str) -> set[str]:
    return {run_dir.run_id.removeprefix("day-") for run_dir in WorkDir(work_dir).runs()
            if run_dir.run_id.startswith("day-")
            and (run_dir.manifest() or {}).get("finished")}


def nightly(config: cfg.FeatureConfig, *, work_dir: str, input_template: str,
            date: str | None = None, eval_input_pattern: str | None = None,
            pipeline_args: Sequence[str] = (), allow_anomalies: Sequence[str] = ()) -> int:
    """Processes one day: the given `date`, else the newest day not processed yet.

    The run id is ``day-<date>``, so a night that failed is resumed by the next cron call
    (completed stages are skipped), and a day is never trained twice.
    """
    if date is None:
        try:
            days = available_days(input_template)
        except ValueError as e:
            LOG.error("nightly: %s", e)
            return 2
        pending = sorted(set(days) - processed_days(work_dir))  # each manifest read once
        if not pending:
            LOG.info("nightly: nothing new to process (%d day(s) found, all done)", len(days))
            return 0
        date = pending[-1]
    input_pattern = input_template.replace(DATE_TOKEN, date)
    LOG.info("nightly: processing day %s from %s", date, input_pattern)
    return run(config, work_dir=work_dir, input_pattern=input_pattern,
               eval_input_pattern=eval_input_pattern, run_id=nightly_run_id(date),
               pipeline_args=pipeline_args, allow_anomalies=allow_anomalies,
               window=analysis_window(config, work_dir, input_template, date))


def analysis_window(config: cfg.FeatureConfig, work_dir: str, input_template: str, date: str):
    """The window of ``[analysis] window_days`` ending at `date`: the days before it that
    have input, at most ``window_days - 1`` of them; None for a one-day window."""
    if config.analysis.window_days <= 1:
        return None
    from pipeline import io as wd_io
    from pipeline import transform_job  # Beam

    earlier = [d for d in available_days(input_template) if d < date]
    earlier = earlier[-(config.analysis.window_days - 1):]
    LOG.info("nightly: analysis window of %d day(s): %s", len(earlier) + 1,
             ", ".join([*earlier, date]))
    return transform_job.Window(
        new_day=date,
        earlier={d: wd_io.match_input(input_template.replace(DATE_TOKEN, d)) for d in earlier},
        cache_dir=WorkDir(work_dir).analysis_cache(transform_job.cache_key(config)),
        train_on=config.analysis.train_on)


def _headline(metrics: dict | None) -> dict | None:
    keys = ("auc", "log_loss", "calibration", "accuracy", "examples")
    return None if metrics is None else {k: metrics[k] for k in keys}


def _evaluate_baseline(serving_root: str, raw_eval):
    """Metrics of the newest serving version that still loads and scores (else None)."""
    for version in reversed(serving.serving_versions(serving_root)):
        try:
            baseline, _ = gate.evaluate_export(paths.join(serving_root, str(version)), raw_eval)
            return baseline, version
        except Exception as e:  # a corrupted blessed model must not block the night's run
            LOG.warning("evaluate: serving version %d cannot be scored (%s: %s); trying an "
                        "older one", version, type(e).__name__, str(e)[:200])
    return None, None
