"""The one matplotlib style of every figure: paper column width, labelled axes, labelled threshold lines.

* Sizes: a single column is 3.4 in wide (two-column papers), a full page 7.0 in; fonts 8 pt so the
  text is readable when the PDF is placed at that width.
* Palette: Okabe and Ito's colour-blind-safe eight colours (Okabe & Ito 2008, "Color universal
  design"), in an order whose first colours stay distinct in grey scale too.
* Threshold lines: dashed, black, with their value written on the line (``threshold_line``), so a
  reader never has to guess which constant a line is.
* Output: every figure is saved as a PNG (dpi 100: small files for the committed gallery) and a vector
  PDF, by :func:`save`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (works without a display)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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

    Returns the figure and a 2-D array of axes (always 2-D, so callers index ``axes[row, col]``).
    """
    if width not in ("column", "page"):
        raise ValueError(f"width must be 'column' or 'page', got {width!r}")
    use()
    w = COLUMN_WIDTH if width == "column" else PAGE_WIDTH
    h = height if height is not None else (2.2 * nrows if width == "page" else 2.4 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False, **subplot_kw)
    return fig, axes


def threshold_line(ax: plt.Axes, value: float, label: str, *, color: str = "black",
                   where: float = 0.02, va: str = "bottom", vertical: bool = False, pad: float = 0.0) -> None:
    """Dashed line at ``value`` with its ``label`` written on it (at fraction ``where`` of the axis),
    ``pad`` points above (va="bottom") or below (va="top") the line."""
    from matplotlib.transforms import offset_copy

    box = {"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}  # legible over data
    if vertical:
        ax.axvline(value, color=color, ls="--", lw=0.9, zorder=1)
        ax.text(value, where, label, transform=ax.get_xaxis_transform(), rotation=90, color=color,
                fontsize=6.5, va="bottom", ha="right", bbox=box, zorder=5)
    else:
        ax.axhline(value, color=color, ls="--", lw=0.9, zorder=1)
        shift = offset_copy(ax.get_yaxis_transform(), fig=ax.figure, y=pad if va == "bottom" else -pad,
                            units="points")
        ax.text(where, value, label, transform=shift, color=color, fontsize=6.5, va=va, ha="left", bbox=box,
                zorder=5)


def spans_decades(values: Iterable[float], decades: float = 2.0) -> bool:
    """True when the positive finite ``values`` span at least ``decades`` powers of ten."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and math.log10(v.max() / v.min()) >= decades


def logscale(ax: plt.Axes, axis: str = "y") -> None:
    """Log scale on ``axis`` (call after plotting).  Up to 2.5 decades: plain-number labels at 1, 2, 5 x
    10^k; wider: labels at powers of ten.  Minor ticks are never labelled (no clutter)."""
    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    if lo > 0 and math.log10(hi / lo) <= 2.5:
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
    """Write ``name``.png (dpi :data:`PNG_DPI`) and ``name``.pdf into ``out_dir``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, metadata=_metadata(path))
    plt.close(fig)
    return paths


def _metadata(path: Path) -> dict[str, object]:
    # no creation date in the files: the same data gives byte-identical PNGs (clean diffs of the gallery)
    if path.suffix == ".pdf":
        return {"CreationDate": None, "Creator": "aeos paper_figures"}
    return {"Software": "aeos paper_figures"}


def legend(ax: plt.Axes, handles: Sequence | None = None, **kw) -> None:
    """A legend in the package's style (small, no frame, best location)."""
    if handles is None:
        ax.legend(**kw)
    else:
        ax.legend(handles=handles, **kw)
