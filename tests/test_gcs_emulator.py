"""The gs:// test harness (tests/gcs.py): TensorFlow and Beam in this process, and a subprocess,
all see one object store on 127.0.0.1 through the `gcs` fixture."""

import subprocess
import sys

import pytest
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems

gfile = tf.io.gfile


def test_tf_beam_and_a_subprocess_share_the_bucket(gcs):
    root = gcs.url("harness")
    gfile.makedirs(f"{root}/nested/deeper")
    with gfile.GFile(f"{root}/nested/a.txt", "w") as f:
        f.write("from tensorflow")
    with gfile.GFile(f"{root}/nested/b.txt", "w") as f:
        f.write("second")

    assert gfile.GFile(f"{root}/nested/a.txt").read() == "from tensorflow"
    assert sorted(gfile.glob(f"{root}/nested/*.txt")) == [f"{root}/nested/a.txt",
                                                          f"{root}/nested/b.txt"]
    assert gfile.isdir(f"{root}/nested/deeper")
    assert "harness/nested/a.txt" in gcs.list("harness/")

    # Beam (google-cloud-storage) sees what TensorFlow wrote, and TensorFlow what Beam writes.
    [match] = FileSystems.match([f"{root}/nested/*.txt"])
    assert sorted(m.path for m in match.metadata_list) == [f"{root}/nested/a.txt",
                                                           f"{root}/nested/b.txt"]
    with FileSystems.open(f"{root}/nested/a.txt") as f:
        assert f.read() == b"from tensorflow"
    with FileSystems.create(f"{root}/from_beam.txt") as f:
        f.write(b"from beam")
    assert gfile.GFile(f"{root}/from_beam.txt").read() == "from beam"

    # A separate process, given only gcs.env.
    code = ("import sys, tensorflow as tf; "
            "sys.stdout.write(tf.io.gfile.GFile(sys.argv[1]).read())")
    done = subprocess.run([sys.executable, "-c", code, f"{root}/nested/a.txt"], env=gcs.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "from tensorflow"

    gfile.rmtree(f"{root}/nested")
    assert not gfile.exists(f"{root}/nested/a.txt")
    assert gcs.list("harness/nested") == []
    # makedirs left the "harness/" marker object behind, as it does on real GCS.
    assert gcs.list() == ["harness/", "harness/from_beam.txt"]


def test_gzip_tfrecords_round_trip(gcs):
    path = gcs.url("records/part-00000.tfrecord.gz")
    records = [f"record {i}".encode() * (i + 1) for i in range(200)]
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for r in records:
            writer.write(r)
    assert gcs.list("records/") == ["records/part-00000.tfrecord.gz"]
    # Really gzip on the store, not plain records under a .gz name.
    assert gfile.GFile(path, "rb").read(2) == b"\x1f\x8b"
    read = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
    assert read == records


def test_copy_rename_and_walk_a_directory(gcs):
    root = gcs.url("tree")
    gfile.makedirs(f"{root}/old/sub")
    for name in ("old/a.txt", "old/sub/b.txt"):
        with gfile.GFile(f"{root}/{name}", "w") as f:
            f.write(name)
    gfile.copy(f"{root}/old/a.txt", f"{root}/old/sub/b.txt", overwrite=True)
    # TF asks for the bucket's storageLayout before a directory rename (an emulator fix).
    gfile.rename(f"{root}/old", f"{root}/new")
    assert gcs.list("tree/") == ["tree/", "tree/new/", "tree/new/a.txt", "tree/new/sub/",
                                 "tree/new/sub/b.txt"]
    assert gfile.GFile(f"{root}/new/sub/b.txt").read() == "old/a.txt"
    walked = {top.rstrip("/"): sorted(files) for top, _, files in gfile.walk(f"{root}/new")}
    assert walked == {f"{root}/new": ["a.txt"], f"{root}/new/sub": ["b.txt"]}


def test_generation_preconditions(gcs):
    # The emulator ignored them (an emulator fix): GCS answers 412 when one fails.
    from google.api_core.exceptions import PreconditionFailed

    bucket = gcs.client().bucket(gcs.bucket)
    bucket.blob("marker").upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        bucket.blob("marker").upload_from_string(b"second", if_generation_match=0)
    generation = bucket.get_blob("marker").generation
    with pytest.raises(PreconditionFailed):
        bucket.blob("marker").delete(if_generation_match=generation + 1)
    assert bucket.blob("marker").download_as_bytes() == b"first"
    bucket.blob("marker").delete(if_generation_match=generation)
    assert gcs.list() == []
