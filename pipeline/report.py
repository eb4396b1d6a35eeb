"""`report.html`: one page per run saying what happened, what serves now, and why.

It is read the morning after a nightly run, often away from the work dir (a mail
attachment, a CI artifact), so the page is self-contained: CSS in a ``<style>`` block and
plots as inline base64 PNGs, no links to files or the network. Every section renders from
whatever files the run left behind; a run that stopped early still gets a page, which names
the stage that stopped it and what is missing because of that.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import io
import math
from typing import Any, Callable, Mapping, Sequence

from pipeline import gate as gate_lib
from pipeline.run_dir import RunDir
from transforms import paths


@dataclasses.dataclass(frozen=True)
class _RunFile:
    """A file of the run dir (:class:`pipeline.run_dir.RunDir`) and the stage writing it."""
    path: str
    stage: str


MANIFEST = _RunFile(RunDir.MANIFEST, "")
STATS = _RunFile(RunDir.TRANSFORM_STATS, "transform")
# A transform that fails its checks (e.g. too many dead letters) leaves its stats here.
FAILED_STATS = _RunFile(RunDir.FAILED_TRANSFORM_STATS, "transform")
SUMMARY = _RunFile(RunDir.MODEL_SUMMARY, "train")
HISTORY = _RunFile(RunDir.MODEL_HISTORY, "train")
METRICS = _RunFile(RunDir.METRICS, "evaluate")
GATE = _RunFile(RunDir.GATE, "gate")
PROGRESS = _RunFile(RunDir.MODEL_PROGRESS, "train")
VALIDATION = _RunFile(RunDir.VALIDATION, "validate")


@dataclasses.dataclass
class _Run:
    """What a run dir holds; None for what it does not."""
    run_dir: str
    manifest: dict
    stats: dict | None
    stats_from_failed_attempt: bool
    summary: dict | None
    history: list | None
    train_scalars: dict[str, dict[int, float]]
    metrics: dict | None
    gate: dict | None
    unreadable: list[str]
    validation: dict | None = None

    @property
    def stages(self) -> dict[str, dict]:
        return self.manifest.get("stages") or {}


def write_report(run_dir: str, *, ablations: Mapping[str, Mapping] | None = None) -> str:
    """Writes ``<run_dir>/report.html`` and returns its path.

    ``ablations`` maps a model name ("wide", "deep") to its metrics on the same eval split
    (as :func:`pipeline.gate.evaluate_export` returns them, with ``roc``); they are drawn
    beside the candidate and the baseline.
    """
    if not paths.isdir(run_dir):
        raise FileNotFoundError(f"report: {run_dir} is not a run dir (no such directory)")
    page = _page(_load_run(run_dir), dict(ablations or {}))
    return paths.write_text(RunDir(run_dir).path(RunDir.REPORT), page)  # never half a page


def _html(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>\n")


def write_comparison_report(path: str, *, title: str, intro: str, headers: Sequence[str],
                            rows: Sequence[Sequence[str]],
                            models: Sequence[tuple[str, Mapping]]) -> str:
    """A self-contained page comparing models offline (e.g. the paper's Table 1 from
    ``bench/paper_table.py``): one table and the models' ROC curves (each ``models`` entry
    is a name and metrics with ``auc`` and ``roc``)."""
    body = (f"<h1>{_e(title)}</h1><p>{_e(intro)}</p>"
            + _section("Offline metrics", _table(headers, rows, "l" + "r" * (len(headers) - 1)))
            + _section("ROC curves", _roc_plot([(name, dict(m)) for name, m in models])))
    return paths.write_text(path, _html(title, body))


# ---------------------------------------------------------------------------------------
# Reading the run dir


def _load_run(run_dir: str) -> _Run:
    unreadable: list[str] = []

    def read(run_file: _RunFile, reader: Callable[[str], Any] = paths.read_json):
        try:
            return reader(paths.join(run_dir, run_file.path))
        except (OSError, ValueError) as e:  # a half-written file must not cost the whole page
            unreadable.append(f"{run_file.path} is unreadable ({type(e).__name__}: {e})")
            return None

    manifest = read(MANIFEST) or {}
    stage_results = {name: record.get("result") for name, record in
                     (manifest.get("stages") or {}).items()}
    stats = read(STATS) or stage_results.get("transform")
    failed_stats = None if stats else read(FAILED_STATS)
    return _Run(run_dir=run_dir, manifest=manifest, stats=stats or failed_stats,
                stats_from_failed_attempt=failed_stats is not None,
                summary=stage_results.get("train") or read(SUMMARY), history=read(HISTORY),
                train_scalars=_train_scalars(read(PROGRESS, paths.read_json_lines) or []),
                metrics=read(METRICS), gate=manifest.get("gate") or read(GATE),
                unreadable=unreadable,
                validation=read(VALIDATION) if "validate" in stage_results else None)


def _train_scalars(points: list[dict]) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} of the trainer's per-step progress (``progress.jsonl``):
    within an epoch the only curve there is, as history.json has a point per epoch."""
    scalars: dict[str, dict[int, float]] = {}
    for point in points:
        for metric, value in point.items():
            if metric not in ("step", "epoch"):
                scalars.setdefault(metric, {})[point["step"]] = value
    return scalars


