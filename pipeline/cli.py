"""The `widedeep` command: argument parsing only; every subcommand calls one run function.

Arguments this parser does not know are handed to Beam as pipeline options, so
``--runner DataflowRunner --project P ...`` reaches the runner unchanged. Each command
imports its module when it runs: Beam and TensorFlow take seconds to import, and `--help`,
`history` or `report` need neither.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from transforms import paths

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LOG = logging.getLogger("widedeep")


def _count(low: int):
    """An argparse type for an integer >= low, so a bad flag fails before any work starts."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="feature config (TOML)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="widedeep", description="Wide & Deep (Cheng et al. 2016) as a batch pipeline: synthetic data, "
                    "TFT data generation, joint training with warm start, gated export.")
    parser.add_argument("-v", "--verbose", action="store_true", help="library logs too")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the synthetic app-store impression log")
    synth.add_argument("--out", required=True, help="output dir (day=YYYY-MM-DD/part-*.csv)")
    synth.add_argument("--days", type=_count(1), default=1)
    synth.add_argument("--rows-per-day", type=_count(1), default=100_000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--start-date", default="2026-01-01")
    synth.add_argument("--shards", type=_count(1), default=4)
    synth.add_argument("--first-day-index", type=int, default=0,
                       help="day number in the synthetic world (for one day at a time)")

    transform = sub.add_parser("transform", help="data generation: validate, TFT, TFRecords")
    _add_config(transform)
    transform.add_argument("--input", required=True, help="raw input glob (local or gs://)")
    transform.add_argument("--eval-input", help="separate eval input glob")
    transform.add_argument("--work-dir", required=True,
                           help="output goes to <work-dir>/transform")

    train = sub.add_parser("train", help="train Wide & Deep on a transform output")
    _add_config(train)
    train.add_argument("--transform-dir", required=True)
    train.add_argument("--model-dir", required=True)
    train.add_argument("--model", choices=("wide_deep", "wide", "deep"),
                       help="model type (default: the config's train.model_type)")
    train.add_argument("--warm-start", default="none",
                       help="none, or PATH of a previous model dir")
    train.add_argument("--epochs", type=_count(1))
    train.add_argument("--max-steps", type=_count(0))
    train.add_argument("--batch-size", type=_count(1))

    _add_loop_parsers(sub)

    score = sub.add_parser("score", help="batch scoring: top-K candidates per query")
    score.add_argument("--model", required=True, help="an exported model (serving/<version>)")
    score.add_argument("--input", required=True, help="candidate rows glob")
    score.add_argument("--out", required=True, help="output dir")
    score.add_argument("--top-k", type=_count(1), help="default: the config's serving.top_k")

    tune = sub.add_parser("tune", help="search [train] on the validation split (Optuna)")
    _add_config(tune)
    tune.add_argument("--transform-dir", required=True,
                      help="a transform output with a validation split")
    tune.add_argument("--out", required=True, help="where trials.json and tuned_train.toml go")
    tune.add_argument("--trials", type=_count(1), default=20)
    tune.add_argument("--timeout-minutes", type=float, help="stop starting trials after this")

    history = sub.add_parser("history", help="the runs of a work dir and what they blessed")
    history.add_argument("--work-dir", required=True)

    schema = sub.add_parser("schema", help="infer a data schema from a run's statistics")
    schema.add_argument("--work-dir", required=True)
    schema.add_argument("--run-id", help="default: the newest blessed run, else the newest")
    schema.add_argument("--out", help="write it here (e.g. next to the config, to check in); "
                                      "default: print it")

    datasets = sub.add_parser("datasets", help="public datasets as widedeep input")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", required=True)
    prepare = datasets_sub.add_parser("prepare", help="turn a dataset release into one CSV")
    prepare.add_argument("name", help="e.g. movielens-100k")
    prepare.add_argument("--src", required=True, help="the unpacked release")
    prepare.add_argument("--out", required=True)
    return parser


def _add_loop_parsers(sub) -> None:
    """`run` and `nightly`: the whole loop, once or per day."""
    run = sub.add_parser("run", help="the whole loop: (synth) → transform → validate → train → "
                                     "evaluate → gate → export")
    run.add_argument("--input", help="raw input glob; without it, synthetic data is made")
    run.add_argument("--run-id", help="rerun (resume) a given run id")
    run.add_argument("--synth-rows", type=_count(1), default=200_000,
                     help="synthetic rows when no --input is given")
    run.add_argument("--ablations", action="store_true",
                     help="also train wide-only and deep-only models for the report")
    run.add_argument("--warm-start", default="auto",
                     help="auto (the blessed model, else the newest trained), none, or PATH")
    nightly = sub.add_parser("nightly", help="process the newest unprocessed day (for cron)")
    nightly.add_argument("--input-template", required=True,
                         help="input glob with {date}, e.g. 'gs://b/logs/day={date}/*.csv'")
    nightly.add_argument("--date", help="process this day (YYYY-MM-DD) instead of the newest")
    for parser in (run, nightly):
        _add_config(parser)
        parser.add_argument("--work-dir", required=True)
        parser.add_argument("--eval-input", help="separate eval input glob")
        parser.add_argument("--allow-anomalies", default="", metavar="NAME,...",
                            help="accept these data anomalies (e.g. volume, drift:country) "
                                 "as known changes")


BEAM_COMMANDS = ("transform", "run", "nightly", "score")


# Each command imports what it runs when it runs: TensorFlow, TFT and Beam take seconds to
# import, which `widedeep --help` and `widedeep history` should not pay.

def _synth(args, beam_args) -> int:
    from transforms import synthetic
    written = synthetic.write_log(args.out, days=args.days, rows_per_day=args.rows_per_day,
                                  seed=args.seed, start_date=args.start_date,
                                  shards=args.shards, first_day_index=args.first_day_index)
    LOG.info("synth: wrote %d file(s) → %s", len(written), args.out)
    return 0


def _score(args, beam_args) -> int:
    from pipeline import score_job
    score_job.run_score(args.model, args.input, args.out, top_k=args.top_k,
                        pipeline_args=beam_args, log=LOG.info)
    return 0


def _history(args, beam_args) -> int:
    from pipeline import orchestrate
    print(orchestrate.format_history(orchestrate.history(args.work_dir)))
    return 0


def _datasets(args, beam_args) -> int:
    from pipeline import datasets
    path = datasets.prepare(args.name, args.src, args.out)
    LOG.info("datasets: %s prepared → %s", args.name, path)
    return 0


def _transform(config, args, beam_args) -> int:
    from pipeline import transform_job
    transform_job.run_transform(config, args.input, paths.join(args.work_dir, "transform"),
                                eval_input_pattern=args.eval_input,
                                pipeline_args=beam_args, log=LOG.info)
    return 0


def _train(config, args, beam_args) -> int:
    from transforms.config import with_overrides
    from trainer import distribute
    from trainer import train as trainer
    try:
        worker = distribute.worker_from_env()
    except ValueError as e:
        LOG.error("error: %s", e)
        return 2
    params = with_overrides(config.train, {
        "model_type": args.model, "epochs": args.epochs, "max_steps": args.max_steps,
        "batch_size": args.batch_size})
    warm = None if args.warm_start == "none" else args.warm_start
    trainer.train(config, args.transform_dir, args.model_dir, params=params,
                  warm_start_from=warm, log=LOG.info, worker=worker)
    return 0


def _tune(config, args, beam_args) -> int:
    from pipeline import tune
    tune.tune(config, args.transform_dir, args.out, trials=args.trials,
              timeout_seconds=args.timeout_minutes * 60 if args.timeout_minutes else None,
              log=LOG.info)
    return 0


def _run(config, args, beam_args) -> int:
    from pipeline import orchestrate
    return orchestrate.run(config, work_dir=args.work_dir, input_pattern=args.input,
                           eval_input_pattern=args.eval_input, run_id=args.run_id,
                           synth_rows=args.synth_rows, warm_start=args.warm_start,
                           ablations=args.ablations, pipeline_args=beam_args,
                           allow_anomalies=_names(args.allow_anomalies))


def _nightly(config, args, beam_args) -> int:
    from pipeline import orchestrate
    return orchestrate.nightly(config, work_dir=args.work_dir,
                               input_template=args.input_template, date=args.date,
                               eval_input_pattern=args.eval_input, pipeline_args=beam_args,
                               allow_anomalies=_names(args.allow_anomalies))


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _schema(args, beam_args) -> int:
    from pipeline import validation
    schema, source = validation.schema_from_run(args.work_dir, args.run_id)
    if args.out:
        paths.write_json(args.out, schema)
        LOG.info("schema: inferred from %s → %s; point [validation] schema at it", source,
                 args.out)
    else:
        print(json.dumps(schema, indent=2))
    return 0


COMMANDS = {"synth": _synth, "score": _score, "history": _history, "datasets": _datasets,
            "schema": _schema}
CONFIG_COMMANDS = {"transform": _transform, "train": _train, "tune": _tune, "run": _run,
                   "nightly": _nightly}


def main(argv: list[str] | None = None) -> int:
    args, beam_args = _parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        from pipeline.transform_job import quiet_beam_logs
        quiet_beam_logs()
    if beam_args and args.command not in BEAM_COMMANDS:
        _parser().error(f"unrecognized arguments: {' '.join(beam_args)}")

    from pipeline.beam_job import DataJobError
    from pipeline.datasets import DatasetError
    from pipeline.io import InputError
    from pipeline.tune import TuneError
    from pipeline.validation import SchemaError
    from transforms.config import ConfigError, load_config

    try:
        if args.command in COMMANDS:
            return COMMANDS[args.command](args, beam_args)
        if args.command in CONFIG_COMMANDS:
            return CONFIG_COMMANDS[args.command](load_config(args.config), args, beam_args)
    except (ConfigError, InputError, DataJobError, DatasetError, TuneError, SchemaError) as e:
        LOG.error("error: %s", e)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
