"""The whole loop end to end on tiny synthetic data, twice, plus its lock."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from pipeline import orchestrate
from tests.conftest import tiny_appstore_config


def manifest(work_dir, run_id):
    with open(os.path.join(work_dir, "runs", run_id, "manifest.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    config = tiny_appstore_config()
    # Tiny data is noisy: the relative thresholds are loose here; test_gate checks them tight.
    config = dataclasses.replace(config, gate=dataclasses.replace(
        config.gate, min_auc=0.5, max_auc_drop=0.05, max_logloss_increase=0.05,
        max_calibration_error=0.5))
    work_dir = str(tmp_path_factory.mktemp("work"))
    codes = [orchestrate.run(config, work_dir=work_dir, run_id=run_id, synth_rows=4000)
             for run_id in ("night1", "night2")]
    return config, work_dir, codes


def test_first_run_blesses_version_1_and_records_every_stage(two_runs):
    _, work_dir, codes = two_runs
    assert codes == [0, 0]
    record = manifest(work_dir, "night1")
    assert [name for name in record["stages"]] == [
        "synth", "transform", "train", "export", "evaluate", "gate", "publish"]
    assert all(stage["outcome"] == "done" for stage in record["stages"].values())
    assert record["blessed"] is True and record["serving_version"] == 1
    assert record["gate"]["reason"].startswith("first model")
    assert record["stages"]["train"]["result"]["warm_start_from"] is None
    assert record["stages"]["transform"]["result"]["rows_in"] == 4000
    assert os.path.exists(os.path.join(work_dir, "serving", "1", "saved_model.pb"))


def test_second_run_warm_starts_from_the_blessed_model_and_becomes_version_2(two_runs):
    _, work_dir, _ = two_runs
    record = manifest(work_dir, "night2")
    assert record["stages"]["train"]["result"]["warm_start_from"] == os.path.join(
        work_dir, "runs", "night1", "model")
    assert record["stages"]["evaluate"]["result"]["baseline_version"] == 1
    assert record["blessed"] is True and record["serving_version"] == 2
    assert "baseline" in record["gate"]["reason"]
    assert sorted(os.listdir(os.path.join(work_dir, "serving"))) == ["1", "2"]


def test_rerunning_a_finished_run_redoes_nothing(two_runs):
    config, work_dir, _ = two_runs
    before = manifest(work_dir, "night2")["stages"]
    assert orchestrate.run(config, work_dir=work_dir, run_id="night2", synth_rows=4000) == 0
    after = manifest(work_dir, "night2")["stages"]
    assert {k: v["ended"] for k, v in after.items()} == {k: v["ended"] for k, v in before.items()}


def test_a_second_run_on_a_locked_work_dir_exits_at_once(two_runs, tmp_path):
    config, work_dir, _ = two_runs
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(os.path.join(work_dir, ".lock"), "w") as f:
            f.write(str(holder.pid))
        assert orchestrate.run(config, work_dir=work_dir, synth_rows=4000) == orchestrate.EXIT_LOCKED
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now: its lock is stale and gets taken over.
    with orchestrate.work_dir_lock(work_dir):
        with open(os.path.join(work_dir, ".lock")) as f:
            assert int(f.read()) == os.getpid()
    assert not os.path.exists(os.path.join(work_dir, ".lock"))
