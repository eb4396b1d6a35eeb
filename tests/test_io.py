"""Reading and validating raw input in every format, without TFT (fast)."""

import gzip
import json
import tomllib
import zlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import io as wd_io
from transforms.config import parse_config
from tests.test_config import MINIMAL

HEADER = "user,country,apps,price,clicked\n"


def config_for(fmt="csv", **input_keys):
    data = tomllib.loads(MINIMAL)
    data["input"] = {"format": fmt, **input_keys}
    return parse_config(data, "tiny.toml")


def read_file(config, path):
    """Runs the per-file reader DoFn directly: (record batches, dead letters)."""
    reader = wd_io._ReadAndValidateFile(config)
    reader.setup()
    batches, dead = [], []
    for item in reader.process(str(path)):
        if isinstance(item, beam.pvalue.TaggedOutput):
            dead.append(item.value)
        else:
            batches.append(item)
    return batches, dead


def column(batches, name):
    return [v for b in batches for v in b.column(name).to_pylist()]


def test_csv_rows_become_typed_record_batches(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(HEADER + "u1, US ,a;b,1.5,1\nu2,DE,,2,0\nu3,FR,c;;d,,0\n")
    batches, dead = read_file(config_for(), path)
    assert dead == []
    assert column(batches, "country") == [[b"US"], [b"DE"], [b"FR"]]
    assert column(batches, "apps") == [[b"a", b"b"], [], [b"c", b"d"]]
    assert column(batches, "price") == [[1.5], [2.0], [0.0]]  # empty → the column default
    assert column(batches, "clicked") == [[1], [0], [0]]


@pytest.mark.parametrize("value, padded", [
    ("US", False), (" US", True), ("US\t", True), ("\u00a0US", True), ("US\u3000", True),
    ("\x1cUS", True), ("Ü", True), ("U S", False)])
def test_only_columns_that_may_start_or_end_with_whitespace_are_trimmed(value, padded):
    """The fast path skips trimming a column when no value's first or last byte can be part
    of whitespace; a byte of a multi-byte character may be (U+00A0, U+3000), so it trims."""
    values = pa.array(["DE", "", value, "FR"]).slice(1)  # an offset into the buffers, too
    offsets = wd_io._string_offsets(values)
    assert wd_io._may_need_trimming(values, offsets) is padded
    assert not wd_io._may_need_trimming(pa.array(["", ""]), wd_io._string_offsets(
        pa.array(["", ""])))


def test_unicode_padding_is_stripped_as_str_strip_does(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(HEADER + "u1,\u00a0US\u3000,a,1,1\nu2,DE,b,2,0\n", encoding="utf-8")
    batches, dead = read_file(config_for(), path)
    assert dead == [] and column(batches, "country") == [[b"US"], [b"DE"]]


def test_one_bad_row_does_not_cost_its_neighbours(tmp_path):
    """A chunk with a bad row falls back to row-by-row validation: same typed output."""
    path = tmp_path / "a.csv"
    path.write_text(HEADER + "u1, US ,a;b,1.5,1\nu2,DE,,2,0\nu3,FR,c;;d,,0\nu4,US,a,1e400,1\n")
    batches, dead = read_file(config_for(), path)
    assert [(d.line, d.reason) for d in dead] == [(5, "not_finite")]
    assert column(batches, "country") == [[b"US"], [b"DE"], [b"FR"]]
    assert column(batches, "apps") == [[b"a", b"b"], [], [b"c", b"d"]]
    assert column(batches, "price") == [[1.5], [2.0], [0.0]]


def test_header_may_order_columns_differently(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("clicked,price,apps,country,user\n1,3,x,US,u1\n")
    batches, _ = read_file(config_for(), path)
    assert column(batches, "user") == [[b"u1"]] and column(batches, "price") == [[3.0]]


def test_header_that_does_not_match_the_config_is_refused_with_what_was_found(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("user;country;apps;price;clicked\nu1;US;a;1;1\n")
    with pytest.raises(wd_io.InputError, match=r"a.csv.*does not match.*delimiter"):
        read_file(config_for(), path)


def test_headerless_csv_with_missing_markers_and_a_banner_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("|1x3 Cross validator\nu1, ?, a, 3, 1\nu2, US, ?, ?, 0\n\n")
    config = config_for(header=False, columns=["user", "country", "apps", "price", "clicked"],
                        skip_lines=1, missing_values=["?"])
    batches, dead = read_file(config, path)
    assert dead == []
    assert column(batches, "country") == [[b""], [b"US"]]
    assert column(batches, "apps") == [[b"a"], []]
    assert column(batches, "price") == [[3.0], [0.0]]


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    data = gzip.compress((HEADER + "u1,US,a,1,1\n" * 5000).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(wd_io.InputError, match="cut.csv.gz.*truncated"):
        read_file(config_for(), path)


def test_empty_file_is_an_error_and_header_only_file_has_no_rows(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(wd_io.InputError, match="empty.csv: empty file"):
        read_file(config_for(), tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text(HEADER)
    assert read_file(config_for(), tmp_path / "header.csv") == ([], [])


@pytest.mark.parametrize("read_bytes", [1, 7, 64, 1 << 20])
def test_csv_lines_are_cut_the_same_at_any_read_size(tmp_path, monkeypatch, read_bytes):
    """Lines are found over whole reads of the file (numpy, not a call per line): wherever
    a read ends, the rows, their line numbers and the lines left out (byte-order mark,
    banner, comments, blank lines) are those of reading it line by line."""
    lines = ["\ufeff# exported 2026-11-27", "|banner", HEADER.strip(), "u1,US,a;b,1.5,1",
             "", "# a comment", "u2,DE,,2,0\r", "   ", "u3,FR,c;;d,,0", " u4,US,a,1e400,1",
             "\t", "u5,FR,d,3,1"]  # the last one without a line break
    path = tmp_path / "a.csv"
    path.write_bytes("\n".join(lines).encode())
    config = config_for(comment_prefix="#", skip_lines=2)
    monkeypatch.setattr(wd_io, "_READ_BYTES", read_bytes)
    monkeypatch.setattr(wd_io, "ROWS_PER_BATCH", 2)
    chunks = list(wd_io._csv_chunks(str(path), config))
    assert [len(chunk) for _, chunk in chunks] == [2, 2, 1]
    assert [(n, raw) for _, chunk in chunks for n, raw in chunk] == [
        (4, b"u1,US,a;b,1.5,1\n"), (7, b"u2,DE,,2,0\r\n"), (9, b"u3,FR,c;;d,,0\n"),
        (10, b" u4,US,a,1e400,1\n"), (12, b"u5,FR,d,3,1")]
    assert all(chunk.data == b"".join(raw for _, raw in chunk) for _, chunk in chunks)
    wd_io.check_headers([str(path)], config)  # the header check finds the same header line
    batches, dead = read_file(config, path)
    assert [(d.line, d.reason) for d in dead] == [(10, "not_finite")]
    assert column(batches, "user") == [[b"u1"], [b"u2"], [b"u3"], [b"u5"]]


def test_parquet_input(tmp_path):
    table = pa.table({"user": ["u1", "u2"], "country": ["US", None],
                      "apps": [["a", "b"], []], "price": [1.0, float("nan")],
                      "clicked": ["1", "0"]})
    pq.write_table(table, tmp_path / "a.parquet")
    batches, dead = read_file(config_for("parquet"), tmp_path / "a.parquet")
    assert column(batches, "apps") == [[b"a", b"b"]]
    assert [(d.line, d.reason) for d in dead] == [(2, "not_finite")]


@pytest.mark.parametrize("table, words", [
    (pa.table({"user": ["u"], "country": ["US"], "apps": ["a"], "clicked": ["1"]}),
     r"lacks configured column\(s\) \['price'\]"),
    (pa.table({"user": ["u"], "country": ["US"], "apps": ["a"], "price": [[1.0]],
               "clicked": ["1"]}), "'price' is list<.*double>, which does not fit a numeric"),
])
def test_parquet_schema_mismatch_is_refused(tmp_path, table, words):
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(wd_io.InputError, match=words):
        read_file(config_for("parquet"), tmp_path / "bad.parquet")


def test_tfrecord_input_and_a_missing_feature(tmp_path):
    def example(**features):
        feature = {}
        for name, value in features.items():
            if isinstance(value, float):
                feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
            else:
                values = value if isinstance(value, list) else [value]
                feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[v.encode() for v in values]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    path = str(tmp_path / "a.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        writer.write(example(user="u1", country="US", apps=["a", "b"], price=2.0, clicked="1"))
        writer.write(example(user="u2", apps=["a"], price=2.0, clicked="0"))  # no country
    batches, dead = read_file(config_for("tfrecord"), path)
    assert column(batches, "apps") == [[b"a", b"b"]]
    assert [(d.line, d.reason) for d in dead] == [(2, "missing_feature")]
    assert "country" in dead[0].detail


def test_dead_letter_json_keeps_the_raw_row_and_bounds_huge_rows():
    letter = wd_io.DeadLetter("f.csv", 3, "not_a_number", "column 'price': 'x'", "a" * 2_000_000)
    record = json.loads(letter.to_json())
    assert record["file"] == "f.csv" and record["line"] == 3
    assert record["raw"].startswith("a" * 100) and "2000000 chars" in record["raw"]


def test_hash_split_is_deterministic_and_near_the_fraction():
    keys = [f"user{i}".encode() for i in range(20000)]
    first, second = wd_io.hash_fraction(keys), wd_io.hash_fraction(keys)
    assert np.array_equal(first, second)
    assert abs((first < 0.1).mean() - 0.1) < 0.01
    # Repeated keys are hashed once each, unique ones directly: either way, the same rows.
    column = pa.array([b"u%d" % (i % 700) for i in range(5000)], pa.large_binary())
    expected = wd_io.hash_fraction(b"salt" + k for k in column.to_pylist())
    for repeated in (True, False):
        assert np.array_equal(wd_io._key_fraction(column, b"salt", repeated), expected)
    # The definition every split ever made rests on: crc32 of salt and key, over 2**32.
    assert np.array_equal(wd_io.hash_fraction(column.to_pylist(), b"salt"), expected)
    assert expected.tolist() == [zlib.crc32(b"salt" + k) / 2**32 for k in column.to_pylist()]


@pytest.mark.parametrize("float_type", [pa.float32(), pa.float64()])
def test_whole_row_holdout_keys_print_numbers_as_arrow_casts_them(float_type):
    """Whole-number floats take a faster way to their text; the text, and so the rows
    held out, must be exactly what casting the floats gives."""
    edges = [0.0, -0.0, 1.0, -1.0, 2.0**24, -(2.0**24), 2.0**24 + 2, 1e16, 1e20, 123456789.0,
             0.5, 2.5e-7, float("nan"), float("inf")]
    whole = list(np.arange(-70_000, 70_000, 7, dtype=np.float64))
    for values in (whole, whole + [-0.0], whole + [0.5], edges, [1e7, 1e6, 1e5, 120000.0]):
        flat = pa.array(values, float_type)
        plain = pc.cast(pc.cast(flat, pa.large_string()), pa.large_binary())
        assert wd_io._number_text(flat).equals(plain), values[-1]


def test_a_read_of_only_the_day_column_counts_every_row_whose_day_is_readable(tmp_path):
    """A "day" split finds its eval days from a read of the day column alone: the other
    fields are neither converted nor checked, so a row that the full read dead-letters
    (a bad number, a bad label) still counts its day."""
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "d1,US,a,1.5,1\nd2,DE,b,not-a-number,0\nd3,FR,c,2,maybe\n")
    batches, dead = read_file(config_for(), path)
    assert column(batches, "user") == [[b"d1"]] and len(dead) == 2
    batches, dead = read_file(wd_io.only_columns(config_for(), ["user"]), path)
    assert [b.schema.names for b in batches] == [["user"]] and not dead
    assert column(batches, "user") == [[b"d1"], [b"d2"], [b"d3"]]


@pytest.mark.parametrize("day_column, days", [
    ("user", ["d1", "d2", "d3", "d3", "d1"]),     # text days
    ("price", [101, 102, 103, 103, 101]),  # numeric days (days since some epoch)
])
def test_split_by_newest_day_in_a_pipeline(day_column, days):
    config = config_for()
    split = wd_io.SplitTrainEval(type(config.split)(method="day", day_column=day_column,
                                                    eval_days=1))
    schema = wd_io.arrow_schema(config)

    def batch(values):
        n = len(values)
        offsets = pa.array(np.arange(n + 1))
        arrays = []
        for f in schema:
            if f.name == day_column:
                flat = [str(v).encode() for v in values] if day_column == "user" else values
            else:
                flat = ([b"x"] * n if f.type.value_type == pa.large_binary()
                        else [0] * n)
            arrays.append(pa.LargeListArray.from_arrays(offsets, pa.array(flat, f.type.value_type)))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def day_of(row):
        return row[0].decode() if isinstance(row[0], bytes) else int(row[0])

    with TestPipeline() as p:
        train, evaluation = (p | beam.Create([batch(days[:3]), batch(days[3:])]) | split)
        rows = lambda pc, label: pc | label >> beam.FlatMap(
            lambda b: [day_of(v) for v in b.column(day_column).to_pylist()])
        assert_that(rows(train, "TrainDays"), equal_to([days[0], days[1], days[4]]),
                    label="Train")
        assert_that(rows(evaluation, "EvalDays"), equal_to([days[2], days[3]]), label="Eval")


def test_read_ahead_keeps_order_raises_in_the_consumer_and_stops_with_it():
    """Files are read a few batches ahead on a thread of their own: the batches arrive in
    order, a reader's error reaches the bundle's thread as itself, and a consumer that
    stops early stops the reader (closing its file) instead of leaving it blocked."""
    import threading

    assert list(wd_io.read_ahead(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise wd_io.InputError("a.csv: unreadable after line 7")

    got = []
    with pytest.raises(wd_io.InputError, match="a.csv: unreadable after line 7"):
        for item in wd_io.read_ahead(failing()):
            got.append(item)
    assert got == [1]

    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            closed.set()

    ahead = wd_io.read_ahead(endless())
    assert [next(ahead) for _ in range(3)] == [1, 2, 3]
    ahead.close()
    assert closed.wait(5)
    assert not any(t.name == "read-ahead" and t.is_alive() for t in threading.enumerate())
