"""The Criteo-shaped generator: the shape the quality benchmark relies on, and determinism."""

import csv

import numpy as np

from configs import shipped_config
from pipeline import gate
from transforms import synthetic_ctr
from transforms.config import load_config


def test_shape_rates_and_planted_signal():
    data, probability = synthetic_ctr.generate(20_000, seed=1)
    labels = data["clicked"].astype(int)
    assert abs(labels.mean() - synthetic_ctr.POSITIVE_RATE) < 0.02
    # Counts: integers with missing values, heavy tailed.
    counts = [data[c] for c in synthetic_ctr.COUNTS]
    assert any((c == "").mean() > 0.3 for c in counts) and any((c == "").mean() == 0 for c in counts)
    values = np.concatenate([c[c != ""].astype(np.int64) for c in counts])
    assert values.min() >= 0 and values.max() > 1000 * np.median(values)
    # Categoricals: 8 hex digits, Zipf-skewed, from tens to thousands of values here.
    distinct = [len(set(data[c])) for c in synthetic_ctr.CATEGORICALS]
    assert min(distinct) <= 20 and max(distinct) > 5000
    assert all(len(v) in (0, 8) for v in data["C1"][:100])
    # The true probability separates the classes about as well as the best Criteo models.
    assert 0.75 < gate.roc_auc(labels, probability) < 0.83


def test_same_seed_same_log_and_the_shipped_config_reads_it(tmp_path):
    path = tmp_path / "log.csv"
    first = synthetic_ctr.write_csv(str(path), 300, seed=4)
    second, _ = synthetic_ctr.generate(300, seed=4)
    np.testing.assert_array_equal(first, synthetic_ctr.generate(300, seed=4)[1])
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["C7"] for r in rows] == list(second["C7"])
    config = load_config(shipped_config("criteo_like.toml"))
    assert set(config.column_names) == set(synthetic_ctr.COLUMNS)
