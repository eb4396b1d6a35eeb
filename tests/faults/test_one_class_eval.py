"""An eval split with a single class (a day with no installs, a bad label mapping): AUC is
undefined, and both the trainer and the gate say so instead of printing 0.0000 or nan."""

import dataclasses
import math
import os

import numpy as np
import pytest

from configs import shipped_config
from pipeline import gate, transform_job
from tests.test_transform_job import tiny_config
from trainer.train import train
from transforms.config import load_config

HEADER = b"user,country,apps,price,clicked\n"


@pytest.mark.parametrize("label, words", [(0, "only negative examples (40 rows)"),
                                          (1, "only positive examples (40 rows)")])
def test_the_gate_names_a_one_class_eval_split(label, words):
    probabilities = np.linspace(0.1, 0.9, 40)
    candidate = gate.metrics(np.full(40, label), probabilities)
    baseline = gate.metrics(np.full(40, label), probabilities)
    decision = gate.decide(candidate, baseline, load_config(shipped_config("appstore.toml")).gate)
    assert not decision.blessed
    assert words in decision.reason and "eval split" in decision.reason


def test_the_trainer_reports_no_auc_on_a_one_class_eval_split(tmp_path):
    os.makedirs(tmp_path / "train")
    os.makedirs(tmp_path / "eval")
    (tmp_path / "train" / "part-0.csv").write_bytes(
        HEADER + b"".join(f"u{i},US,a,{i},{i % 2}\n".encode() for i in range(60)))
    (tmp_path / "eval" / "part-0.csv").write_bytes(
        HEADER + b"".join(f"e{i},DE,b,{i},0\n".encode() for i in range(20)))
    config = tiny_config(tmp_path)
    transform_dir = str(tmp_path / "transform")
    transform_job.run_transform(config, str(tmp_path / "train" / "*.csv"), transform_dir,
                                eval_input_pattern=str(tmp_path / "eval" / "*.csv"))
    lines = []
    params = dataclasses.replace(config.train, max_steps=3, batch_size=16,
                                 hidden_units=(8,), embedding_dim=4)
    summary = train(config, transform_dir, str(tmp_path / "model"), params=params,
                    log=lines.append)
    assert math.isnan(summary["final_eval"]["auc"])
    assert summary["final_eval"]["positive_rate"] == 0.0
    assert "eval auc n/a (the eval split has only negative examples)" in lines[-1]
