"""The data-generation job on tiny hand-written input, through real Beam and TFT."""

import dataclasses
import glob
import gzip
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from pipeline import transform_job
from pipeline.io import InputError
from transforms.config import parse_config
from transforms.features import CROSS_SEPARATOR
from tests.test_config import MINIMAL

import tomllib

# country: US x4, DE x3, FR x2 per 10 rows → with vocab_min_count = 3 FR stays out.
COUNTRIES = ["US", "DE", "US", "FR", "US", "DE", "US", "FR", "DE", "JP"]
APPS = ["a;b", "b", "", "c;a", "b;c", "a", "c", "a;b;c", "b", "a"]
GOOD_TRAIN_ROWS = 40
BAD_ROWS = {
    "wrong_field_count": b"u9,US,a\n",
    "not_a_number": b"u9,US,a,cheap,1\n",
    "not_finite": b"u9,US,a,nan,1\nu9,US,a,-inf,0\n",
    "empty_label": b"u9,US,a,3,\n",
    "unknown_label": b"u9,US,a,3,yes\n",
    "bad_encoding": b"u9,\xff\xfeUS,a,3,1\n",
}


def tiny_config(tmp_path, **split):
    data = tomllib.loads(MINIMAL)
    data["crosses"][0] = {"columns": ["apps", "country"], "vocab_min_count": 1}
    data["crosses"].append({"columns": ["price", "country"], "vocab_min_count": 1})
    data["model"]["wide"].append("price_x_country")
    # No validation holdout unless asked: these tests count the train rows.
    data["split"] = {"validation_fraction": 0.0, **(split or {"method": "eval_input"})}
    data["validation"] = {"max_dead_letter_fraction": 0.5}
    return parse_config(data, str(tmp_path / "tiny.toml"))


def write_inputs(root):
    os.makedirs(root / "train")
    header = b"user,country,apps,price,clicked\n"
    with open(root / "train" / "part-0.csv", "wb") as f:
        f.write(header)
        for i in range(GOOD_TRAIN_ROWS):
            f.write(f"u{i},{COUNTRIES[i % 10]},{APPS[i % 10]},{i + 1},{i % 2}\n".encode())
        for line in BAD_ROWS.values():
            f.write(line)
    with gzip.open(root / "train" / "part-1.csv.gz", "wb") as f:  # compressed input works too
        f.write(header + b"u100,US,a;b,20.5,1\n")
    os.makedirs(root / "eval")
    with open(root / "eval" / "part-0.csv", "wb") as f:
        f.write(header + b"u200,DE,b;c,7,0\nu201,XX,z,100,1\nu202,US,,1,0\n")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_inputs(root)
    config = tiny_config(root)
    out = str(root / "out")
    stats = transform_job.run_transform(config, str(root / "train" / "*"), out,
                                        eval_input_pattern=str(root / "eval" / "*.csv"))
    return root, config, out, stats


def read_vocab(out, name):
    with open(os.path.join(out, "transform_fn", "assets", name)) as f:
        return [line.rstrip("\n") for line in f]


def read_examples(pattern):
    files = sorted(glob.glob(pattern))
    assert files, pattern
    return [tf.train.Example.FromString(r)
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()]


def feature_values(example):
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = tuple(np.round(getattr(feature, kind).value, 6)) if kind else ()
    return out


def test_vocabulary_honours_min_count(job):
    _, _, out, stats = job
    # 41 train rows: US 17, DE 12, FR 8, JP 4 → all >= 3; the eval file's XX is never seen.
    assert read_vocab(out, "vocab_country") == ["US", "DE", "FR", "JP"]
    assert stats["vocabulary_sizes"]["vocab_country"] == 4


def test_vocabulary_min_count_drops_rare_tokens(tmp_path):
    root = tmp_path
    write_inputs(root)
    data = tomllib.loads(MINIMAL)
    data["columns"]["country"]["vocab_min_count"] = 10
    data["split"] = {"method": "eval_input"}
    data["validation"] = {"max_dead_letter_fraction": 0.5}
    config = parse_config(data, "min10.toml")
    out = str(root / "out")
    transform_job.run_transform(config, str(root / "train" / "*"), out,
                                eval_input_pattern=str(root / "eval" / "*.csv"))
    assert read_vocab(out, "vocab_country") == ["US", "DE"]  # FR (8) and JP (4) < 10


