"""The public-dataset configs and the MovieLens preparation, on the real release files.

UCI Adult and MovieLens 100K are read from the shared data folder next to the repository
(``../shared/data``, or ``$WIDEDEEP_SHARED_DATA``); they are third-party data that must
never be copied into the repository, so the tests that need them skip when it is absent.
Each dataset goes through the real transform job once, on a sample of a few thousand rows.
"""

import csv
import glob
import os
from pathlib import Path

import pytest
import tensorflow as tf

from configs import shipped_config
from pipeline import datasets
from pipeline import transform_job
from pipeline.io import VALIDATION_SALT, hash_fraction
from transforms import config as cfg
from transforms.features import CROSS_SEPARATOR

ADULT_TRAIN_SAMPLE_ROWS = 3000
ADULT_TEST_SAMPLE_LINES = 1500     # the banner line and 1,499 rows
MOVIELENS_SAMPLE_ROWS = 3000


def _shared_data() -> Path:
    override = os.environ.get("WIDEDEEP_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


def _dataset_dir(name: str, required: tuple[str, ...]) -> Path:
    folder = _shared_data() / name
    missing = [f for f in required if not (folder / f).is_file()]
    if missing:
        pytest.skip(f"shared data not available: no {folder / missing[0]} "
                    f"(set WIDEDEEP_SHARED_DATA to the folder holding adult/ and ml-100k/)")
    return folder


@pytest.fixture(scope="module")
def adult_dir() -> Path:
    return _dataset_dir("adult", ("adult.data", "adult.test"))


@pytest.fixture(scope="module")
def movielens_dir() -> Path:
    return _dataset_dir("ml-100k", ("u.data", "u.user", "u.item", "u.genre"))


@pytest.fixture(scope="module")
def movielens_csv(movielens_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("movielens")
    return Path(datasets.prepare(datasets.MOVIELENS_100K, str(movielens_dir), str(out)))


@pytest.fixture(scope="module")
def movielens_rows(movielens_csv) -> list[dict]:
    with open(movielens_csv, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _head(src: Path, dst: Path, lines: int) -> list[str]:
    with open(src) as f:
        head = [next(f) for _ in range(lines)]
    dst.write_text("".join(head))
    return head


def _read_vocab(transform_dir: str, name: str) -> list[str]:
    path = os.path.join(transform_dir, "transform_fn", "assets", name)
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _labels(transform_dir: str, split: str, label: str) -> list[int]:
    files = sorted(glob.glob(os.path.join(transform_dir, f"{split}-*.tfrecord.gz")))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()
    return [tf.train.Example.FromString(r).features.feature[label].int64_list.value[0]
            for r in records]


# ---------------------------------------------------------------------------------------
# The shipped configs


@pytest.mark.parametrize("name", ["census.toml", "movielens.toml"])
def test_shipped_dataset_configs_load(name):
    config = cfg.load_config(shipped_config(name))
    assert config.wide and config.deep and config.crosses
    for cross in config.crosses:
        assert cross.name in config.wide, f"{name}: cross {cross.name} feeds no part"


def test_census_config_reads_both_adult_files_as_released():
    config = cfg.load_config(shipped_config("census.toml"))
    assert config.split.method == "eval_input"
    assert config.input.skip_lines == 0     # skipping would drop adult.data's first row
    assert config.input.strip and config.input.delimiter == ","
    assert len(config.column_names) == 15 and config.column_names[-1] == "income"
    assert config.column("fnlwgt").kind == cfg.IGNORE
    assert {">50K", ">50K."} <= set(config.label.positive)
    assert {"<=50K", "<=50K."} <= set(config.label.negative)


# ---------------------------------------------------------------------------------------
# MovieLens preparation


def test_prepare_names_the_unknown_dataset_and_the_missing_file(tmp_path):
    with pytest.raises(datasets.DatasetError, match="unknown dataset 'movielens-1m'.*"
                                                    "movielens-100k"):
        datasets.prepare("movielens-1m", str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(datasets.DatasetError, match=r"u\.data not found"):
        datasets.prepare(datasets.MOVIELENS_100K, str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(datasets.DatasetError, match="does not exist"):
        datasets.prepare(datasets.MOVIELENS_100K, str(tmp_path / "nowhere"),
                         str(tmp_path / "out"))


def _tiny_release(folder: Path, ratings: str) -> None:
    """A hand-written two-genre miniature of the ml-100k layout."""
    folder.mkdir()
    (folder / "u.genre").write_text("unknown|0\nAction|1\n\n")
    (folder / "u.item").write_bytes("1|Mis\u00e9rables (1995)|01-Jan-1995||url|0|1\n"
                                    .encode("latin-1"))
    (folder / "u.user").write_text("1|30|F|artist|12345\n")
    (folder / "u.data").write_text(ratings)


def test_prepare_rejects_ratings_of_unknown_users_and_malformed_files(tmp_path):
    _tiny_release(tmp_path / "ok", "1\t1\t5\t881250949\n")
    with open(datasets.prepare(datasets.MOVIELENS_100K, str(tmp_path / "ok"),
                               str(tmp_path / "out")), encoding="utf-8") as f:
        [row] = list(csv.DictReader(f))
    assert (row["movie_title"], row["movie_genres"], row["liked"]) == (
        "Misérables (1995)", "Action", "1")

    _tiny_release(tmp_path / "orphan", "1\t1\t5\t881250949\n2\t1\t3\t881250949\n")
    with pytest.raises(datasets.DatasetError, match=r"1 rating\(s\) name a user_id missing "
                                                    r"from .*u\.user, e\.g\. \[2\]"):
        datasets.prepare(datasets.MOVIELENS_100K, str(tmp_path / "orphan"),
                         str(tmp_path / "out"))

    _tiny_release(tmp_path / "bad", "1\t1\tfive\t881250949\n")
    with pytest.raises(datasets.DatasetError, match=r"u\.data: not the release's layout"):
        datasets.prepare(datasets.MOVIELENS_100K, str(tmp_path / "bad"), str(tmp_path / "out"))


def test_movielens_file_has_the_config_columns_and_every_rating(movielens_csv, movielens_rows):
    config = cfg.load_config(shipped_config("movielens.toml"))
    with open(movielens_csv, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(",")
    assert sorted(header) == sorted(config.column_names)
    assert len(movielens_rows) == 100_000
    assert len({r["rating_id"] for r in movielens_rows}) == 100_000   # the split key is unique
    # 4 and 5 stars: 34,174 + 21,201 ratings (the release's README counts).
    assert sum(r["liked"] == "1" for r in movielens_rows) == 34_174 + 21_201


def test_movielens_join_puts_user_and_movie_fields_on_their_rows(movielens_rows):
    # u.data's first line: user 196 rated movie 242 three stars at 881250949.
    first = movielens_rows[0]
    assert first["rating_id"] == "196-242"
    assert (first["rating"], first["liked"], first["timestamp"], first["day"]) == (
        "3", "0", "881250949", "1997-12-04")

    # u.user: 196|49|M|writer|55105 (39 ratings in u.data).
    user_rows = [r for r in movielens_rows if r["user_id"] == "196"]
    assert len(user_rows) == 39
    assert {(r["user_age"], r["user_age_group"], r["user_gender"], r["user_occupation"],
             r["user_zip_region"]) for r in user_rows} == {("49", "45-49", "M", "writer", "5")}

    # u.item: 242|Kolya (1996)|24-Jan-1997|...|Comedy only (117 ratings).
    movie_rows = [r for r in movielens_rows if r["movie_id"] == "242"]
    assert len(movie_rows) == 117
    assert {(r["movie_title"], r["movie_year"], r["movie_genres"]) for r in movie_rows} == {
        ("Kolya (1996)", "1997", "Comedy")}

    by_movie = {r["movie_id"]: r for r in movielens_rows}
    assert by_movie["1"]["movie_genres"] == "Animation|Children's|Comedy"   # Toy Story
    assert by_movie["543"]["movie_title"] == "Misérables, Les (1995)"       # Latin-1 source
    assert by_movie["267"]["movie_year"] == ""                 # "unknown": no release date
    by_user = {r["user_id"]: r for r in movielens_rows}
    assert by_user["74"]["user_zip_region"] == "T"             # Canadian postcode T8H1N


def test_movielens_counts_come_from_which_pairs_were_rated(movielens_rows):
    # Kolya has 117 ratings; Star Wars (50) is the most rated movie, with 583.
    assert {r["movie_popularity"] for r in movielens_rows if r["movie_id"] == "242"} == {"117"}
    assert max(int(r["movie_popularity"]) for r in movielens_rows) == 583
    by_user: dict[str, set] = {}
    for r in movielens_rows:
        by_user.setdefault(r["user_id"], set()).add(r["movie_id"])
    lists = {r["user_id"]: r["user_rated_popular_movies"] for r in movielens_rows}
    popular = {m for ids in lists.values() for m in ids.split("|") if m}
    assert len(popular) == datasets.POPULAR_MOVIES and "50" in popular
    for user, ids in lists.items():   # one list per user: their rated movies among the popular
        listed = ids.split("|") if ids else []
        assert listed == sorted(by_user[user] & popular, key=int)


# ---------------------------------------------------------------------------------------
# The transform job on samples of the real files


def test_census_transform_reads_adult_as_released(adult_dir, tmp_path):
    config = cfg.load_config(shipped_config("census.toml"))
    _head(adult_dir / "adult.data", tmp_path / "adult.data", ADULT_TRAIN_SAMPLE_ROWS)
    test_head = _head(adult_dir / "adult.test", tmp_path / "adult.test",
                      ADULT_TEST_SAMPLE_LINES)
    assert test_head[0].startswith("|1x3 Cross validator")
    out = str(tmp_path / "transform")

    stats = transform_job.run_transform(config, str(tmp_path / "adult.data"), out,
                                        eval_input_pattern=str(tmp_path / "adult.test"))

    # Every row of adult.data kept (its first line is data); adult.test's banner is a
    # comment (input.comment_prefix), not a row: nothing dead-lettered.
    rows_out = stats["rows_out"]
    assert rows_out["train"] + rows_out["validation"] == ADULT_TRAIN_SAMPLE_ROWS
    assert rows_out["eval"] == ADULT_TEST_SAMPLE_LINES - 1
    assert 0.05 < rows_out["validation"] / ADULT_TRAIN_SAMPLE_ROWS < 0.15  # carved from train
    assert stats["rows_dead_lettered"] == 0
    # adult.test's labels end with a dot and still count.
    positives = sum(line.rstrip().endswith(">50K.") for line in test_head)
    assert sum(_labels(out, "eval", config.label.column)) == positives > 0
    # "?" means missing: it never becomes a category of its own.
    for column in ("workclass", "occupation", "native_country"):
        vocab = _read_vocab(out, f"vocab_{column}")
        assert "?" not in vocab and "" not in vocab
    assert "Exec-managerial" in _read_vocab(out, "vocab_occupation")
    cross = CROSS_SEPARATOR.join(["Bachelors", "Exec-managerial"])
    assert cross in _read_vocab(out, "vocab_education_x_occupation")


def test_movielens_transform_splits_by_rating(movielens_csv, tmp_path):
    config = cfg.load_config(shipped_config("movielens.toml"))
    with open(movielens_csv, encoding="utf-8") as f:
        sample = [next(f) for _ in range(MOVIELENS_SAMPLE_ROWS + 1)]
    (tmp_path / "ratings.csv").write_text("".join(sample), encoding="utf-8")
    out = str(tmp_path / "transform")

    stats = transform_job.run_transform(config, str(tmp_path / "ratings.csv"), out)

    # Quoted titles with commas, UTF-8 accents and empty years all parse.
    assert stats["rows_dead_lettered"] == 0
    rows = list(csv.DictReader(sample))
    in_eval = hash_fraction(r[config.split.key].encode() for r in rows) < \
        config.split.eval_fraction
    in_validation = ~in_eval & (hash_fraction(
        VALIDATION_SALT + r[config.split.key].encode() for r in rows)
        < config.split.validation_fraction)
    assert stats["rows_out"] == {"train": int((~in_eval & ~in_validation).sum()),
                                 "validation": int(in_validation.sum()),
                                 "eval": int(in_eval.sum())}
    assert 0.05 < stats["rows_out"]["eval"] / MOVIELENS_SAMPLE_ROWS < 0.15
    genres = _read_vocab(out, "vocab_movie_genres")
    assert "Children's" in genres and "Drama" in genres and len(genres) <= 19
    assert stats["vocabulary_sizes"]["vocab_user_occupation_x_movie_genres"] > 0
