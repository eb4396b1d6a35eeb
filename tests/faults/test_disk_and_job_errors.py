"""Errors from outside the data: a file to score that lacks a column, a full disk, a
read-only work dir. Each gives one line and an exit code, never a traceback, and a run
that fails on a full disk is recorded as failed, not left "running"."""

import contextlib
import glob
import json
import logging
import os
import subprocess
import sys

import pytest

from pipeline import cli
from tests.test_run import tiny_config_file
from transforms import synthetic


def test_scoring_a_file_without_a_model_column_exits_2_in_one_line(two_blessed_versions,
                                                                    transform_output,
                                                                    tmp_path, caplog):
    work_dir, _ = two_blessed_versions
    source = sorted(glob.glob(os.path.join(transform_output.root, "raw", "*", "*.csv")))[0]
    lines = open(source).read().splitlines()[:50]
    drop = lines[0].split(",").index("language")
    candidates = tmp_path / "candidates.csv"
    candidates.write_text("\n".join(",".join(f for i, f in enumerate(line.split(","))
                                             if i != drop) for line in lines) + "\n")
    with caplog.at_level(logging.ERROR):
        code = cli.main(["score", "--model", os.path.join(work_dir, "serving", "2"),
                         "--input", str(candidates), "--out", str(tmp_path / "out")])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert str(candidates) in errors[0] and "missing configured column(s) ['language']" in errors[0]
    assert not os.path.exists(tmp_path / "out")


@contextlib.contextmanager
def tmpfs(path, size):
    """A small filesystem of its own at `path` (root only; skipped elsewhere)."""
    os.makedirs(path)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def run_cli(config_path, logs, work_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", config_path,
                           "--input", str(logs / "day=*" / "*.csv"), "--work-dir", work_dir,
                           "--run-id", "night"], env=env, capture_output=True, text=True,
                          timeout=600)


def widedeep_lines(stderr):
    """Our log lines (HH:MM:SS ...), apart from TensorFlow's C++ start-up chatter."""
    return [line for line in stderr.splitlines() if line[:2].isdigit() and line[2:3] == ":"]


def test_a_full_disk_fails_the_stage_in_one_line_and_the_record_says_failed(tmp_path):
    config_path = tiny_config_file(tmp_path / "tiny.toml")
    logs = tmp_path / "logs"
    synthetic.write_log(str(logs), days=1, rows_per_day=3000, seed=5, shards=1)
    # Room for the transform output (~0.5 MB) but not for it and the model's checkpoints.
    with tmpfs(tmp_path / "disk", "1m") as disk:
        done = run_cli(config_path, logs, str(disk / "work"))
        assert done.returncode == 1, done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        failed = [line for line in widedeep_lines(done.stderr) if "failed" in line]
        assert len(failed) == 1 and "No space left on device" in failed[0], done.stderr[-3000:]
        with open(disk / "work" / "runs" / "night" / "manifest.json") as f:
            stages = json.load(f)["stages"]
        outcomes = {name: stage["outcome"] for name, stage in stages.items()}
        assert "running" not in outcomes.values() and "failed" in outcomes.values(), outcomes
        failed_stage = next(s for s in stages.values() if s["outcome"] == "failed")
        assert "No space left on device" in failed_stage["error"]


def test_a_read_only_work_dir_is_one_line_naming_it(tmp_path):
    config_path = tiny_config_file(tmp_path / "tiny.toml")
    logs = tmp_path / "logs"
    synthetic.write_log(str(logs), days=1, rows_per_day=100, seed=5, shards=1)
    with tmpfs(tmp_path / "disk", "1m") as disk:
        os.makedirs(disk / "work")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        done = run_cli(config_path, logs, str(disk / "work"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = widedeep_lines(done.stderr)
    assert len(lines) == 1, lines
    assert f"{disk / 'work'}" in lines[0] and "Read-only file system" in lines[0]