def test_cross_contains_exactly_the_cross_product_tokens(job):
    _, _, out, _ = job
    expected = set()
    rows = [(COUNTRIES[i % 10], APPS[i % 10]) for i in range(GOOD_TRAIN_ROWS)] + [("US", "a;b")]
    for country, apps in rows:
        for app in filter(None, apps.split(";")):
            expected.add(f"{app}{CROSS_SEPARATOR}{country}")
    vocab = read_vocab(out, "vocab_apps_x_country")
    assert len(vocab) == len(set(vocab))
    assert set(vocab) == expected


def test_numeric_crosses_by_its_quantile_bucket(job):
    import tensorflow_transform as tft

    _, _, out, _ = job
    rows = [(COUNTRIES[i % 10], float(i + 1)) for i in range(GOOD_TRAIN_ROWS)] + [("US", 20.5)]
    layer = tft.TFTransformOutput(out).transform_features_layer()
    unit = layer({"country": tf.constant([c for c, _ in rows]),
                  "price": tf.constant([p for _, p in rows], tf.float32),
                  "apps": tf.sparse.from_dense(tf.constant([["a"]] * len(rows)))})["price"]
    # The [0, 1] feature is bucket / 3 (quantile_buckets = 4); the cross takes the bucket.
    buckets = np.rint(unit.numpy() * 3).astype(int)
    expected = {f"q{b}{CROSS_SEPARATOR}{country}" for b, (country, _) in zip(buckets, rows)}
    assert set(read_vocab(out, "vocab_price_x_country")) == expected
    assert len(expected) > 4  # several buckets per country, not one token per country


def test_numeric_lands_exactly_on_bucket_fractions(job):
    import tensorflow_transform as tft

    _, _, out, _ = job
    tft_output = tft.TFTransformOutput(out)
    prices = np.arange(1, 41, dtype=np.float32)
    raw = {"country": tf.constant(["US"] * 40), "price": tf.constant(prices),
           "apps": tf.sparse.from_dense(tf.constant([["a"]] * 40))}
    layer = tft_output.transform_features_layer()
    values = layer(raw)["price"].numpy()
    # quantile_buckets = 4: bucket i of 4 → (i - 1) / 3, and every bucket is used.
    np.testing.assert_allclose(np.unique(values), [0.0, 1 / 3, 2 / 3, 1.0], rtol=0, atol=1e-7)
    assert np.all(np.diff(values) >= 0)


def test_bad_rows_dead_lettered_with_reason_and_good_rows_all_kept(job):
    root, _, out, stats = job
    n_bad = sum(line.count(b"\n") for line in BAD_ROWS.values())
    assert stats["rows_in"] == GOOD_TRAIN_ROWS + 1 + n_bad + 3
    assert stats["rows_dead_lettered"] == n_bad
    assert stats["dead_letter_by_reason"] == {
        reason: line.count(b"\n") for reason, line in BAD_ROWS.items()}
    assert stats["rows_out"] == {"train": GOOD_TRAIN_ROWS + 1, "eval": 3}
    assert len(read_examples(os.path.join(out, "train-*.tfrecord.gz"))) == GOOD_TRAIN_ROWS + 1
    assert len(read_examples(os.path.join(out, "eval-*.tfrecord.gz"))) == 3
    letters = [json.loads(line) for path in glob.glob(os.path.join(out, "dead_letter-*.jsonl"))
               for line in open(path)]
    assert len(letters) == n_bad
    by_reason = {letter["reason"]: letter for letter in letters}
    assert by_reason["not_a_number"]["raw"] == "u9,US,a,cheap,1"
    assert "'price'" in by_reason["not_a_number"]["detail"]
    assert by_reason["not_a_number"]["file"].endswith("part-0.csv")
    assert by_reason["not_a_number"]["line"] == 1 + GOOD_TRAIN_ROWS + 2
    with open(os.path.join(out, "stats.json")) as f:
        assert json.load(f)["rows_dead_lettered"] == n_bad


