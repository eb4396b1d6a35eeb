"""Every stage on Cloud Storage, against the local emulator (tests/gcs.py): the `widedeep`
commands a user runs, with input, work dir, model dir and serving dir all on gs://."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from tests.test_run import DAYS, tiny_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS_PER_DAY = 2000


def widedeep(*args, env, cwd, timeout=900):
    """`widedeep ARGS` as a user runs it; returns (exit code, what it logged)."""
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def no_local_gs_dir(*dirs):
    """A stage that used os/open on a gs:// path would have made a local `gs:` folder."""
    return [d for d in dirs if os.path.exists(os.path.join(d, "gs:"))]


def read_json(bucket, name):
    return json.loads(bucket.client().bucket(bucket.bucket).blob(name).download_as_bytes())


@pytest.fixture(scope="module")
def two_nights(gcs_server, tmp_path_factory):
    """Two nights of `widedeep nightly`, logs and work dir on GCS, run from a scratch cwd."""
    from tests import gcs as gcs_harness

    cwd = tmp_path_factory.mktemp("gcs-cwd")
    bucket = gcs_harness.Bucket(gcs_server, gcs_server.create_bucket(),
                                {**os.environ, **gcs_server.env, "PYTHONPATH": REPO})
    config = tiny_config_file(cwd / "appstore-tiny.toml")
    logs, work = bucket.url("logs"), bucket.url("work")
    started = time.monotonic()
    nights = []
    for index, day in enumerate(DAYS[:2]):
        code, log = widedeep("synth", "--out", logs, "--rows-per-day", str(ROWS_PER_DAY),
                             "--seed", "3", "--start-date", day, "--first-day-index",
                             str(index), "--shards", "2", env=bucket.env, cwd=cwd)
        assert code == 0, log
        nights.append(widedeep("nightly", "--config", config, "--input-template",
                               f"{logs}/day={{date}}/*.csv", "--work-dir", work,
                               env=bucket.env, cwd=cwd))
    seconds = time.monotonic() - started
    print(f"two nights on GCS: {seconds:.0f} s")
    return bucket, config, work, nights, str(cwd)


def test_two_nights_run_every_stage_on_gcs(two_nights):
    bucket, _, work, nights, cwd = two_nights
    for code, log in nights:
        assert code == 0, log[-3000:]
    first, second = (f"work/runs/day-{day}" for day in DAYS[:2])
    objects = set(bucket.list("work/"))
    for run in (first, second):
        for name in ("manifest.json", "report.html", "transform/stats.json",
                     "transform/transform_fn/saved_model.pb", "model/DONE",
                     "model/keras_model/model.json", "eval/metrics.json", "eval/gate.json"):
            assert f"{run}/{name}" in objects, name
    assert {"work/serving/1/saved_model.pb", "work/serving/2/saved_model.pb",
            "work/serving/2/assets.extra/tf_serving_warmup_requests"} <= objects
    # Nothing half-done is left behind, and the lock is released.
    assert not [o for o in objects if ".partial" in o or ".tmp-" in o or o == "work/.lock"]
    assert not no_local_gs_dir(cwd, REPO, os.getcwd())

    night2 = read_json(bucket, f"{second}/manifest.json")
    assert all(stage["outcome"] == "done" for stage in night2["stages"].values())
    train = night2["stages"]["train"]["result"]
    assert train["warm_start_from"] == f"{work}/runs/day-{DAYS[0]}/model"
    assert train["warm_start"]  # what was carried over, per variable
    assert night2["stages"]["evaluate"]["result"]["baseline_version"] == 1
    assert night2["serving_version"] == 2
    metadata = read_json(bucket, "work/serving/2/assets.extra/widedeep.json")
    assert metadata["model_dir"] == f"{work}/runs/day-{DAYS[1]}/model"


def test_history_and_nightly_see_the_runs_on_gcs(two_nights):
    bucket, config, work, _, cwd = two_nights
    code, log = widedeep("history", "--work-dir", work, env=bucket.env, cwd=cwd)
    assert code == 0, log
    assert f"day-{DAYS[0]}" in log and f"day-{DAYS[1]}" in log and "blessed v2" in log
    # Both days are done: a third call finds nothing new (it does not retrain a day).
    code, log = widedeep("nightly", "--config", config, "--input-template",
                         bucket.url("logs") + "/day={date}/*.csv", "--work-dir", work,
                         env=bucket.env, cwd=cwd)
    assert code == 0 and "nothing new to process" in log, log


