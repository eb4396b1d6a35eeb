"""[analysis] window_days: vocabularies over the last N days, each day analysed once (cache)."""

import dataclasses
import glob
import os

import pytest
import tensorflow_transform as tft

from pipeline import orchestrate
from pipeline import transform_job
from tests.conftest import tiny_appstore_config
from transforms import config as cfg
from transforms import synthetic

ROWS_PER_DAY = 1500


@pytest.fixture(scope="module")
def three_days(tmp_path_factory):
    root = tmp_path_factory.mktemp("window")
    synthetic.write_log(str(root / "logs"), days=3, rows_per_day=ROWS_PER_DAY, seed=3, shards=1)
    config = tiny_appstore_config()
    config = dataclasses.replace(config, analysis=cfg.AnalysisParams(window_days=3))
    template = str(root / "logs" / "day={date}" / "*.csv")
    return root, config, template, orchestrate.available_days(template)


def _vocabularies(transform_dir: str) -> dict[str, bytes]:
    output = tft.TFTransformOutput(transform_dir)
    assets = os.path.join(transform_dir, "transform_fn", "assets")
    names = sorted(n for n in os.listdir(assets) if n.startswith("vocab_"))
    assert names
    with_files = {n: output.vocabulary_file_by_name(n) for n in names}
    return {n: open(path, "rb").read() for n, path in with_files.items()}


def test_nights_read_only_their_new_day_and_equal_a_full_window_analysis(three_days):
    root, config, template, days = three_days
    work_dir = str(root / "work")
    nights = {}
    for day in days:
        window = orchestrate.analysis_window(config, work_dir, template, day)
        nights[day] = transform_job.run_transform(
            config, template.replace("{date}", day), str(root / f"night-{day}"), window=window)

    last = nights[days[-1]]
    # The last night counted only its own rows: the two earlier days came from the cache.
    assert last["window"]["from_cache"] == days[:2] and last["window"]["read"] == []
    assert last["rows_in"] == ROWS_PER_DAY
    # Its vocabularies are those of one analysis over all three days' train rows.
    full_dir = str(root / "full")
    full = transform_job.run_transform(config, template.replace("{date}", "*"), full_dir)
    assert full["rows_in"] == 3 * ROWS_PER_DAY
    assert _vocabularies(str(root / f"night-{days[-1]}")) == _vocabularies(full_dir)
    # And they hold tokens the last day alone lacks (the point of the window).
    alone_dir = str(root / "alone")
    transform_job.run_transform(dataclasses.replace(config, analysis=cfg.AnalysisParams()),
                                template.replace("{date}", days[-1]), alone_dir)
    window_apps = _vocabularies(full_dir)["vocab_impression_app"].splitlines()
    alone_apps = _vocabularies(alone_dir)["vocab_impression_app"].splitlines()
    assert set(alone_apps) < set(window_apps)


def test_training_on_the_window_reads_every_day_and_trains_on_all(three_days):
    root, config, template, days = three_days
    config = dataclasses.replace(config, analysis=cfg.AnalysisParams(window_days=3,
                                                                       train_on="window"))
    window = orchestrate.analysis_window(config, str(root / "work-w"), template, days[-1])

    stats = transform_job.run_transform(config, template.replace("{date}", days[-1]),
                                        str(root / "train-on-window"), window=window)

    assert stats["window"]["read"] == days[:2]
    assert stats["rows_in"] == 3 * ROWS_PER_DAY
    # Train and validation hold every day's rows; eval only the new day's.
    rows = stats["rows_out"]
    assert rows["train"] + rows["validation"] > 2 * ROWS_PER_DAY
    assert rows["eval"] < ROWS_PER_DAY


def test_a_day_whose_job_did_not_finish_is_analysed_again(three_days):
    root, config, template, days = three_days
    work_dir = str(root / "work-killed")
    first = orchestrate.analysis_window(config, work_dir, template, days[0])
    transform_job.run_transform(config, template.replace("{date}", days[0]),
                                str(root / "killed-0"), window=first)
    # As a job killed after TFT wrote the day's MANIFEST (at pipeline construction) but
    # before its entries were complete would leave it:
    [marker] = glob.glob(os.path.join(first.cache_dir, "*", transform_job.CACHE_COMPLETE))
    os.remove(marker)
    second = orchestrate.analysis_window(config, work_dir, template, days[1])

    stats = transform_job.run_transform(config, template.replace("{date}", days[1]),
                                        str(root / "killed-1"), window=second)

    assert stats["window"]["from_cache"] == [] and stats["window"]["read"] == [days[0]]
    assert second.cached_days() == [days[0]]  # complete now


def test_another_config_uses_another_cache(three_days):
    _, config, _, _ = three_days
    other = dataclasses.replace(config, digest=config.digest + "x")
    assert transform_job.cache_key(config) != transform_job.cache_key(other)


def test_window_days_is_checked_at_load():
    from tests.test_config import MINIMAL
    import tomllib

    data = tomllib.loads(MINIMAL)
    data["analysis"] = {"window_days": 0}
    with pytest.raises(cfg.ConfigError, match="analysis.window_days"):
        cfg.parse_config(data, "c.toml")
    data["analysis"] = {"window_days": 7, "train_on": "everything"}
    with pytest.raises(cfg.ConfigError, match="analysis.train_on"):
        cfg.parse_config(data, "c.toml")
