"""Synthetic data that needs no download: handwritten-style digits and coloured geometric shapes.

    from common.digits import make_digits, digit_splits, make_shapes, shape_splits
    x, y = make_digits(1000, seed=0)                  # x float32 (1000, 1, 28, 28) in [0, 1], y int64 (1000,)
    x_tr, y_tr, x_te, y_te = digit_splits(5000, 1000, seed=0, size=32)
    s, c = make_shapes(500, seed=0)                   # s float32 (500, 3, 32, 32) in [0, 1], c int64 in 0..4

How a digit is drawn (MNIST-like: a white stroke on black, the glyph filling about 3/4 of the height):
  1. Skeleton: each digit 0-9 is a few pen strokes (polylines and elliptic arcs) in a unit box, in one
     of 2-3 handwriting variants (a 1 with or without a flag and base, a 7 with or without a bar, an open
     or closed 4, ...).
  2. Elastic jitter: every stroke point p moves by a smooth random field
     d(p) = sum_k a_k * sin(2*pi*<f_k, p> + phi_k), so lines bend like a hand's, not like noise.
  3. Affine: glyph size ("font size"), width/height ratio, shear, rotation, then a translation that
     keeps the whole glyph inside the image.
  4. Pen: the strokes are drawn with a random stroke width at 4x resolution with round joints and caps,
     then box-filtered down to size x size (anti-aliasing for free).
  5. Ink and paper: random ink intensity, additive Gaussian noise, clipped to [0, 1].

Determinism: sample i of a split depends only on (seed, split, i), through its own numpy Generator.
So make_digits(100, s)[:50] equals make_digits(50, s), results do not depend on batch size, and the
held-out split (split 1) never shares a sample with the training split (split 0):
digit_splits(n_train, n_test, s) returns make_digits(n_train, s) plus n_test digits of split 1.
Labels cycle 0, 1, ..., 9, 0, 1, ... so every prefix is class-balanced (shuffle for training).
Sizes: 28 (MNIST) and 32 (U-Net friendly) are the intended ones; any size in 16..128 works.
Speed: about 0.1-0.2 ms per image on one CPU core (Pillow does the drawing).

Bad arguments (negative counts, a size out of range, a negative seed) raise common.cli.UserError, so
a script that passes its flags straight through gets the usual one-line error and exit status 2.
"""
from __future__ import annotations
import math

import numpy as np
from PIL import Image, ImageDraw

from common.cli import UserError

DIGIT_NAMES = tuple("0123456789")
SHAPE_NAMES = ("circle", "square", "triangle", "star", "cross")
SUPERSAMPLE = 4          # drawing resolution / output resolution
MIN_SIZE, MAX_SIZE = 16, 128


# ---- 1. skeletons: pen strokes in a unit box (x right, y down, both 0..1) ----------------------

def _arc(cx: float, cy: float, rx: float, ry: float, deg0: float, deg1: float, n: int = 18) -> np.ndarray:
  """Points of an elliptic arc; angles in degrees with y pointing down (90 = bottom, 270 = top)."""
  a = np.radians(np.linspace(deg0, deg1, n))
  return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def _line(*pts: tuple[float, float]) -> np.ndarray:
  return np.asarray(pts, dtype=np.float64)


