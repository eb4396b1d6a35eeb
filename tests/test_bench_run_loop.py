"""The whole-loop benchmark runs `widedeep run` on a tiny log and reports its stages."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "run_loop.py"


def test_smoke_run_times_every_stage_and_keeps_other_results(tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"serve": {"p99_ms": 1.0}}))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out),
                           "--work-dir", str(tmp_path / "work")],
                          capture_output=True, text=True, env=env, timeout=600)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| stage | seconds |" in done.stdout
    results = json.loads(out.read_text())
    assert results["serve"] == {"p99_ms": 1.0}
    loop = results["run_loop"]
    assert loop["smoke"] is True and loop["rows"] == 2000
    for stage in ("synth", "transform", "train", "export", "evaluate", "gate"):
        assert loop["stage_seconds"][stage] >= 0, stage
    assert loop["stage_seconds"]["train"] > 0
    assert loop["wall_seconds"] > sum(loop["stage_seconds"].values())
    # 2,000 rows may or may not pass the gate; the figures must say which.
    assert ("publish" in loop["stage_seconds"]) == loop["blessed"]
    assert loop["gate"].startswith("BLESSED" if loop["blessed"] else "REJECTED")
