"""How far one machine goes: the whole loop at growing row counts, per stage.

For each size, ``widedeep run --synth-rows N`` runs in a fresh work dir as its own process
(as cron starts it), while this script samples the resident memory of that process and its
children (the dry run's fresh process) four times a second from ``/proc`` and reads which
stage is running from the run's manifest. Per stage: wall time, rows per second, peak
resident memory (and the memory the process already held when the stage began, since the
stages share one process), and what the stage wrote to disk.

Training is capped at ``--train-steps`` steps from ``--cap-from`` rows on (so the larger
sizes measure the data stages, not hours of epochs); the table says where.

Printed: a Markdown table per size, one JSON line; merged into ``--out`` under "scale";
the plot (rows against seconds and against peak memory, log scales) goes to ``--plot``.

    python bench/scale.py [--sizes 200000,1000000,3000000,10000000] [--train-steps 2000]
                          [--cap-from 3000000] [--out bench/results.json]
                          [--plot bench/scale.png] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import common
from common import ROOT, merge_results
from pipeline.report import figure  # noqa: E402
from pipeline.run_dir import RunDir, WorkDir  # noqa: E402
from transforms import paths  # noqa: E402

BENCH_KEY = "scale"
STAGE_OUTPUTS = {"synth": "raw", "transform": "runs/scale/transform",
                 "train": "runs/scale/model", "export": "runs/scale/export",
                 "evaluate": "runs/scale/eval", "publish": "serving"}
ROW_STAGES = ("synth", "transform", "train", "evaluate")  # the stages whose work is rows
PAGE = os.sysconf("SC_PAGE_SIZE")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200000,1000000,3000000,10000000")
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "appstore.toml"))
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--cap-from", type=int, default=3_000_000)
    parser.add_argument("--out", default=common.RESULTS_FILE)
    parser.add_argument("--plot", default=os.path.join(ROOT, "bench", "scale.png"))
    parser.add_argument("--keep", help="keep each size's work dir under DIR")
    return parser.parse_args(argv)


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * PAGE  # rss, in pages
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


class StageSampler(threading.Thread):
    """Samples a process tree's memory, keyed by the stage its manifest says is running."""

    def __init__(self, pid: int, manifest_path: str, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.manifest_path, self.interval = pid, manifest_path, interval
        self.peak: dict[str, int] = {}
        self.at_start: dict[str, int] = {}
        self.done = threading.Event()

    def running_stage(self) -> str:
        try:
            with open(self.manifest_path) as f:
                stages = json.load(f).get("stages", {})
        except (OSError, ValueError):
            return "start-up" if not os.path.exists(self.manifest_path) else ""
        running = [name for name, s in stages.items() if s.get("outcome") == "running"]
        return running[-1] if running else ""

    def run(self) -> None:
        while not self.done.is_set():
            stage, rss = self.running_stage(), tree_rss_bytes(self.pid)
            if stage:
                self.at_start.setdefault(stage, rss)
                self.peak[stage] = max(self.peak.get(stage, 0), rss)
            self.done.wait(self.interval)


def capped_config(config_path: str, steps: int, folder: str) -> str:
    text = paths.read_text(config_path)
    text, found = re.subn(r"^\[train\]\n", f"[train]\nmax_steps = {steps}\n", text, flags=re.M)
    if not found:
        text += f"\n[train]\nmax_steps = {steps}\n"
    return paths.write_text(os.path.join(folder, "capped.toml"), text)


def disk_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def run_size(args, rows: int) -> dict:
    work_dir = (os.path.join(args.keep, f"rows-{rows}") if args.keep
                else tempfile.mkdtemp(prefix=f"bench-scale-{rows}-"))
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)
    capped = rows >= args.cap_from
    config = capped_config(args.config, args.train_steps, work_dir) if capped else args.config
    command = [sys.executable, "-m", "pipeline.cli", "run", "--config", config,
               "--work-dir", work_dir, "--synth-rows", str(rows), "--run-id", "scale"]
    common.log(f"{rows} rows: {' '.join(command[1:])}")
    run_dir = WorkDir(work_dir).run("scale")
    started = time.perf_counter()
    with open(os.path.join(work_dir, "run.log"), "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        sampler = StageSampler(process.pid, run_dir.path(RunDir.MANIFEST))
        sampler.start()
        code = process.wait()
        sampler.done.set()
        sampler.join()
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"bench: widedeep run failed at {rows} rows (exit {code}); see "
                         f"{work_dir}/run.log")
    manifest = run_dir.manifest()
    stages = {}
    for name, record in manifest["stages"].items():
        seconds = record.get("seconds") or 0.0
        output = os.path.join(work_dir, STAGE_OUTPUTS[name]) if name in STAGE_OUTPUTS else ""
        stages[name] = {
            "seconds": seconds,
            "rows_per_second": round(rows / seconds) if seconds and name in ROW_STAGES
            else None,
            # None: over before a sample (a fraction of a second)
            "peak_rss_gb": round(sampler.peak[name] / 2**30, 3) if name in sampler.peak
            else None,
            "rss_at_start_gb": round(sampler.at_start[name] / 2**30, 3)
            if name in sampler.at_start else None,
            "disk_mb": round(disk_bytes(output) / 2**20, 1) if output and os.path.exists(output)
            else None,
        }
    summary = manifest["stages"]["train"].get("result") or {}
    if not args.keep:
        shutil.rmtree(work_dir, ignore_errors=True)
    return {"rows": rows, "wall_seconds": round(wall, 1), "training_capped_at_steps":
            args.train_steps if capped else None, "train_steps": summary.get("steps"),
            "blessed": bool(manifest.get("blessed")), "stages": stages}


