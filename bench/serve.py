"""Serving latency of the exported model and candidates/s of batch scoring (`widedeep score`).

The paper's setting (Cheng et al. 2016, section 4.3 and Table 2): one request scores a batch
of 200 candidate apps for one user and context; 31 ms on 1 thread, 14 ms with 4 threads
(4 batches of 50 in parallel). Here:

- **latency**: the export's ``serving_default`` signature (serialized raw tf.Examples in,
  probabilities out: parse, TFT transform, model), called in-process on a batch of 200
  candidates, ``--calls`` times after a warm-up; p50 and p99. TensorFlow's thread pools are
  sized once, before it runs its first op, so each ``--threads`` setting runs in its own
  subprocess (intra- and inter-op threads both set to it).
- **batch scoring**: ``run_score`` (the Beam job behind ``widedeep score``) on
  ``--score-rows`` candidate rows, ``--batch`` per query, top 10 per query; candidates/s
  over the whole job (pipeline start, model load, read, score, rank, write).

The model is the config's default size (``[train]``: 1024-512-256, 32-d embeddings), trained
for ``--steps`` on ``--rows`` synthetic rows, or ``--model DIR``, an existing export of the
app-store config. Candidates are synthetic: users with their context from a day the model
did not train on, each crossed with ``--batch`` distinct apps of that day's catalogue.

Prints a Markdown table and one JSON line; merges the figures into ``--out`` under "serve".

    python bench/serve.py [--model DIR | --rows 50000 --steps 300] [--calls 1000]
                          [--threads 1,2] [--score-rows 200000] [--out bench/results.json]
                          [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

import common  # noqa: E402  (first: the Keras mode, the repository on sys.path)
from transforms import synthetic  # noqa: E402

ROOT = Path(common.ROOT)
BENCH_KEY = "serve"
PAPER_MS = {"1 thread, batch 200": 31, "4 threads, 4 x 50": 14}
GOAL_P99_MS = 10.0
GOAL_CANDIDATES_PER_SECOND = 20_000
REQUESTS = 20          # distinct requests (users) the latency calls cycle through
CANDIDATE_DAY = 1      # the model trains on day 0; candidates come from the next day


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None,
                        help="feature config (default: the shipped appstore.toml)")
    parser.add_argument("--model", default=None,
                        help="an existing serving export of the app-store config; without "
                             "it one is trained")
    parser.add_argument("--save-model", default=None,
                        help="write the trained export here (for later runs with --model)")
    parser.add_argument("--transform-dir", default=None,
                        help="train on this transform output instead of making one")
    parser.add_argument("--rows", type=int, default=50_000, help="synthetic training rows")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--batch", type=int, default=200, help="candidates per request/query")
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per setting")
    parser.add_argument("--warmup-calls", type=int, default=50)
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated TF thread counts, one subprocess each")
    parser.add_argument("--score-rows", type=int, default=200_000,
                        help="candidate rows for the batch-scoring run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"),
                        help=f"JSON file to merge the figures into (key '{BENCH_KEY}')")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model, few calls, small scoring input: checks the script runs")
    # Internal: one latency measurement in this process (run as a subprocess by main).
    parser.add_argument("--latency-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--requests", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.steps = min(args.rows, 3000), min(args.steps, 5)
        args.calls, args.warmup_calls = min(args.calls, 50), min(args.warmup_calls, 5)
        args.score_rows = min(args.score_rows, 10 * args.batch)
    return args


# ---------------------------------------------------------------------------------------
# The model


def train_and_export(args, work_dir: str, export_dir: str) -> str:
    from trainer import export
    from trainer.train import train

    config = common.load_config(args.config,
                                smoke_train=common.SMOKE_MODEL if args.smoke else None)
    transform_dir = args.transform_dir or common.synthetic_transform(
        config, work_dir, args.rows, seed=args.seed, shards=2)[0]
    model_dir = os.path.join(work_dir, "model")
    params = dataclasses.replace(config.train, max_steps=args.steps, epochs=10**6)
    common.log(f"training {list(params.hidden_units)} / {params.embedding_dim}-d embeddings "
               f"for {args.steps} steps of {params.batch_size}")
    train(config, transform_dir, model_dir, params=params, log=lambda line: None)
    return export.export_model(config, model_dir, transform_dir, export_dir)


# ---------------------------------------------------------------------------------------
# Candidates: users in context × apps


def candidate_table(config, queries: int, per_query: int, seed: int):
    """`queries` × `per_query` rows in the raw columns (no label): each query is one user in
    one context, crossed with `per_query` distinct items (apps) of the day's impressions."""
    item = config.serving.item_column
    day = synthetic.generate_day(CANDIDATE_DAY, max(4 * queries, 20_000), seed=seed)
    day = day.drop_columns([config.label.column])
    # The columns that describe the item are those with one value per item that day; the
    # rest describe the user and the context, and come from the query's row.
    others = [c for c in day.column_names if c != item]
    distinct = day.group_by(item, use_threads=False).aggregate(
        [(c, "count_distinct") for c in others])
    item_columns = {item} | {c for c in others
                             if pc.max(distinct[f"{c}_count_distinct"]).as_py() == 1}
    _, item_rows = np.unique(np.array(day.column(item).to_pylist()), return_index=True)
    if len(item_rows) < per_query:
        raise ValueError(f"only {len(item_rows)} distinct {item} values for {per_query} "
                         "per query")
    rng = np.random.default_rng(seed)
    user_rows = rng.choice(day.num_rows, size=queries, replace=False)
    chosen = np.stack([rng.choice(item_rows, size=per_query, replace=False)
                       for _ in range(queries)])
    user_take = pa.array(np.repeat(user_rows, per_query))
    item_take = pa.array(chosen.ravel())
    return pa.table({c: day.column(c).take(item_take if c in item_columns else user_take)
                     for c in day.column_names})


