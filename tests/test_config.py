"""The feature config: shipped configs load, and every mistake names the file and the key."""

import textwrap

import pytest

from configs import shipped_config
from transforms.config import ConfigError, load_config

MINIMAL = """
[input]
format = "csv"
[label]
column = "clicked"
positive = ["1"]
negative = ["0"]
[split]
key = "user"
[columns.user]
kind = "key"
[columns.country]
kind = "categorical"
vocab_min_count = 3
[columns.apps]
kind = "multivalent"
separator = ";"
[columns.price]
kind = "numeric"
quantile_buckets = 4
[[crosses]]
columns = ["apps", "country"]
hash_buckets = 100
[model]
wide = ["apps_x_country"]
deep = ["country", "apps", "price"]
"""


def write(tmp_path, text):
    path = tmp_path / "features.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_appstore_config_loads():
    config = load_config(shipped_config("appstore.toml"))
    assert config.label.column == "installed"
    assert "installed_apps_x_impression_app" in config.wide
    assert config.column("installed_apps").kind == "multivalent"
    assert len(config.digest) == 16


def test_minimal_config_parses_into_frozen_dataclasses(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.column_names == ("user", "country", "apps", "price", "clicked")
    assert config.crosses[0].name == "apps_x_country"
    assert config.model_feature_names() == ("country", "apps", "price", "apps_x_country")
    with pytest.raises(Exception):
        config.label = None  # frozen


@pytest.mark.parametrize("change, key, words", [
    (("[columns.price]", "[columns.price]\ncolour = 1"), "columns.price.colour", "unknown key"),
    (('columns = ["apps", "country"]', 'columns = ["apps", "nation"]'), "crosses[0].columns",
     "unknown column 'nation'"),
    (("quantile_buckets = 4", "quantile_buckets = 1"), "columns.price.quantile_buckets", ">= 2"),
    (("vocab_min_count = 3", 'vocab_min_count = "3"'), "columns.country.vocab_min_count",
     "expected an integer"),
    (('kind = "categorical"', 'kind = "categorial"'), "columns.country.kind", "must be one of"),
    (('deep = ["country", "apps", "price"]', 'deep = ["country", "user"]'), "model.deep",
     "unknown feature 'user'"),
    (('key = "user"', 'key = "nobody"'), "split.key", "not a column"),
    (('key = "user"', 'method = "day"\nday_column = "user"\nkey = "price"'), "split.key",
     "must be a categorical or key column"),
    (('negative = ["0"]', 'negative = ["1"]'), "label.negative", "also positive"),
    (('format = "csv"', 'format = "xlsx"'), "input.format", "must be one of"),
    (('format = "csv"', 'format = "csv"\ndelimiter = ", "'), "input.delimiter", "one character"),
    (("[model]", "[modle]\n[model]"), "modle", "unknown key"),
    (("[model]", "[train]\ndeep_towers = 0\n[model]"), "train.deep_towers", ">= 1"),
])
def test_config_mistakes_name_the_file_and_key(tmp_path, change, key, words):
    old, new = change
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert f"'{key}'" in message
    assert words in message


def test_cross_over_a_key_column_is_refused(tmp_path):
    path = write(tmp_path, MINIMAL.replace('columns = ["apps", "country"]',
                                           'columns = ["apps", "user"]'))
    with pytest.raises(ConfigError, match=r"crosses\[0\].columns.*'user' is key"):
        load_config(path)


def test_cross_may_take_a_numeric_column_by_its_bucket(tmp_path):
    text = MINIMAL.replace('columns = ["apps", "country"]', 'columns = ["apps", "price"]')
    config = load_config(write(tmp_path, text.replace('wide = ["apps_x_country"]',
                                                      'wide = ["apps_x_price"]')))
    assert config.crosses[0].name == "apps_x_price"


def test_headerless_csv_needs_columns_in_file_order(tmp_path):
    text = MINIMAL.replace('format = "csv"', 'format = "csv"\nheader = false')
    with pytest.raises(ConfigError, match="'input.columns'.*required"):
        load_config(write(tmp_path, text))
    ordered = text.replace('header = false',
                           'header = false\ncolumns = ["clicked", "price", "apps", "country", "user"]')
    assert load_config(write(tmp_path, ordered)).column_names == (
        "clicked", "price", "apps", "country", "user")


def test_invalid_toml_and_missing_file_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[input\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_importing_any_package_of_ours_puts_tensorflow_in_keras_2_mode():
    """TFT needs Keras 2: the mode is set in one place (transforms/__init__.py) that every
    entry point imports first; a shell without TF_USE_LEGACY_KERAS must still get it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for package in ("pipeline", "trainer", "transforms"):
        done = subprocess.run(
            [sys.executable, "-c", f"import {package}, tensorflow as tf; print(tf.keras.__name__)"],
            capture_output=True, text=True, env=env, timeout=120,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1].startswith("tf_keras"), (package, done.stdout)
