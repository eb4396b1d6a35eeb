"""Data validation: broken nights are stopped with their reason named; normal ones pass.

Each night's statistics come from the real reader and column statistics (a small Beam job
per night, as inside the transform job) on the synthetic app-store log; the checks then run
against the first day as the blessed run. The whole loop's stop (exit code, manifest, serving
untouched, --allow-anomalies) is in test_run.py.
"""

import csv
import dataclasses
import json
import os
import random

import apache_beam as beam
import numpy as np
import pytest

from configs import shipped_config
from pipeline import beam_job
from pipeline import column_stats
from pipeline import io as wd_io
from pipeline import validation
from transforms import synthetic
from transforms.config import load_config

ROWS = 2000


@pytest.fixture(scope="module")
def appstore():
    return load_config(shipped_config("appstore.toml"))


def night_stats(config, path, known=None):
    """What the transform job writes as column_stats.json for one input file."""
    out = os.path.join(os.path.dirname(path), "column_stats.json")
    pipeline = beam.Pipeline()
    rows, _ = pipeline | wd_io.ReadImpressions(config, [path], count_missing=True)
    _ = (rows | beam.CombineGlobally(column_stats.ColumnStatsFn(config, known))
         | beam.Map(lambda stats: open(out, "w").write(json.dumps(stats))))
    counts = beam_job.run(pipeline)
    column_stats.add_numeric_missing(out, counts.get(wd_io.MISSING_NUMERIC_NAMESPACE, {}))
    with open(out) as f:
        return json.load(f)


