"""What covers what in a drawn figure: a label over data, or two labels over each other.

:func:`problems` reads the artists of a drawn matplotlib figure (in display coordinates, after layout)
and names every

* label (a text in a panel, a legend) whose box meets a data artist of a panel it lies over: a
  line's segments or markers, scattered points, error bars, a filled area or an image (threshold lines,
  gid ``"threshold"``, are references, not data);
* pair of labels whose boxes meet or come closer than :data:`GAP`: titles, axis labels, visible tick
  labels, texts, threshold labels and legends, anywhere in the figure.

:func:`paper_figures.style.save` prints them as warnings, and the tests require none on every figure.
"""

from __future__ import annotations

from itertools import combinations
from typing import Iterator

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PathCollection, PolyCollection, QuadMesh
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.path import Path
from matplotlib.text import Text
from matplotlib.transforms import Bbox

#: Two labels closer than this (pixels) run together ("10000" and "15000" side by side read "1000015000").
GAP = 2.0


def _name(text: Text | None, fallback: str) -> str:
    return repr(text.get_text().replace("\n", " ")) if text is not None else fallback


def _visible_ticks(ax: Axes) -> Iterator[Text]:
    for axis, (low, high) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
        span = high - low
        for which in ("major", "minor"):
            locs = axis.get_majorticklocs() if which == "major" else axis.get_minorticklocs()
            labels = axis.get_majorticklabels() if which == "major" else axis.get_minorticklabels()
            for loc, label in zip(locs, labels):
                if label.get_visible() and label.get_text() and low - 1e-9 * span <= loc <= high + 1e-9 * span:
                    yield label


def labels(fig: Figure, renderer) -> list[tuple[str, Bbox, Axes | None, bool]]:
    """(name, display box, its panel, over data?) of every label of ``fig``; "over data" marks the labels
    a panel's data could lie under (texts and legends), not the axis furniture around it."""
    found: list[tuple[str, Bbox, Axes | None, bool]] = []
    for ax in fig.axes:
        furniture = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *_visible_ticks(ax)]
        for text in furniture:
            if text.get_visible() and text.get_text():
                found.append((_name(text, "title"), text.get_window_extent(renderer), ax, False))
        for text in ax.texts:
            if text.get_visible() and text.get_text():
                found.append((_name(text, "text"), text.get_window_extent(renderer), ax, True))
        if ax.get_legend() is not None:
            found.append(("a legend", ax.get_legend().get_window_extent(renderer), ax, True))
    for legend in fig.legends:
        found.append(("the figure's legend", legend.get_window_extent(renderer), None, True))
    for text in fig.texts:
        if text.get_visible() and text.get_text():
            found.append((_name(text, "text"), text.get_window_extent(renderer), None, True))
    return found


def _segments(points: np.ndarray) -> Iterator[np.ndarray]:
    """Runs of finite points (a NaN breaks a line)."""
    ok = np.isfinite(points).all(axis=1)
    start = None
    for i, good in enumerate(np.append(ok, False)):
        if good and start is None:
            start = i
        elif not good and start is not None:
            yield points[start:i]
            start = None


def _line_meets(line: Line2D, box: Bbox) -> bool:
    points = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
    if line.get_linestyle() not in ("None", "", " ", "none") and line.get_linewidth() > 0:
        for run in _segments(points):
            if len(run) == 1 and box.contains(*run[0]):
                return True
            if len(run) > 1 and Path(run).intersects_bbox(box, filled=False):
                return True
    if line.get_marker() not in (None, "None", "", " ", "none"):
        pad = line.get_markersize() * line.figure.dpi / 72 / 2
        grown = box.expanded(1, 1).padded(pad)
        points = points[np.isfinite(points).all(axis=1)]
        if np.any((points[:, 0] >= grown.x0) & (points[:, 0] <= grown.x1) & (points[:, 1] >= grown.y0)
                  & (points[:, 1] <= grown.y1)):
            return True
    return False


def _collection_meets(coll, box: Bbox, renderer) -> bool:
    if isinstance(coll, QuadMesh):
        return coll.get_window_extent(renderer).overlaps(box)
    if isinstance(coll, PathCollection):
        points = coll.get_offset_transform().transform(np.asarray(coll.get_offsets(), dtype=float))
        sizes = coll.get_sizes()
        pad = float(np.sqrt(sizes.max()) * coll.figure.dpi / 72 / 2) if sizes.size else 0.0
        grown = box.padded(pad)
        points = points[np.isfinite(points).all(axis=1)]
        return bool(np.any((points[:, 0] >= grown.x0) & (points[:, 0] <= grown.x1) & (points[:, 1] >= grown.y0)
                           & (points[:, 1] <= grown.y1)))
    if isinstance(coll, LineCollection):
        transform = coll.get_transform()
        return any(Path(run).intersects_bbox(box, filled=False)
                   for seg in coll.get_segments() for run in _segments(transform.transform(np.asarray(seg, float)))
                   if len(run) > 1)
    if isinstance(coll, PolyCollection):
        transform = coll.get_transform()
        return any(transform.transform_path(path).intersects_bbox(box, filled=True) for path in coll.get_paths())
    return False


def _covers_data(ax: Axes, box: Bbox, renderer) -> bool:
    """True when ``box`` (display coordinates) meets a data artist drawn inside ``ax``."""
    inside = Bbox.intersection(box, ax.get_window_extent(renderer))
    if inside is None:
        return False
    for line in ax.lines:
        if line.get_visible() and line.get_gid() != "threshold" and _line_meets(line, inside):
            return True
    for coll in ax.collections:
        if coll.get_visible() and _collection_meets(coll, inside, renderer):
            return True
    return any(image.get_window_extent(renderer).overlaps(inside) for image in ax.images)


def problems(fig: Figure, draw: bool = True) -> list[str]:
    """Every label over data and every pair of overlapping labels in ``fig``, one sentence each; empty when
    the figure is legible.  ``draw=False`` skips drawing it first (it was just saved: the layout is done)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)  # a closed figure too
    if draw:
        canvas.draw()
    renderer = canvas.get_renderer()
    found = labels(fig, renderer)
    out = []
    for name, box, _, over_data in found:
        if not over_data:
            continue
        for index, ax in enumerate(fig.axes, start=1):
            if _covers_data(ax, box, renderer):
                out.append(f"{name} covers data of panel {index}")
    for (a, box_a, _, _), (b, box_b, _, _) in combinations(found, 2):
        if box_a.padded(GAP / 2).overlaps(box_b.padded(GAP / 2)):
            out.append(f"{a} overlaps {b}")
    return out