def write_candidates_csv(table, out_dir: str, shards: int = 4) -> str:
    os.makedirs(out_dir, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    for shard in range(shards):
        pacsv.write_csv(table.slice(bounds[shard], bounds[shard + 1] - bounds[shard]),
                        os.path.join(out_dir, f"candidates-{shard:05d}.csv"),
                        pacsv.WriteOptions(quoting_style="none"))
    return os.path.join(out_dir, "candidates-*.csv")


def serialized_requests(config, table, per_query: int) -> list[list[bytes]]:
    """Each query's rows as the raw tf.Examples a serving client sends (model inputs only),
    read and encoded as `widedeep score` reads and encodes its candidates."""
    from tfx_bsl.coders import example_coder

    from pipeline import io as wd_io
    from pipeline import score_job

    read_config = score_job.scoring_config(config)  # the label column is not read
    validate, rows = wd_io.RowValidator(read_config), wd_io.RecordBatchBuilder(read_config)
    for fields in zip(*(table.column(name).to_pylist() if name in table.column_names
                        else [None] * table.num_rows for name in read_config.column_names)):
        rows.add(validate(fields)[0])
    examples = example_coder.RecordBatchToExamples(
        rows.flush().select([c.name for c in config.feature_columns]))
    return [examples[i:i + per_query] for i in range(0, len(examples), per_query)]


# ---------------------------------------------------------------------------------------
# Latency (one thread setting per process)


def latency_worker(args) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(args.threads))
    tf.config.threading.set_inter_op_parallelism_threads(int(args.threads))
    from trainer import export

    with open(args.requests, "rb") as f:
        requests = pickle.load(f)
    predict = export.load_predict_fn(args.model)
    for i in range(args.warmup_calls):
        predict(requests[i % len(requests)])
    seconds = np.empty(args.calls)
    load_before = os.getloadavg()[0]
    cpu_started = time.process_time()
    for i in range(args.calls):
        request = requests[i % len(requests)]
        started = time.perf_counter()
        scores = predict(request)
        seconds[i] = time.perf_counter() - started
        assert scores.shape == (len(request),)
    cpu_ms = (time.process_time() - cpu_started) * 1000 / args.calls
    ms = seconds * 1000
    return {"threads": int(args.threads), "calls": args.calls, "batch": len(requests[0]),
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 90, 99)},
            "min_ms": round(float(ms.min()), 3),
            "mean_ms": round(float(ms.mean()), 3), "max_ms": round(float(ms.max()), 3),
            # CPU time of all the process's threads per call: what the call costs, which a
            # busy machine stretches in wall time but not in CPU time.
            "cpu_ms_per_call": round(cpu_ms, 3),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            **model_size(predict.loaded)}


def model_size(loaded) -> dict:
    """Hidden layer widths and embedding size, read from the export's variables (the
    config.toml copy in the export has the config file's [train], not CLI overrides)."""
    hidden, embedding_dim = {}, None
    for variable in getattr(getattr(loaded, "model", None), "variables", []):
        match = re.search(r"/hidden_(\d+)/kernel", variable.name)
        if match:
            hidden[int(match.group(1))] = int(variable.shape[1])
        elif "/embedding/" in variable.name:
            embedding_dim = int(variable.shape[1])
    return {"hidden_units": [hidden[i] for i in sorted(hidden)], "embedding_dim": embedding_dim}


def measure_latency(args, export_dir: str, requests_path: str, threads: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, __file__, "--latency-worker", "--model", export_dir,
         "--requests", requests_path, "--threads", str(threads), "--calls", str(args.calls),
         "--warmup-calls", str(args.warmup_calls)],
        capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"latency worker ({threads} thread(s)) failed with exit "
                           f"{done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------
# Report


def verdict(ok: bool, text: str) -> str:
    return f"{'ok' if ok else 'MISS'} ({text})"


