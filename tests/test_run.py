"""The whole loop end to end on tiny synthetic data: three nights, the last one from cron."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from configs import shipped_config
from pipeline import orchestrate
from transforms import synthetic
from transforms.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
ROWS_PER_DAY = 3000
# A shrunken model and a gate that blesses anything sane: a few thousand rows give noisy
# metrics, and these tests are about the nightly plumbing; test_gate checks the gate itself.
TINY_SECTIONS = """
[train]
hidden_units = [16, 8]
embedding_dim = 4
batch_size = 128
epochs = 2
checkpoint_every_steps = 20

[gate]
min_auc = 0.3
max_calibration_error = 10.0
max_auc_drop = 0.2
max_logloss_increase = 1.0
"""


def tiny_config_file(path):
    text = open(shipped_config("appstore.toml")).read()
    text = re.sub(r"\n\[train\]\n.*?(?=\n\[serving\])", TINY_SECTIONS, text, flags=re.S)
    path.write_text(text)
    return str(path)


def readme_crontab_command():
    """The command of the README's crontab line (after the five schedule fields)."""
    readme = open(os.path.join(REPO, "README.md")).read()
    block = readme.split("<!-- crontab -->", 1)[1].split("```", 2)[1]
    line = block.strip().splitlines()[0]
    return line.split(None, 5)[5]


def manifest(work_dir, run_id):
    with open(os.path.join(work_dir, "runs", run_id, "manifest.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def three_nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("nightly")
    config_path = tiny_config_file(root / "appstore-tiny.toml")
    config = load_config(config_path)
    logs, work_dir = root / "logs", str(root / "widedeep")
    template = str(logs / "day={date}" / "*.csv")
    codes = []
    for index, day in enumerate(DAYS):
        # Each night a new day of logs lands, then the nightly job runs.
        synthetic.write_log(str(logs), days=1, rows_per_day=ROWS_PER_DAY, seed=3,
                            start_date=day, first_day_index=index, shards=2)
        if index < 2:
            codes.append(orchestrate.nightly(config, work_dir=work_dir, input_template=template))
        else:
            codes.append(run_cron_line(config_path, template, work_dir, root))
    return config, work_dir, template, codes


def run_cron_line(config_path, template, work_dir, root):
    """The README's crontab line, as cron runs it: a bare environment, only PATH and HOME."""
    widedeep = os.path.join(REPO, ".venv", "bin", "widedeep")
    if not os.path.exists(widedeep):
        pytest.skip(f"{widedeep} missing: the crontab line needs the repo's venv (make install)")
    command = readme_crontab_command()
    command = command.replace("/path/to/widedeep/configs/appstore.toml", config_path)
    command = command.replace("/path/to/widedeep", REPO)
    command = command.replace("'/data/logs/day={date}/*.csv'", shlex.quote(template))
    command = command.replace("/data/widedeep", work_dir)
    assert "/path/to" not in command and "/data/" not in command, command
    done = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"HOME={root}", "sh", "-c",
                           command], cwd="/", timeout=900)
    return done.returncode


def test_every_night_succeeds_and_the_cron_line_works(three_nights):
    _, work_dir, _, codes = three_nights
    assert codes == [0, 0, 0]
    log = open(os.path.join(work_dir, "nightly.log")).read()
    assert f"run day-{DAYS[2]} done" in log


def test_first_night_blesses_version_1_and_records_every_stage(three_nights):
    _, work_dir, _, _ = three_nights
    record = manifest(work_dir, f"day-{DAYS[0]}")
    assert list(record["stages"]) == ["transform", "validate", "train", "export", "evaluate",
                                      "gate", "publish"]
    assert all(stage["outcome"] == "done" for stage in record["stages"].values())
    assert record["blessed"] is True and record["serving_version"] == 1
    assert record["gate"]["reason"].startswith("first model")
    assert record["stages"]["train"]["result"]["warm_start_from"] is None
    assert record["stages"]["transform"]["result"]["rows_in"] == ROWS_PER_DAY
    assert record["inputs"]["input"].endswith(f"day={DAYS[0]}/*.csv")
    assert os.path.exists(os.path.join(work_dir, "serving", "1", "saved_model.pb"))
    # TF Serving's warmup file ships in the version, and the dry run replayed it.
    assert os.path.exists(os.path.join(work_dir, "serving", "1", "assets.extra",
                                       "tf_serving_warmup_requests"))
    assert "warmup requests" in record["stages"]["publish"]["result"]["dry_run"]
    with open(os.path.join(work_dir, "serving", "1", "assets.extra", "widedeep.json")) as f:
        metadata = json.load(f)  # found again in a copied or moved work dir
    assert metadata["model_dir_in_work_dir"] == f"runs/day-{DAYS[0]}/model"
    # Its data became the schema later nights are checked against.
    with open(os.path.join(work_dir, "schema.json")) as f:
        assert json.load(f)["inferred_from"] == f"run day-{DAYS[0]}"


def test_later_nights_data_is_checked_against_the_blessed_run_and_passes(three_nights):
    _, work_dir, _, _ = three_nights
    for before, day in zip(DAYS, DAYS[1:]):
        with open(os.path.join(work_dir, "runs", f"day-{day}", "validation.json")) as f:
            record = json.load(f)
        assert record["blessed_run"] == f"day-{before}" and record["schema"]
        assert record["drift"]["app_installs"]["value"] < 0.3
        assert record["volume"]["ratio"] == 1.0 and record["anomalies"] == []


