"""Report pages of a run (``report.md``, self-contained ``report.html``) and comparisons."""

from __future__ import annotations

import base64
import contextlib
import errno
import html
import json
import os
import shlex
import statistics
from pathlib import Path

from alphaprune.atomic import atomic_write_text
from alphaprune.errors import UserError
from alphaprune.report.headline import headline, headline_rows, shipped
from alphaprune.report.plots import plot_comparison, plot_pareto, plot_run
from alphaprune.report.runs import Run, label_runs, read_run
from alphaprune.report.size import measure_latency
from alphaprune.rundir import has_progress

__all__ = ["write_report", "write_comparison", "measure_models", "measure_side_by_side",
           "markdown_table"]


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header, rows) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def measure_models(models: dict, input_shape, repeats: int = 10, batches=(1, 128)) -> dict:
    """Median latency (ms) at each batch size (``latency_b{B}_ms``) and, at batch 128,
    throughput (img/s) of each model.

    The models are measured in turn within the same call, so their ratios are comparable.
    """
    out = {}
    for name, model in models.items():
        out[name] = {}
        for b in batches:  # a single image is quick and noisy: three times the repeats
            sec = measure_latency(model, input_shape, b, repeats=repeats * 3 if b == 1 else repeats,
                                  warmup=3 if b == 1 else 2)
            out[name][f"latency_b{b}_ms"] = sec * 1e3
            if b == 128:
                out[name]["throughput_img_s"] = 128 / sec
    return out


def measure_side_by_side(models: dict, input_shape, rounds: int = 3, batches=(1, 128)) -> dict:
    """:func:`measure_models` over ``rounds`` alternating passes over all models, median per
    model and measure: a busy spell of a shared machine slows one pass of every model rather
    than every pass of one."""
    samples: dict = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            samples[k].append(measure_models({k: m}, input_shape, batches=batches)[k])
    return {k: {key: statistics.median(s[key] for s in v) for key in v[0]}
            for k, v in samples.items()}


def _fmt(v, spec=",") -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float) and spec == ",":
        return f"{v:,.0f}"
    return format(v, spec)


def _before_after(s: dict) -> list[list]:
    lat = s.get("latency", {})
    b, a = lat.get("before", {}), lat.get("after", {})
    fb, fa = s.get("file_bytes_before"), s.get("file_bytes_after")
    rows = [["parameters", _fmt(s["params_before"]), _fmt(s["params_after"])],
            ["FLOPs (MACs, one image)", _fmt(s["flops_before"]), _fmt(s["flops_after"])],
            ["model file (KiB)", _fmt(fb / 1024 if fb else None, ",.0f"),
             _fmt(fa / 1024 if fa else None, ",.0f")],
            ["latency batch 1 (ms, median)", _fmt(b.get("latency_b1_ms"), ".2f"),
             _fmt(a.get("latency_b1_ms"), ".2f")],
            ["latency batch 128 (ms, median)", _fmt(b.get("latency_b128_ms"), ".1f"),
             _fmt(a.get("latency_b128_ms"), ".1f")],
            ["throughput (images/s, batch 128)", _fmt(b.get("throughput_img_s"), ",.0f"),
             _fmt(a.get("throughput_img_s"), ",.0f")],
            ["test accuracy", _fmt(s["test_acc_before"], ".4f"), _fmt(s["test_acc_after"], ".4f")],
            ["val accuracy", _fmt(s["val_acc_before"], ".4f"), _fmt(s["val_acc_after"], ".4f")]]
    return rows


_PHASE_COLS = ["phase", "alpha", "epochs", "best_val_loss", "best_val_acc", "best_ship_val_acc",
               "stop_reason"]


def _sections(run: Run) -> list[tuple[str, str, list, list]]:
    """(title, text, header, rows) blocks shared by the Markdown and HTML pages."""
    s, out = run.summary, []
    settings = run.config.get(run.command, {})
    flat = {k: v for k, v in settings.items() if not isinstance(v, dict)}
    for sub in ("optim", "data"):
        flat.update({f"{sub}.{k}": v for k, v in (settings.get(sub) or {}).items()})
    if not s:  # no summary yet: say so first, and how to go on
        out.append(("Unfinished", _unfinished_text(run), [], []))
    if "params_before" in s:  # the result first: what was removed, gained and kept
        text, rows = headline_rows(s.get("headline") or headline(s))
        out.append(("Result", text, ["", ""], rows))
    if "folds" in s:
        out.append(_folds_section(s["folds"]))
    if run.phases:
        rows = [[r.get(c, "") if not isinstance(r.get(c), float) or c in ("alpha",)
                 else f"{r[c]:.4f}" for c in _PHASE_COLS] for r in run.phases]
        for r in rows:
            r[0], r[2] = int(float(r[0])), int(float(r[2]))
        out.append(("Phases (one per α)", "Best epoch of each phase; its weights were kept.",
                    _PHASE_COLS, rows))
    if "params_before" in s:
        what = "FLOPs" if s.get("target_measure") == "flops" else "parameters"
        flops = (f", {s['achieved_flops_reduction']:.2%} of the FLOPs"
                 if "achieved_flops_reduction" in s else "")
        text = (f"{s['achieved_reduction']:.2%} of the parameters{flops} removed (target "
                f"{s['target_reduction']:.0%} of the {what}); 'after' is the fused compact model.")
        out.append(("Before / after", text, ["", "before", "after"], _before_after(s)))
    elif s:
        out.append(("Result", "", ["metric", "value"], [[k, v] for k, v in s.items()]))
    if "final_ema" in s:
        out.append(_average_section(s["final_ema"]))
    unset = sum(v is None for v in flat.values())
    out.append(("Settings", f"{unset} options left unset (their defaults applied) are not listed."
                if unset else "", ["setting", "value"],
                [[k, v] for k, v in flat.items() if v is not None]))
    return out


