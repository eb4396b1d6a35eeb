"""Training throughput: our trainer next to a plain PyTorch CPU version of the same model.

Both read the same transformed data (synthetic app-store rows through the real transform
job, or ``--transform-dir``) and train the same architecture from the config's [train]
defaults: same features, embeddings, hidden layers, batch size, FTRL on the wide part and
AdaGrad on the deep part. Ours runs its real tf.data pipeline (gzip TFRecords, batched
parse) and ``train_step``; the torch half decodes the TFRecords to numpy arrays first and
slices batches from memory, which flatters it slightly.

Printed: examples/s of our step loop (steady state, after a warm-up), of the whole
``train()`` (tracing, checkpoints and all), and of torch; last, one JSON line. The two step
loops alternate for ``--repeats`` rounds and medians are reported: on a shared 2-core
machine one busy neighbour moves either number a lot (torch's OpenMP threads spin-wait, so
it suffers most; ``--threads 1`` shows both without that). torch is optional
(``pip install -e '.[bench]'``); without it that half is skipped with a message.

Our steady-state loop stays inside one epoch (``--rows`` big enough for warm-up + timed
steps): at an epoch's start tf.data refills its 50,000-record shuffle buffer, a 0.2-1.5 s
stall here that torch's in-memory permutation does not have. That stall, tracing,
evaluation and checkpoints are all in the whole-``train()`` figure.

    python bench/train.py [--rows 150000] [--steps 200] [--repeats 3] [--threads N]
                          [--transform-dir DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import tempfile
import time

import numpy as np

import common  # noqa: E402  (first: the Keras mode, the repository on sys.path)
from transforms import config as cfg  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None,
                        help="feature config (default: the shipped appstore.toml)")
    parser.add_argument("--rows", type=int, default=150_000,
                        help="synthetic rows to generate and transform (default 150000)")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps")
    parser.add_argument("--warmup-steps", type=int, default=20,
                        help="untimed steps first (tracing, buffers, caches)")
    parser.add_argument("--transform-dir", default=None,
                        help="reuse this transform output instead of generating one")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of (ours, torch), alternated; medians are reported, "
                             "since a shared machine is noisy")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="compute threads for both frameworks (default: all CPUs)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few hundred rows and steps: checks the script runs")
    parser.add_argument("--out", default=None,
                        help="merge the figures into this JSON file under \"train\"")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.steps, args.warmup_steps, args.repeats = min(args.rows, 3000), 3, 2, 1
    return args


def bench_ours_steps(inputs, params, steps: int, warmup: int) -> float:
    """Steady-state examples/s of the real input pipeline feeding the real train_step."""
    import tensorflow as tf

    from trainer import data
    from trainer import model as model_lib

    model = model_lib.build_model(inputs.model_inputs, params)

    def epoch_batches(epoch: int):
        return data.make_dataset(inputs.train_files, inputs.feature_spec, inputs.label,
                                 params.batch_size, shuffle=True, seed=epoch)

    train_fn = tf.function(model.train_step, input_signature=[epoch_batches(0).element_spec])
    batches = itertools.chain.from_iterable(map(epoch_batches, itertools.count()))
    return _timed(train_fn, batches, lambda b: int(b[1].shape[0]), steps, warmup)


def _timed(step_fn, batches, batch_size, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step_fn(next(batches))
    examples = 0
    started = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        step_fn(batch)
        examples += batch_size(batch)
    return examples / (time.perf_counter() - started)


def bench_ours_train(config, params, transform_dir, steps: int) -> float:
    """Examples/s that ``train()`` itself reports: tracing, checkpoints, all of it."""
    from trainer import train

    with tempfile.TemporaryDirectory(prefix="bench-train-") as model_dir:
        summary = train.train(config, transform_dir, model_dir,
                              params=dataclasses.replace(params, max_steps=steps, epochs=10**6),
                              log=lambda line: None)
    return summary["examples_per_second"]


# ---------------------------------------------------------------------------------------
# The PyTorch half


def decode_split(inputs) -> dict:
    """The train split as numpy: ids, numerics, labels; multivalent as (ids, starts, lengths)."""
    columns, labels = common.read_split(inputs.train_files, inputs.feature_spec, inputs.label)
    decoded = {"label": labels.astype(np.float32)}
    for name, value in columns.items():
        if isinstance(value, tuple):  # multivalent
            ids, lengths = value
            value = (ids, np.cumsum(lengths) - lengths, lengths)
        decoded[name] = value
    return decoded


def _bags(values, starts, lengths, rows):
    """Flat values and offsets of the chosen rows' bags, without a Python loop per row."""
    row_lengths = lengths[rows]
    total = int(row_lengths.sum())
    offsets = np.cumsum(row_lengths) - row_lengths
    positions = np.repeat(starts[rows] - offsets, row_lengths) + np.arange(total)
    return values[positions], offsets