def test_each_night_warm_starts_from_the_model_blessed_the_night_before(three_nights):
    _, work_dir, _, _ = three_nights
    for before, day in zip(DAYS, DAYS[1:]):
        previous, record = manifest(work_dir, f"day-{before}"), manifest(work_dir, f"day-{day}")
        assert previous["blessed"], previous["gate"]
        train = record["stages"]["train"]["result"]
        assert train["warm_start_from"] == os.path.join(work_dir, "runs", f"day-{before}", "model")
        # New apps launch every day: the impression_app vocabulary was remapped by token.
        remap = train["warm_start"]["vocabularies"]["vocab_impression_app"]
        assert remap["remapped"] > 0 and remap["new"] > 0, remap
        assert record["stages"]["evaluate"]["result"]["baseline_version"] == previous["serving_version"]
        assert "baseline" in record["gate"]["reason"]
    assert manifest(work_dir, f"day-{DAYS[2]}")["serving_version"] == 3


def test_nightly_with_nothing_new_does_nothing(three_nights):
    config, work_dir, template, _ = three_nights
    runs_before = sorted(os.listdir(os.path.join(work_dir, "runs")))
    assert orchestrate.nightly(config, work_dir=work_dir, input_template=template) == 0
    assert sorted(os.listdir(os.path.join(work_dir, "runs"))) == runs_before


def test_rerunning_a_finished_run_redoes_nothing(three_nights):
    config, work_dir, template, _ = three_nights
    run_id = f"day-{DAYS[1]}"
    before = manifest(work_dir, run_id)["stages"]
    assert orchestrate.nightly(config, work_dir=work_dir, input_template=template,
                               date=DAYS[1]) == 0
    after = manifest(work_dir, run_id)["stages"]
    assert {k: v["ended"] for k, v in after.items()} == {k: v["ended"] for k, v in before.items()}


def test_a_second_run_on_a_locked_work_dir_exits_at_once(three_nights):
    config, work_dir, template, _ = three_nights
    # Another process holds the lock (a run in progress), through the real lock.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pipeline import lock\n"
         "with lock.work_dir_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(60)",
         work_dir], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert orchestrate.nightly(config, work_dir=work_dir, input_template=template,
                                   date=DAYS[0]) == orchestrate.EXIT_LOCKED
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: the kernel released its lock, whatever its file still says.
    assert os.path.exists(os.path.join(work_dir, ".lock"))
    with orchestrate.work_dir_lock(work_dir):
        with open(os.path.join(work_dir, ".lock")) as f:
            assert json.load(f)["pid"] == os.getpid()
    assert not os.path.exists(os.path.join(work_dir, ".lock"))


def test_a_lock_file_naming_a_live_unrelated_process_does_not_block(tmp_path):
    """After a reboot pids are reused: a pid in a leftover lock file proves nothing."""
    (tmp_path / ".lock").write_text(str(os.getppid()))
    with orchestrate.work_dir_lock(str(tmp_path)):
        pass


def test_input_template_days_are_found_from_the_paths(tmp_path):
    for day in ("2026-01-02", "2026-01-10"):
        (tmp_path / f"day={day}").mkdir()
        (tmp_path / f"day={day}" / "part-0.csv").write_text("x")
    (tmp_path / "day=junk").mkdir()
    (tmp_path / "day=junk" / "part-0.csv").write_text("x")
    assert orchestrate.available_days(str(tmp_path / "day={date}" / "*.csv")) == [
        "2026-01-02", "2026-01-10"]


def test_a_broken_night_stops_before_training_and_serving_is_untouched(three_nights, tmp_path):
    """A unit change upstream (installs in thousandths); then a person accepts it."""
    config, work_dir, _, _ = three_nights
    work_copy, logs = str(tmp_path / "widedeep"), tmp_path / "logs"
    shutil.copytree(work_dir, work_copy)
    day = "2026-03-04"
    written = synthetic.write_log(str(logs), days=1, rows_per_day=ROWS_PER_DAY, seed=3,
                                  start_date=day, first_day_index=3, shards=1)
    table = pacsv.read_csv(written[0])
    installs = table.column("app_installs").to_numpy() * 1000
    pacsv.write_csv(table.set_column(table.schema.get_field_index("app_installs"),
                                     "app_installs", pa.array(installs)), written[0],
                   pacsv.WriteOptions(quoting_style="none"))
    template = str(logs / "day={date}" / "*.csv")

    code = orchestrate.nightly(config, work_dir=work_copy, input_template=template)

    assert code == orchestrate.EXIT_ANOMALIES
    record = manifest(work_copy, f"day-{day}")
    assert record["stages"]["validate"]["outcome"] == "anomalies"
    assert "train" not in record["stages"] and record["anomalies"] == ["drift:app_installs"]
    assert sorted(os.listdir(os.path.join(work_copy, "serving"))) == ["1", "2", "3"]
    report = open(os.path.join(work_copy, "runs", f"day-{day}", "report.html")).read()
    assert "drift:app_installs" in report and "Jensen-Shannon" in report
    assert "data anomalies" in orchestrate.format_history(orchestrate.history(work_copy))
    # Cron does not retry a stopped day; a person accepts the change for that day.
    assert orchestrate.nightly(config, work_dir=work_copy, input_template=template) == 0
    assert "train" not in manifest(work_copy, f"day-{day}")["stages"]
    assert orchestrate.nightly(config, work_dir=work_copy, input_template=template, date=day,
                               allow_anomalies=["drift:app_installs"]) == 0
    record = manifest(work_copy, f"day-{day}")
    assert record["stages"]["train"]["outcome"] == "done" and "anomalies" not in record
