"""bench/train.py in smoke mode, so the benchmark cannot rot (torch half skipped without torch)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_benchmark_smoke(tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"transform": {"kept": True}}))
    done = subprocess.run([sys.executable, os.path.join(REPO, "bench", "train.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["transform"] == {"kept": True}
    assert results["train"]["ours_examples_per_second"] > 0
    if results["train"]["torch"] is None:
        assert results["train"]["torch_note"]