def _digit_variants() -> dict[int, list[list[np.ndarray]]]:
  """digit -> list of variants, each a list of strokes (arrays of points)."""
  def cat(*parts): return np.concatenate(parts, axis=0)
  return {
    0: [[_arc(0.5, 0.5, 0.42, 0.48, 0, 360, 30)],
        [_arc(0.5, 0.5, 0.40, 0.48, -95, 272, 30)]],
    1: [[_line((0.55, 0.0), (0.5, 1.0))],
        [_line((0.2, 0.25), (0.58, 0.0), (0.55, 1.0))],
        [_line((0.2, 0.25), (0.58, 0.0), (0.55, 1.0)), _line((0.25, 1.0), (0.85, 1.0))]],
    2: [[cat(_arc(0.5, 0.3, 0.42, 0.3, 170, 385), _line((0.05, 1.0), (1.0, 1.0)))],
        [cat(_arc(0.5, 0.28, 0.4, 0.28, 180, 400), _line((0.12, 0.9)), _arc(0.2, 0.9, 0.1, 0.1, 180, -90, 8)[1:],
             _line((0.3, 0.95), (1.0, 0.98)))]],
    3: [[_arc(0.45, 0.26, 0.42, 0.25, 200, 450), _arc(0.45, 0.74, 0.47, 0.26, 270, 520)],
        [cat(_line((0.05, 0.0), (0.9, 0.0), (0.4, 0.42)), _arc(0.45, 0.7, 0.47, 0.3, 280, 520))]],
    4: [[_line((0.72, 1.0), (0.72, 0.0), (0.0, 0.68), (1.0, 0.68))],
        [_line((0.25, 0.0), (0.08, 0.6), (1.0, 0.6)), _line((0.72, 0.22), (0.72, 1.0))]],
    5: [[cat(_line((0.9, 0.02), (0.22, 0.02), (0.18, 0.45)), _arc(0.5, 0.69, 0.42, 0.31, 230, 510))],
        [_line((0.22, 0.02), (0.18, 0.45)), _arc(0.5, 0.69, 0.42, 0.31, 230, 510), _line((0.22, 0.02), (0.9, 0.0))]],
    6: [[_arc(0.82, 0.66, 0.7, 0.66, 262, 175, 14), _arc(0.5, 0.72, 0.38, 0.28, 180, 540, 26)],
        [_line((0.7, 0.0), (0.15, 0.7)), _arc(0.5, 0.74, 0.36, 0.26, 180, 540, 26)]],
    7: [[_line((0.0, 0.0), (1.0, 0.0), (0.35, 1.0))],
        [_line((0.0, 0.0), (1.0, 0.0), (0.35, 1.0)), _line((0.3, 0.5), (0.85, 0.5))],
        [cat(_line((0.0, 0.12), (0.05, 0.0), (1.0, 0.0)), _arc(-0.45, 0.05, 1.45, 0.95, 0, 80, 10))]],
    8: [[_arc(0.5, 0.26, 0.34, 0.26, 0, 360, 24), _arc(0.5, 0.74, 0.43, 0.26, 0, 360, 24)],
        [cat(_arc(0.5, 0.26, 0.34, 0.26, 90, -270, 24), _arc(0.5, 0.74, 0.43, 0.26, 270, 630, 24))]],
    9: [[_arc(0.5, 0.29, 0.4, 0.29, 0, 360, 26), _line((0.9, 0.29), (0.82, 1.0))],
        [_arc(0.48, 0.29, 0.4, 0.29, 0, 360, 26), _arc(0.0, 0.29, 0.88, 0.71, 0, 95, 10)]],
  }


_VARIANTS = _digit_variants()


# ---- 2.-3. elastic jitter and the affine map ----------------------------------------------------

def _elastic(strokes: list[np.ndarray], rng: np.random.Generator, amount: float) -> list[np.ndarray]:
  """Move every point by d(p) = sum_k a_k sin(2 pi <f_k, p> + phi_k): smooth, so strokes bend."""
  k = 3
  freq = rng.uniform(0.3, 1.3, size=(k, 2, 2))       # per component, per output axis, 2-d frequency
  phase = rng.uniform(0, 2 * math.pi, size=(k, 2))
  amp = rng.uniform(-amount, amount, size=(k, 2)) / math.sqrt(k)
  out = []
  for s in strokes:
    arg = 2 * math.pi * np.einsum("pd,kad->pka", s, freq) + phase   # (points, k, 2)
    out.append(s + (amp * np.sin(arg)).sum(axis=1))
  return out


def _place(strokes: list[np.ndarray], rng: np.random.Generator, size: int, height_frac: tuple[float, float],
           max_rot_deg: float, max_shear: float, margin: float, max_shift: float) -> tuple[list[np.ndarray], float]:
  """Unit-box strokes -> pixel coordinates: scale, shear, rotate, then translate within the image.
  Returns the strokes and the glyph height in pixels."""
  height = rng.uniform(*height_frac) * size
  width = height * rng.uniform(0.5, 0.8)
  shear, rot = rng.uniform(-max_shear, max_shear), math.radians(rng.uniform(-max_rot_deg, max_rot_deg))
  c, s = math.cos(rot), math.sin(rot)
  A = np.array([[c, -s], [s, c]]) @ np.array([[1.0, -shear], [0.0, 1.0]]) @ np.diag([width, height])
  pts = [(p - 0.5) @ A.T for p in strokes]
  allp = np.concatenate(pts)
  lo, hi = allp.min(0), allp.max(0)
  slack = np.maximum((size - 2 * margin - (hi - lo)) / 2, 0)    # room left on each side of the centred glyph
  # MNIST centres its digits; a few pixels of play keep a classifier honest without the generative
  # models having to spend capacity on placement
  shift = size / 2 - (lo + hi) / 2 + rng.uniform(-1, 1, size=2) * np.minimum(slack, max_shift * size)
  return [p + shift for p in pts], height