def _torch_ftrl():
    """A torch optimizer class doing tf_keras' FTRL update."""
    import torch

    class Ftrl(torch.optim.Optimizer):
        """tf_keras' FTRL update (learning_rate_power -0.5, beta 0), dense like it."""

        def __init__(self, parameters, lr, l1, l2, initial_accumulator_value=0.1):
            super().__init__(parameters, dict(lr=lr, l1=l1, l2=l2,
                                              initial=initial_accumulator_value))

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                lr, l1, l2 = group["lr"], group["l1"], group["l2"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if not state:
                        state["accum"] = torch.full_like(p, group["initial"])
                        state["linear"] = torch.zeros_like(p)
                    accum, linear, grad = state["accum"], state["linear"], p.grad
                    new_accum = accum + grad * grad
                    linear.add_(grad - (new_accum.sqrt() - accum.sqrt()) / lr * p)
                    quadratic = new_accum.sqrt() / lr + 2 * l2
                    p.copy_((linear.clamp(-l1, l1) - linear) / quadratic)
                    accum.copy_(new_accum)

    return Ftrl


def _torch_wide_deep(inputs, params):
    """The same Wide & Deep as trainer/model.py, in torch."""
    import torch
    from torch import nn

    class WideDeep(nn.Module):
        def __init__(self):
            super().__init__()
            dim = params.embedding_dim
            self.wide = nn.ModuleDict({f.name: nn.EmbeddingBag(f.cardinality if f.is_categorical
                                                               else 1, 1, mode="sum")
                                       for f in inputs if f.wide})
            self.wide_bias = nn.Parameter(torch.zeros(1))
            for table in self.wide.values():
                nn.init.zeros_(table.weight)
            self.deep = nn.ModuleDict({f.name: nn.EmbeddingBag(f.cardinality, dim, mode="mean")
                                       for f in inputs if f.deep and f.is_categorical})
            for table in self.deep.values():
                nn.init.trunc_normal_(table.weight, std=1 / math.sqrt(dim))
            width = sum(dim if f.is_categorical else 1 for f in inputs if f.deep)
            layers = []
            for units in params.hidden_units:
                layers += [nn.Linear(width, units), nn.ReLU()]
                width = units
            self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

        def forward(self, batch):
            wide = [self.wide_bias.expand(batch["size"], 1)]
            deep = []
            for f in inputs:
                x = batch[f.name]
                if f.wide:
                    table = self.wide[f.name]
                    wide.append(table(*x) if f.kind == cfg.MULTIVALENT
                                else table(x.view(-1, 1)) if f.is_categorical
                                else x.view(-1, 1) * table.weight[0])
                if f.deep:
                    deep.append(self.deep[f.name](*x) if f.kind == cfg.MULTIVALENT
                                else self.deep[f.name](x.view(-1, 1)) if f.is_categorical
                                else x.view(-1, 1))
            return torch.stack(wide).sum(0) + self.mlp(torch.cat(deep, dim=1))

    return WideDeep()


def bench_torch(inputs, params, decoded, steps: int, warmup: int, threads: int) -> float:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(params.seed)

    model = _torch_wide_deep(inputs, params)
    wide_params = list(model.wide.parameters()) + [model.wide_bias]
    deep_params = list(model.deep.parameters()) + list(model.mlp.parameters())
    ftrl = _torch_ftrl()(wide_params, params.wide_learning_rate, params.wide_l1, params.wide_l2)
    adagrad = torch.optim.Adagrad(deep_params, lr=params.deep_learning_rate,
                                  initial_accumulator_value=0.1, eps=1e-7)
    loss_fn = nn.BCEWithLogitsLoss()
    n = len(decoded["label"])
    rng = np.random.default_rng(params.seed)

    def batches():
        while True:
            order = rng.permutation(n)
            for start in range(0, n, params.batch_size):
                rows = order[start:start + params.batch_size]
                batch = {"size": len(rows), "label": torch.from_numpy(decoded["label"][rows])}
                for f in inputs:
                    if f.kind == cfg.MULTIVALENT:
                        values, offsets = _bags(*decoded[f.name], rows)
                        batch[f.name] = (torch.from_numpy(values), torch.from_numpy(offsets))
                    else:
                        batch[f.name] = torch.from_numpy(decoded[f.name][rows])
                yield batch

    def step(batch):
        ftrl.zero_grad()
        adagrad.zero_grad()
        loss = loss_fn(model(batch).view(-1), batch["label"])
        loss.backward()
        ftrl.step()
        adagrad.step()

    return _timed(step, batches(), lambda b: b["size"], steps, warmup)


def _rounds(args, inputs, params, decoded):
    """Ours and (with decoded batches) torch, alternating, `args.repeats` times each."""
    ours_runs, torch_runs = [], []
    for round_ in range(1, args.repeats + 1):
        ours_runs.append(bench_ours_steps(inputs, params, args.steps, args.warmup_steps))
        line = f"round {round_}/{args.repeats}: ours {ours_runs[-1]:,.0f} examples/s"
        if decoded is not None:
            torch_runs.append(bench_torch(inputs.model_inputs, params, decoded, args.steps,
                                          args.warmup_steps, args.threads))
            line += f", torch {torch_runs[-1]:,.0f} examples/s"
        common.log(line)
    return ours_runs, torch_runs


def main(argv=None) -> dict:
    args = parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from trainer import train as train_lib

    config = common.load_config(args.config)
    params = config.train
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work_dir:
        transform_dir = args.transform_dir or common.synthetic_transform(
            config, work_dir, args.rows, seed=1, shards=2)[0]
        inputs = train_lib.read_inputs(config, transform_dir)
        train_examples = inputs.train_examples
        common.log(f"{train_examples:,} train examples, batch {params.batch_size}, hidden "
                   f"{list(params.hidden_units)}, embedding {params.embedding_dim}, "
                   f"{args.steps} timed steps after {args.warmup_steps} warm-up, "
                   f"{args.threads} thread(s) on {os.cpu_count()} CPU(s)")
        steps_per_epoch = math.ceil(train_examples / params.batch_size)
        if args.steps + args.warmup_steps > steps_per_epoch:
            common.log(f"note: {args.steps + args.warmup_steps} steps cross the epoch end "
                       f"({steps_per_epoch} steps/epoch): our steady-state figure then includes "
                       f"a shuffle-buffer refill; use more --rows")

        try:
            import torch
        except ImportError:
            torch = None
        torch_note = (None if torch else
                      "torch is not installed (pip install -e '.[bench]'); skipped")
        if torch_note:
            common.log(f"torch: {torch_note}")
        decoded = decode_split(inputs) if torch else None
        ours_runs, torch_runs = _rounds(args, inputs, params, decoded)
        ours = float(np.median(ours_runs))
        torch_rate = float(np.median(torch_runs)) if torch_runs else None
        ours_train = bench_ours_train(config, params, transform_dir,
                                      args.steps + args.warmup_steps)
        common.log(f"ours (tf_keras train_step + tf.data, median): {ours:,.0f} examples/s")
        common.log(f"ours (whole train(), tracing and checkpoints included): "
                   f"{ours_train:,.0f} examples/s")
        if torch_rate is not None:
            common.log(f"torch {torch.__version__} (CPU, numpy batches, median): "
                       f"{torch_rate:,.0f} examples/s")

    result = {
        "bench": "train", "smoke": args.smoke, "rows": None if args.transform_dir else args.rows,
        "train_examples": train_examples, "batch_size": params.batch_size,
        "hidden_units": list(params.hidden_units), "embedding_dim": params.embedding_dim,
        "steps": args.steps, "warmup_steps": args.warmup_steps, "threads": args.threads,
        "cpus": os.cpu_count(), "cpu_model": common.cpu_model(),
        "tensorflow": tf.__version__,
        "repeats": args.repeats,
        "ours_examples_per_second": round(ours, 1),
        "ours_runs": [round(r, 1) for r in ours_runs],
        "ours_train_examples_per_second": round(ours_train, 1),
        "torch": torch.__version__ if torch is not None else None,
        "torch_examples_per_second": round(torch_rate, 1) if torch_rate else None,
        "torch_runs": [round(r, 1) for r in torch_runs],
        "torch_note": torch_note,
        "ours_vs_torch": round(ours / torch_rate, 3) if torch_rate else None,
    }
    print(json.dumps(result), flush=True)
    if args.out:
        common.merge_results(args.out, "train", result)
    return result


if __name__ == "__main__":
    main()