def _failed_stage(run: _Run) -> tuple[str, dict] | None:
    """The stage that stopped the run: it failed, or found anomalies in the data."""
    return next(((name, r) for name, r in run.stages.items()
                 if r.get("outcome") in ("failed", "anomalies")), None)


def _why_missing(run: _Run, run_file: _RunFile) -> str:
    """Why a section has no data, in terms of the stage that would have written it."""
    record = run.stages.get(run_file.stage)
    if record is None:
        failed = _failed_stage(run)
        stopped = f" (the run stopped at the {failed[0]} stage)" if failed else ""
        return f"The {run_file.stage} stage did not run{stopped}, so there is no {run_file.path}."
    outcome = record.get("outcome")
    if outcome == "failed":
        return (f"The {run_file.stage} stage failed, so there is no {run_file.path}: "
                f"{record.get('error', 'no error recorded')}")
    if outcome == "running":
        return (f"The {run_file.stage} stage has no end recorded (still running, or its "
                f"process died), so there is no {run_file.path}.")
    return f"{run_file.path} is missing although the {run_file.stage} stage finished."


# ---------------------------------------------------------------------------------------
# Formatting


def _e(value: Any) -> str:
    return html.escape(str(value))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "—"


def _count(value: Any) -> str:
    return f"{value:,.0f}" if _finite(value) else "—"


def _percent(value: Any) -> str:
    return f"{value:.2%}" if _finite(value) else "—"


def _delta(a: Any, b: Any, digits: int = 4) -> str:
    return f"{a - b:+.{digits}f}" if _finite(a) and _finite(b) else "—"