def test_transform_graph_alone_turns_raw_examples_into_the_same_features(job, tmp_path):
    """Self-contained: the raw input deleted, the transform_fn maps raw eval examples to the
    features the job wrote (the property serving relies on)."""
    import tensorflow_transform as tft
    from transforms.features import serving_feature_spec

    root, config, out, _ = job
    copy = str(tmp_path / "transform")
    shutil.copytree(out, copy)
    layer = tft.TFTransformOutput(copy).transform_features_layer()
    raw_examples = [e.SerializeToString()
                    for e in read_examples(os.path.join(copy, "eval_raw-*.tfrecord.gz"))]
    parsed = tf.io.parse_example(raw_examples, serving_feature_spec(config))
    transformed = layer(parsed)
    from_graph = []
    for i in range(len(raw_examples)):
        row = {}
        for name, value in transformed.items():
            if isinstance(value, tf.SparseTensor):
                in_row = value.indices.numpy()[:, 0] == i
                row[name] = tuple(np.round(value.values.numpy()[in_row].astype(float), 6))
            else:
                row[name] = tuple(np.round(np.atleast_1d(value.numpy()[i]).astype(float), 6))
        from_graph.append(row)
    written = [feature_values(e) for e in read_examples(os.path.join(copy, "eval-*.tfrecord.gz"))]
    for row in written:
        row.pop(config.label.column)
    key = lambda row: json.dumps({k: [float(x) for x in v] for k, v in sorted(row.items())})
    assert sorted(map(key, from_graph)) == sorted(map(key, written))
    # The unseen country XX of the eval file maps to the OOV bucket (index = vocab size).
    assert 4 in [row["country"][0] for row in written]


def test_multi_processing_mode_gives_the_same_output(job, tmp_path):
    root, config, out, _ = job
    out_mp = str(tmp_path / "mp")
    transform_job.run_transform(config, str(root / "train" / "*"), out_mp,
                                eval_input_pattern=str(root / "eval" / "*.csv"),
                                pipeline_args=["--direct_running_mode=multi_processing",
                                               "--direct_num_workers=2"])
    for name in ("vocab_country", "vocab_apps", "vocab_apps_x_country"):
        assert read_vocab(out_mp, name) == read_vocab(out, name)
    for split in ("train", "eval"):
        key = lambda e: json.dumps(sorted((k, list(map(float, v)))
                                          for k, v in feature_values(e).items()))
        assert (sorted(map(key, read_examples(os.path.join(out_mp, f"{split}-*"))))
                == sorted(map(key, read_examples(os.path.join(out, f"{split}-*")))))


def test_too_many_dead_letters_fail_the_job_and_leave_no_output(tmp_path):
    write_inputs(tmp_path)
    config = tiny_config(tmp_path)
    config = dataclasses.replace(config, validation=dataclasses.replace(
        config.validation, max_dead_letter_fraction=0.01))
    out = str(tmp_path / "out")
    with pytest.raises(transform_job.TransformError, match=r"dead-lettered.*over the limit"):
        transform_job.run_transform(config, str(tmp_path / "train" / "*"), out,
                                    eval_input_pattern=str(tmp_path / "eval" / "*.csv"))
    assert not os.path.exists(out)
    assert glob.glob(out + ".partial/dead_letter-*.jsonl")


def test_input_glob_matching_nothing_is_a_clear_error(tmp_path):
    config = tiny_config(tmp_path, key="user")
    with pytest.raises(InputError, match="no files match"):
        transform_job.run_transform(config, str(tmp_path / "nothing" / "*.csv"),
                                    str(tmp_path / "out"))


def test_a_validation_holdout_is_carved_from_train_by_key(tmp_path):
    """Rows of one user never straddle train and validation, and the same rows are held out
    on every run."""
    os.makedirs(tmp_path / "in")
    header = b"user,country,apps,price,clicked\n"
    lines = [f"u{i % 60},{COUNTRIES[i % 10]},{APPS[i % 10]},{i + 1},{i % 2}\n".encode()
             for i in range(600)]
    (tmp_path / "in" / "part-0.csv").write_bytes(header + b"".join(lines))
    config = tiny_config(tmp_path, method="hash", key="user", eval_fraction=0.2,
                         validation_fraction=0.25)
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        stats = transform_job.run_transform(config, str(tmp_path / "in" / "*.csv"), out)
        runs.append(stats)
    assert runs[0]["rows_out"] == runs[1]["rows_out"]
    rows_out = runs[0]["rows_out"]
    assert sum(rows_out.values()) == 600
    assert 0.1 < rows_out["validation"] / (rows_out["train"] + rows_out["validation"]) < 0.4
    # Every user's 10 rows land in one split.
    assert all(count % 10 == 0 for count in rows_out.values())
    for name in ("a", "b"):
        assert len(read_examples(os.path.join(tmp_path / name, "validation-*.tfrecord.gz"))) \
            == rows_out["validation"]


