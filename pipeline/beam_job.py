"""What every widedeep Beam job (transform, score) does around its pipeline.

Output goes to ``<out>.partial`` (a stale one from a killed attempt is cleared first), the
job's counters become its summary, the dead-letter limit is checked, and only then is the
partial output promoted with its summary file as the marker written last
(:func:`transforms.paths.promote`: one rename locally, marker-last copy on GCS).

A Dataflow *template* (``--template_location``) is built and staged, not run: there is no
job to read counters from and no output yet, so :func:`run` returns None and the caller
says where the template went.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import weakref
from typing import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions)

from pipeline import io as wd_io
from transforms import config as cfg
from transforms import paths

METRICS_NAMESPACE = "widedeep"
DEAD_LETTER_NAMESPACE = f"{METRICS_NAMESPACE}.dead_letter"


class DataJobError(RuntimeError):
    """The job ran but its output must not be used (no rows, too many dead letters)."""


def count_dead_letter(letter: wd_io.DeadLetter) -> str:
    beam.metrics.Metrics.counter(DEAD_LETTER_NAMESPACE, letter.reason).inc()
    return letter.to_json()


def fresh_partial_dir(output_dir: str) -> str:
    """``<output_dir>.partial``, emptied: shards of an earlier attempt must never be mixed
    into this one's output."""
    partial_dir = str(output_dir).rstrip("/") + ".partial"
    paths.rmtree(partial_dir)
    paths.makedirs(partial_dir)
    return partial_dir


def check_workers_can_reach(options: PipelineOptions, **named_paths: str) -> None:
    """On a remote runner the workers read and write; a local path is on no machine of theirs."""
    runner = str(options.view_as(StandardOptions).runner or "")
    if "Direct" in runner or "Prism" in runner or not runner:
        return
    local = {name: path for name, path in named_paths.items()
             if path and not paths.is_remote(path)}
    if local:
        raise wd_io.InputError(
            f"{runner}: its workers cannot see local paths: "
            + ", ".join(f"{name.replace('_', '-')} {path}" for name, path in local.items())
            + "; use gs:// paths")


@functools.cache
def _memoize_dofn_specs() -> None:
    """Beam asks a DoFn for its state and timer specs five times or more while it builds,
    translates and runs a pipeline (``userstate.get_dofn_specs``), and each answer takes
    ``inspect.signature`` of every method the DoFn has. A DoFn's methods do not change, so
    one answer per DoFn object is kept: on the 40-column Criteo-shaped config (about 700
    transforms) this took 2.5 s of CPU off a job's 17 s fixed cost. A DoFn that cannot be
    weakly referenced is asked every time, as before."""
    from apache_beam.transforms import userstate

    compute = userstate.get_dofn_specs
    answers: dict[int, tuple[weakref.ref, object]] = {}  # by id(): DoFns may define __eq__

    def forget(ref, key):
        if answers.get(key, (None,))[0] is ref:
            del answers[key]

    def get_dofn_specs(dofn):
        known = answers.get(id(dofn))
        if known is not None and known[0]() is dofn:
            return known[1]
        specs = compute(dofn)
        try:
            answers[id(dofn)] = (weakref.ref(dofn, functools.partial(forget, key=id(dofn))),
                                 specs)
        except TypeError:  # not weakly referenceable
            pass
        return specs

    userstate.get_dofn_specs = get_dofn_specs


class _ViewCachingOptions(PipelineOptions):
    """PipelineOptions whose views are made once per options class. Beam takes a view
    (``view_as(TypeOptions)``) twice for every transform it applies, and each builds an
    argparse parser and parses the flags again: about 1.5 s of CPU for the app-store job's
    400 transforms. Views share their values (``_all_options``) with this object anyway,
    so one view per class reads and writes exactly what a fresh one would."""

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state


def options_from(pipeline_args: Sequence[str]) -> PipelineOptions:
    """Beam's options from the arguments widedeep did not parse."""
    return _ViewCachingOptions(list(pipeline_args))