def _unfinished_text(run: Run) -> str:
    """What a page without a summary says: the run has not ended, and how it may go on."""
    text = "This run has no summary.json yet: it is still running, or it stopped before its end."
    if has_progress(run.path):
        text += (f" If it was interrupted, `alphaprune {run.command} --out "
                 f"{shlex.quote(str(run.path))} --resume` continues it (its console said so if "
                 "it stopped on its epoch budget, which needs --max-total-epochs N, or diverged, "
                 "which needs a new start); this page then shows its result.")
    else:
        text += " It wrote no checkpoint to resume from: run its command again."
    return text


def _average_section(e: dict) -> tuple[str, str, list, list]:
    """The shipped average of the alpha = 0 phase's weights beside its live weights."""
    a, live = e["averaged"], e["live"]
    rows = [[label, _fmt(a[key], ".4f"), _fmt(live[key], ".4f")]
            for key, label in (("test_acc", "test accuracy"), ("val_acc", "val accuracy"),
                               ("test_loss", "test loss"), ("val_loss", "val loss"))]
    rows.append(["best epoch of the phase", _fmt(a["epoch"]), _fmt(live["epoch"])])
    text = (f"The α = 0 phase shipped an exponential moving average of its weights (--final-ema "
            f"{e['epochs']:g}: time constant in epochs). Beside it, the live weights of that "
            "phase at their own best epoch, fused and scored the same way. The average minus "
            f"the live weights: {_points(e['test_acc_gain'])} on test, "
            f"{_points(e['val_acc_gain'])} on validation.")
    return ("Weight average", text, ["", "shipped (the average)", "live weights"], rows)


def _points(gain: float | None) -> str:
    """An accuracy difference in points; a dash where the split has no images."""
    return "–" if gain is None else f"{100 * gain:+.2f} points"


_FOLD_COLS = ["fold", "test_acc_after", "val_acc_after", "params_after", "flops_after"]