# ---- 4. the pen: draw at SUPERSAMPLE x resolution, box-filter down -------------------------------

def _draw_strokes(strokes: list[np.ndarray], size: int, width_px: float) -> np.ndarray:
  S = SUPERSAMPLE
  im = Image.new("L", (size * S, size * S), 0)
  d = ImageDraw.Draw(im)
  w = max(1, int(round(width_px * S)))
  r = w / 2
  for p in strokes:
    q = p * S
    d.line([(float(x), float(y)) for x, y in q], fill=255, width=w)
    # PIL's wide lines end square and leave notches at corners: a round dot on both ends and on every
    # vertex where the pen turns by more than ~15 degrees gives round caps and joints (PIL's own
    # joint="curve" does this for every vertex and costs 3x more on densely sampled arcs)
    seg = np.diff(q, axis=0)
    turn = np.abs(np.angle(np.exp(1j * (np.arctan2(seg[1:, 1], seg[1:, 0]) - np.arctan2(seg[:-1, 1], seg[:-1, 0])))))
    dots = [0, len(q) - 1] + [i + 1 for i in np.nonzero(turn > 0.26)[0]]
    for x, y in q[dots]:
      d.ellipse((x - r, y - r, x + r, y + r), fill=255)
  return np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _check_args(n: int, seed: int, size: int) -> None:
  if not isinstance(n, (int, np.integer)) or n < 0: raise UserError(f"number of images must be an integer >= 0, got {n!r}")
  if not isinstance(seed, (int, np.integer)) or seed < 0: raise UserError(f"seed must be an integer >= 0, got {seed!r}")
  if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
    raise UserError(f"image size must be an integer in {MIN_SIZE}..{MAX_SIZE} (28 or 32 are usual), got {size!r}")


def _sample_rng(seed: int, split: int, i: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), int(split), int(i)])


