"""`widedeep run`: the whole loop over one work dir, with a manifest a person can read.

Each run has an id and ``runs/<run_id>/manifest.json`` recording every stage's start, end
and outcome. Stages are idempotent: rerunning a run id skips the stages that completed and
redoes the one that failed. A lock file keeps two overlapping runs (cron!) apart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import glob
import json
import logging
import os
import subprocess
import time
from typing import Any, Callable, Sequence

from transforms import config as cfg

LOG = logging.getLogger("widedeep")
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the work dir; cron can simply try later
MANIFEST = "manifest.json"


class LockedError(RuntimeError):
    pass


class StageError(RuntimeError):
    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"stage '{stage}' failed: {cause}")
        self.stage = stage


@contextlib.contextmanager
def work_dir_lock(work_dir: str):
    """An exclusive lock on the work dir; a lock left by a dead process is taken over."""
    path = os.path.join(work_dir, ".lock")
    os.makedirs(work_dir, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is not None and _pid_alive(holder):
                raise LockedError(f"work dir {work_dir} is locked by running process {holder} "
                                  f"({path}); not starting a second run")
            LOG.warning("taking over a stale lock %s left by dead process %s", path, holder)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _lock_holder(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


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
    """The run record, rewritten atomically after every change."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, MANIFEST)
        self.data: dict[str, Any] = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.data = json.load(f)

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2, default=str)
        os.replace(tmp, self.path)

    def stage_done(self, name: str) -> bool:
        return self.data.get("stages", {}).get(name, {}).get("outcome") == "done"

    def run_stage(self, name: str, fn: Callable[[], dict | None]) -> dict:
        stages = self.data.setdefault("stages", {})
        if self.stage_done(name):
            LOG.info("%s: already done in this run, skipping", name)
            return stages[name].get("result") or {}
        record = stages[name] = {"started": _now(), "outcome": "running"}
        self.save()
        started = time.time()
        try:
            result = fn() or {}
        except Exception as e:
            record.update(ended=_now(), outcome="failed", error=f"{type(e).__name__}: {e}",
                          seconds=round(time.time() - started, 2))
            self.save()
            raise StageError(name, e) from e
        record.update(ended=_now(), outcome="done", seconds=round(time.time() - started, 2),
                      result=result)
        self.save()
        return result


def previous_model_dir(work_dir: str, current_run: str) -> str | None:
    """Warm-start source: the newest blessed model, else the newest trained one."""
    trained, blessed = [], []
    for path in sorted(glob.glob(os.path.join(work_dir, "runs", "*", MANIFEST))):
        run_dir = os.path.dirname(path)
        if os.path.basename(run_dir) == current_run:
            continue
        with open(path) as f:
            data = json.load(f)
        model_dir = os.path.join(run_dir, "model")
        if data.get("stages", {}).get("train", {}).get("outcome") == "done":
            trained.append(model_dir)
            if data.get("blessed"):
                blessed.append(model_dir)
    return (blessed or trained or [None])[-1]


def run(config: cfg.FeatureConfig, *, work_dir: str, input_pattern: str | None = None,
        eval_input_pattern: str | None = None, run_id: str | None = None,
        synth_rows: int = 200_000, pipeline_args: Sequence[str] = ()) -> int:
    """The whole loop; returns the process exit code."""
    try:
        with work_dir_lock(work_dir):
            return _run_locked(config, work_dir, input_pattern, eval_input_pattern, run_id,
                               synth_rows, pipeline_args)
    except LockedError as e:
        LOG.error("%s", e)
        return EXIT_LOCKED
    except StageError as e:
        LOG.error("run failed: %s", e)
        return 1


def _run_locked(config, work_dir, input_pattern, eval_input_pattern, run_id, synth_rows,
                pipeline_args) -> int:
    run_id = run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = os.path.join(work_dir, "runs", run_id)
    os.makedirs(run_dir, exist_ok=True)
    manifest = Manifest(run_dir)
    manifest.data.setdefault("run_id", run_id)
    manifest.data.setdefault("created", _now())
    manifest.data.update(config=config.source, config_digest=config.digest,
                         code_version=code_version())
    manifest.save()
    LOG.info("run %s: work dir %s", run_id, work_dir)

    if input_pattern is None:
        raw_dir = os.path.join(work_dir, "raw")

        def synth():
            from transforms import synthetic
            paths = synthetic.write_log(raw_dir, days=1, rows_per_day=synth_rows, seed=0)
            LOG.info("synth: %d rows in %d file(s) → %s", synth_rows, len(paths), raw_dir)
            return {"rows": synth_rows, "files": len(paths), "dir": raw_dir}

        manifest.run_stage("synth", synth)
        input_pattern = os.path.join(raw_dir, "day=*", "*.csv")
    manifest.data["inputs"] = {"input": input_pattern, "eval_input": eval_input_pattern}

    transform_dir = os.path.join(run_dir, "transform")

    def transform():
        from pipeline import transform_job
        return transform_job.run_transform(config, input_pattern, transform_dir,
                                           eval_input_pattern=eval_input_pattern,
                                           pipeline_args=pipeline_args, log=LOG.info)

    manifest.run_stage("transform", transform)

    model_dir = os.path.join(run_dir, "model")

    def train():
        from trainer import train as trainer
        warm = previous_model_dir(work_dir, run_id)
        summary = trainer.train(config, transform_dir, model_dir, warm_start_from=warm,
                                log=LOG.info)
        return summary

    manifest.run_stage("train", train)
    LOG.info("run %s done: record in %s", run_id, manifest.path)
    return 0
