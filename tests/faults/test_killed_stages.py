"""SIGKILL part-way through each stage, then rerun the same run: it completes, and at no
moment does serving/ hold a partial version or a model that did not pass the gate."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_run import tiny_config_file
from pipeline import serving
from transforms import synthetic

STAGE_TIMEOUT = 600


def run_command(config_path, input_glob, work_dir):
    return [sys.executable, "-m", "pipeline.cli", "run", "--config", config_path, "--input",
            input_glob, "--work-dir", work_dir, "--run-id", "night"]


def stage_state(work_dir, stage):
    try:
        with open(os.path.join(work_dir, "runs", "night", "manifest.json")) as f:
            return json.load(f).get("stages", {}).get(stage, {}).get("outcome")
    except (OSError, ValueError):
        return None


def serving_holds_only_blessed_versions(work_dir):
    serving_root = os.path.join(work_dir, "serving")
    if not os.path.isdir(serving_root):
        return True
    for version in serving.serving_versions(serving_root):
        if not os.path.exists(os.path.join(serving_root, str(version), "saved_model.pb")):
            return False
    return True


def kill_during(command, work_dir, stage, ready=lambda: True):
    """Starts the run, SIGKILLs it once `stage` is running (and `ready()`), returns."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + STAGE_TIMEOUT
    try:
        while time.time() < deadline:
            assert serving_holds_only_blessed_versions(work_dir)
            if stage_state(work_dir, stage) == "running" and ready():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return
            if process.poll() is not None:
                pytest.fail(f"the run ended (exit {process.returncode}) before stage {stage} "
                            "could be killed")
            time.sleep(0.05)
        pytest.fail(f"stage {stage} never started")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_run_killed_in_every_stage_completes_on_rerun(tmp_path):
    config_path = tiny_config_file(tmp_path / "tiny.toml")
    logs = tmp_path / "logs"
    synthetic.write_log(str(logs), days=1, rows_per_day=3000, seed=5, shards=2)
    work_dir = str(tmp_path / "work")
    command = run_command(config_path, str(logs / "day=*" / "*.csv"), work_dir)
    run_dir = os.path.join(work_dir, "runs", "night")

    # transform: killed while Beam writes; only the .partial directory may exist after.
    kill_during(command, work_dir, "transform",
                ready=lambda: os.path.isdir(os.path.join(run_dir, "transform.partial")))
    assert not os.path.exists(os.path.join(run_dir, "transform"))

    # train: killed after its first checkpoint; the rerun resumes from it.
    checkpoints = os.path.join(run_dir, "model", "checkpoints")
    kill_during(command, work_dir, "train",
                ready=lambda: os.path.exists(os.path.join(checkpoints, "checkpoint")))
    assert stage_state(work_dir, "transform") == "done"

    # export, evaluate and publish: killed mid-way; nothing half-made reaches serving.
    kill_during(command, work_dir, "export")
    assert serving_holds_only_blessed_versions(work_dir)
    kill_during(command, work_dir, "evaluate")
    kill_during(command, work_dir, "publish")
    assert serving_holds_only_blessed_versions(work_dir)

    # The killed runs left their lock file; the kernel released their lock with them.
    assert os.path.exists(os.path.join(work_dir, ".lock"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=STAGE_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(run_dir, "manifest.json")) as f:
        record = json.load(f)
    assert all(stage["outcome"] == "done" for stage in record["stages"].values())
    assert record["stages"]["train"]["result"]["resumed_from_step"] > 0
    assert record["stages"]["transform"]["result"]["rows_in"] == 3000
    assert serving.serving_versions(os.path.join(work_dir, "serving")) == [1]
    assert serving_holds_only_blessed_versions(work_dir)
    assert "locked" not in done.stderr and not os.path.exists(os.path.join(work_dir, ".lock"))

    # The same run never interrupted, in another work dir: the same result where the work is
    # deterministic (the transform output exactly; training resumes on the same batches with
    # the same optimizer state, so the same model up to float rounding).
    clean_dir = str(tmp_path / "uninterrupted")
    clean = subprocess.run(run_command(config_path, str(logs / "day=*" / "*.csv"), clean_dir),
                           env=env, capture_output=True, text=True, timeout=STAGE_TIMEOUT)
    assert clean.returncode == 0, clean.stderr[-2000:]
    with open(os.path.join(clean_dir, "runs", "night", "manifest.json")) as f:
        clean_record = json.load(f)
    for key in ("rows_out", "vocabulary_sizes", "dead_letter_by_reason"):
        assert (record["stages"]["transform"]["result"][key]
                == clean_record["stages"]["transform"]["result"][key]), key
    assets = os.path.join("transform", "transform_fn", "assets")
    for name in os.listdir(os.path.join(clean_dir, "runs", "night", assets)):
        with open(os.path.join(run_dir, assets, name), "rb") as a, \
                open(os.path.join(clean_dir, "runs", "night", assets, name), "rb") as b:
            assert a.read() == b.read(), name
    resumed, uninterrupted = (r["stages"]["train"]["result"] for r in (record, clean_record))
    assert resumed["steps"] == uninterrupted["steps"]
    for metric in ("auc", "log_loss"):
        assert resumed["final_eval"][metric] == pytest.approx(
            uninterrupted["final_eval"][metric], rel=1e-4), metric
    assert record["gate"]["blessed"] == clean_record["gate"]["blessed"] is True
