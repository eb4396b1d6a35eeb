"""The synthetic app-store log: determinism, day-by-day generation, and planted truth."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from transforms import synthetic
from transforms.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "appstore.toml"
ROWS = 2_000


def _read_files(paths, root):
    return {str(Path(p).relative_to(root)): Path(p).read_bytes() for p in paths}


@pytest.fixture(scope="module")
def day0():
    return synthetic.simulate_day(synthetic.make_world(0), 0, 40_000)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = synthetic.write_log(str(tmp_path / "a"), days=2, rows_per_day=ROWS, seed=0)
    again = synthetic.write_log(str(tmp_path / "b"), days=2, rows_per_day=ROWS, seed=0)
    other = synthetic.write_log(str(tmp_path / "c"), days=2, rows_per_day=ROWS, seed=1)

    assert len(first) == 2 * 4
    assert _read_files(first, tmp_path / "a") == _read_files(again, tmp_path / "b")
    first_files = _read_files(first, tmp_path / "a")
    other_files = _read_files(other, tmp_path / "c")
    assert first_files.keys() == other_files.keys()
    assert all(first_files[name] != other_files[name] for name in first_files)


def test_csv_holds_the_generated_table(tmp_path):
    paths = synthetic.write_log(str(tmp_path), rows_per_day=ROWS, shards=3)
    # Left to itself pyarrow would parse the day as a date.
    options = pacsv.ConvertOptions(column_types={"day": pa.string()})
    read = pa.concat_tables(pacsv.read_csv(p, convert_options=options) for p in paths)
    assert read.equals(synthetic.generate_day(0, ROWS))


def test_day_k_alone_equals_day_k_of_a_full_run(tmp_path):
    full = synthetic.write_log(str(tmp_path / "full"), days=3, rows_per_day=ROWS)
    alone = synthetic.write_log(str(tmp_path / "alone"), days=1, rows_per_day=ROWS,
                                first_day_index=2, start_date="2026-01-03")

    full_files = _read_files(full, tmp_path / "full")
    alone_files = _read_files(alone, tmp_path / "alone")
    assert all(name.startswith("day=2026-01-03/") for name in alone_files)
    assert {name: full_files[name] for name in alone_files} == alone_files


def test_a_day_over_the_part_size_is_written_a_part_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "PART_ROWS", 1000)
    options = pacsv.ConvertOptions(column_types={"day": pa.string()})

    paths = synthetic.write_log(str(tmp_path / "a"), rows_per_day=5500, seed=2)
    again = synthetic.write_log(str(tmp_path / "b"), rows_per_day=5500, seed=2)

    assert [Path(p).name for p in paths] == [f"part-{i:05d}-of-00006.csv" for i in range(6)]
    parts = [pacsv.read_csv(p, convert_options=options) for p in paths]
    assert [t.num_rows for t in parts] == [916, 917, 917, 916, 917, 917]
    assert parts[0].column_names == list(synthetic.COLUMNS)
    # Each part its own random stream: not one part repeated, and the same on every call.
    assert parts[0]["user_id"] != parts[1]["user_id"][:916]
    assert _read_files(paths, tmp_path / "a") == _read_files(again, tmp_path / "b")


def test_header_matches_config_and_vocabulary_drifts(tmp_path):
    paths = synthetic.write_log(str(tmp_path), days=3, rows_per_day=ROWS, shards=2)
    header = Path(paths[0]).read_text().splitlines()[0]
    assert tuple(header.split(",")) == load_config(str(CONFIG)).column_names

    day0 = set(synthetic.generate_day(0, ROWS)["impression_app"].to_pylist())
    day2 = set(synthetic.generate_day(2, ROWS)["impression_app"].to_pylist())
    launched_since_day0 = {app for app in day2 - day0
                           if int(app.removeprefix("app")) >= synthetic.N_BASE_APPS}
    assert launched_since_day0


def test_planted_pairs_raise_the_install_rate(day0):
    world = synthetic.make_world(0)
    names = synthetic.app_names(world.planted_pairs.ravel()).reshape(-1, 2)
    planted = {(installed, shown) for installed, shown in names}
    table = day0.table
    has_pair = np.array([
        any((app, shown) in planted for app in installed.split("|"))
        for installed, shown in zip(table["installed_apps"].to_pylist(),
                                    table["impression_app"].to_pylist())])
    label = table["installed"].to_numpy()

    assert 0.05 < has_pair.mean() < 0.3
    assert np.array_equal(has_pair, day0.pair_boost > 0)
    assert label[has_pair].mean() > 3 * label[~has_pair].mean()
    assert 0.05 < label.mean() < 0.15


def test_latent_affinity_raises_the_install_rate(day0):
    label = day0.table["installed"].to_numpy()
    low, high = np.quantile(day0.affinity, [0.25, 0.75])
    bottom, top = label[day0.affinity <= low].mean(), label[day0.affinity >= high].mean()
    assert top > 2.5 * bottom


def test_users_are_not_shown_apps_they_have(day0):
    table = day0.table
    assert not any(shown in installed.split("|")
                   for installed, shown in zip(table["installed_apps"].to_pylist(),
                                               table["impression_app"].to_pylist()))
