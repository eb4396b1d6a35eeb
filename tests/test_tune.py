"""`widedeep tune`: trials scored on the validation split, the winner written as [train]."""

import json
import logging
import tomllib

from pipeline import cli, tune
from transforms.config import parse_config

SMALL_SPACE = {"deep_learning_rate": ("log", (0.01, 0.1)),
               "embedding_dim": ("choice", (4, 8)),
               "hidden_units": ("choice", ((16, 8), (8,)))}


def test_tune_scores_trials_on_validation_and_writes_the_winner(transform_output, tmp_path):
    config = transform_output.config
    lines = []
    winner = tune.tune(config, transform_output.transform_dir, str(tmp_path), trials=3,
                       space=SMALL_SPACE, log=lines.append)
    trials = json.load(open(tmp_path / tune.TRIALS_FILE))
    assert len(trials) == 3 and trials[0] == winner
    assert winner["validation_log_loss"] == min(t["validation_log_loss"] for t in trials)
    assert all(0 < t["validation_log_loss"] < 1 and t["best_epoch"] >= 1 for t in trials)
    assert sum("tune: trial" in line and "min left" in line for line in lines) == 3
    assert not (tmp_path / "trials" / "0").exists()  # trial models are not kept
    # Trial 0 is the config's own [train], so the winner is never worse than it.
    by_number = {t["trial"]: t for t in trials}
    assert by_number[0]["source"] == "config"
    assert by_number[0]["params"]["hidden_units"] == list(config.train.hidden_units)
    assert by_number[0]["params"]["embedding_dim"] == config.train.embedding_dim
    assert {by_number[1]["source"], by_number[2]["source"]} == {"search"}
    # The [train] block is a valid config section holding the winner's values.
    block = tomllib.loads(open(tmp_path / tune.TUNED_TRAIN_FILE).read())
    params = parse_config({**_raw_config(config), "train": block["train"]}).train
    assert abs(params.deep_learning_rate - winner["params"]["deep_learning_rate"]) < 1e-5
    assert params.embedding_dim == winner["params"]["embedding_dim"]
    assert list(params.hidden_units) == winner["params"]["hidden_units"]


def _raw_config(config):
    with open(config.source, "rb") as f:
        return tomllib.load(f)


def test_tune_without_a_validation_split_is_refused(tmp_path, caplog):
    from configs import shipped_config

    with caplog.at_level(logging.ERROR):
        code = cli.main(["tune", "--config", shipped_config("appstore.toml"),
                         "--transform-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "no validation split" in caplog.text and "validation_fraction" in caplog.text