def _nbytes(value) -> int | None:
    """The in-memory size of an Arrow or numpy value or a TF tensor (or a tuple, list or
    dict of them). TFT's analyzer inputs are dicts of arrays and eager tensors: one tensor
    without a size would have the whole dict pickled (6% of the app-store job). A string
    element counts as a pointer, as in a numpy object array."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (tuple, list, dict)):
        sizes = [_nbytes(part) for part in (value.values() if isinstance(value, dict) else value)]
        return None if None in sizes else sum(sizes)
    if all(hasattr(value, name) for name in ("indices", "values", "dense_shape")):
        return _nbytes((value.indices, value.values))  # a sparse tensor
    num_elements = getattr(getattr(value, "shape", None), "num_elements", None)
    element_size = getattr(getattr(value, "dtype", None), "size", None)
    if callable(num_elements) and isinstance(element_size, int):
        elements = num_elements()
        return None if elements is None else elements * (element_size or 8)
    return None


@functools.cache
def _size_whole_batches_cheaply() -> None:
    """Beam samples the size of elements on every PCollection (the first ten, then ten
    per reservoir step) for its byte counters, and sizes an element its fast coder does
    not know by encoding it: pickling. Ours are Arrow record batches and numpy arrays of
    whole batches, and on the Criteo-shaped config a million rows pickled 8.4 GB of them,
    6.5 s of the job's 70, only to count bytes. Values that know their size (``nbytes``)
    now report it; everything else is measured as before, and encoding is unchanged."""
    from apache_beam.coders import coder_impl, coders

    class SizedFastPrimitivesCoderImpl(coder_impl.FastPrimitivesCoderImpl):
        def get_estimated_size_and_observables(self, value, nested=False):
            nbytes = _nbytes(value)
            if nbytes is None:
                return super().get_estimated_size_and_observables(value, nested)
            return nbytes, []

        def estimate_size(self, value, nested=False):  # a dict's values, under a MapCoder
            nbytes = _nbytes(value)
            return super().estimate_size(value, nested) if nbytes is None else nbytes

    def create_impl(coder):
        return SizedFastPrimitivesCoderImpl(coder._fallback_coder.get_impl())

    coders.FastPrimitivesCoder._create_impl = create_impl


def new_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Beam pipeline with the two speed-ups above (both only change how Beam measures
    and inspects, never what runs or what is written)."""
    _memoize_dofn_specs()
    _size_whole_batches_cheaply()
    return beam.Pipeline(options=options)


def template_location(options: PipelineOptions) -> str | None:
    return options.view_as(GoogleCloudOptions).template_location


def run(pipeline: beam.Pipeline) -> dict[str, dict[str, int]] | None:
    """Runs the pipeline to the end; returns its counters by namespace, or None when it
    only built a Dataflow template."""
    try:
        result = pipeline.run()
        if template_location(pipeline.options):
            return None
        result.wait_until_finish()
    except Exception as e:
        input_error = _input_error_in(e)
        if input_error is None:
            raise
        raise input_error from None
    return counters(result)


_INPUT_ERROR_LINE = re.compile(r"^(?:pipeline\.io\.)?InputError: (.+?)"
                               r"(?: \[while running '[^\n]*'\])?$", re.M)


def _input_error_in(error: BaseException) -> wd_io.InputError | None:
    """The reader's InputError (a file the config cannot read) behind Beam's wrapping: in
    process it is chained; from worker processes and Dataflow it arrives as text only."""
    seen = error
    while seen is not None:
        if isinstance(seen, wd_io.InputError):
            match = _INPUT_ERROR_LINE.search(f"InputError: {seen}")
            return wd_io.InputError(match.group(1) if match else str(seen))
        seen = seen.__cause__ or seen.__context__
    matches = _INPUT_ERROR_LINE.findall(str(error))
    return wd_io.InputError(matches[-1]) if matches else None


def counters(result) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for counter in result.metrics().query()["counters"]:
        namespace = counter.key.metric.namespace
        if namespace.startswith(METRICS_NAMESPACE):
            value = counter.committed if counter.committed is not None else counter.attempted
            group = counts.setdefault(namespace, {})
            group[counter.key.metric.name] = group.get(counter.key.metric.name, 0) + value
    return counts


@dataclasses.dataclass(frozen=True)
class JobCounts:
    """A finished job's counters, read the way both jobs report them."""
    main: dict[str, int]          # the job's own counters (rows_read, rows_train, ...)
    rows_read: int
    rows_dead: int
    dead_by_reason: dict[str, int]

    @classmethod
    def of(cls, counts: dict[str, dict[str, int]]) -> "JobCounts":
        main = counts.get(METRICS_NAMESPACE, {})
        by_reason = dict(sorted(counts.get(DEAD_LETTER_NAMESPACE, {}).items()))
        return cls(main, main.get("rows_read", 0), sum(by_reason.values()), by_reason)

    def dead_letter_summary(self) -> dict:
        return {"rows_dead_lettered": self.rows_dead,
                "dead_letter_by_reason": self.dead_by_reason,
                "dead_letter_fraction": (self.rows_dead / self.rows_read
                                         if self.rows_read else 0.0)}


def check_dead_letter_limit(stage: str, job: JobCounts, config: cfg.FeatureConfig,
                            partial_dir: str, error: type[Exception]) -> None:
    """Fails a data job whose dead-letter fraction passes validation.max_dead_letter_fraction."""
    fraction = job.dead_letter_summary()["dead_letter_fraction"]
    if fraction > config.max_dead_letter_fraction:
        raise error(
            f"{stage}: {job.rows_dead} of {job.rows_read} rows ({fraction:.2%}) were "
            f"dead-lettered, over the limit of {config.max_dead_letter_fraction:.2%} "
            f"(validation.max_dead_letter_fraction in {config.source}); by reason: "
            f"{job.dead_by_reason}; see {partial_dir}/dead_letter-*.jsonl")


def template_message(stage: str, options: PipelineOptions, output_dir: str) -> str:
    staging = options.view_as(GoogleCloudOptions).staging_location
    return (f"{stage}: Dataflow template written to {template_location(options)}"
            + (f" (pipeline and package staged in {staging})" if staging else "")
            + f"; nothing ran. Each job started from it writes {output_dir}.partial; "
              f"see the README's 'On Dataflow' for running it on a schedule")