def _when(iso: str | None) -> str:
    if not iso:
        return "—"
    try:
        return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return iso


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Cells are plain text (escaped here); ``align`` has one "l" or "r" per column."""
    align = align.ljust(len(headers), "l")

    def row(cells, tag):
        return "<tr>" + "".join(f'<{tag} class="{align[i]}">{_e(c)}</{tag}>'
                                for i, c in enumerate(cells)) + "</tr>"

    return ("<table>" + row(headers, "th") + "".join(row(r, "td") for r in rows)
            + "</table>")


def _facts(items: Sequence[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


# ---------------------------------------------------------------------------------------
# Plots: matplotlib's object API on an explicit Agg canvas, so rendering never touches
# pyplot's global figure state or needs a display.


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _img(fig, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _train_curve(history: list[dict], train_scalars: dict[str, dict[int, float]],
                 metric: str) -> tuple[list[int], list[float]]:
    """Every few steps from progress.jsonl, and each epoch's end from history.json.

    Both are Keras' running mean since the start of the epoch, so they join into one line.
    """
    points = dict(train_scalars.get(metric, {}))
    points.update({h["step"]: h["train"][metric] for h in history
                   if metric in h.get("train", {})})
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _curves_plot(history: list[dict], train_scalars: dict[str, dict[int, float]]) -> str:
    fig = figure(10, 3.6)
    for ax, metric, title in zip(fig.subplots(1, 2), ("log_loss", "auc"), ("log loss", "AUC")):
        ax.plot(*_train_curve(history, train_scalars, metric), "o-", markersize=3,
                label="train (running mean over the epoch)")
        for split, style, label in (("validation", "^-.", "validation (picks the epoch)"),
                                    ("eval", "s--", "eval (end of epoch)")):
            points = [(h["step"], h[split][metric]) for h in history
                      if metric in (h.get(split) or {})]
            if points:
                ax.plot(*zip(*points), style, markersize=7, label=label)
        for h in history[:-1]:
            ax.axvline(h["step"], color="grey", linewidth=0.6, linestyle=":")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    return _img(fig, "train and eval log loss and AUC by step")


def _roc_plot(models: list[tuple[str, dict]]) -> str:
    fig = figure(5.5, 5.5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance (AUC 0.5)")
    for i, (name, metrics) in enumerate(models):
        roc = metrics.get("roc") or {}
        if roc.get("fpr"):
            ax.plot(roc["fpr"], roc["tpr"], "-" if i < 2 else "--", linewidth=2 if i == 0 else 1.3,
                    label=f"{name} (AUC {_num(metrics.get('auc'))})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("ROC on the eval split")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _img(fig, "ROC curves")


# ---------------------------------------------------------------------------------------
# Sections


def _outcome(run: _Run) -> tuple[str, str]:
    """(css class, headline): the one line a reader looks for first."""
    failed = _failed_stage(run)
    serving = _serving_now(run)
    if failed and failed[1]["outcome"] == "anomalies":
        return "failed", (f"Stopped before training by data anomalies "
                          f"({', '.join(failed[1].get('anomalies', []))}); {serving}. "
                          f"See Data checks below.")
    if failed:
        name, record = failed
        blessed = " after the gate blessed the candidate" if (run.gate or {}).get("blessed") else ""
        return "failed", (f"Failed at the {name} stage{blessed}; {serving}. "
                          f"{record.get('error', '')}")
    if run.manifest.get("blessed"):
        return "blessed", f"Blessed: now serving as version {run.manifest.get('serving_version')}"
    if run.gate is not None and not run.gate.get("blessed"):
        return "rejected", f"Rejected; {serving}"
    running = [n for n, r in run.stages.items() if r.get("outcome") == "running"]
    if running:
        return "failed", (f"Incomplete: the {running[0]} stage has no end recorded (still "
                          f"running, or its process died); {serving}")
    return "failed", f"No outcome recorded; {serving}"


def _serving_now(run: _Run) -> str:
    version = (run.metrics or {}).get("baseline_version")
    if version is None:
        version = ((run.stages.get("evaluate") or {}).get("result") or {}).get("baseline_version")
    return (f"serving unchanged (version {version} stays)" if version is not None
            else "serving unchanged")


def _header(run: _Run) -> str:
    m = run.manifest
    css, headline = _outcome(run)
    parts = [f"<h1>widedeep run {_e(m.get('run_id') or paths.basename(run.run_dir))}</h1>",
             f'<p class="outcome {css}">{_e(headline)}</p>']
    if run.gate is not None:
        parts.append(f'<p class="reason"><b>Gate:</b> {_e(run.gate.get("reason", ""))}</p>')
        if run.gate.get("checks"):
            parts.append("<p>Checks passed:</p><ul>" + "".join(
                f"<li>{_e(c)}</li>" for c in run.gate["checks"]) + "</ul>")
    publish = (run.stages.get("publish") or {}).get("result") or {}
    if publish.get("dry_run"):
        parts.append(f"<p><b>Serving dry run:</b> {_e(publish['dry_run'])}</p>")
    if not m:
        parts.append(_missing(f"No readable {MANIFEST.path} in {run.run_dir}: the run record "
                              "is missing, so stages and outcome are unknown."))
    inputs = m.get("inputs") or {}
    seconds = sum(r.get("seconds") or 0 for r in run.stages.values())
    parts.append(_facts([
        ("created", _when(m.get("created"))),
        ("config", f"{m.get('config', '—')} (digest {m.get('config_digest', '—')})"),
        ("code version", m.get("code_version", "—")),
        ("input", inputs.get("input") or "—"),
        ("eval input", inputs.get("eval_input") or "split from the input"),
        ("stage time", f"{seconds:,.1f} s in all"),
    ]))
    parts += [_missing(text) for text in run.unreadable]
    return "<header>" + "".join(parts) + "</header>"


def _stages_section(run: _Run) -> str:
    if not run.stages:
        return _section("Stages", _missing("No stages recorded."))
    headers = ["stage", "outcome", "seconds", "started", "ended"]
    rows = [[name, r.get("outcome", "—"), _num(r.get("seconds"), 1), _when(r.get("started")),
             _when(r.get("ended"))] for name, r in run.stages.items()]
    if any(r.get("error") for r in run.stages.values()):
        headers.append("error")
        for row, r in zip(rows, run.stages.values()):
            row.append(r.get("error", ""))
    return _section("Stages", _table(headers, rows, "llrlll"))


def _data_section(run: _Run) -> str:
    s = run.stats
    if s is None:
        return _section("Data", _missing(_why_missing(run, STATS)))
    parts = []
    if run.stats_from_failed_attempt:
        parts.append(_missing(f"From the failed transform attempt ({FAILED_STATS.path}); its "
                              "output was not kept."))
    rows_out = s.get("rows_out") or {}
    parts.append(_facts([
        ("input", f"{s.get('input', '—')} ({_count(s.get('input_files'))} file(s))"),
        ("rows in", _count(s.get("rows_in"))),
        ("rows out", ", ".join(f"{split} {_count(n)}" for split, n in rows_out.items()) or "—"),
        ("positive rate", ", ".join(f"{split} {_percent(rate)}" for split, rate in
                                    (s.get("positive_rate") or {}).items()) or "—"),
        ("dead-lettered", f"{_count(s.get('rows_dead_lettered'))} "
                          f"({_percent(s.get('dead_letter_fraction'))} of rows in)"),
        ("transform time", f"{_num(s.get('seconds'), 1)} s "
                           f"({_count(s.get('rows_per_second'))} rows/s)"),
    ]))
    parts.append(_dead_letters(s))
    vocabularies = s.get("vocabulary_sizes") or {}
    if vocabularies:
        parts.append("<h3>Vocabulary sizes</h3>" + _table(
            ["vocabulary", "tokens"], [[k, _count(v)] for k, v in vocabularies.items()], "lr"))
    return _section("Data", "".join(parts))


def _validation_section(run: _Run) -> str:
    """The night's data against the schema and the last blessed run (pipeline.validation)."""
    v = run.validation
    if v is None:
        return _section("Data checks", _missing(_why_missing(run, VALIDATION)))
    parts = [_facts([
        ("compared with", f"blessed run {v['blessed_run']}" if v.get("blessed_run")
         else "no blessed run yet: drift and unseen values not measured"),
        ("schema", v.get("schema_file") or "none yet (captured from the first blessed run)"),
        ("volume", f"{_count(v['volume']['rows'])} rows, {_num(v['volume']['ratio'], 2)}× the "
                   f"median of the last {v['volume']['runs']} run(s)" if v.get("volume")
         else "no earlier runs to compare with"),
    ])]
    if v["anomalies"]:
        parts.append("<h3>Anomalies</h3>" + _table(
            ["anomaly", "value", "threshold", "reason", "outcome"],
            [[a["anomaly"], _num(a["value"]), _num(a["threshold"]), a["reason"],
              "allowed" if a["allowed"] else "stopped the run"] for a in v["anomalies"]],
            "lrrll"))
    else:
        parts.append("<p>No anomalies.</p>")
    if v.get("drift"):
        parts.append("<h3>Drift against the blessed run</h3>" + _drift_plot(v["drift"]))
    unseen = v.get("unseen") or {}
    if unseen:
        parts.append("<h3>Values outside the blessed model's vocabulary</h3>" + _table(
            ["column", "today", "on the blessed run"],
            [[k, _percent(u["today"]), _percent(u["blessed_run"])] for k, u in unseen.items()],
            "lrr"))
    return _section("Data checks", "".join(parts))


