"""Run records (manifest.json) that a crash or a power cut left empty or truncated: each is
named in one line and counted as a failed run to redo, never a crash of every later call."""

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from pipeline import orchestrate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def work_dir(tmp_path):
    """Two nights: one finished, one whose manifest was cut short mid-write."""
    good = tmp_path / "runs" / "day-2026-03-01"
    good.mkdir(parents=True)
    (good / "manifest.json").write_text(json.dumps(
        {"run_id": "day-2026-03-01", "finished": "2026-03-02T03:00:00+00:00",
         "blessed": True, "serving_version": 1, "gate": {"reason": "first model"},
         "stages": {"train": {"outcome": "done", "result": {}}}}))
    cut = tmp_path / "runs" / "day-2026-03-02"
    cut.mkdir()
    (cut / "manifest.json").write_text('{"run_id": "day-2026-03-02", "stag')
    return tmp_path


def test_an_unreadable_record_is_named_and_its_day_is_redone(work_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="widedeep"):
        assert orchestrate.processed_days(str(work_dir)) == {"2026-03-01"}
    assert "day-2026-03-02/manifest.json is unreadable" in caplog.text
    # The rerun of that run id starts from an empty record instead of dying on it.
    manifest = orchestrate.Manifest(str(work_dir / "runs" / "day-2026-03-02"))
    assert manifest.data == {}


def test_history_lists_an_unreadable_record_as_one_line(work_dir):
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "history", "--work-dir",
                           str(work_dir)], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("day-2026-03-01") and "blessed v1" in line for line in lines)
    assert any(line.startswith("day-2026-03-02") and "unreadable" in line for line in lines)


def test_records_are_replaced_atomically(tmp_path):
    """No temp file is left beside a record, and a reader sees the old or the new whole."""
    manifest = orchestrate.Manifest(str(tmp_path))
    for i in range(20):
        manifest.data["n"] = i
        manifest.save()
        assert json.loads((tmp_path / "manifest.json").read_text())["n"] == i
    assert os.listdir(tmp_path) == ["manifest.json"]


def _contend(work_dir, barrier, inside, doubles, wins, rounds, index, lock_module):
    import importlib

    lock = importlib.import_module(lock_module)
    for round_ in range(rounds):
        if index == 0 and round_ % 2:  # a lock file left by a process that is gone
            with open(os.path.join(work_dir, ".lock"), "w") as f:
                f.write("999999999")
        barrier.wait()
        try:
            with lock.work_dir_lock(work_dir):
                with inside.get_lock():
                    inside.value += 1
                    if inside.value > 1:
                        doubles.value += 1
                time.sleep(0.002)  # a run holds it a while: long enough to be caught
                with wins.get_lock():
                    wins.value += 1
                with inside.get_lock():
                    inside.value -= 1
        except lock.LockedError:
            pass
        barrier.wait()


def race(work_dir, rounds, lock_module="pipeline.lock"):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    inside, doubles, wins = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    workers = [ctx.Process(target=_contend, args=(work_dir, barrier, inside, doubles, wins,
                                                  rounds, index, lock_module))
               for index in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    return doubles.value, wins.value


def test_two_processes_racing_for_the_lock_never_both_hold_it(tmp_path):
    """Two processes released together at a barrier, 300 times: at most one is inside, with
    and without a leftover lock file (of a dead process) at the start of each round."""
    rounds = 300
    doubles, wins = race(str(tmp_path), rounds)
    assert doubles == 0
    assert rounds <= wins <= 2 * rounds  # someone got in every round


@pytest.mark.parametrize("change", ["config", "input"])
def test_resuming_a_run_with_another_config_or_input_is_refused(tmp_path, change):
    from tests.conftest import tiny_appstore_config

    config = tiny_appstore_config()
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    record = {"run_id": "r1", "config": config.source, "config_digest": config.digest,
              "inputs": {"input": "/logs/day=2026-03-01/*.csv", "eval_input": None},
              "stages": {"transform": {"outcome": "done", "result": {}}}}
    if change == "config":
        record["config_digest"] = "0123456789ab"
    (run_dir / "manifest.json").write_text(json.dumps(record))
    input_pattern = "/logs/day=2026-03-02/*.csv" if change == "input" else \
        "/logs/day=2026-03-01/*.csv"
    code = orchestrate.run(config, work_dir=str(tmp_path), input_pattern=input_pattern,
                           run_id="r1")
    assert code == 2
    after = json.loads((run_dir / "manifest.json").read_text())
    assert after == record  # nothing recorded over the run's own history


def test_a_done_stage_whose_output_is_gone_is_redone_with_every_stage_after_it(tmp_path):
    """An interrupted run whose transform/ was deleted (to free disk, or by a cleanup job)
    used to skip the transform on rerun and fail in train forever."""
    run_dir = tmp_path / "runs" / "night"
    outputs = {name: tmp_path / name / "marker" for name in ("synth", "transform", "train")}
    ran = []

    def stage(name):
        def fn():
            ran.append(name)
            outputs[name].parent.mkdir(exist_ok=True)
            outputs[name].write_text("done")
            return {"stage": name}
        return fn

    first = orchestrate.Manifest(str(run_dir))
    for name in ("synth", "transform", "train"):
        first.run_stage(name, stage(name), output=str(outputs[name]))
    first.data["stages"]["export"] = {"outcome": "failed"}  # the night stopped here
    first.save()

    ran.clear()
    again = orchestrate.Manifest(str(run_dir))
    for name in ("synth", "transform", "train"):
        again.run_stage(name, stage(name), output=str(outputs[name]))
    assert ran == []  # outputs all there: nothing redone

    outputs["transform"].unlink()
    again = orchestrate.Manifest(str(run_dir))
    for name in ("synth", "transform", "train"):
        again.run_stage(name, stage(name), output=str(outputs[name]))
    # train's own output was still there, but it was built on the transform just redone.
    assert ran == ["transform", "train"]
    assert outputs["transform"].exists()
