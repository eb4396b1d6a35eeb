"""Batch scoring: the job's top K per query is the served model's ranking of the same rows."""

import csv
import dataclasses
import glob
import json
import os
import shutil

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from pipeline import io as wd_io
from pipeline import score_job
from trainer import export
from trainer.train import train
from tests.test_io import config_for
from transforms import config as cfg

# Candidates per query: more than the config's serving.top_k (10), fewer, and many.
CANDIDATES = {"many": 120, "some": 25, "few": 3}


@pytest.fixture(scope="module")
def exported(transform_output, tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    params = dataclasses.replace(transform_output.config.train, max_steps=30)
    train(transform_output.config, transform_output.transform_dir, str(root / "model"),
          params=params, log=lambda *_: None)
    export_dir = export.export_model(transform_output.config, str(root / "model"),
                                     transform_output.transform_dir, str(root / "export"))
    # As the run's export stage does: what scoring measures skew against.
    shutil.copy(os.path.join(transform_output.transform_dir, "column_stats.json"),
                os.path.join(export_dir, export.EXTRA_DIR, "column_stats.json"))
    return export_dir


def candidate_rows(transform_output) -> dict[str, list[dict]]:
    """Per query: rows (as strings) of distinct items, all given one row's query columns."""
    config = transform_output.config
    path = sorted(glob.glob(os.path.join(transform_output.root, "raw", "day=*", "*.csv")))[0]
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={c: "string" for c in config.column_names}))
    rows = table.to_pylist()
    item_rows, seen = [], set()
    for row in rows:
        if row[config.serving.item_column] not in seen:
            seen.add(row[config.serving.item_column])
            item_rows.append(row)
    queries, start = {}, 0
    for i, (name, count) in enumerate(CANDIDATES.items()):
        query = {c: rows[1000 + i][c] for c in config.serving.query_columns}
        queries[name] = [{**row, **query} for row in item_rows[start:start + count]]
        start += count
    return queries


def write_csv(path, columns, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[row[c] for c in columns] for row in rows])


