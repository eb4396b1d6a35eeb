"""`make bench`: every benchmark at its default size, then one table of all the figures.

Each script measures ours and its reference side by side in the same run (the machine is
noisy; only ratios measured together mean much) and merges its figures into
bench/results.json under its own key. This runs them in turn and prints that file as a
Markdown table. `--smoke` runs them all at tiny sizes (what the tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The paper's Table 1 is `make paper-table` (bench/paper_table.py): a quality result, not a
# speed figure, and 15 minutes on its own.
SCRIPTS = ("transform.py", "train.py", "serve.py", "run_loop.py")


def flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        out[prefix] = value
    return out


def markdown_table(results: dict) -> str:
    lines = ["| benchmark | figure | value |", "|---|---|---|"]
    for name, figures in results.items():
        for key, value in flatten("", figures, {}).items():
            if isinstance(value, float):
                value = f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
            lines.append(f"| {name} | {key} | {value} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args(argv)
    failed = []
    for script in SCRIPTS:
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            print(f"bench: {script} not present, skipped", flush=True)
            continue
        started = time.time()
        print(f"bench: {script} ...", flush=True)
        command = [sys.executable, path, "--out", args.out] + (["--smoke"] if args.smoke else [])
        if subprocess.run(command).returncode != 0:
            failed.append(script)
        print(f"bench: {script} took {time.time() - started:.0f}s", flush=True)
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
        table = markdown_table(results)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(table + "\n")
        print(table)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
