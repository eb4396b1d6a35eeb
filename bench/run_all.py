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


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        value = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def _ratio(ours, reference) -> str:
    return f"{ours / reference:.2f}x" if ours and reference else "—"


def summary_table(results: dict) -> str:
    """The headline figures, ours next to the reference, one row each (the whole results
    file holds everything else)."""
    rows = []
    for name, t in ((results.get("transform") or {}).get("datasets") or {}).items():
        run = t["runs"][-1]
        ours_rate = run["rows"] / run["ours_seconds"]
        goals = "; ".join(f"{k}: {v}" for k, v in t.get("goals", {}).items())
        rows.append((f"transform, {name}, {run['rows']:,} rows (rows/s; fixed + per 1M s)",
                     f"{_fmt(ours_rate)}; {t['ours_fixed_seconds']:.1f} + "
                     f"{t['ours_seconds_per_million']:.1f}",
                     f"pyarrow/numpy {_fmt(run['reference_rows_per_second'])}; "
                     f"{t['reference_fixed_seconds']:.1f} + "
                     f"{t['reference_seconds_per_million']:.1f}",
                     _ratio(ours_rate, run["reference_rows_per_second"]), goals))
        if "reference_examples_format_seconds" in run:
            rows.append((f"transform, {name}, {run['rows']:,} rows, the reference writing "
                         "our output (gzip TFRecords of tf.Examples) (s)",
                         _fmt(run["ours_seconds"]),
                         f"pyarrow/numpy + tfx-bsl {_fmt(run['reference_examples_format_seconds'])}",
                         _ratio(run["ours_seconds"], run["reference_examples_format_seconds"]),
                         ""))
    t = results.get("train")
    if t:
        ratio = t.get("ours_vs_torch")
        rows.append(("training, default model, batch 512 (examples/s)",
                     _fmt(t.get("ours_examples_per_second")),
                     f"PyTorch {_fmt(t.get('torch_examples_per_second'))}",
                     _ratio(t.get("ours_examples_per_second"), t.get("torch_examples_per_second")),
                     "≥ 1.0x PyTorch: " + ("ok" if ratio and ratio >= 1 else
                                                        "not met" if ratio else "no torch")))
        rows.append(("training, whole train() incl. tracing/checkpoints (examples/s)",
                     _fmt(t.get("ours_train_examples_per_second")), "", "", ""))
    t = results.get("serve")
    if t:
        for run in t.get("latency", []):
            rows.append((f"serving p50 / p99, batch 200, {run['threads']} thread(s) (ms)",
                         f"{_fmt(run['p50_ms'])} / {_fmt(run['p99_ms'])}",
                         "paper: 31 (1 thread), 14 (4 threads)", "", "p99 ≤ 10 ms"))
        score = t.get("score") or {}
        rows.append(("batch scoring, widedeep score (candidates/s)",
                     _fmt(score.get("candidates_per_second")), "", "", "≥ 20,000/s"))
    t = results.get("run_loop")
    if t:
        stages = ", ".join(f"{k} {v:g}" for k, v in t.get("stage_seconds", {}).items())
        rows.append((f"widedeep run, {t.get('rows'):,} synthetic rows (s)",
                     _fmt(t.get("wall_seconds")), "", "", f"{t.get('goal')}; stages: {stages}"))
    lines = ["| figure | ours | reference | ours / reference | goal |",
             "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
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
        summary = summary_table(results)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(summary + "\n\n## Every figure\n\n" + markdown_table(results) + "\n")
        print(summary)
        print(f"bench: every figure in {args.out} and {os.path.splitext(args.out)[0]}.md")
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
