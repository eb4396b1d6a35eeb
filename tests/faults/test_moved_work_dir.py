"""A work dir copied or moved (a new disk, a restored backup) warm-starts from its own
models: the export's metadata names its source model dir relative to the work dir."""

import json
import os
import shutil

from pipeline import orchestrate
from trainer import export


def test_a_copied_work_dir_warm_starts_from_its_own_model(two_blessed_versions, tmp_path):
    work_dir, _ = two_blessed_versions
    copy = str(tmp_path / "moved")
    shutil.copytree(work_dir, copy)
    assert orchestrate.resolve_warm_start(copy, "night3") == os.path.join(
        copy, "runs", "night2", "model")
    # The original is still there, and still resolves to its own.
    assert orchestrate.resolve_warm_start(work_dir, "night3") == os.path.join(
        work_dir, "runs", "night2", "model")


def test_an_export_from_before_falls_back_to_its_absolute_model_dir(two_blessed_versions,
                                                                    tmp_path):
    work_dir, _ = two_blessed_versions
    copy = str(tmp_path / "old")
    shutil.copytree(work_dir, copy)
    metadata_path = os.path.join(copy, "serving", "2", export.EXTRA_DIR, export.METADATA_FILE)
    with open(metadata_path) as f:
        metadata = json.load(f)
    assert metadata[export.MODEL_DIR_IN_WORK_DIR] == "runs/night2/model"
    del metadata[export.MODEL_DIR_IN_WORK_DIR]
    with open(metadata_path, "w") as f:
        json.dump(metadata, f)
    assert orchestrate.resolve_warm_start(copy, "night3") == os.path.join(
        work_dir, "runs", "night2", "model")