def render_digit(label: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
  """One digit image (size, size) float32 in [0, 1], every random choice drawn from `rng`."""
  variants = _VARIANTS[int(label)]
  strokes = [s.copy() for s in variants[rng.integers(len(variants))]]
  strokes = _elastic(strokes, rng, amount=0.06)
  strokes, height = _place(strokes, rng, size, height_frac=(0.58, 0.78), max_rot_deg=15, max_shear=0.3,
                          margin=size * 0.06, max_shift=0.08)
  width_px = rng.uniform(0.07, 0.13) * height            # stroke width in proportion to the glyph, as with a font
  img = _draw_strokes(strokes, size, width_px)
  img *= rng.uniform(0.8, 1.0)                           # ink intensity
  img += rng.normal(0, rng.uniform(0.0, 0.03), size=img.shape).astype(np.float32)
  return np.clip(img, 0.0, 1.0)


def _make(render, n_classes: int, n: int, seed: int, size: int, split: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
  _check_args(n, seed, size)
  images = np.empty((n, channels, size, size), dtype=np.float32)
  labels = (np.arange(n) % n_classes).astype(np.int64)
  for i in range(n):
    img = render(int(labels[i]), _sample_rng(seed, split, i), size)
    images[i] = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
  return images, labels


def make_digits(n: int, seed: int = 0, size: int = 28, *, split: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """n handwritten-style digits -> (images float32 (n, 1, size, size) in [0, 1], labels int64 (n,)).
  Labels cycle 0..9. `split` picks an independent stream (0 = train, 1 = held-out test)."""
  return _make(render_digit, 10, n, seed, size, split, 1)


def digit_splits(n_train: int, n_test: int, seed: int = 0, size: int = 28):
  """(x_train, y_train, x_test, y_test): the training digits are make_digits(n_train, seed, size),
  the held-out ones come from an independent stream (split 1) of the same generator."""
  x_tr, y_tr = make_digits(n_train, seed, size, split=0)
  x_te, y_te = make_digits(n_test, seed, size, split=1)
  return x_tr, y_tr, x_te, y_te


# ---- coloured geometric shapes: the RGB option ----------------------------------------------------

def _shape_outline(name: str, rng: np.random.Generator) -> np.ndarray:
  """Polygon of a shape in a unit circle, randomly rotated."""
  rot = rng.uniform(0, 2 * math.pi)
  if name == "circle":
    a = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    r = np.ones_like(a)
  elif name in ("square", "triangle"):
    k = 4 if name == "square" else 3
    a = np.linspace(0, 2 * math.pi, k, endpoint=False)
    r = np.ones_like(a)
  elif name == "star":
    a = np.linspace(0, 2 * math.pi, 10, endpoint=False)
    r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
  elif name == "cross":   # a plus sign: 12 corners at arm half-width t
    t = rng.uniform(0.28, 0.38)
    xy = np.array([(t, 1), (t, t), (1, t), (1, -t), (t, -t), (t, -1), (-t, -1), (-t, -t), (-1, -t), (-1, t), (-t, t), (-t, 1)])
    a, r = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1]) / math.sqrt(1 + t * t)
  else:
    raise ValueError(name)
  return np.stack([r * np.cos(a + rot), r * np.sin(a + rot)], axis=1)


def _random_colour(rng: np.random.Generator, lightness: tuple[float, float]) -> tuple[int, int, int]:
  import colorsys
  r, g, b = colorsys.hls_to_rgb(rng.uniform(0, 1), rng.uniform(*lightness), rng.uniform(0.55, 1.0))
  return int(r * 255), int(g * 255), int(b * 255)


def render_shape(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
  """One coloured shape on a plain background -> (size, size, 3) float32 in [0, 1]."""
  S = SUPERSAMPLE
  dark_bg = rng.random() < 0.5      # light shape on dark paper or the reverse, so colour alone never tells
  bg = _random_colour(rng, (0.08, 0.3) if dark_bg else (0.7, 0.92))
  fg = _random_colour(rng, (0.55, 0.8) if dark_bg else (0.2, 0.45))
  radius = rng.uniform(0.22, 0.42) * size
  centre = size / 2 + rng.uniform(-1, 1, size=2) * (size / 2 - radius - 1)
  poly = (_shape_outline(SHAPE_NAMES[int(label)], rng) * radius + centre) * S
  im = Image.new("RGB", (size * S, size * S), bg)
  ImageDraw.Draw(im).polygon([(float(x), float(y)) for x, y in poly], fill=fg)
  img = np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
  img = img + rng.normal(0, 0.02, size=img.shape).astype(np.float32)
  return np.clip(img, 0.0, 1.0)


def make_shapes(n: int, seed: int = 0, size: int = 32, *, split: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """n coloured shapes -> (images float32 (n, 3, size, size) in [0, 1], labels int64 (n,) indexing SHAPE_NAMES)."""
  return _make(render_shape, len(SHAPE_NAMES), n, seed, size, split, 3)


def shape_splits(n_train: int, n_test: int, seed: int = 0, size: int = 32):
  """(x_train, y_train, x_test, y_test) of coloured shapes; the held-out part is split 1."""
  x_tr, y_tr = make_shapes(n_train, seed, size, split=0)
  x_te, y_te = make_shapes(n_test, seed, size, split=1)
  return x_tr, y_tr, x_te, y_te


if __name__ == "__main__":   # python3 -m common.digits [out.png]: a grid to look at
  import sys, time
  from common.files import save_image
  from common.plots import image_grid
  t0 = time.perf_counter()
  x, y = make_digits(200, seed=0, size=28)
  dt = time.perf_counter() - t0
  s, _ = make_shapes(50, seed=0, size=32)
  dest = sys.argv[1] if len(sys.argv) > 1 else "out/digits.png"
  save_image(image_grid(x[:, 0], nrow=20), dest)
  save_image(image_grid(s.transpose(0, 2, 3, 1), nrow=10), dest.replace(".png", "_shapes.png"))
  print(f"200 digits in {dt * 1e3:.0f} ms -> {dest}")