def _drift_plot(drift: Mapping[str, Mapping]) -> str:
    """One bar per column (its drift), a tick at its threshold; red past it."""
    names = list(drift)
    values = [drift[n]["value"] or 0.0 for n in names]
    thresholds = [drift[n]["threshold"] for n in names]
    fig = figure(6.5, 0.8 + 0.28 * len(names))
    ax = fig.add_subplot()
    ax.barh(range(len(names)), values, color=["#c0392b" if v > t else "#4a78a8"
                                             for v, t in zip(values, thresholds)])
    ax.scatter(thresholds, range(len(names)), marker="|", s=200, color="black",
               label="threshold")
    ax.set_yticks(range(len(names)), [f"{n} ({drift[n]['measure']})" for n in names],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("drift (L-infinity for categorical, Jensen-Shannon for numeric)")
    ax.legend(loc="lower right", fontsize=8)
    return _img(fig, "drift per column against its threshold")


def _dead_letters(stats: dict) -> str:
    by_reason = stats.get("dead_letter_by_reason") or {}
    if not by_reason:
        return "<p>No rows were dead-lettered.</p>"
    rows_in = stats.get("rows_in") or 0
    rows = [[reason, _count(n), _percent(n / rows_in if rows_in else math.nan)]
            for reason, n in sorted(by_reason.items(), key=lambda item: -item[1])]
    return "<h3>Dead letters by reason</h3>" + _table(["reason", "rows", "of rows in"], rows,
                                                      "lrr")


def _training_section(run: _Run) -> str:
    s = run.summary
    if s is None and not run.history and not run.train_scalars:
        return _section("Training", _missing(_why_missing(run, SUMMARY)))
    parts = [_training_facts(s), _warm_start(s)] if s is not None else [
        _missing(_why_missing(run, SUMMARY))]
    if run.history or run.train_scalars:
        parts += ["<h3>Learning curves</h3>", _curves_plot(run.history or [], run.train_scalars)]
    if run.history:
        parts.append(_history_table(run.history))
    else:
        parts.append(_missing(_why_missing(run, HISTORY)))
    return _section("Training", "".join(parts))


def _training_facts(summary: dict) -> str:
    params = summary.get("params") or {}
    resumed = summary.get("resumed_from_step")
    return _facts([
        ("model", summary.get("model_type", "—")),
        ("steps", f"{_count(summary.get('steps'))} ({_count(summary.get('epochs_completed'))} "
                  f"epoch(s) of {_count(summary.get('steps_per_epoch'))} steps)"),
        ("train examples", _count(summary.get("train_examples"))),
        ("speed", f"{_count(summary.get('examples_per_second'))} examples/s"),
        ("resumed", f"from a checkpoint at step {resumed}" if resumed is not None else "no"),
        ("hyperparameters", ", ".join(f"{k}={v}" for k, v in params.items()) or "—"),
    ])


def _warm_start(summary: dict) -> str:
    report = summary.get("warm_start")
    if not report:
        source = summary.get("warm_start_from")
        return ("<h3>Warm start</h3><p>Cold start: no earlier model to start from.</p>"
                if not source else "<h3>Warm start</h3>" +
                _missing(f"Asked to warm-start from {source}, but no warm-start report was "
                         "recorded."))
    checkpoint = paths.basename(report.get("checkpoint") or "") or "final weights"
    parts = [f"<h3>Warm start</h3><p>From {_e(report.get('from'))} ({_e(checkpoint)}).</p>"]
    vocabularies = report.get("vocabularies") or {}
    if vocabularies:
        parts.append(_table(
            ["vocabulary", "tokens remapped", "new", "dropped", "OOV rows carried"],
            [[name, *(_count(c.get(k)) for k in ("remapped", "new", "dropped",
                                                  "oov_rows_carried"))]
             for name, c in vocabularies.items()], "lrrrr"))
    hashed = report.get("hashed") or {}
    if hashed:
        parts.append(_table(["hashed feature", "rows carried"],
                            [[k, _count(c.get("hashed_rows_carried"))] for k, c in hashed.items()],
                            "lr"))
    towers = report.get("towers") or {}
    if towers:
        parts.append("<p>Deep towers the previous model did not have started as copies of its "
                     "own: " + ", ".join(f"{_e(new)} from {_e(old)}"
                                         for new, old in towers.items()) + ".</p>")
    fresh = report.get("fresh") or {}
    parts.append(f"<p>{len(report.get('copied') or [])} other variables copied (dense layers, "
                 f"biases); {len(fresh)} left freshly initialised.</p>")
    if fresh:
        parts.append("<ul>" + "".join(f"<li>{_e(k)}: {_e(why)}</li>" for k, why in fresh.items())
                     + "</ul>")
    return "".join(parts)


def _history_table(history: list[dict]) -> str:
    def value(h, split, metric):
        return _num(h.get(split, {}).get(metric))

    rows = [[str(h.get("epoch")) + ("" if h.get("complete", True) else " (cut by max_steps)"),
             _count(h.get("step")), value(h, "train", "log_loss"),
             value(h, "validation", "log_loss"), value(h, "eval", "log_loss"),
             value(h, "train", "auc"), value(h, "validation", "auc"), value(h, "eval", "auc")]
            for h in history]
    return _table(["epoch", "step", "train log loss", "validation log loss", "eval log loss",
                   "train AUC", "validation AUC", "eval AUC"], rows, "lrrrrrrr")


def _evaluated_models(run: _Run, ablations: dict[str, dict]) -> list[tuple[str, dict]]:
    """(name, metrics), the candidate first: the order of plot legends and table columns."""
    metrics = run.metrics or {}
    models = []
    if metrics.get("candidate"):
        models.append(("candidate", metrics["candidate"]))
    if metrics.get("baseline"):
        models.append((f"baseline (serving v{metrics.get('baseline_version')})",
                       metrics["baseline"]))
    models += [(f"{name}-only", m) for name, m in ablations.items()]
    return models


def _evaluation_section(run: _Run, ablations: dict[str, dict]) -> str:
    models, metrics = _evaluated_models(run, ablations), run.metrics or {}
    parts = []
    if run.metrics is None:
        parts.append(_missing(_why_missing(run, METRICS)))
    elif not metrics.get("baseline"):
        parts.append("<p>No blessed baseline to compare with: nothing was serving (or no "
                     "serving version could be scored).</p>")
    if models:
        examples = metrics.get("eval_examples")
        parts += [f"<p>All models scored on the same {_count(examples)} raw eval examples, "
                  "each through its own serving signature.</p>" if examples else "",
                  _roc_plot(models), _metrics_table(models, bool(metrics.get("baseline")))]
    if metrics.get("candidate", {}).get("slices"):
        parts.append(_slices_table(metrics["candidate"], metrics.get("baseline")))
    return _section("Evaluation", "".join(parts))


_METRIC_ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("auc", "AUC", _num), ("log_loss", "log loss", _num),
    ("calibration", "calibration (mean prediction / positive rate)", lambda v: _num(v, 3)),
    ("accuracy", "accuracy at 0.5", _num), ("positive_rate", "positive rate", _num),
    ("mean_prediction", "mean prediction", _num), ("examples", "examples", _count))