def markdown(result: dict) -> str:
    latency = result["latency"]
    lines = [f"| serving_default, batch {result['batch']}, {result['calls']} calls | "
             + " | ".join(f"{r['threads']} thread(s)" for r in latency) + " | goal / paper |",
             "|---|" + "---|" * len(latency) + "---|"]
    rows = (("p50 (ms)", "p50_ms", ""), ("p99 (ms)", "p99_ms", f"≤ {GOAL_P99_MS:g} ms"),
            ("min (ms)", "min_ms", ""), ("CPU per call (ms)", "cpu_ms_per_call", ""),
            ("load average", "load_average", ""))
    for label, key, goal in rows:
        lines.append(f"| {label} | " + " | ".join(
            f"{r[key][0]:.1f}" if key == "load_average" else f"{r[key]:.2f}" for r in latency)
            + f" | {goal} |")
    lines.append("| paper, Table 2 (ms) | " + " | ".join(
        str(PAPER_MS["1 thread, batch 200"]) if r["threads"] == 1 else "" for r in latency)
        + f" | {PAPER_MS['4 threads, 4 x 50']} ms with 4 threads (4 x 50) |")
    score = result["score"]
    lines += ["", "| widedeep score (run_score) | candidates | queries | seconds | "
                  "candidates/s | CPU seconds | candidates/CPU-s | load average | goal |",
              "|---|---|---|---|---|---|---|---|---|",
              f"| top {score['top_k']} per query | {score['rows_scored']:,} | "
              f"{score['queries']:,} | {score['seconds']:.1f} | "
              f"{score['candidates_per_second']:,.0f} | {score['cpu_seconds']:.1f} | "
              f"{score['candidates_per_cpu_second']:,.0f} | {score['load_average'][0]:.1f} | "
              f"≥ {GOAL_CANDIDATES_PER_SECOND:,}/s |"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.latency_worker:
        result = latency_worker(args)
        print(json.dumps(result), flush=True)
        return result

    from pipeline import score_job, transform_job

    transform_job.quiet_beam_logs()
    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as work_dir:
        started = time.time()
        if args.model:
            export_dir = args.model
        else:
            export_dir = train_and_export(args, work_dir,
                                          args.save_model or os.path.join(work_dir, "export"))
        prepare_seconds = time.time() - started
        config = score_job.export_config(export_dir)
        common.log(f"model {export_dir} ({prepare_seconds:.0f}s to prepare)")

        requests_table = candidate_table(config, REQUESTS, args.batch, args.seed + 1)
        requests_path = os.path.join(work_dir, "requests.pickle")
        with open(requests_path, "wb") as f:
            pickle.dump(serialized_requests(config, requests_table, args.batch), f)
        latency = []
        for n in threads:
            latency.append(measure_latency(args, export_dir, requests_path, n))
            common.log(f"{n} thread(s): p50 {latency[-1]['p50_ms']:.2f} ms, "
                       f"p99 {latency[-1]['p99_ms']:.2f} ms, {latency[-1]['cpu_ms_per_call']:.2f} "
                       f"ms CPU per call over {args.calls} calls (model "
                       f"{latency[-1]['hidden_units']} hidden, {latency[-1]['embedding_dim']}-d "
                       f"embeddings; load average {latency[-1]['load_average']})")

        queries = max(1, args.score_rows // args.batch)
        table = candidate_table(config, queries, args.batch, args.seed + 2)
        pattern = write_candidates_csv(table, os.path.join(work_dir, "candidates"))
        load_before, cpu_started = os.getloadavg()[0], time.process_time()
        summary = score_job.run_score(export_dir, pattern, os.path.join(work_dir, "scored"),
                                      top_k=10, log=common.log)
        score_cpu_seconds = time.process_time() - cpu_started
        score_load = [round(load_before, 2), round(os.getloadavg()[0], 2)]

    p99 = {r["threads"]: r["p99_ms"] for r in latency}
    best_p99 = min(p99.values())
    result = {
        "bench": BENCH_KEY, "smoke": args.smoke, "cpus": os.cpu_count(), "cpu_model": common.cpu_model(),
        "model": args.model, "hidden_units": latency[0]["hidden_units"],
        "embedding_dim": latency[0]["embedding_dim"],
        "train_rows": None if args.model else args.rows,
        "train_steps": None if args.model else args.steps,
        "batch": args.batch, "calls": args.calls, "warmup_calls": args.warmup_calls,
        "latency": latency,
        "paper_ms": PAPER_MS,
        "score": {**{k: summary[k] for k in ("rows_scored", "queries", "top_k", "seconds",
                                             "candidates_per_second", "rows_dead_lettered")},
                  # The job runs in this process: its CPU time is all threads' work.
                  "cpu_seconds": round(score_cpu_seconds, 2),
                  "candidates_per_cpu_second": round(summary["rows_scored"]
                                                     / score_cpu_seconds, 1),
                  "load_average": score_load},
        "goals": {
            f"p99 <= {GOAL_P99_MS:g} ms, batch {args.batch}":
                verdict(best_p99 <= GOAL_P99_MS,
                        ", ".join(f"{n} thread(s): {v:.2f} ms" for n, v in p99.items())),
            f">= {GOAL_CANDIDATES_PER_SECOND:,} candidates/s":
                verdict(summary["candidates_per_second"] >= GOAL_CANDIDATES_PER_SECOND,
                        f"{summary['candidates_per_second']:,.0f}/s"),
        },
    }
    print(markdown(result), flush=True)
    for goal, text in result["goals"].items():
        common.log(f"goal {goal}: {text}")
    common.merge_results(args.out, BENCH_KEY, result)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