def print_table(result: dict) -> None:
    cap = (f", training capped at {result['training_capped_at_steps']} steps"
           if result["training_capped_at_steps"] else "")
    print(f"\n{result['rows']:,} rows: {result['wall_seconds']} s in all{cap}\n")
    print("| stage | seconds | rows/s | peak RSS (GB) | RSS at start (GB) | disk (MB) |")
    print("|---|---|---|---|---|---|")
    for name, s in result["stages"].items():
        print(f"| {name} | {s['seconds']:.1f} | {_cell(s['rows_per_second'])} | "
              f"{_cell(s['peak_rss_gb'])} | {_cell(s['rss_at_start_gb'])} | "
              f"{_cell(s['disk_mb'])} |")


def _cell(value) -> str:
    return "—" if value is None else f"{value:.2f}" if isinstance(value, float) else f"{value:,}"


def plot(results: list[dict], path: str) -> None:
    fig = figure(11, 4.5)
    seconds_ax, memory_ax = fig.subplots(1, 2)
    rows = [r["rows"] for r in results]
    for stage in results[-1]["stages"]:
        # Stages of well under a second (validate, gate) would only clutter the plot.
        if (all(stage in r["stages"] for r in results)
                and max(r["stages"][stage]["seconds"] for r in results) >= 0.5):
            seconds_ax.plot(rows, [max(r["stages"][stage]["seconds"], 0.1) for r in results],
                            marker="o", label=stage)
            memory_ax.plot(rows, [r["stages"][stage]["peak_rss_gb"] or float("nan")
                                  for r in results], marker="o", label=stage)
    for ax, label in ((seconds_ax, "seconds"), (memory_ax, "peak resident memory (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    seconds_ax.legend(fontsize=8)
    fig.suptitle(f"widedeep run per stage ({common.cpu_model()})")
    fig.savefig(path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for rows in sizes:
        results.append(run_size(args, rows))
        print_table(results[-1])
    figures = {"bench": BENCH_KEY, "cpu": common.cpu_model(), "cores": os.cpu_count(),
               "config": os.path.relpath(args.config, ROOT), "sizes": results}
    if len(results) > 1:
        plot(results, args.plot)
        figures["plot"] = os.path.relpath(args.plot, ROOT)
        common.log(f"plot → {args.plot}")
    print(json.dumps(figures), flush=True)
    merge_results(args.out, BENCH_KEY, figures)
    return figures


if __name__ == "__main__":
    main()