def _metrics_table(models: list[tuple[str, dict]], has_baseline: bool) -> str:
    headers = ["metric", *(name for name, _ in models)]
    rows = []
    for key, label, fmt in _METRIC_ROWS:
        row = [label, *(fmt(m.get(key)) for _, m in models)]
        if has_baseline:
            row.append(_delta(models[0][1].get(key), models[1][1].get(key))
                       if key != "examples" else "")
        rows.append(row)
    if has_baseline:
        headers.append("candidate − baseline")
    return "<h3>Metrics</h3>" + _table(headers, rows, "l" + "r" * (len(headers) - 1))


def _slices_table(candidate: dict, baseline: dict | None) -> str:
    baseline_slices = (baseline or {}).get("slices") or {}
    rows = []
    for column, values in candidate["slices"].items():
        for value, m in values.items():
            b = baseline_slices.get(column, {}).get(value, {})
            row = [column, value, _count(m.get("examples")), _num(m.get("auc"))]
            if baseline is not None:
                row += [_num(b.get("auc")), _delta(m.get("auc"), b.get("auc"))]
            rows.append(row)
    headers = ["slice", "value", "examples", "candidate AUC"]
    if baseline is not None:
        headers += ["baseline AUC", "Δ AUC"]
    return (f"<h3>AUC per slice</h3><p>Most frequent values first; no AUC for slices under "
            f"{gate_lib.MIN_SLICE_ROWS} examples (too noisy to read).</p>"
            + _table(headers, rows, "llrrrr"))


