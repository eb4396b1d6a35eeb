"""A run killed after its model went into serving/ but before its record said so: the rerun
finds the same export already serving and does not publish it again as a new version."""

import os
import shutil

from pipeline import serving
from trainer import export


def test_republishing_a_serving_export_returns_its_version(two_blessed_versions, tmp_path):
    work_dir, raw_eval = two_blessed_versions
    serving_root = str(tmp_path / "serving")
    shutil.copytree(os.path.join(work_dir, "serving"), serving_root)
    kwargs = dict(keep_versions=3, dry_run_examples=raw_eval.serialized[:20], expected=None,
                  scratch_dir=str(tmp_path / "scratch"))
    # serving/2 is export2, byte for byte: the state such a crash leaves behind.
    version, reason = serving.publish(os.path.join(work_dir, "export2"), serving_root, **kwargs)
    assert version == 2 and "already serving as version 2" in reason
    assert serving.serving_versions(serving_root) == [1, 2]
    # The identity is the model, not the directory name: an older one is found too.
    assert serving.publish(os.path.join(work_dir, "export1"), serving_root, **kwargs)[0] == 1

    # Another model (here: the same weights from another run, as its metadata says) is new.
    other = str(tmp_path / "other")
    shutil.copytree(os.path.join(work_dir, "export2"), other)
    metadata = os.path.join(other, export.EXTRA_DIR, export.METADATA_FILE)
    with open(metadata) as f:
        text = f.read()
    with open(metadata, "w") as f:
        f.write(text.replace("{", '{"run_id": "another night", ', 1))
    assert serving.publish(other, serving_root, **kwargs)[0] == 3
    assert serving.serving_versions(serving_root) == [1, 2, 3]
