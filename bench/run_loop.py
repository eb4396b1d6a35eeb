"""The whole loop's wall time: `widedeep run` (what `make run` calls) per stage, from its manifest.

Runs ``widedeep run --config C --work-dir W --synth-rows N`` in a fresh work dir, as a
separate process the way a user or cron starts it (interpreter start-up and imports
included), then reads ``W/runs/<run_id>/manifest.json``: each stage's seconds (synth,
transform, train, export, evaluate, gate, publish) and the run's outcome. The install that
`make run` does first on a fresh clone is not timed here (it is a one-off, and mostly
download time).

Printed: a Markdown table and one JSON line, merged into ``--out`` under "run_loop".

    python bench/run_loop.py [--rows 200000] [--config TOML] [--work-dir DIR]
                             [--out bench/results.json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common
from common import ROOT, merge_results
from pipeline.run_dir import WorkDir  # noqa: E402

DEFAULT_OUT = common.RESULTS_FILE
BENCH_KEY = "run_loop"
GOAL_SECONDS = 600
SMOKE_ROWS = 2000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "appstore.toml"))
    parser.add_argument("--rows", type=int, default=200_000,
                        help="synthetic rows (default: make run's 200000)")
    parser.add_argument("--work-dir", default=None, help="keep the run here (default: a "
                        "temporary directory, removed afterwards)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_ROWS} rows")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    rows = SMOKE_ROWS if args.smoke else args.rows
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with common.work_dir(args.work_dir, "bench-run-loop-") as work_dir:
        command = [sys.executable, "-m", "pipeline.cli", "run", "--config", args.config,
                   "--work-dir", work_dir, "--synth-rows", str(rows)]
        common.log(" ".join(command[1:]))
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env)
        wall = time.perf_counter() - started
        runs = WorkDir(work_dir).runs()
        if done.returncode != 0 or not runs:
            raise SystemExit(f"bench: widedeep run failed (exit {done.returncode}); see above")
        manifest = runs[-1].manifest()

    stages = {name: stage.get("seconds") for name, stage in manifest["stages"].items()}
    result = {"bench": BENCH_KEY, "smoke": args.smoke, "rows": rows,
              "wall_seconds": round(wall, 1), "stage_seconds": stages,
              "blessed": bool(manifest.get("blessed")),
              "gate": (f"{'BLESSED' if manifest['gate'].get('blessed') else 'REJECTED'}: "
                       f"{manifest['gate'].get('reason')}") if manifest.get("gate") else None,
              "serving_version": manifest.get("serving_version"),
              "goal": f"whole loop <= {GOAL_SECONDS} s: "
                      f"{'ok' if wall <= GOAL_SECONDS else 'not met'} ({wall:.0f} s)"}
    print("\n| stage | seconds |\n|---|---|")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds if seconds is not None else '—'} |")
    print(f"| **whole `widedeep run` (process wall time)** | **{wall:.1f}** |\n")
    common.log(f"gate: {result['gate']}")
    common.log(result["goal"])
    print(json.dumps(result), flush=True)
    merge_results(args.out, BENCH_KEY, result)
    return result


if __name__ == "__main__":
    main()
