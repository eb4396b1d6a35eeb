"""Malformed input: every bad row is dead-lettered with a reason or the input is refused
with a message naming the file; good rows are all kept (rows in = rows out + dead)."""

import gzip
import tomllib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import io as wd_io
from transforms.config import parse_config
from tests.test_config import MINIMAL
from tests.test_io import HEADER, column, config_for, read_file

GOOD_ROWS = ["u1,US,a;b,1.5,1", "u2,DE,,2,0", "u3,FR,c,3,0"]
BAD_ROWS = {
    "wrong field count": ("u9,US,a,1", "wrong_field_count"),
    "number that does not parse": ("u9,US,a,cheap,1", "not_a_number"),
    "NaN": ("u9,US,a,nan,1", "not_finite"),
    "+inf": ("u9,US,a,inf,1", "not_finite"),
    "-inf": ("u9,US,a,-inf,1", "not_finite"),
    "empty label": ("u9,US,a,3,", "empty_label"),
    "label outside the configured values": ("u9,US,a,3,maybe", "unknown_label"),
    "a field of a megabyte": ("u9," + "X" * 1_000_000 + ",a,3,1", "field_too_long"),
    # float() takes these; a CSV user does not mean them as numbers (nor does Arrow).
    "digits grouped with underscores": ("u9,US,a,1_000,1", "not_a_number"),
    "Arabic-Indic digits": ("u9,US,a,\u0661\u0662,1", "not_a_number"),
    "full-width digits": ("u9,US,a,\uff11\uff12,1", "not_a_number"),
    "Infinity spelled out": ("u9,US,a,Infinity,1", "not_finite"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_dead_lettered_and_good_rows_kept(tmp_path, case):
    bad, reason = BAD_ROWS[case]
    lines = GOOD_ROWS[:2] + [bad] + GOOD_ROWS[2:]
    path = tmp_path / "in.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n")
    batches, dead = read_file(config_for(), path)
    rows_out = sum(b.num_rows for b in batches)
    assert rows_out + len(dead) == len(lines)
    assert rows_out == len(GOOD_ROWS)
    assert [(d.reason, d.line) for d in dead] == [(reason, 4)]
    assert dead[0].file == str(path)


def test_non_utf8_bytes_are_dead_lettered(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes((HEADER + GOOD_ROWS[0] + "\n").encode() + b"u9,\xe9t\xe9,a,3,1\n"
                     + (GOOD_ROWS[1] + "\n").encode())
    batches, dead = read_file(config_for(), path)
    assert sum(b.num_rows for b in batches) == 2
    assert [d.reason for d in dead] == ["bad_encoding"]
    assert "\\xe9" in dead[0].raw  # the raw bytes are kept, escaped, not lost


@pytest.mark.parametrize("content, message", [
    (b"", "empty file, expected a header line"),
    (b"user,country,apps,price\nu1,US,a,1\n", r"missing configured column\(s\) \['clicked'\]"),
    (b"user\tcountry\tapps\tprice\tclicked\n", "is input.delimiter"),
    (b"user,country,apps,price,clicked,country\nu1,US,a,1,1,DE\n",
     r"names column\(s\) \['country'\] more than once"),
])
def test_unusable_files_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(wd_io.InputError, match=message) as error:
        read_file(config_for(), path)
    assert str(path) in str(error.value)


def test_header_only_file_gives_no_rows_and_no_error(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(HEADER)
    assert read_file(config_for(), path) == ([], [])


def test_missing_path_and_empty_glob_are_refused(tmp_path):
    for pattern in (str(tmp_path / "absent.csv"), str(tmp_path / "*.nothing")):
        with pytest.raises(wd_io.InputError, match="no files match"):
            wd_io.match_input(pattern)


def test_truncated_gzip_is_refused(tmp_path):
    data = gzip.compress((HEADER + (GOOD_ROWS[0] + "\n") * 20000).encode())
    path = tmp_path / "in.csv.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(wd_io.InputError, match="truncated"):
        read_file(config_for(), path)


@pytest.mark.parametrize("columns, message", [
    ({"user": ["u"], "country": ["US"], "apps": ["a"], "clicked": ["1"]}, "lacks"),
    ({"user": ["u"], "country": ["US"], "apps": ["a"], "price": ["cheap"], "clicked": ["1"]},
     "does not fit a numeric column"),
])
def test_parquet_with_a_missing_or_mistyped_column_is_refused(tmp_path, columns, message):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(wd_io.InputError, match=message):
        read_file(config_for("parquet"), path)


def test_config_whose_columns_do_not_match_the_data_is_refused(tmp_path):
    data = tomllib.loads(MINIMAL)
    data["columns"]["os"] = {"kind": "categorical"}
    config = parse_config(data, "more-columns.toml")
    path = tmp_path / "in.csv"
    path.write_text(HEADER + GOOD_ROWS[0] + "\n")
    with pytest.raises(wd_io.InputError, match=r"more-columns.toml.*missing configured column\(s\) \['os'\]"):
        read_file(config, path)


def read_rows(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    batches, dead = read_file(config_for(), path)
    return batches, dead


def test_fast_and_slow_paths_read_the_same_rows_the_same_way(tmp_path):
    """A chunk with one bad row is read row by row; its good rows must come out exactly as
    the column-wise fast path gives them (a whitespace-only token, odd number forms)."""
    good = ["u1,US,a; ;b,+.5e-3,1", "u2,DE, ; c ;,5.,0", "u3,FR,;;,-0,0", "u4,US,d, 12 ,1"]
    fast, _ = read_rows(tmp_path, "clean.csv", good)
    slow, dead = read_rows(tmp_path, "one-bad.csv", good + ["u9,US,a,cheap,1"])
    assert len(dead) == 1
    for name in ("user", "country", "apps", "price", "clicked"):
        assert column(slow, name) == column(fast, name), name
    assert column(fast, "apps") == [[b"a", b"b"], [b"c"], [], [b"d"]]


@pytest.mark.parametrize("header", [True, False])
def test_a_utf8_byte_order_mark_before_the_first_line_is_not_data(tmp_path, header):
    """Excel's "CSV UTF-8" starts the file with EF BB BF."""
    path = tmp_path / "excel.csv"
    first = HEADER if header else ""
    path.write_bytes(b"\xef\xbb\xbf" + (first + "u1,US,a,1.5,1\nu2,DE,b,2,0\n").encode())
    keys = {} if header else {"header": False,
                               "columns": ["user", "country", "apps", "price", "clicked"]}
    batches, dead = read_file(config_for(**keys), path)
    assert dead == []
    assert column(batches, "user") == [[b"u1"], [b"u2"]]
    wd_io.check_headers([str(path)], config_for(**keys))  # the up-front check agrees
