"""A blessed model corrupted on disk is detected when it would be used (warm-start source or
baseline): the run says so and falls back to the previous good version or a cold start."""

import glob
import logging
import os
import shutil

import pytest

from pipeline import orchestrate


def corrupt_weights(model_dir):
    for path in glob.glob(os.path.join(model_dir, "keras_model", "weights*.data*")):
        with open(path, "r+b") as f:
            f.truncate(16)


def test_corrupted_warm_start_source_falls_back_to_the_previous_version(two_blessed_versions,
                                                                        tmp_path, caplog):
    work_dir, _ = two_blessed_versions
    copy = str(tmp_path / "work")
    shutil.copytree(work_dir, copy)  # a copy finds its own models (test_moved_work_dir)
    assert orchestrate.resolve_warm_start(copy, "night3") == os.path.join(
        copy, "runs", "night2", "model")
    corrupt_weights(os.path.join(copy, "runs", "night2", "model"))
    with caplog.at_level(logging.WARNING, logger="widedeep"):
        chosen = orchestrate.resolve_warm_start(copy, "night3")
    assert chosen == os.path.join(copy, "runs", "night1", "model")
    assert "serving version 2 is unusable" in caplog.text
    corrupt_weights(os.path.join(copy, "runs", "night1", "model"))
    assert orchestrate.resolve_warm_start(copy, "night3") is None  # cold start, said so
    with pytest.raises(ValueError, match="does not load"):
        orchestrate.resolve_warm_start(copy, "night3", os.path.join(copy, "runs", "night1", "model"))


def test_corrupted_baseline_is_skipped_for_the_previous_version(two_blessed_versions, tmp_path,
                                                                caplog):
    work_dir, raw_eval = two_blessed_versions
    serving = str(tmp_path / "serving")
    shutil.copytree(os.path.join(work_dir, "serving"), serving)
    baseline, version = orchestrate._evaluate_baseline(serving, raw_eval)
    assert version == 2 and baseline["examples"] == 200
    for path in glob.glob(os.path.join(serving, "2", "variables", "variables.data*")):
        with open(path, "r+b") as f:
            f.truncate(8)
    with caplog.at_level(logging.WARNING, logger="widedeep"):
        baseline, version = orchestrate._evaluate_baseline(serving, raw_eval)
    assert version == 1 and baseline["examples"] == 200
    assert "serving version 2 cannot be scored" in caplog.text
