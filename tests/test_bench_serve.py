"""The serving benchmark runs end to end on a tiny model and merges its figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "serve.py"


def test_smoke_run_reports_latency_and_scoring_and_keeps_other_results(transform_output,
                                                                       tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"transform": {"ours_rows_per_second": 1.0}}))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--transform-dir",
                           transform_output.transform_dir, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| p99 (ms) |" in done.stdout
    results = json.loads(out.read_text())
    assert results["transform"] == {"ours_rows_per_second": 1.0}
    figures = results["serve"]
    assert figures["smoke"] is True
    assert [r["threads"] for r in figures["latency"]] == [1, 2]
    for run in figures["latency"]:
        assert run["batch"] == 200 and run["calls"] == 50
        assert 0 < run["p50_ms"] <= run["p99_ms"]
        assert run["hidden_units"] == [16, 8]  # read from the export, not its config copy
    score = figures["score"]
    assert score["rows_scored"] == 2000 and score["queries"] > 0
    assert score["candidates_per_second"] > 0
    assert set(figures["goals"]) == {"p99 <= 10 ms, batch 200", ">= 20,000 candidates/s"}
