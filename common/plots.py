"""Plots through matplotlib's Agg backend (no display needed), written atomically.

    fig, ax = figure()                      # one axes; figure(1, 3) for a row of three
    ax.plot(...); save_figure(fig, out / "loss.png")
    plot_curves(out / "loss.png", {"train": losses}, xlabel="step", ylabel="loss", logy=True)
"""
from __future__ import annotations
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from common.files import atomic_path


def pyplot():
  """matplotlib.pyplot on the Agg backend (no display needed: scripts run on headless Jetsons and CI), imported at the
  first plot, so a run that only refuses its input or times a benchmark does not pay for it (about 0.3 s)."""
  import matplotlib
  matplotlib.use("Agg")    # before pyplot's first import
  import matplotlib.pyplot as plt
  return plt


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] | None = None, **kwargs):
  size = size or (4.2 * ncols, 3.4 * nrows)
  return pyplot().subplots(nrows, ncols, figsize=size, **kwargs)


def save_figure(fig, dest: str | os.PathLike, dpi: int = 110) -> Path:
  fmt = Path(dest).suffix.lstrip(".") or "png"
  fig.tight_layout()
  with atomic_path(dest) as tmp:
    fig.savefig(tmp, format=fmt, dpi=dpi)
  pyplot().close(fig)
  return Path(dest)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
  """Trailing mean over the last `window` values (shorter at the start), same length as input."""
  v = np.asarray(values, dtype=np.float64)
  if len(v) == 0: return v
  c = np.cumsum(np.insert(v, 0, 0.0))
  idx = np.arange(1, len(v) + 1)
  lo = np.maximum(idx - window, 0)
  return (c[idx] - c[lo]) / (idx - lo)


def plot_curves(dest: str | os.PathLike, curves: dict[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]],
                *, title: str = "", xlabel: str = "step", ylabel: str = "", logy: bool = False,
                smooth: int = 0, hlines: dict[str, float] | None = None) -> Path:
  """One axes of named curves: values (x = 0..n-1) or (x, y) pairs. `smooth` > 1 overlays a
  moving average; `hlines` draws labelled targets (e.g. {"solved": 475})."""
  fig, ax = figure(size=(6, 3.8))
  for name, c in curves.items():
    x, y = (c if isinstance(c, tuple) else (np.arange(len(c)), c))
    line, = ax.plot(x, y, label=name, alpha=0.35 if smooth > 1 else 1.0, lw=1)
    if smooth > 1: ax.plot(x, moving_average(y, smooth), color=line.get_color(), lw=2, label=f"{name} ({smooth}-pt mean)")
  for name, yv in (hlines or {}).items(): ax.axhline(yv, ls="--", color="gray", lw=1, label=name)
  if logy: ax.set_yscale("log")
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save_figure(fig, dest)


def plot_confusion(dest: str | os.PathLike, matrix: np.ndarray, labels: Sequence[str], title: str = "confusion matrix") -> Path:
  """Rows: true class, columns: predicted class, counts written in each cell."""
  m = np.asarray(matrix)
  fig, ax = figure(size=(1.0 + 0.55 * len(labels), 0.8 + 0.5 * len(labels)))
  ax.imshow(m, cmap="Blues")
  ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true", title=title)
  ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
  ax.set_yticklabels(labels, fontsize=8)
  for i in range(m.shape[0]):
    for j in range(m.shape[1]):
      ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=7, color="white" if m[i, j] > m.max() / 2 else "black")
  return save_figure(fig, dest)


def image_grid(images: np.ndarray, nrow: int, pad: int = 2, value: float = 1.0) -> np.ndarray:
  """(N, H, W[, C]) in [0, 1] -> one (rows*(H+pad), nrow*(W+pad)[, C]) mosaic, row-major."""
  imgs = np.asarray(images)
  n, h, w = imgs.shape[:3]
  rows = -(-n // nrow)
  shape = (rows * (h + pad) + pad, nrow * (w + pad) + pad) + imgs.shape[3:]
  grid = np.full(shape, value, dtype=np.float32)
  for i in range(n):
    r, c = divmod(i, nrow)
    grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = imgs[i]
  return grid
