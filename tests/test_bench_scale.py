"""The scale benchmark's own parts: the memory of a process tree, the capped config."""

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import scale  # noqa: E402


def test_tree_memory_counts_the_children_of_a_process():
    # A parent holding little, its child holding 200 MB.
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', "
            "'x = bytearray(200 * 2**20); import time; time.sleep(30)'])\n"
            "time.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 20
        while time.time() < deadline and scale.tree_rss_bytes(parent.pid) < 200 * 2**20:
            time.sleep(0.2)
        assert scale.tree_rss_bytes(parent.pid) >= 200 * 2**20
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)])
        parent.kill()
        parent.wait()


def test_capped_config_limits_training_and_keeps_the_rest(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[label]\ncolumn = \"y\"\n\n[train]\nepochs = 3\n")

    text = Path(scale.capped_config(str(config), 2000, str(tmp_path))).read_text()

    assert "[train]\nmax_steps = 2000\nepochs = 3\n" in text
    assert text.startswith("[label]")
