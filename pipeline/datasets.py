"""Public datasets turned into impression logs the transform job reads as they are.

UCI Adult needs no preparation (``configs/census.toml`` reads ``adult.data`` and
``adult.test`` directly). MovieLens 100K comes as three files to be joined, so
``widedeep datasets prepare movielens-100k --src DIR --out DIR`` flattens it into one CSV
with a header that ``configs/movielens.toml`` describes.

The data is third-party (GroupLens's research-only terms for MovieLens: no
redistribution), so nothing here ships it: a user points ``src`` at their own copy.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from transforms import paths

MOVIELENS_100K = "movielens-100k"
MOVIELENS_FILE = "ratings.csv"
MOVIELENS_LIKED_MIN_RATING = 4   # the label: a rating of 4 or 5 stars
GENRE_SEPARATOR = "|"
# MovieLens 1M's own age groups (its README): the 100K release keeps exact ages, and a
# cross needs a categorical column, so the groups are written next to the exact age.
AGE_GROUP_EDGES = (18, 25, 35, 45, 50, 56)
AGE_GROUP_NAMES = ("under-18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
# Implicit feedback (Koren's SVD++, KDD 2008, section 4): which movies a user rated, not how.
# Only the most rated movies are listed: the full lists (~200 ids a row) weigh 6x the file
# and measured no better on validation (log loss 0.5365 vs 0.5355 with the top 100).
POPULAR_MOVIES = 100


class DatasetError(ValueError):
    """A dataset cannot be prepared; the message names the dataset, file and what to do."""


def _source_file(src_dir: Path, name: str, what: str) -> Path:
    path = src_dir / name
    if not path.is_file():
        raise DatasetError(f"{MOVIELENS_100K}: {path} not found ({what}); --src must be the "
                           f"unpacked ml-100k folder with u.data, u.user, u.item and u.genre")
    return path


def _read_table(path: Path, sep: str = "|", **options) -> pd.DataFrame:
    """A header-less release file; a malformed one fails naming the file and the cause."""
    try:
        return pd.read_csv(path, sep=sep, header=None, **options)
    except ValueError as e:  # pandas' ParserError (a bad line) or a non-integer id
        raise DatasetError(f"{MOVIELENS_100K}: {path}: not the release's layout: {e}") from None


def _read_genres(path: Path) -> list[str]:
    """Genre names in flag order: u.genre is ``name|id`` (ids 0..18) plus a blank line."""
    table = _read_table(path, names=["genre", "id"], encoding="latin-1").dropna()
    ids = table["id"].astype(int).to_numpy()
    if sorted(ids) != list(range(len(ids))):
        raise DatasetError(f"{MOVIELENS_100K}: {path}: genre ids are {sorted(ids)}, expected "
                           f"0..{len(ids) - 1}")
    return table.sort_values("id")["genre"].tolist()


def _read_movies(path: Path, genres: list[str]) -> pd.DataFrame:
    flag_columns = [f"flag_{i}" for i in range(len(genres))]
    names = ["movie_id", "movie_title", "release_date", "video_release_date", "imdb_url",
             *flag_columns]
    # u.item is Latin-1 (e.g. "Misérables, Les (1995)"); the CSV written is UTF-8.
    items = _read_table(path, names=names, encoding="latin-1", dtype=str,
                        keep_default_na=False, quoting=csv.QUOTE_NONE)
    if not items[flag_columns].isin(["0", "1"]).all(axis=None):
        raise DatasetError(f"{MOVIELENS_100K}: {path}: expected {len(names)} '|'-separated "
                           f"columns (5 fields and {len(genres)} 0/1 genre flags) on every "
                           f"line")
    flags = items[flag_columns].to_numpy() == "1"
    genre_names = np.array(genres, dtype=object)
    return pd.DataFrame({
        "movie_id": items["movie_id"].astype(np.int64),
        "movie_title": items["movie_title"],
        # "01-Jan-1995" → 1995; an empty date stays empty (a missing numeric value).
        "movie_year": items["release_date"].str[-4:],
        # Per movie (1,682 of them), not per rating.
        "movie_genres": [GENRE_SEPARATOR.join(genre_names[row]) for row in flags],
    })


def _age_groups(ages: pd.Series) -> np.ndarray:
    names = np.array(AGE_GROUP_NAMES, dtype=object)
    return names[np.searchsorted(np.array(AGE_GROUP_EDGES), ages.to_numpy(), side="right")]


def _read_users(path: Path) -> pd.DataFrame:
    # The README says tab-separated; the file is '|'-separated. Zip codes are not all
    # numeric (Canadian postcodes), so everything but the ids is read as text.
    users = _read_table(path, names=["user_id", "user_age", "user_gender", "user_occupation",
                                     "zip"],
                        dtype={"user_id": np.int64, "user_age": np.int64, "user_gender": str,
                               "user_occupation": str, "zip": str},
                        keep_default_na=False)
    users["user_age_group"] = _age_groups(users["user_age"])
    # The first digit of a US ZIP code is its national area (0 = north-east ... 9 = west);
    # a letter marks a Canadian postcode.
    users["user_zip_region"] = users.pop("zip").str[:1].str.upper()
    return users


def _join(ratings: pd.DataFrame, table: pd.DataFrame, key: str, path: Path) -> pd.DataFrame:
    joined = ratings.merge(table, on=key, how="left", validate="many_to_one", indicator=True)
    unmatched = joined["_merge"] != "both"
    if unmatched.any():
        ids = sorted(joined.loc[unmatched, key].unique().tolist())[:5]
        raise DatasetError(f"{MOVIELENS_100K}: {int(unmatched.sum())} rating(s) name a "
                           f"{key} missing from {path}, e.g. {ids}")
    return joined.drop(columns="_merge")


def _add_rating_counts(ratings: pd.DataFrame) -> pd.DataFrame:
    """Columns from which (user, movie) pairs were rated, never from the ratings given.

    They count every row of the file, eval rows included: what they reveal of an eval row is
    that the user rated the movie, which the row itself says, and no rating of any row. (A
    movie's mean rating, say, would leak eval labels unless computed on train rows only.)
    """
    counts = ratings["movie_id"].value_counts()
    ratings["movie_popularity"] = ratings["movie_id"].map(counts).astype(np.int64)
    # Ties at the cut broken by movie id, so the list does not depend on u.data's order.
    popular = counts.rename_axis("id").reset_index(name="n").sort_values(
        ["n", "id"], ascending=[False, True])["id"].head(POPULAR_MOVIES)
    rated = ratings.loc[ratings["movie_id"].isin(popular), ["user_id", "movie_id"]]
    lists = rated.groupby("user_id")["movie_id"].agg(
        lambda ids: GENRE_SEPARATOR.join(map(str, sorted(ids))))
    ratings["user_rated_popular_movies"] = ratings["user_id"].map(lists).fillna("")
    return ratings


def prepare_movielens_100k(src_dir: str, out_dir: str) -> str:
    """Joins u.data, u.user and u.item into ``<out_dir>/ratings.csv``; returns its path.

    One row per rating, in u.data's order, with a header::

        rating_id   "<user_id>-<movie_id>": unique per row (a user rates a movie once), the
                    key of a hash split that puts a random tenth of the ratings in eval
        user_id, movie_id
        rating      1..5, kept for reference: the label is derived from it
        liked       1 if rating >= 4 else 0 (the label)
        timestamp   Unix seconds (UTC); day: its UTC date, YYYY-MM-DD
        user_age, user_age_group, user_gender, user_occupation, user_zip_region
        movie_title, movie_year (empty when u.item has no release date)
        movie_genres  the genre flags as names, "|"-separated (u.genre's order)
        movie_popularity  the number of ratings of the movie in the file
        user_rated_popular_movies  the ids, "|"-separated and ascending, of the
                    POPULAR_MOVIES most rated movies that the user rated (empty if none)
    """
    src = Path(src_dir)
    data_path = _source_file(src, "u.data", "the ratings")
    user_path = _source_file(src, "u.user", "the users")
    item_path = _source_file(src, "u.item", "the movies")
    genre_path = _source_file(src, "u.genre", "the genre names")

    ratings = _read_table(data_path, sep="\t", names=["user_id", "movie_id", "rating",
                                                      "timestamp"], dtype=np.int64)
    ratings = _join(ratings, _read_users(user_path), "user_id", user_path)
    ratings = _join(ratings, _read_movies(item_path, _read_genres(genre_path)), "movie_id",
                    item_path)
    ratings["rating_id"] = (ratings["user_id"].astype(str) + "-"
                            + ratings["movie_id"].astype(str))
    ratings["liked"] = (ratings["rating"] >= MOVIELENS_LIKED_MIN_RATING).astype(np.int64)
    ratings["day"] = pd.to_datetime(ratings["timestamp"], unit="s", utc=True).dt.strftime(
        "%Y-%m-%d")
    ratings = _add_rating_counts(ratings)
    columns = ["rating_id", "user_id", "movie_id", "rating", "liked", "timestamp", "day",
               "user_age", "user_age_group", "user_gender", "user_occupation",
               "user_zip_region", "movie_title", "movie_year", "movie_genres", "movie_popularity",
               "user_rated_popular_movies"]

    # Titles contain commas; to_csv quotes them the way both of the reader's CSV parsers
    # (Arrow's and Python's csv) read back. Written whole: a reader never sees half a file.
    return paths.write_text(paths.join(out_dir, MOVIELENS_FILE),
                            ratings[columns].to_csv(index=False, lineterminator="\n"))


DATASETS: dict[str, Callable[[str, str], str]] = {
    MOVIELENS_100K: prepare_movielens_100k,
}


def prepare(name: str, src: str, out: str) -> str:
    """Prepares dataset ``name`` from the release files in ``src`` into ``out``; returns the
    path of the file to give ``--input``."""
    try:
        prepare_fn = DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset '{name}'; known datasets: "
                           f"{', '.join(sorted(DATASETS))}") from None
    if not os.path.isdir(src):
        raise DatasetError(f"{name}: source folder {src} does not exist")
    return prepare_fn(src, out)
