"""Plots of a run: files, non-blank images, one colour per alpha phase, legends."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from alphaprune.report import plots
from alphaprune.report.plots import alpha_label, phase_segments, plot_comparison, plot_run
from alphaprune.report.runs import read_run

from .synthetic import PHASES, prune_metrics, train_metrics, write_prune_run, write_train_run

RED = "#d62728"


def _plot_keeping_figures(fn, *args):
    """Call a plotting function, keeping the figures it writes, to inspect their artists."""
    kept, finish = [], plots._finish

    def keep(fig, path):
        kept.append(fig)
        return finish(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_finish", keep)
        result = fn(*args)
    return result, kept, lambda fig: None  # figures without pyplot need no closing


@pytest.fixture(scope="module")
def prune_plots(tmp_path_factory):
    """One synthetic prune run plotted once: (run folder, written paths, kept figures)."""
    run = write_prune_run(tmp_path_factory.mktemp("plots") / "prune_run")
    paths, figs, close = _plot_keeping_figures(plot_run, read_run(run), run)
    yield run, paths, figs
    for fig in figs:
        close(fig)


@pytest.fixture(scope="module")
def train_plots(tmp_path_factory):
    run = write_train_run(tmp_path_factory.mktemp("plots") / "train_run")
    paths, figs, close = _plot_keeping_figures(plot_run, read_run(run), run)
    yield run, paths, figs
    for fig in figs:
        close(fig)


def _by_title(figs, suffix):
    found = [f for f in figs if any(ax.get_title().endswith(suffix) for ax in f.axes)]
    assert len(found) == 1, [ax.get_title() for f in figs for ax in f.axes]
    return found[0]


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def _assert_not_blank(path):
    px = _pixels(path)
    packed = (px[..., 0] << 16) | (px[..., 1] << 8) | px[..., 2]
    assert px.std() > 15, f"{path.name} looks blank (std {px.std():.1f})"
    assert len(np.unique(packed)) > 50, f"{path.name} has too few colours"
    assert (px.min(axis=-1) < 200).mean() > 0.01, f"{path.name} is almost all white"


def _has_colour(path, hex_colour: str, tol: int = 12) -> bool:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(_pixels(path) - rgb).max(axis=-1) <= tol).any())


# ---------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("alpha, text", [(0.5, "α = 0.5"), (0.0, "α = 0"), (0.75, "α = 0.75"),
                                         (0.125, "α = 0.125"), (1 / 3, "α = 0.333"), (1.0, "α = 1")])
def test_alpha_label(alpha, text):
    assert alpha_label(alpha) == text


# ---------------------------------------------------------------------------------------- segments


def test_phase_segments_one_per_phase_final_red(prune_run):
    segs = phase_segments(read_run(prune_run).metrics)
    assert [a for a, _, _ in segs] == [a for a, _ in PHASES]
    assert [len(rows) for _, rows, _ in segs] == [n for _, n in PHASES]
    colours = [c for _, _, c in segs]
    assert colours[-1] == RED
    assert RED not in colours[:-1]
    assert len(set(colours)) == len(colours), "each phase needs its own colour"
    # the rows of a segment are the epochs of that phase, in order
    assert [int(r["epoch"]) for r in segs[1][1]] == [3, 4, 5]
    assert {r["phase"] for r in segs[2][1]} == {2.0}


def test_phase_segments_train_run_is_one_uncoloured_segment():
    rows = [{k: float(v) for k, v in r.items()} for r in train_metrics(5)]
    segs = phase_segments(rows)
    assert len(segs) == 1
    alpha, seg_rows, colour = segs[0]
    assert alpha is None and len(seg_rows) == 5 and colour != RED


def test_phase_segments_many_phases_cycle_palette_but_only_final_is_red():
    alphas = [round(1 - 0.07 * i, 2) for i in range(1, 14)] + [0.0]
    rows = [{"epoch": float(i), "alpha": a} for i, a in enumerate(alphas)]
    segs = phase_segments(rows)
    assert len(segs) == 14
    assert [c for _, _, c in segs].count(RED) == 1 and segs[-1][2] == RED
    # neighbouring phases never share a colour
    assert all(segs[i][2] != segs[i + 1][2] for i in range(13))


# ---------------------------------------------------------------------------------------- files


def test_plot_run_prune_writes_three_non_blank_pngs(prune_plots):
    prune_run, paths, _ = prune_plots
    assert [p.name for p in paths] == ["loss.png", "accuracy.png", "alpha.png"]
    for p in paths:
        assert p.parent == prune_run and p.is_file()
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        _assert_not_blank(p)
    with Image.open(prune_run / "loss.png") as im:
        assert im.size == (855, 405)  # 9.5 x 4.5 in at 90 dpi (legend outside the axes)
    # the alpha = 0 phase is drawn in red; the phases before it are not
    assert _has_colour(prune_run / "loss.png", RED)
    assert _has_colour(prune_run / "accuracy.png", RED)


def test_plot_run_train_writes_loss_and_accuracy_only(train_plots):
    train_run, paths, _ = train_plots
    assert [p.name for p in paths] == ["loss.png", "accuracy.png"]
    assert not (train_run / "alpha.png").exists()
    for p in paths:
        _assert_not_blank(p)
    assert not _has_colour(train_run / "loss.png", RED), "a train run has no alpha = 0 phase"


# ---------------------------------------------------------------------------------------- content


def test_loss_legend_lists_every_alpha(prune_plots):
    figures = prune_plots[2]
    fig = _by_title(figures, "loss per epoch")
    ax = fig.axes[0]
    assert ax.get_title() == "prune_run: loss per epoch"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    for alpha, _ in PHASES:
        assert alpha_label(alpha) in texts
    assert "train (dashed)" in texts and "validation (solid)" in texts
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    final = lines["α = 0"]
    assert to_hex(final.get_color()) == RED
    assert list(final.get_xdata()) == [9, 10, 11]  # 1-based epochs of the last phase
    rows = prune_metrics()
    assert list(final.get_ydata()) == [r["val_loss"] for r in rows[8:]]
    assert to_hex(lines["α = 0.75"].get_color()) != RED


def test_loss_plot_marks_phase_boundaries(prune_plots):
    figures = prune_plots[2]
    ax = _by_title(figures, "loss per epoch").axes[0]
    vlines = sorted({float(ln.get_xdata()[0]) for ln in ax.get_lines()
                     if len(set(ln.get_xdata())) == 1 and ln.get_linestyle() == ":"})
    # between 1-based epochs 3|4, 6|7, 8|9
    assert vlines == [3.5, 6.5, 8.5]


def test_accuracy_legends(prune_plots):
    figures = prune_plots[2]
    fig = _by_title(figures, "train accuracy")
    train_ax, val_ax = fig.axes
    # one legend, outside the right panel: the phase colours, then the two line styles
    texts = [t.get_text() for t in val_ax.get_legend().get_texts()]
    assert texts[:len(PHASES)] == [alpha_label(a) for a, _ in PHASES]
    assert any("what ships" in t for t in texts[len(PHASES):])
    assert train_ax.get_legend() is None
    # validation panel: the current-alpha network and the shipped network, per phase
    dotted = [ln for ln in val_ax.get_lines() if ln.get_linestyle() == ":" and len(set(ln.get_xdata())) > 1]
    assert len(dotted) == len(PHASES)


def test_alpha_plot_follows_the_schedule(prune_plots):
    figures = prune_plots[2]
    ax = _by_title(figures, "α per epoch").axes[0]
    line = ax.get_lines()[0]
    expected = [a for a, n in PHASES for _ in range(n)]
    assert list(line.get_ydata()) == expected
    assert list(line.get_xdata()) == list(range(1, len(expected) + 1))


def test_train_loss_legend_has_no_alpha(train_plots):
    figures = train_plots[2]
    ax = _by_title(figures, "loss per epoch").axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "validation" in texts
    assert not any("α" in t for t in texts)


def test_unfinished_prune_run_still_plots(tmp_path):
    run = write_prune_run(tmp_path / "partial", phases=[(0.75, 3), (0.5, 1)], summary=None)
    paths = plot_run(read_run(run), run)
    assert [p.name for p in paths] == ["loss.png", "accuracy.png", "alpha.png"]
    assert not _has_colour(run / "loss.png", RED), "no alpha = 0 phase yet: nothing red"


def test_plot_comparison_one_line_per_run(prune_run, train_run, tmp_path):
    out, figures, close = _plot_keeping_figures(
        plot_comparison, [read_run(prune_run), read_run(train_run)], tmp_path / "cmp.png")
    assert out == tmp_path / "cmp.png"
    _assert_not_blank(out)
    assert len(figures) == 1
    ax = figures[0].axes[0]
    close(figures[0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["prune_run", "train_run"]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    # prune runs plot the accuracy of the network that ships (all branches)
    assert list(lines["prune_run"].get_ydata()) == [r["ship_val_acc"] for r in prune_metrics()]
    assert list(lines["train_run"].get_ydata()) == [r["val_acc"] for r in train_metrics()]


def test_pareto_plot_draws_each_method_and_skips_rows_without_latency(tmp_path, monkeypatch):
    from alphaprune.report.plots import plot_pareto

    drawn = []
    from matplotlib.axes import Axes

    real = Axes.plot

    def spy(ax, *args, **kwargs):
        drawn.append((kwargs.get("label"), [list(a) for a in args]))
        return real(ax, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    rows = [{"method": "pretrained", "test_acc": 0.85, "params": 900, "latency_b128_ms": 70.0},
            {"method": "os", "test_acc": 0.84, "params": 300, "latency_b128_ms": 40.0},
            {"method": "os", "test_acc": 0.80, "params": 100, "latency_b128_ms": 25.0},
            {"method": "tp", "test_acc": 0.75, "params": 310, "latency_b128_ms": None}]
    path = plot_pareto(rows, tmp_path / "p.png", title="t")
    assert Image.open(path).size[0] > 500
    # left panel (latency) then right (parameters) per method; tp has no latency
    assert ("os", [[25.0, 40.0], [0.80, 0.84]]) in drawn
    assert ("os", [[100, 300], [0.80, 0.84]]) in drawn
    assert [d for d in drawn if d[0] == "tp"] == [("tp", [[310], [0.75]])]


def test_importing_the_api_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    """plots chose Agg on import: a notebook's inline backend was replaced. The figures are
    drawn without pyplot now."""
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import alphaprune.api; "
            "import alphaprune.report.plots; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