def test_rows_lost_inside_the_pipeline_fail_the_job():
    counts = {"rows_valid": 1000, "rows_train": 800, "rows_eval": 90, "rows_validation": 100}

    with pytest.raises(transform_job.TransformError,
                       match="1000 valid rows were read but 990 written.*multi_processing"):
        transform_job.check_no_rows_lost(counts, multi_processing=True)
    transform_job.check_no_rows_lost({**counts, "rows_eval": 100})  # all accounted for


def test_column_statistics_of_every_valid_row(job):
    _, _, out, stats = job
    with open(os.path.join(out, stats["column_stats"])) as f:
        columns = json.load(f)
    # 41 valid train rows and the eval file's 3 (dead letters are not counted).
    assert {c["rows"] for c in columns.values()} == {44}
    country = columns["country"]
    assert country["distinct"] == 5 and country["missing_share"] == 0
    assert country["top_values"][:2] == [{"value": "US", "count": 18},
                                         {"value": "DE", "count": 13}]
    apps = columns["apps"]
    assert apps["length_counts"] == {"0": 5, "1": 21, "2": 14, "3": 4}
    assert apps["missing_share"] == round(5 / 44, 6) and apps["tokens"] == 61
    price = columns["price"]
    assert (price["min"], price["max"]) == (1.0, 100.0)
    assert price["mean"] == pytest.approx(948.5 / 44) and price["zeros_share"] == 0
    assert price["quantiles"][0] == 1.0 and price["quantiles"][-1] == 100.0
    assert columns["clicked"]["positive_rate"] == 0.5
    assert columns["user"]["distinct"] == 44
    assert stats["positive_rate"] == {"train": round(21 / 41, 6), "eval": round(1 / 3, 6)}


def test_top_values_of_a_long_tail_are_only_those_above_the_sketch_error():
    import pyarrow as pa

    from pipeline import column_stats
    from transforms import config as cfg

    column = column_stats._Column(cfg.KINDS[cfg.KEY])
    ids = [f"u{i}" for i in range(5000)] + ["bot"] * 2000  # 5,000 users once, one bot
    column.add(pa.array([[v.encode()] for v in ids], pa.large_list(pa.large_binary())))

    result = column.result(cfg.KEY)

    assert 0 < result["top_counts_over_by_at_most"] < 2000
    assert [t["value"] for t in result["top_values"]] == ["bot"]
    assert 2000 <= result["top_values"][0]["count"] <= 2000 + result["top_counts_over_by_at_most"]


def test_token_count_includes_lists_longer_than_the_length_histogram():
    import pyarrow as pa

    from pipeline import column_stats
    from transforms import config as cfg

    column = column_stats._Column(cfg.KINDS[cfg.MULTIVALENT])
    column.add(pa.array([[b"t"] * 100, [b"u"]], pa.large_list(pa.large_binary())))

    result = column.result(cfg.MULTIVALENT)

    assert result["tokens"] == 101 and result["mean_length"] == 50.5
    assert result["length_counts"] == {"1": 1, "64+": 1}


