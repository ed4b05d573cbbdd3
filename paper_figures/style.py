"""The one matplotlib style of every figure: paper column width, labelled axes, labelled threshold lines.

* Sizes: a single column is 3.4 in wide (two-column papers), a full page 7.0 in; fonts 8 pt so the
  text is readable when the PDF is placed at that width.
* Palette: Okabe and Ito's colour-blind-safe eight colours (Okabe & Ito 2008, "Color universal
  design"), in an order whose first colours stay distinct in grey scale too.
* Threshold lines: dashed, with their value written beside the line in the panel's margin
  (``threshold_line``), so a reader never has to guess which constant a line is and no label covers data.
* Seeds: every seed's series thin, the mean over seeds bold (``seeds_and_mean``).
* Legends: one per figure, above the panels (``legend``), never over data.
* Output: every figure is saved as a PNG (dpi 100: small files for the committed gallery) and a vector
  PDF, by :func:`save`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (works without a display)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

#: Width in inches of one column and of a full page of a two-column paper.
COLUMN_WIDTH = 3.4
PAGE_WIDTH = 7.0

#: Okabe-Ito colour-blind-safe palette (blue, vermilion, bluish green, orange, reddish purple, sky blue,
#: yellow, black).
PALETTE: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9",
                            "#F0E442", "#000000")

#: dpi of the PNG files (the PDF is vector).  100 dpi keeps a full-page figure under ~150 KB.
PNG_DPI = 100

RC: dict[str, object] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "legend.frameon": False,
    "figure.dpi": PNG_DPI,
    "savefig.dpi": PNG_DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "pdf.fonttype": 42,  # TrueType in the PDF: editable text
    "figure.constrained_layout.use": True,
}


def use() -> None:
    """Make :data:`RC` the process's matplotlib defaults (paper_figures is matplotlib's only user)."""
    matplotlib.rcParams.update(RC)


def colors(n: int) -> list[str]:
    """``n`` colours of the palette (cycling if ``n`` > 8)."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def figure(ncols: int = 1, nrows: int = 1, width: str = "page", height: float | None = None,
           **subplot_kw) -> tuple[plt.Figure, np.ndarray]:
    """A figure of ``nrows`` x ``ncols`` panels at paper width ("column" 3.4 in or "page" 7.0 in).

    Returns the figure and a 2-D array of axes (always 2-D, so callers index ``axes[row, col]``), each with
    at most 5 major ticks on x (step counts such as 10000 and 15000 need the room).
    """
    if width not in ("column", "page"):
        raise ValueError(f"width must be 'column' or 'page', got {width!r}")
    use()
    w = COLUMN_WIDTH if width == "column" else PAGE_WIDTH
    h = height if height is not None else (2.2 * nrows if width == "page" else 2.4 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False, **subplot_kw)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    return fig, axes


def threshold_line(ax: plt.Axes, value: float, label: str, *, color: str = "black", vertical: bool = False) -> None:
    """Dashed line at ``value`` (a y value; an x value when ``vertical``) with its ``label`` written just
    outside the panel, in the right margin at the line's height (above the panel at the line's x when
    ``vertical``), so it never covers data.  Keep labels short: "threshold\n38" (two lines are fine).

    The line and its label carry the gids ``"threshold"`` and ``"threshold-label"`` (tests read them)."""
    from matplotlib.transforms import offset_copy

    if vertical:
        line = ax.axvline(value, color=color, ls="--", lw=0.9, zorder=1)
        where = offset_copy(ax.get_xaxis_transform(), fig=ax.figure, y=2, units="points")
        text = ax.text(value, 1.0, label, transform=where, color=color, fontsize=6.5, va="bottom", ha="center",
                       clip_on=False)
    else:
        line = ax.axhline(value, color=color, ls="--", lw=0.9, zorder=1)
        where = offset_copy(ax.get_yaxis_transform(), fig=ax.figure, x=3, units="points")
        text = ax.text(1.0, value, label, transform=where, color=color, fontsize=6.5, va="center", ha="left",
                       clip_on=False, linespacing=1.0)
    line.set_gid("threshold")
    text.set_gid("threshold-label")


