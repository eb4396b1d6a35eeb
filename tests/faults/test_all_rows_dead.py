"""A night whose every row is malformed: the job names the dead letters (the cause), not
the split (a symptom), and leaves no output behind."""

import dataclasses
import glob
import os

import pytest

from pipeline import transform_job
from tests.test_transform_job import tiny_config

HEADER = b"user,country,apps,price,clicked\n"


@pytest.mark.parametrize("limit", [0.01, 1.0])
def test_every_row_dead_lettered_is_reported_as_dead_letters(tmp_path, limit):
    # A column shifted by an upstream export: every price is a word.
    os.makedirs(tmp_path / "in")
    (tmp_path / "in" / "part-0.csv").write_bytes(
        HEADER + b"".join(f"u{i},US,a,cheap,{i % 2}\n".encode() for i in range(30)))
    config = tiny_config(tmp_path, method="hash", key="user")
    config = dataclasses.replace(config, validation=dataclasses.replace(
        config.validation, max_dead_letter_fraction=limit))
    out = str(tmp_path / "out")
    with pytest.raises(transform_job.TransformError) as error:
        transform_job.run_transform(config, str(tmp_path / "in" / "*.csv"), out)
    message = str(error.value)
    assert "all 30 rows" in message and "dead-lettered" in message
    assert "not_a_number" in message
    assert "[split]" not in message
    assert not os.path.exists(out)
    assert glob.glob(out + ".partial/dead_letter-*.jsonl")