def test_memoized_dofn_specs_still_see_state_and_run_stateful_dofns():
    """The jobs' pipelines keep one state/timer answer per DoFn (beam_job.new_pipeline):
    a stateful DoFn must still be found stateful and keep its per-key state."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms import userstate
    from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

    from pipeline import beam_job

    class RunningTotal(beam.DoFn):
        TOTAL = ReadModifyWriteStateSpec("total", beam.coders.VarIntCoder())

        def process(self, element, total=beam.DoFn.StateParam(TOTAL)):
            key, value = element
            total.write((total.read() or 0) + value)
            yield key, total.read()

    pipeline = beam_job.new_pipeline(transform_job.pipeline_options([]))
    stateful, stateless = RunningTotal(), beam.Map(str).dofn
    for _ in range(2):  # the second answer comes from the memo
        assert userstate.is_stateful_dofn(stateful)
        assert not userstate.is_stateful_dofn(stateless)
        assert [s.name for s in userstate.get_dofn_specs(stateful)[0]] == ["total"]
    totals = (pipeline | beam.Create([("a", 1), ("a", 2), ("b", 5)])
              | beam.ParDo(RunningTotal()) | beam.combiners.Top.PerKey(1))
    assert_that(totals, equal_to([("a", [3]), ("b", [5])]))
    pipeline.run().wait_until_finish()


def test_record_batches_cross_a_stage_boundary_unchanged_with_the_jobs_coders():
    """beam_job.new_pipeline sizes whole batches by nbytes for Beam's byte counters; what is
    encoded between stages, and decoded again, must stay the batch itself."""
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.testing.util import assert_that

    from pipeline import beam_job

    batches = [pa.record_batch({"token": pa.array([b"a", b"b", None], pa.large_binary()),
                                "value": pa.array([1.5, None, -2.0], pa.float32())}),
               (pa.record_batch({"n": pa.array(np.arange(5))}), np.arange(3.0))]

    def same(received):
        assert len(received) == 2
        table = next(r for r in received if isinstance(r, pa.RecordBatch))
        pair = next(r for r in received if isinstance(r, tuple))
        assert table.equals(batches[0])
        assert pair[0].equals(batches[1][0]) and (pair[1] == batches[1][1]).all()

    pipeline = beam_job.new_pipeline(transform_job.pipeline_options([]))
    moved = pipeline | beam.Create(batches, reshuffle=False) | beam.Reshuffle()
    assert_that(moved, same)
    pipeline.run().wait_until_finish()


def test_analyzer_inputs_are_sized_without_pickling():
    """TFT hands its analyzers dicts of numpy arrays and eager tensors; Beam's byte
    counters size them from their shapes, where a single unsized value would have the
    whole dict pickled on every sampled element."""
    from pipeline import beam_job

    inputs = {"ids": np.arange(6, dtype=np.int64),
              "weights": tf.constant([[1.0, 2.0], [3.0, 4.0]]),
              "tokens": tf.constant([b"a", b"bc", b"def"]),
              "sparse": tf.sparse.from_dense(tf.constant([[1, 0, 0], [0, 0, 2]]))}
    assert beam_job._nbytes(inputs) == 6 * 8 + 4 * 4 + 3 * 8 + (2 * 2 * 8 + 2 * 4)
    assert beam_job._nbytes({"a": np.zeros(2), "other": object()}) is None


def test_gzip_writer_deflates_every_block_in_order_and_raises_a_failed_write(tmp_path):
    """The TFRecords are deflated on a thread of their own; a file that cannot be written
    (a full disk) still fails the bundle that writes it, in its own thread, with no hang."""
    blocks = [os.urandom(500) + bytes([i]) * 50_000 for i in range(20)]
    path = tmp_path / "part.gz"
    writer = transform_job._GzipWriter(open(path, "wb"))
    for block in blocks:
        writer.write(block)
    writer.close()
    assert gzip.decompress(path.read_bytes()) == b"".join(blocks)

    class FullDisk:
        def write(self, data):
            raise OSError("No space left on device")

        def close(self):
            pass

    writer = transform_job._GzipWriter(FullDisk())
    with pytest.raises(OSError, match="No space left"):
        for block in blocks:  # the error surfaces in a later write or in close
            writer.write(block)
        writer.close()


def test_gzip_writer_encodes_on_its_thread_and_raises_a_failed_encoding(tmp_path):
    """Record batches are encoded as framed tf.Examples on the writer's thread: the file
    reads back as the batches' rows, in order; a batch that cannot be encoded fails the
    bundle instead of leaving a short file."""
    batches = [pa.RecordBatch.from_pydict(
        {"x": pa.array([[float(i)], [float(i) + 0.5]], pa.large_list(pa.float32()))})
        for i in range(6)]
    path = tmp_path / "part.tfrecord.gz"
    writer = transform_job._GzipWriter(open(path, "wb"), encode=transform_job._framed_examples)
    for batch in batches:
        writer.write(batch)
    writer.close()
    read = [tf.train.Example.FromString(r.numpy()).features.feature["x"].float_list.value[0]
            for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]
    assert read == [v for i in range(6) for v in (float(i), float(i) + 0.5)]

    writer = transform_job._GzipWriter(open(tmp_path / "bad.gz", "wb"),
                                       encode=transform_job._framed_examples)
    unencodable = pa.RecordBatch.from_pydict({"x": pa.array(
        [[{"a": 1}]], pa.large_list(pa.struct([("a", pa.int64())])))})
    with pytest.raises(RuntimeError, match='feature "x"'):
        for block in batches[:2] + [unencodable] + batches[2:]:
            writer.write(block)
        writer.close()