def seeds_and_mean(ax: plt.Axes, xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]], *, color: str,
                   label: str | None = None, marker: str | None = None, ms: float = 2.5, ls: str = "-"
                   ) -> np.ndarray:
    """Every seed's series thin and faint, their mean over seeds bold, on the x values of the longest series
    where every seed has a value at that very x (a run that stopped early ends the mean there).

    ``xs``, ``ys``: one series per seed.  Returns the mean on the longest series' x values (NaN elsewhere)."""
    grid = max((np.asarray(x, dtype=float) for x in xs), key=len)
    position = {x: i for i, x in enumerate(grid.tolist())}
    table = np.full((len(ys), grid.size), np.nan)
    for i, (x, y) in enumerate(zip(xs, ys)):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], color=color, lw=0.6, alpha=0.35, ls=ls, zorder=2)
        for xv, yv in zip(x.tolist(), y.tolist()):
            if xv in position:
                table[i, position[xv]] = yv
    mean = table.mean(axis=0)  # NaN wherever a seed has no value
    ok = np.isfinite(mean)
    ax.plot(grid[ok], mean[ok], color=color, lw=1.5, ls=ls, marker=marker, ms=ms, label=label, zorder=3)
    return mean


def spans_decades(values: Iterable[float], decades: float = 2.0) -> bool:
    """True when the positive finite ``values`` span at least ``decades`` powers of ten."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and math.log10(v.max() / v.min()) >= decades


def logscale(ax: plt.Axes, axis: str = "y", decades_only: bool = False) -> None:
    """Log scale on ``axis`` (call after plotting).  Up to 2.5 decades: plain-number labels at 1, 2, 5 x
    10^k; wider (or ``decades_only``, for narrow panels): labels at powers of ten.  Minor ticks are never
    labelled (no clutter)."""
    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    if lo > 0 and math.log10(hi / lo) <= 2.5 and not decades_only:
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        target.set_major_locator(LogLocator(base=10))
        target.set_major_formatter(LogFormatterSciNotation())
    target.set_minor_formatter(NullFormatter())


def auto_log(ax: plt.Axes, values: Iterable[float], axis: str = "y", decades: float = 2.0) -> None:
    """Use a log scale on ``axis`` when the data spans ``decades`` or more powers of ten."""
    if spans_decades(values, decades):
        logscale(ax, axis)


def save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name``.png (dpi :data:`PNG_DPI`) and ``name``.pdf into ``out_dir``; return both paths.

    Every label over data or over another label (:func:`paper_figures.legibility.problems`) is printed as a
    warning on stderr (the tests require none)."""
    from paper_figures import legibility

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.pdf", out_dir / f"{name}.png"]  # the PNG last: its layout is the one checked
    for path in paths:
        fig.savefig(path, metadata=_metadata(path))
    for problem in legibility.problems(fig, draw=False):
        print(f"warning: figure {name}: {problem}", file=sys.stderr)
    plt.close(fig)
    return paths


def _metadata(path: Path) -> dict[str, object]:
    # no creation date in the files: the same data gives byte-identical PNGs (clean diffs of the gallery)
    if path.suffix == ".pdf":
        return {"CreationDate": None, "Creator": "aeos paper_figures"}
    return {"Software": "aeos paper_figures"}


def legend(fig: plt.Figure, sources: Sequence[plt.Axes] | None = None, handles: Sequence | None = None,
           ncols: int | None = None) -> None:
    """One legend for the whole figure, above its panels, so it never covers data: the labelled artists
    of ``sources`` (default: every panel), each label once, or the given ``handles``."""
    if handles is None:
        seen: dict[str, object] = {}
        for ax in (sources if sources is not None else fig.axes):
            for handle, text in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(text, handle)
        handles = [h for h in seen.values()]
        labels = list(seen)
    else:
        labels = [h.get_label() for h in handles]
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=ncols or min(len(handles), 4))
