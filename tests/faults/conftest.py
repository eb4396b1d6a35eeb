"""Fixtures shared by the fault tests."""

import dataclasses
import os
import shutil

import pytest

from pipeline import gate
from trainer import export
from trainer.train import train


@pytest.fixture(scope="package")
def two_blessed_versions(transform_output, tmp_path_factory):
    """serving/1 and serving/2 in a work dir, each exported from its own trained model."""
    config = transform_output.config
    work_dir = tmp_path_factory.mktemp("work")
    serving = str(work_dir / "serving")
    raw_eval = gate.read_raw_eval(config, transform_output.transform_dir, limit=200)
    for version in (1, 2):
        model_dir = str(work_dir / "runs" / f"night{version}" / "model")
        train(config, transform_output.transform_dir, model_dir, log=lambda *_: None,
              params=dataclasses.replace(config.train, max_steps=5, seed=version))
        export_dir = export.export_model(config, model_dir, transform_output.transform_dir,
                                         str(work_dir / f"export{version}"),
                                         work_dir=str(work_dir))
        os.makedirs(serving, exist_ok=True)
        shutil.copytree(export_dir, os.path.join(serving, str(version)))
    return str(work_dir), raw_eval