def serialized_example(config: cfg.FeatureConfig, row: dict) -> bytes:
    """A raw row as the tf.Example a serving client would send (independent of the job)."""
    feature = {}
    for column in config.feature_columns:
        value = row[column.name]
        if column.kind == cfg.NUMERIC:
            feature[column.name] = tf.train.Feature(
                float_list=tf.train.FloatList(value=[float(value)]))
        else:
            tokens = ([t for t in value.split(column.separator) if t]
                      if column.kind == cfg.MULTIVALENT else [value])
            feature[column.name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[t.encode() for t in tokens]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def scored(transform_output, exported, tmp_path_factory):
    """Two files: one with the label column (one label empty, one row bad), one without."""
    config = transform_output.config
    root = tmp_path_factory.mktemp("candidates")
    queries = candidate_rows(transform_output)
    with_label, without_label = [], []
    for rows in queries.values():
        half = len(rows) // 2
        with_label += rows[:half]
        without_label += rows[half:]
    with_label[0] = {**with_label[0], config.label.column: ""}  # not read when scoring
    numeric = next(c.name for c in config.feature_columns if c.kind == cfg.NUMERIC)
    bad = {**with_label[1], numeric: "not-a-number"}
    write_csv(root / "with_label.csv", config.column_names, with_label + [bad])
    write_csv(root / "without_label.csv",
              [c for c in config.column_names if c != config.label.column], without_label)

    out_dir = str(root / "out")
    summary = score_job.run_score(exported, str(root / "*.csv"), out_dir, log=lambda *_: None)
    rankings = {}
    for path in glob.glob(os.path.join(out_dir, "top_k-*.jsonl")):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                rankings[tuple(record["query"].items())] = record["candidates"]
    return queries, summary, rankings, out_dir


def expected_ranking(config, predict, rows, top_k):
    scores = predict([serialized_example(config, row) for row in rows])
    best = sorted(zip(-scores, (row[config.serving.item_column] for row in rows)))[:top_k]
    return [item for _, item in best], [-s for s, _ in best]


def query_key(config, row):
    return tuple((c, row[c]) for c in config.serving.query_columns)


def test_top_k_per_query_is_the_served_models_ranking(transform_output, exported, scored):
    config = transform_output.config
    queries, _, rankings, _ = scored
    predict = export.load_predict_fn(exported)
    top_k = config.serving.top_k
    assert len(rankings) == len(queries)
    for name, rows in queries.items():
        items, scores = expected_ranking(config, predict, rows, top_k)
        candidates = rankings[query_key(config, rows[0])]
        assert [c["item"] for c in candidates] == items, name
        np.testing.assert_allclose([c["score"] for c in candidates], scores, rtol=1e-5)
        assert len(candidates) == min(top_k, CANDIDATES[name])


def test_a_query_with_fewer_candidates_than_k_gets_all_of_them_best_first(transform_output,
                                                                          scored):
    queries, _, rankings, _ = scored
    config = transform_output.config
    candidates = rankings[query_key(config, queries["few"][0])]
    assert sorted(c["item"] for c in candidates) == sorted(r[config.serving.item_column]
                                                           for r in queries["few"])
    scores = [c["score"] for c in candidates]
    assert scores == sorted(scores, reverse=True)


def test_rows_without_a_label_score_and_bad_rows_are_dead_lettered(scored):
    queries, summary, _, out_dir = scored
    rows = sum(len(r) for r in queries.values())
    assert summary["rows_scored"] == rows  # both files, the empty label included
    assert summary["rows_in"] == rows + 1
    assert summary["queries"] == len(queries)
    assert summary["dead_letter_by_reason"] == {"not_a_number": 1}
    with open(os.path.join(out_dir, score_job.SUMMARY_FILE)) as f:
        assert json.load(f) == summary
    letters = [json.loads(line) for path in glob.glob(os.path.join(out_dir, "dead_letter-*"))
               for line in open(path)]
    assert [(os.path.basename(d["file"]), d["reason"]) for d in letters] == [
        ("with_label.csv", "not_a_number")]
    assert not os.path.exists(out_dir + ".partial")


def test_scoring_warns_of_skew_against_the_training_data(transform_output, exported, scored,
                                                         tmp_path):
    config = transform_output.config
    queries, summary, _, out_dir = scored
    with open(os.path.join(out_dir, score_job.SKEW_FILE)) as f:
        skew = json.load(f)
    assert set(skew) == {c.name for c in config.feature_columns}
    assert summary["skew"]["columns"] == len(skew)
    assert "app_installs" not in summary["skew"]["over_threshold"]
    # The same candidates with installs counted in thousandths upstream.
    rows = [{**row, "app_installs": str(float(row["app_installs"]) * 1000)}
            for rows in queries.values() for row in rows]
    write_csv(tmp_path / "skewed.csv", config.column_names, rows)
    lines = []

    skewed = score_job.run_score(exported, str(tmp_path / "skewed.csv"), str(tmp_path / "out"),
                                 log=lines.append)

    assert "app_installs" in skewed["skew"]["over_threshold"]
    warning = [line for line in lines if "unlike the model's training data" in line]
    assert len(warning) == 1 and "app_installs (Jensen-Shannon" in warning[0]
    assert skewed["rows_scored"] == len(rows)  # a warning, not a stop


def test_a_directory_that_is_not_an_export_is_refused_by_name(tmp_path):
    with pytest.raises(wd_io.InputError, match="not a widedeep serving export"):
        score_job.run_score(str(tmp_path), str(tmp_path / "*.csv"), str(tmp_path / "out"))


def read_to_score(config, path):
    """The reader as the scoring job runs it: label ignored and optional."""
    reader = wd_io._ReadAndValidateFile(score_job.scoring_config(config),
                                        optional_columns=(config.label.column,))
    reader.setup()
    items = list(reader.process(str(path)))
    batches = [i for i in items if not isinstance(i, beam.pvalue.TaggedOutput)]
    dead = [i.value for i in items if isinstance(i, beam.pvalue.TaggedOutput)]
    return pa.Table.from_batches(batches).to_pydict() if batches else {}, dead


HEADERLESS = dict(header=False, columns=["user", "country", "apps", "price", "clicked"])


@pytest.mark.parametrize("fmt, input_keys, text", [
    ("csv", {}, "user,country,apps,price\nu1,US,a;b,1.5\nu2,DE,,2\n"),
    ("csv", {}, "user,country,apps,price,clicked\nu1,US,a;b,1.5,1\nu2,DE,,2,\n"),
    ("csv", HEADERLESS, "u1,US,a;b,1.5\nu2,DE,,2\n"),
    ("csv", HEADERLESS, "u1,US,a;b,1.5,0\nu2,DE,,2,not-a-label\n"),
    ("parquet", {}, None),
])
def test_rows_to_score_may_lack_the_label_in_any_layout(tmp_path, fmt, input_keys, text):
    path = tmp_path / f"rows.{fmt}"
    if text is None:
        pq.write_table(pa.table({"user": ["u1", "u2"], "country": ["US", "DE"],
                                 "apps": [["a", "b"], []], "price": [1.5, 2.0]}), path)
    else:
        path.write_text(text)
    columns, dead = read_to_score(config_for(fmt, **input_keys), path)
    assert dead == []
    assert columns == {"user": [[b"u1"], [b"u2"]], "country": [[b"US"], [b"DE"]],
                       "apps": [[b"a", b"b"], []], "price": [[1.5], [2.0]]}


def test_a_row_with_one_field_too_many_where_the_label_is_absent_is_dead_lettered(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("user,country,apps,price\nu1,US,a;b,1.5\nu2,DE,,2,1\n")
    columns, dead = read_to_score(config_for(), path)
    assert columns["user"] == [[b"u1"]]
    assert [(d.line, d.reason, d.detail) for d in dead] == [
        (3, "wrong_field_count", "expected 4 fields, got 5")]