def test_score_reads_and_writes_gcs(two_nights):
    bucket, _, work, _, cwd = two_nights
    out = bucket.url("ranked")
    code, log = widedeep("score", "--model", f"{work}/serving/2", "--input",
                         bucket.url(f"logs/day={DAYS[1]}/*.csv"), "--out", out, "--top-k", "3",
                         env=bucket.env, cwd=cwd)
    assert code == 0, log[-3000:]
    objects = bucket.list("ranked")
    assert "ranked/summary.json" in objects
    assert [o for o in objects if o.startswith("ranked/top_k-")]
    assert not [o for o in objects if ".partial" in o]
    summary = read_json(bucket, "ranked/summary.json")
    assert summary["rows_scored"] == ROWS_PER_DAY and summary["queries"] > 0
    assert not no_local_gs_dir(cwd, REPO)


def test_a_stale_partial_output_on_gcs_is_cleared_and_never_promoted(gcs, tmp_path):
    from pipeline import beam_job
    from transforms import paths

    out = gcs.url("job/out")
    stale = paths.join(out + ".partial", "train-00000-of-00009.tfrecord.gz")
    paths.write_bytes(stale, b"from an attempt that was killed")
    partial = beam_job.fresh_partial_dir(out)
    assert not paths.exists(stale)
    paths.write_text(paths.join(partial, "train-00000-of-00001.tfrecord.gz"), "new")
    with pytest.raises(FileNotFoundError, match="stats.json: missing"):
        paths.promote(partial, out, marker="stats.json")
    assert not paths.exists(out)
    paths.write_json(paths.join(partial, "stats.json"), {"rows": 1})
    paths.promote(partial, out, marker="stats.json")
    assert gcs.list("job/") == ["job/out/stats.json", "job/out/train-00000-of-00001.tfrecord.gz"]


def test_the_gcs_work_dir_lock_admits_one_run(gcs):
    from pipeline import lock

    work = gcs.url("work")
    with lock.work_dir_lock(work):
        holder = read_json(gcs, "work/.lock")
        assert holder["pid"] == os.getpid()
        with pytest.raises(lock.LockedError, match=f"process {os.getpid()}"):
            with lock.work_dir_lock(work):
                pass
    assert gcs.list("work/") == []
    # A lock left by a process of this host that is gone is taken over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    blob = gcs.client().bucket(gcs.bucket).blob("work/.lock")
    blob.upload_from_string(json.dumps({"pid": int(dead), "host": os.uname().nodename}))
    with lock.work_dir_lock(work):
        assert read_json(gcs, "work/.lock")["pid"] == os.getpid()
    # One held from another host is not: its process may be alive there.
    blob.upload_from_string(json.dumps({"pid": 1, "host": "another-host"}))
    with pytest.raises(lock.LockedError, match="gcloud storage rm"):
        with lock.work_dir_lock(work):
            pass


def test_train_keeps_the_whole_model_dir_on_gcs(gcs, transform_output, tmp_path):
    from trainer import train as trainer

    model_dir = gcs.url("model")
    params = dataclasses.replace(transform_output.config.train, max_steps=3)
    trainer.train(transform_output.config, transform_output.transform_dir, model_dir,
                  params=params, log=lambda line: None)
    objects = gcs.list("model/")
    assert {"model/DONE", "model/summary.json", "model/hparams.json",
            "model/keras_model/model.json"} <= set(objects)
    assert [o for o in objects if o.startswith("model/checkpoints/ckpt-")]
    assert not [o for o in objects if ".tmp-" in o]
    assert not no_local_gs_dir(os.getcwd(), REPO, str(tmp_path))


def test_dataflow_template_is_built_offline_and_staged(gcs, tmp_path):
    """DataflowRunner with --template_location builds and stages the job without the API
    (its endpoint here is a name that cannot resolve), then widedeep exits 0."""
    from transforms import synthetic

    synthetic.write_log(gcs.url("logs"), days=1, rows_per_day=500, shards=1)
    env = {**gcs.env, "PYTHONPATH": REPO}
    code, log = widedeep(
        "transform", "--config", os.path.join(REPO, "configs", "appstore.toml"),
        "--input", gcs.url("logs/day=*/*.csv"), "--work-dir", gcs.url("work"),
        "--runner", "DataflowRunner", "--project", "widedeep-test", "--region", "us-central1",
        "--temp_location", gcs.url("tmp"), "--staging_location", gcs.url("staging"),
        "--template_location", gcs.url("templates/transform"), "--setup_file", "./setup.py",
        "--dataflow_endpoint", "http://dataflow.invalid", env=env, cwd=REPO)
    assert code == 0, log[-3000:]
    assert f"Dataflow template written to {gcs.url('templates/transform')}" in log
    template = json.loads(gcs.client().bucket(gcs.bucket).blob("templates/transform")
                          .download_as_bytes())
    assert template["type"] == "JOB_TYPE_BATCH"
    staged = {name.rsplit("/", 1)[1]: name for name in gcs.list("staging/")}
    assert {"pipeline.pb", "workflow.tar.gz"} <= set(staged)
    assert not gcs.list("work/")  # nothing ran