def day_rows(folder, index):
    written = synthetic.write_log(str(folder), days=1, rows_per_day=ROWS, seed=5,
                                  start_date=f"2026-02-{index + 1:02d}",
                                  first_day_index=index, shards=1)
    with open(written[0], newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows, fieldnames=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def nights(tmp_path_factory, appstore):
    """The blessed day's statistics (its unseen values counted against the day before) and
    schema, its vocabulary, and a normal next day's rows."""
    root = tmp_path_factory.mktemp("nights")
    day_before, blessed_rows = day_rows(root / "synth", 0), day_rows(root / "synth", 1)
    blessed_path = write_rows(root / "blessed" / "part.csv", blessed_rows)
    blessed = night_stats(appstore, blessed_path, vocabulary(appstore, day_before))
    return {"root": root, "blessed": blessed, "known": vocabulary(appstore, blessed_rows),
            "schema": validation.infer_schema(blessed, "blessed day"),
            "next_day": day_rows(root / "synth", 2)}


def vocabulary(config, rows, column="impression_app"):
    """The day's vocabulary as the transform builds it (tokens seen vocab_min_count times)."""
    tokens, counts = np.unique([r[column] for r in rows], return_counts=True)
    return {column: [t.encode() for t in tokens[counts >= config.column(column).vocab_min_count]]}


def check(config, nights, name, rows, recent_rows=(ROWS,) * 3):
    path = write_rows(nights["root"] / name / "part.csv", rows)
    stats = night_stats(config, path, nights["known"])
    return validation.validate(config, stats, schema=nights["schema"],
                               previous=nights["blessed"], recent_rows=list(recent_rows))


def anomalies(record):
    return {a["anomaly"]: a["reason"] for a in record["anomalies"] if not a["allowed"]}


def test_the_synthetic_logs_normal_day_passes(appstore, nights):
    record = check(appstore, nights, "normal", nights["next_day"])

    assert anomalies(record) == {}
    assert record["volume"]["ratio"] == 1.0
    assert set(record["drift"]) >= {"country", "installed_apps", "app_installs"}
    assert all(entry["value"] <= entry["threshold"] for entry in record["drift"].values())
    # New apps launch every day: some unseen values, about as many as the day before.
    unseen = record["unseen"]["impression_app"]
    assert 0 < unseen["today"] < unseen["blessed_run"] + 0.1


def test_a_column_arriving_empty_is_stopped(appstore, nights):
    rows = [{**r, "country": "", "app_rating": ""} for r in nights["next_day"]]

    found = anomalies(check(appstore, nights, "empty", rows))

    assert "arrived empty" in found["missing_values:country"]
    # A numeric column's blanks are filled with its default by the reader; still counted.
    assert "100.0% missing" in found["missing_values:app_rating"]


def test_a_numeric_column_multiplied_by_1000_is_stopped(appstore, nights):
    rows = [{**r, "app_installs": str(float(r["app_installs"]) * 1000)}
            for r in nights["next_day"]]

    found = anomalies(check(appstore, nights, "times1000", rows))

    assert list(found) == ["drift:app_installs"]
    assert "Jensen-Shannon" in found["drift:app_installs"]


def test_a_categorical_flooded_with_unseen_values_is_stopped(appstore, nights):
    generator = random.Random(0)
    rows = [{**r, "impression_app": f"spam-{generator.randrange(10**6)}"}
            if generator.random() < 0.5 else r for r in nights["next_day"]]

    found = anomalies(check(appstore, nights, "flood", rows))

    assert "unseen_values:impression_app" in found
    assert "not in the blessed model's vocabulary" in found["unseen_values:impression_app"]


def test_a_tenth_of_the_rows_is_stopped_and_so_are_duplicated_rows(appstore, nights):
    few = anomalies(check(appstore, nights, "tenth", nights["next_day"][:ROWS // 10]))
    doubled = anomalies(check(appstore, nights, "doubled", nights["next_day"] * 2))

    assert list(few) == ["volume"] and "0.10× the median" in few["volume"]
    assert list(doubled) == ["volume"] and "duplicated rows" in doubled["volume"]


def test_a_duplicated_column_is_stopped_before_any_work(appstore, nights, tmp_path):
    header = list(nights["next_day"][0]) + ["country"]
    path = tmp_path / "dup.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(list(r.values()) + [r["country"]] for r in nights["next_day"][:10])

    with pytest.raises(wd_io.InputError, match=r"names column\(s\) \['country'\] more than once"):
        wd_io.check_headers([str(path)], appstore)


def test_a_value_outside_a_closed_domain_is_stopped(appstore, nights):
    assert nights["schema"]["columns"]["device_class"]["domain"]  # a handful of classes
    rows = [{**r, "device_class": "smart-fridge"} if i % 4 == 0 else r
            for i, r in enumerate(nights["next_day"])]

    found = anomalies(check(appstore, nights, "domain", rows))

    assert "'smart-fridge'" in found["out_of_domain:device_class"]


def test_allowed_anomalies_are_recorded_but_do_not_stop(appstore, nights):
    config = dataclasses.replace(appstore, validation=dataclasses.replace(
        appstore.validation, allow_anomalies=("volume",)))
    rows = nights["next_day"][:ROWS // 10]

    record = check(config, nights, "allowed", rows)

    assert anomalies(record) == {} and record["anomalies"][0]["allowed"]
    assert validation.stopping(record) == []


def test_jensen_shannon_of_quantiles():
    same = {"quantiles": list(np.linspace(0, 10, 11))}
    shifted = {"quantiles": list(np.linspace(1, 11, 11))}
    far = {"quantiles": list(np.linspace(1000, 10000, 11))}
    point = {"quantiles": [0.0] * 11}

    assert validation.jensen_shannon(same, same) == 0
    assert 0.05 < validation.jensen_shannon(shifted, same) < 0.3
    assert validation.jensen_shannon(far, same) == pytest.approx(1.0)
    assert validation.jensen_shannon(point, point) == 0
    assert validation.jensen_shannon(point, same) > 0.5


def test_l_infinity_is_exact_for_complete_lists_and_a_lower_bound_for_long_tails():
    before = {"rows": 100, "missing_share": 0, "distinct": 2, "top_counts_over_by_at_most": 0,
              "top_values": [{"value": "a", "count": 70}, {"value": "b", "count": 30}]}
    after = {**before, "top_values": [{"value": "a", "count": 40}, {"value": "b", "count": 60}]}
    assert validation.l_infinity(after, before) == pytest.approx(0.3)
    # A long tail: "c" is not in today's top list, so its share is at most today's least.
    tail = {"rows": 100, "missing_share": 0, "distinct": 500, "top_counts_over_by_at_most": 0,
            "top_values": [{"value": "a", "count": 10}, {"value": "b", "count": 5}]}
    was = {**tail, "top_values": [{"value": "a", "count": 10}, {"value": "c", "count": 8}]}
    assert validation.l_infinity(tail, was) == pytest.approx(0.08 - 0.05)


def test_schema_inferred_from_a_blessed_run_can_be_read_and_edited(nights):
    columns = nights["schema"]["columns"]

    assert columns["country"]["max_missing_share"] == 0.05
    assert "domain" not in columns["impression_app"]   # hundreds of apps: open
    assert columns["app_rating"]["min"] == 0.0
    assert "clicked" not in columns                     # the label is the reader's job
    json.dumps(nights["schema"])                        # plain JSON, to check in


def test_widedeep_schema_writes_the_blessed_runs_schema_and_names_what_is_missing(nights,
                                                                                  tmp_path,
                                                                                  caplog):
    from pipeline import cli

    work = tmp_path / "work"
    for run_id, blessed in (("day-1", True), ("day-2", False)):
        os.makedirs(work / "runs" / run_id / "transform")
        (work / "runs" / run_id / "manifest.json").write_text(json.dumps({"blessed": blessed}))
        (work / "runs" / run_id / "transform" / "column_stats.json").write_text(
            json.dumps(nights["blessed"]))
    out = tmp_path / "mine.schema.json"

    assert cli.main(["schema", "--work-dir", str(work), "--out", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema["inferred_from"] == "run day-1"  # the blessed one, not the newest
    assert schema["columns"] == nights["schema"]["columns"]
    assert cli.main(["schema", "--work-dir", str(tmp_path / "empty")]) == 2
    assert "no column statistics in any run" in caplog.text
