"""Plots of a run: loss, accuracy and alpha per epoch, one colour per alpha phase."""

from __future__ import annotations

from pathlib import Path

# figures drawn without pyplot: no backend is chosen, so a caller's (a notebook's inline
# one) is left as it was, and nothing needs a display
from matplotlib.figure import Figure

from alphaprune.atomic import atomic_write
from alphaprune.report.runs import Run

__all__ = ["plot_run", "plot_comparison", "plot_pareto", "phase_segments", "alpha_label"]

_PALETTE = ["#2ca02c", "#7f7f7f", "#ff7f0e", "#1f77b4", "#9467bd", "#8c564b", "#e377c2",
            "#bcbd22", "#17becf", "#000080", "#556b2f", "#b8860b"]
_FINAL = "#d62728"  # alpha = 0 is always red


def alpha_label(alpha: float) -> str:
    """Legend text for a phase, e.g. ``α = 0.4``."""
    return f"α = {alpha:.3g}"


def phase_segments(metrics: list[dict]) -> list[tuple[float, list[dict], str]]:
    """Split per-epoch rows into consecutive runs of equal alpha: (alpha, rows, colour)."""
    segs: list[tuple[float, list[dict]]] = []
    for row in metrics:
        a = row.get("alpha", None)
        a = float(a) if isinstance(a, float) else None
        if segs and segs[-1][0] == a:
            segs[-1][1].append(row)
        else:
            segs.append((a, [row]))
    out, i = [], 0
    for a, rows in segs:
        if a is not None and a <= 0.0:
            colour = _FINAL
        else:
            colour, i = _PALETTE[i % len(_PALETTE)], i + 1
        out.append((a, rows, colour))
    return out


def _epochs(rows):
    return [int(r["epoch"]) + 1 for r in rows]


def _draw(ax, segs, key: str, style: str, label_phases: bool, prefix: str = ""):
    for a, rows, colour in segs:
        ys = [r.get(key) for r in rows]
        if any(not isinstance(y, float) for y in ys):
            continue
        label = (alpha_label(a) if a is not None else prefix or key) if label_phases else None
        ax.plot(_epochs(rows), ys, style, color=colour, label=label, marker="o", markersize=3)


def _boundaries(ax, segs):
    for _, rows, _ in segs[1:]:
        ax.axvline(int(rows[0]["epoch"]) + 0.5, color="#cccccc", linestyle=":", linewidth=1)


def _subplots(*grid, figsize, **kw):
    """``plt.subplots`` without pyplot: a figure and its axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kw)


def _finish(fig, path: Path):
    fig.tight_layout()
    # atomically: a reader never sees half a picture, a failed write keeps the old one
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))


def plot_run(run: Run, out_dir: Path) -> list[Path]:
    """Write ``loss.png``, ``accuracy.png`` and (for prune runs) ``alpha.png``; return paths."""
    segs = phase_segments(run.metrics)
    has_alpha = any(a is not None for a, _, _ in segs)
    title = f"{run.name}: " if run.name else ""
    paths = []

    fig, ax = _subplots(figsize=(9.5, 4.5))
    _draw(ax, segs, "train_loss", "--", False)
    _draw(ax, segs, "val_loss", "-", True, "validation")
    _boundaries(ax, segs)
    ax.plot([], [], "k--", label="train (dashed)")
    ax.plot([], [], "k-", label="validation (solid)")
    ax.set(title=f"{title}loss per epoch", xlabel="epoch", ylabel="cross-entropy loss")
    # legends sit outside the axes so they never hide a curve
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    paths.append(out_dir / "loss.png")
    _finish(fig, paths[-1])

    fig, (a1, a2) = _subplots(1, 2, figsize=(12.5, 4.8), sharey=True)
    _draw(a1, segs, "train_acc", "-", True, "train")
    _draw(a2, segs, "val_acc", "-", False)
    if has_alpha:
        _draw(a2, segs, "ship_val_acc", ":", False)
        a2.plot([], [], "k:", label="all branches\n(α = 0, what ships)")
        a2.plot([], [], "k-", label="network at\ncurrent α")
    for ax, name in ((a1, "train"), (a2, "validation")):
        _boundaries(ax, segs)
        ax.set(title=f"{title}{name} accuracy", xlabel="epoch")
        ax.grid(alpha=0.3)
    a1.set_ylabel("accuracy (fraction correct)")
    # phase colours (left panel's entries) and line styles (right panel's), outside the axes
    handles, labels = a1.get_legend_handles_labels()
    h2, l2 = a2.get_legend_handles_labels()
    a2.legend(handles + h2, labels + l2, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0)
    paths.append(out_dir / "accuracy.png")
    _finish(fig, paths[-1])

    if has_alpha:
        fig, ax = _subplots(figsize=(8, 3))
        ax.step(_epochs(run.metrics), [r["alpha"] for r in run.metrics], where="mid", color="k")
        ax.set(title=f"{title}α per epoch", xlabel="epoch", ylabel="α (weight of original path)",
               ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
        paths.append(out_dir / "alpha.png")
        _finish(fig, paths[-1])
    return paths


def plot_comparison(runs: list[Run], path: Path) -> Path:
    """Validation accuracy against epoch for several runs on one figure."""
    fig, ax = _subplots(figsize=(9, 5))
    for i, run in enumerate(runs):
        key = "ship_val_acc" if "ship_val_acc" in run.metrics[0] else "val_acc"
        ax.plot(_epochs(run.metrics), [r[key] for r in run.metrics], "-o", markersize=3,
                color=_PALETTE[i % len(_PALETTE)], label=run.name)
    ax.set(title="validation accuracy of the network that ships (all branches for prune runs)",
           xlabel="epoch", ylabel="accuracy (fraction correct)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _finish(fig, path)
    return path


def plot_pareto(rows: list[dict], path: Path, title: str = "") -> Path:
    """Test accuracy against measured latency (batch 128) and against parameters, one marker
    per row, labelled by ``method``; each method's points joined in order of size, so its
    frontier shows. Rows without a latency are left out of the left panel."""
    fig, axes = _subplots(1, 2, figsize=(12, 4.5))
    methods = sorted({r["method"] for r in rows}, key=lambda m: (m != "pretrained", m))
    for i, method in enumerate(methods):
        mine = [r for r in rows if r["method"] == method]
        colour = "#000000" if method == "pretrained" else _PALETTE[i % len(_PALETTE)]
        for ax, key in ((axes[0], "latency_b128_ms"), (axes[1], "params")):
            pts = sorted((r[key], r["test_acc"]) for r in mine if r.get(key) is not None)
            if pts:
                ax.plot(*zip(*pts), marker="*" if method == "pretrained" else "o",
                        color=colour, label=method, linestyle="-" if len(pts) > 1 else "none")
    axes[0].set_xlabel("latency, batch 128 (ms, median, measured side by side)")
    axes[1].set_xlabel("parameters")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _finish(fig, Path(path))
    return Path(path)
