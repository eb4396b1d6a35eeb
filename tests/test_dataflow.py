"""What can be proven here about running on Dataflow: the package and the options."""

import os
import subprocess
import sys
import tarfile

from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions, StandardOptions

from pipeline import cli
from pipeline.transform_job import pipeline_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sdist_holds_every_module_and_config_the_workers_need(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True)
    (archive,) = tmp_path.glob("widedeep-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = {os.path.join(package, name)
              for package in ("pipeline", "transforms", "trainer", "configs")
              for name in os.listdir(os.path.join(REPO, package))
              if name.endswith((".py", ".toml"))}
    assert needed and needed <= names, sorted(needed - names)


def test_dataflow_options_given_on_the_command_line_reach_the_runner():
    argv = ["transform", "--config", "c.toml", "--input", "gs://b/in/*.csv", "--work-dir",
            "gs://b/work", "--runner", "DataflowRunner", "--project", "my-project",
            "--region", "europe-west1", "--temp_location", "gs://b/tmp",
            "--setup_file", "./setup.py", "--max_num_workers", "8"]
    args, beam_args = cli._parser().parse_known_args(argv)
    assert args.input == "gs://b/in/*.csv"
    options = pipeline_options(beam_args)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    google = options.view_as(GoogleCloudOptions)
    assert (google.project, google.region, google.temp_location) == (
        "my-project", "europe-west1", "gs://b/tmp")
    assert options.view_as(SetupOptions).setup_file == "./setup.py"
    assert options.get_all_options()["max_num_workers"] == 8


def test_the_direct_runner_is_the_default():
    assert pipeline_options([]).view_as(StandardOptions).runner == "DirectRunner"


def test_dataflow_refuses_local_paths_its_workers_cannot_see(tmp_path):
    import pytest

    from configs import shipped_config
    from pipeline import io as wd_io
    from pipeline.transform_job import run_transform
    from transforms.config import load_config

    args = ["--runner", "DataflowRunner", "--project", "p", "--region", "europe-west1",
            "--temp_location", "gs://b/tmp"]
    with pytest.raises(wd_io.InputError, match=r"input /data/\*\.csv.*use gs:// paths"):
        run_transform(load_config(shipped_config("appstore.toml")), "/data/*.csv",
                      "gs://b/work/transform", pipeline_args=args)
    assert not os.path.exists(os.path.join(os.getcwd(), "gs:"))