def _folds_section(f: dict) -> tuple[str, str, list, list]:
    """Every fold of a ``--folds`` run, then their mean and standard deviation."""
    def cells(r):
        return [_fmt(r.get(c), ".4f") if "acc" in c else _fmt(r.get(c)) for c in _FOLD_COLS[1:]]

    rows = [[f"fold {r['fold']}" + (" (shipped)" if r["fold"] == f["shipped_fold"] else ""),
             *cells(r)] for r in f["per_fold"]]
    rows += [["mean", *cells(f["mean"])], ["std", *cells(f["std"])]]
    return ("Cross-validation", f["note"] + ".", _FOLD_COLS, rows)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write the plots, ``report.md`` and ``report.html`` of a run; return their paths.

    ``out``: the folder they go to, the run's own by default; another one must be new or one
    an earlier report made (:func:`_report_folder`). A folder that cannot be written (a
    read-only run, say) is a one-line :class:`UserError` naming ``--out``.
    """
    run = read_run(run_dir)
    dest = run.path if out is None else Path(out)
    with _writable(dest):
        if dest.resolve() != run.path.resolve():
            _report_folder(dest, _REPORT_FILES, "report")
        elif not os.access(dest, os.W_OK):
            raise PermissionError(errno.EACCES, "Permission denied")
        return _write_pages(run, dest)


@contextlib.contextmanager
def _writable(dest: Path):
    """Turn a folder the report cannot be written into (no permission, a read-only file
    system) into a one-line :class:`UserError` naming ``--out``."""
    try:
        yield
    except OSError as e:
        if not isinstance(e, PermissionError) and e.errno != errno.EROFS:
            raise
        raise UserError(f"cannot write the report into {dest} ({e.strerror}): pass --out DIR "
                        "to write it into a folder of its own") from e


def _write_pages(run: Run, dest: Path) -> dict[str, Path]:
    imgs = plot_run(run, dest)
    blocks = _sections(run)
    md = [f"# Run report: {run.name}", ""]
    for title, text, header, rows in blocks:
        md += [f"## {title}", "", text, ""] + ([markdown_table(header, rows), ""] if header else [])
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in imgs]
    atomic_write_text(dest / "report.md", "\n".join(md) + "\n")
    body = [f"<h1>Run report: {html.escape(run.name)}</h1>"]
    for title, text, header, rows in blocks:
        body += [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(text)}</p>"]
        body += [_html_table(header, rows)] if header else []
    body.append("<h2>Plots</h2>")
    for p in imgs:
        data = base64.b64encode(p.read_bytes()).decode()
        body.append(f'<p><img alt="{p.stem}" src="data:image/png;base64,{data}"></p>')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}")
    atomic_write_text(dest / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run.name)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return {"md": dest / "report.md", "html": dest / "report.html",
            **{p.stem: p for p in imgs}}


def _final_row(run: Run) -> list:
    s, last = run.summary, run.metrics[-1]
    key = "ship_val_acc" if "ship_val_acc" in last else "val_acc"
    best_val = max(r[key] for r in run.metrics)
    m = shipped(s)
    settings = run.config.get(run.command, {})
    # onecycle goes straight to alpha = 0: no alpha-scheduler ran, whatever the field holds
    sched = "none (onecycle)" if settings.get("recipe") == "onecycle" else \
        settings.get("scheduler", "–")
    return [run.name, sched, len(run.metrics),
            f"{best_val:.4f}", _fmt(m.get("val_acc"), ".4f"), _fmt(m.get("test_acc"), ".4f"),
            _fmt(m.get("params")),
            _fmt(s.get("achieved_reduction"), ".2%") if "achieved_reduction" in s else "–",
            "yes" if s else "no (unfinished)"]


_CMP_HEADER = ["run", "scheduler", "epochs", "best val acc (shipped net)", "final val acc",
               "final test acc", "params", "removed", "finished"]


def _pareto_point(run: Run) -> dict | None:
    """A finished run's shipped model as a Pareto plot point (latency only for prune runs,
    whose summary measured it)."""
    m = shipped(run.summary)
    if m.get("test_acc") is None:
        return None
    return {"method": run.name, "test_acc": m["test_acc"], "params": m["params"],
            "latency_b128_ms": m.get("latency_b128_ms")}


# marks a folder the report command made, for a comparison or (since --out for one run) a
# run's report; its name is from when it marked comparisons only, kept so older folders
# are still recognised. Either kind of report may replace the other's files there.
_REPORT_MARKER = ".alphaprune-comparison"
_REPORT_FILES = {"report.md", "report.html", "loss.png", "accuracy.png", "alpha.png"}


def _report_folder(out: Path, ours: set[str], what: str) -> None:
    """Make ``out`` ready for the report command's files: a new or empty folder, or one an
    earlier report made (marked, or, written before the marker, holding only ``ours``).

    Raises:
        UserError: ``out`` is a file, or a non-empty folder the report command did not make.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: pass a folder for the {what}")
    if out.is_dir() and not (out / _REPORT_MARKER).is_file() and any(
            p.name not in ours for p in out.iterdir()):
        raise UserError(f"--out {out} is a non-empty folder that no earlier {what} made: "
                        "pass a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / _REPORT_MARKER).touch()  # later reports may replace what this one writes


def write_comparison(run_dirs: list[str | Path], out: str | Path) -> dict[str, Path]:
    """Compare runs: ``compare.png`` (val accuracy per epoch), ``pareto.png`` (test accuracy
    against measured latency and against parameters), ``compare.md`` and ``.json``."""
    runs = [read_run(r) for r in run_dirs]
    label_runs(runs)
    out = Path(out)
    with _writable(out):
        return _write_comparison(runs, out)


def _write_comparison(runs: list[Run], out: Path) -> dict[str, Path]:
    _report_folder(out, {"compare.png", "pareto.png", "compare.md", "compare.json"}, "comparison")
    png = plot_comparison(runs, out / "compare.png")
    pareto = plot_pareto([p for p in map(_pareto_point, runs) if p], out / "pareto.png")
    rows = [_final_row(r) for r in runs]
    atomic_write_text(out / "compare.md", "# Run comparison\n\n"
                      + markdown_table(_CMP_HEADER, rows)
                      + "\n\n![validation accuracy](compare.png)\n"
                      + "\n![accuracy against cost](pareto.png)\n")
    atomic_write_text(out / "compare.json",
                      json.dumps([dict(zip(_CMP_HEADER, r)) for r in rows], indent=2))
    return {"png": png, "pareto": pareto, "md": out / "compare.md", "json": out / "compare.json"}
