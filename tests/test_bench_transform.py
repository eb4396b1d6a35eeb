"""The transform benchmark runs end to end on a tiny log and its reference agrees with the job."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "transform.py"


def test_smoke_run_writes_agreeing_figures_and_keeps_other_results(tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"train": {"ours_examples_per_second": 1.0}}))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--shards", "2", "--window-days", "3",
                           "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| in_process |" in done.stdout
    results = json.loads(out.read_text())
    assert results["train"] == {"ours_examples_per_second": 1.0}
    figures = results["transform"]
    assert figures["smoke"] is True
    assert set(figures["datasets"]) == {"appstore", "criteo_like"}
    for name, summary in figures["datasets"].items():
        assert [run["rows"] for run in summary["runs"]] == figures["sizes"], name
        for run in summary["runs"]:
            for key in ("generate_seconds", "ours_seconds", "reference_seconds",
                        "reference_rows_per_second", "ours_vs_reference",
                        "reference_examples_format_seconds"):
                assert run[key] > 0, (name, key)
            assert run["checks"]["rows_agree"] is True, name
            assert run["checks"]["vocab_agree"] is True, name
            assert run["checks"]["vocabularies"], name  # each config has vocabularies
            assert sum(run["reference"]["rows_out"].values()) == run["rows"], name
            # The reference also wrote every row of both splits in our output format.
            assert run["reference"]["examples_written"] == run["reference"]["rows_out"], name
        # The cost line goes through both runs.
        small, large = summary["runs"]
        per_row = summary["ours_seconds_per_million"] / 1e6
        assert abs(summary["ours_fixed_seconds"] + per_row * large["rows"]
                   - large["ours_seconds"]) < 0.05, name
        assert summary["goals"], name
    assert "| cost line (in_process) |" in done.stdout
    window = figures["window"]
    assert window["window_days"] == 3
    assert window["vocabularies_equal_full_analysis"] is True
    assert window["window_night_seconds"] > 0 and window["one_day_night_seconds"] > 0