def _not_in_report(run: _Run) -> str:
    """A list near the top, so a reader of a failed run knows at once what is absent."""
    absent = [(title, f) for title, present, f in (
        ("Data", run.stats is not None, STATS),
        ("Training", run.summary is not None or bool(run.history), SUMMARY),
        ("Evaluation", run.metrics is not None, METRICS)) if not present]
    if not absent:
        return ""
    return ("<p><b>Missing from this report:</b></p><ul>" + "".join(
        f"<li>{_e(title)}: {_e(_why_missing(run, f))}</li>" for title, f in absent) + "</ul>")


_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #222; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .3em; } h2 { border-bottom: 1px solid #ddd; }
.outcome { font-size: 1.25em; font-weight: 600; padding: .5em .8em; border-radius: 4px; }
.blessed { background: #e3f4e1; color: #1b5e20; } .rejected { background: #fff3cd; color: #7a5200; }
.failed { background: #fde2e1; color: #8b1a13; } .reason { font-size: 1.1em; }
.missing { color: #8b1a13; font-style: italic; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; vertical-align: top; }
th { background: #f4f4f4; } .r { text-align: right; font-variant-numeric: tabular-nums; }
.l { text-align: left; } dl { display: grid; grid-template-columns: max-content auto;
gap: .2em 1em; } dt { font-weight: 600; } dd { margin: 0; } img { max-width: 100%; }
"""


def _page(run: _Run, ablations: dict[str, dict]) -> str:
    title = run.manifest.get("run_id") or paths.basename(run.run_dir)
    body = "".join([_header(run), _not_in_report(run), _stages_section(run), _data_section(run),
                    _validation_section(run), _training_section(run),
                    _evaluation_section(run, ablations)])
    return _html(f"widedeep run {title}", body)
