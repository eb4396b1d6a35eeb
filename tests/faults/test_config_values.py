"""Config values that used to fail only at train or publish time (or silently do the wrong
thing) are refused when the config loads: exit 2, one line naming the file and the key."""

import logging

import pytest

from configs import shipped_config
from pipeline import cli

# (table, line as shipped or "" to add, replacement, key named in the error)
BAD_VALUES = [
    ("[train]", "batch_size = 512", "batch_size = 0", "train.batch_size"),
    ("[train]", "", "checkpoint_every_steps = 0", "train.checkpoint_every_steps"),
    ("[train]", "embedding_dim = 32", "embedding_dim = 0", "train.embedding_dim"),
    ("[train]", "hidden_units = [1024, 512, 256]", "hidden_units = [1024, -512, 256]",
     "train.hidden_units"),
    ("[train]", "epochs = 3", "epochs = 0", "train.epochs"),
    ("[train]", "epochs = 3", "epochs = -2", "train.epochs"),
    ("[train]", "", "max_steps = -1", "train.max_steps"),
    ("[train]", "deep_learning_rate = 0.02   # AdaGrad", "deep_learning_rate = 0.0",
     "train.deep_learning_rate"),
    ("[eval]", 'slices = ["country", "device_class"]', 'slices = ["country", "app_rating"]',
     "eval.slices"),
    ("[eval]", 'slices = ["country", "device_class"]', 'slices = ["installed"]', "eval.slices"),
    ("[split]", 'key = "user_id"', 'key = "app_rating"', "split.key"),
    ("[split]", 'key = "user_id"', 'key = "installed"', "split.key"),
    ("[serving]", "keep_versions = 3", "keep_versions = -1", "serving.keep_versions"),
    ("[serving]", "keep_versions = 3", "keep_versions = 0", "serving.keep_versions"),
    ("[serving]", "top_k = 10", "top_k = 0", "serving.top_k"),
    ("[gate]", "min_auc = 0.6", "min_auc = 1.5", "gate.min_auc"),
]


@pytest.mark.parametrize("table, old, new, key", BAD_VALUES,
                         ids=[b[2].split(" #")[0] for b in BAD_VALUES])
def test_a_bad_value_fails_at_load_naming_file_and_key(tmp_path, caplog, table, old, new, key):
    text = open(shipped_config("appstore.toml")).read()
    if old:
        assert old in text
        text = text.replace(old, new, 1)
    else:
        text = text.replace(table, f"{table}\n{new}", 1)
    path = tmp_path / "features.toml"
    path.write_text(text)
    # `train` reaches the config before any data: a failure here is the load-time check.
    argv = ["train", "--config", str(path), "--transform-dir", str(tmp_path / "none"),
            "--model-dir", str(tmp_path / "model")]
    with caplog.at_level(logging.ERROR):
        assert cli.main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0] and f"'{key}'" in errors[0]
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--batch-size", "-5"),
                                         ("--max-steps", "-1")])
def test_a_bad_command_line_override_is_refused_before_any_work(tmp_path, capsys, flag, value):
    argv = ["train", "--config", shipped_config("appstore.toml"), "--transform-dir",
            str(tmp_path / "none"), "--model-dir", str(tmp_path / "model"), flag, value]
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert flag in capsys.readouterr().err
