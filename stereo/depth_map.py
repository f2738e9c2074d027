#!/usr/bin/env python3
"""Stereo depth in tinygrad: matching cost, cost aggregation (box or semi-global), winner-take-all with
sub-pixel refinement and consistency checks, then depth in metres and an obstacle summary for a robot.

THE IDEA
  Two cameras side by side (the dual IMX219 boards for Jetsons have a baseline B ≈ 60 mm) see a point
  at slightly different columns. After rectification (stereo/calibrate_stereo.py) the images are row
  aligned: the left pixel (x, y) shows the same point as the right pixel (x − d, y). d is the disparity,
  and depth follows from similar triangles:      Z = f·B / d      (f: focal length in pixels)
  so near things have large disparities, and the largest disparity searched, D − 1, sets the nearest
  measurable depth  Z_min = f·B / (D − 1)  (the script prints it).

THE PIPELINE (all tinygrad, the whole pipeline one TinyJit; shapes for an H×W pair, D disparities)
  1. Matching cost C(y, x, d), a volume (H, W, D). The right image is viewed shifted by every d at once
     (pad + unfold: no copy, [y, x, d] = right[y, x − d]); columns with x − d < 0 get the largest cost.
       --cost sad      C = |I_L(y, x) − I_R(y, x − d)|                        (intensities 0..255)
       --cost census   each pixel becomes a bit string, bit k = [I(neighbour k) < I(centre)] over a
                       w×w window (--census-window, w² − 1 bits packed in uint32 words), and
                       C = popcount(census_L(y, x) XOR census_R(y, x − d))  (Hamming distance; the
                       popcount is the classic SWAR bit trick). Census only compares, so it ignores
                       gain and exposure differences between the two cameras.
  2. Aggregation: one pixel's cost is noise; neighbours usually share a disparity.
       --aggregation box   A = C summed over a block×block window (separable: two 1-D passes).
       --aggregation sgm   Hirschmüller's semi-global matching. Along each path direction r
           L_r(p, d) = C(p, d) + min( L_r(p−r, d), L_r(p−r, d±1) + P1, min_k L_r(p−r, k) + P2 ) − min_k L_r(p−r, k)
         P1 (--p1) lets the disparity step by one (slanted surfaces), P2 (--p2) allows jumps (object
         edges) at a price; subtracting min_k keeps the numbers bounded. A = Σ_r L_r over --paths 4
         (→ ← ↓ ↑) or 8 (plus the diagonals).
         The recurrence is sequential along a path, so speed comes from width: every step processes
         ALL lanes (rows for → ←, columns for ↓ ↑ and the diagonals) of ALL directions and ALL
         disparities at once, state (G, S, D) with S = max(H, W), G = paths, in two small kernels (the
         min over d, then the update). The costs are rearranged once into a (S, G, S, D) buffer so step i
         reads the contiguous slice [i]; a realized contiguous slice of a realized buffer is a view of
         the same memory, so every step runs the SAME compiled kernels on a different address: compiled
         once, launched S times, all captured by TinyJit and replayed with no Python in the loop.
  3. Disparity selection on A (H, W, D):
       winner-take-all   d* = argmin_d A(d)
       sub-pixel         fit a parabola through A(d*−1), A(d*), A(d*+1):
                         d = d* + (A(d*−1) − A(d*+1)) / (2·(A(d*−1) − 2·A(d*) + A(d*+1)))
       uniqueness        reject when another d (|d − d*| > 1) costs within --uniqueness % of the best
       left–right check  the right view's disparities come from the same volume, A_R(y, x, d) =
                         A(y, x + d, d) (a shear of the volume, again only a view); a left pixel is
                         kept when |d*_L(x) − d*_R(x − d*_L(x))| ≤ --lr-max-diff: occluded pixels fail.
       median            optional 3×3 median (--median) against isolated outliers.
     Rejected pixels are marked invalid (a mask; NaN depth, inf in disparity.pfm, black in the images); they
     are never silently set to zero.
  4. Depth: with a calibration (.npz from calibrate_stereo.py: the 4×4 matrix Q of OpenCV's
     stereoRectify), [X Y Z W]ᵀ = Q·[x y d 1]ᵀ and the point is (X, Y, Z)/W; without one, Z = f·B/d
     with --focal-px and --baseline-m. An obstacle summary splits the image into a coarse grid, reports
     the nearest valid depth per cell ("unknown" where no pixel is valid) and suggests the heading of
     the column with the most clearance.

INPUTS AND EVALUATION
  Default: a synthetic scene rendered with exact ground truth (textured planes: a slanted background and
  fronto-parallel boxes; --scene slanted|fronto|boxes), so no files are needed. --left/--right take any
  images Pillow reads (sizes must match); --gt takes ground truth (Middlebury PNG with --gt-scale, e.g.
  4 for the 2003 sets, 0 = unknown; or PFM) and prints bad-0.5/1.0/2.0 % and the mean error over all
  pixels with known ground truth (--eval-border trims the edges). Invalid pixels are filled from their
  row neighbours for that dense score (the Middlebury convention for sparse methods), and the score over
  the kept pixels alone is printed beside it with their density.

RUN
  Jetson:  NV=1 python3 stereo/depth_map.py                         (synthetic scene, writes out/stereo/)
           NV=1 python3 stereo/depth_map.py --left L.png --right R.png --calib calib.npz
  Laptop:  python3 stereo/depth_map.py [--quick]
  Teddy:   python3 stereo/depth_map.py --left ../shared/data/stereo/teddy/im2.png \\
             --right ../shared/data/stereo/teddy/im6.png --gt ../shared/data/stereo/teddy/disp2.png --gt-scale 4
  Bench:   python3 stereo/depth_map.py --bench [--json out.json] [--sizes 640x480 --disparities 64]
           (frames/s for box and SGM at 320×240, 640×480, 1280×720 × 64/128 disparities, OpenCV StereoBM
           and StereoSGBM beside them when opencv-python-headless is installed, accuracy on an evaluation
           pair when --left/--right/--gt are given)
  Try:     JITBEAM=2 (kernel search for the replayed kernels), --paths 8, --cost sad, --p2 60, --no-median.

WHAT TO EXPECT (measured on this code; commands, machines and full tables in stereo/README.md)
  Teddy (450×375, 64 levels), the defaults (census 5×5 + SGM 8 paths): bad-1.0 13.3 % over all pixels
  with known ground truth, 7.0 % over the visible ones (Hirschmüller's SGM: ≈ 6 %). OpenCV on the same
  pair and protocol: StereoSGBM 21.3 % / 13.0 %, StereoBM 26.7 % / 18.7 %. Default synthetic scene: 0.7 %
  on the visible pixels. On a 2-core laptop-class CPU (shared and loaded when measured) SGM takes ~1 s
  per 320×240 frame against ~25 ms for OpenCV's hand-vectorised SGBM; the box pipeline ~0.2 s.
  GPU (H200) and Jetson Orin: not measured yet; expected to be bounded by the S sequential SGM steps
  (two small launches each, replayed by the JIT), i.e. by launch latency rather than arithmetic.
"""
import common  # first: turns NV=1 / CUDA=1 into DEV=... before tinygrad reads it

import math, sys, time
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, TinyJit, dtypes

from common import fail, check, seed_all
from common.cli import positive_int, positive_float, nonnegative_float, int_list
from common.device import open_device, synchronize
from common.files import out_dir, read_image, save_image, save_json, save_checkpoint, load_checkpoint, atomic_path, check_state_matches

PROJECT = "stereo"
# Cost of a match that falls outside the right image (x − d < 0), as a fraction of the largest cost.
# Not the maximum: a moderate cost lets SGM's paths carry a surface's disparity into the left border band
# instead of forcing a wrong in-view match there. Chosen on Teddy (all pixels, bad-1.0 with 8-path SGM):
# 1.0 → 16.9 %, 0.5 → 15.8 %, 0.25 → 13.3 %, 0.1 → 17.8 % (the band then attracts wrong matches).
OUT_OF_VIEW = 0.25
BIG = 1e9   # "no such neighbour" in the SGM recurrence: larger than any cost, small enough to add to


# ---- 1. input: a synthetic scene with exact ground truth --------------------------------------------

def lattice_noise(ix, iy, seed):
  """A reproducible pseudo-random value in [0, 1) for each integer lattice point (a hash, no table)."""
  h = np.sin(ix * 12.9898 + iy * 78.233 + seed * 37.719) * 43758.5453
  return h - np.floor(h)


def texture(u, v, seed):
  """Band-limited random texture in [0, 255] at continuous coordinates: bilinear value noise with cells
  of 8, 4 and 2 px. Continuous, so the right view can be rendered at sub-pixel positions exactly."""
  out = np.zeros(np.broadcast(u, v).shape)
  for cell, amplitude in ((8.0, 0.45), (4.0, 0.35), (2.0, 0.20)):
    gu, gv = u / cell, v / cell
    iu, iv = np.floor(gu), np.floor(gv)
    fu, fv = gu - iu, gv - iv
    n = lambda du, dv: lattice_noise(iu + du, iv + dv, seed + cell)
    out = out + amplitude * ((1 - fu) * (1 - fv) * n(0, 0) + fu * (1 - fv) * n(1, 0) + (1 - fu) * fv * n(0, 1) + fu * fv * n(1, 1))
  return 255.0 * out


@dataclass
class Plane:
  """A textured planar patch: disparity d(x, y) = a + b·x + c·y over the left-image rectangle
  x0 ≤ x < x1, y0 ≤ y < y1. A fronto-parallel box has b = c = 0. Its texture is painted at left-image
  coordinates, so both views sample the same surface."""
  a: float
  b: float = 0.0
  c: float = 0.0
  x0: float = -math.inf
  x1: float = math.inf
  y0: float = -math.inf
  y1: float = math.inf
  seed: int = 0

  def disparity(self, x, y): return self.a + self.b * x + self.c * y
  def contains(self, x, y): return (x >= self.x0) & (x < self.x1) & (y >= self.y0) & (y < self.y1)
  def left_x(self, x_right, y): return (x_right + self.a + self.c * y) / (1.0 - self.b)   # solves x − d(x, y) = x_right


def make_scene(kind: str, height: int, width: int, max_disp: int, seed: int) -> list[Plane]:
  """slanted: one slanted plane (sub-pixel disparities everywhere, no occlusion);
  fronto: integer-disparity fronto-parallel background and boxes; boxes: slanted background + boxes."""
  rng = np.random.default_rng(seed)
  top = max_disp - 2                                   # keep every true disparity searchable
  if kind == "slanted":
    lo, hi = 0.2 * top, 0.8 * top
    return [Plane(a=lo, b=(hi - lo) / width * 0.8, c=(hi - lo) / height * 0.2, seed=seed)]
  if kind == "fronto":
    planes = [Plane(a=float(round(0.15 * top)), seed=seed)]
  else:
    planes = [Plane(a=0.1 * top, b=0.25 * top / width, c=0.1 * top / height, seed=seed)]
  for k in range(3):
    w, h = rng.uniform(0.18, 0.3) * width, rng.uniform(0.25, 0.45) * height
    x0, y0 = rng.uniform(0.1 * width, 0.9 * width - w), rng.uniform(0.05 * height, 0.95 * height - h)
    d = (0.45 + 0.18 * k) * top
    planes.append(Plane(a=float(round(d)) if kind == "fronto" else d + 0.37, x0=x0, x1=x0 + w, y0=y0, y1=y0 + h, seed=seed + 101 * (k + 1)))
  return planes


def visible(planes, x, y, right_view: bool):
  """Disparity and intensity of the nearest surface (largest disparity) at each pixel of one view."""
  disp, inten = np.full(np.broadcast(x, y).shape, -np.inf), np.zeros(np.broadcast(x, y).shape)
  for p in planes:
    xl = p.left_x(x, y) if right_view else x
    d = p.disparity(xl, y)
    take = p.contains(xl, y) & (d > disp)
    disp, inten = np.where(take, d, disp), np.where(take, texture(xl, y, p.seed), inten)
  return disp, inten


def render_scene(planes, height: int, width: int, noise: float, seed: int):
  """-> left, right (H, W) float32 in 0..255, ground-truth left disparity (H, W) and occlusion mask
  (left pixels whose match is hidden in the right view or falls outside it)."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  gt, left = visible(planes, x, y, right_view=False)
  _, right = visible(planes, x, y, right_view=True)
  seen_there, _ = visible(planes, x - gt, y, right_view=True)
  occluded = (seen_there > gt + 1e-6) | (x - gt < 0)
  rng = np.random.default_rng(seed + 7)
  left, right = (np.clip(im + rng.normal(0, noise, im.shape), 0, 255).astype(np.float32) for im in (left, right))
  return left, right, gt.astype(np.float32), occluded


# ---- 1b. input from files: images, ground truth, calibration -------------------------------------------

def to_gray(rgb: np.ndarray) -> np.ndarray:
  return (rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) if rgb.ndim == 3 else rgb.astype(np.float32)


def read_pfm(path: str) -> np.ndarray:
  """Portable float map (Middlebury's format for float disparities): header, then rows bottom to top."""
  try:
    with open(path, "rb") as f:
      kind = f.readline().strip()
      dims = f.readline().split()
      scale = float(f.readline().strip())
      if kind not in (b"Pf", b"PF") or len(dims) != 2: raise ValueError
      w, h = int(dims[0]), int(dims[1])
      data = np.frombuffer(f.read(), dtype="<f4" if scale < 0 else ">f4")
  except FileNotFoundError: fail(f"ground truth {path}: no such file")
  except (ValueError, OSError): fail(f"ground truth {path} is not a PFM file")
  channels = 3 if kind == b"PF" else 1
  if data.size != w * h * channels: fail(f"ground truth {path}: PFM data is {data.size} values, header says {w}x{h}x{channels}")
  return np.flipud(data.reshape(h, w, channels)[..., 0]).astype(np.float32)


def write_pfm(disparity: np.ndarray, dest) -> None:
  h, w = disparity.shape
  with atomic_path(dest) as tmp, open(tmp, "wb") as f:
    f.write(f"Pf\n{w} {h}\n-1.0\n".encode())
    f.write(np.flipud(disparity).astype("<f4").tobytes())


def load_ground_truth(path: str, scale: float, shape) -> tuple[np.ndarray, np.ndarray]:
  """-> (disparity, known mask). PNG: value / scale with 0 = unknown; PFM: non-finite = unknown."""
  if path.lower().endswith(".pfm"):
    gt = read_pfm(path)
    known = np.isfinite(gt) & (gt > 0)
  else:
    raw = read_image(path, mode="I").astype(np.float32)
    gt, known = raw / scale, raw > 0
  if gt.shape != tuple(shape): fail(f"ground truth {path} is {gt.shape[1]}x{gt.shape[0]}, the images are {shape[1]}x{shape[0]}")
  return np.where(known, gt, 0).astype(np.float32), known


def occlusion_from_ground_truth(gt_left, known_left, gt_right, known_right) -> np.ndarray:
  """Left pixels whose match is not visible in the right view: the match falls outside, or the right
  view's ground truth there disagrees by more than 1 px (another surface is in front)."""
  h, w = gt_left.shape
  x_right = np.round(np.arange(w)[None, :] - gt_left).astype(np.int64)
  inside = x_right >= 0
  rows, xr = np.arange(h)[:, None], np.clip(x_right, 0, w - 1)
  agrees = known_right[rows, xr] & (np.abs(gt_right[rows, xr] - gt_left) <= 1.0)
  return known_left & ~(inside & agrees)


@dataclass
class Calibration:
  Q: np.ndarray                  # 4×4 reprojection matrix: [X Y Z W]ᵀ = Q·[x y d 1]ᵀ
  maps: tuple | None = None      # rectification maps (left x, left y, right x, right y), each (H, W)

  @property
  def focal_px(self) -> float: return float(self.Q[2, 3])
  @property
  def baseline_m(self) -> float: return float(1.0 / abs(self.Q[3, 2]))   # Q[3, 2] = −1/Tx, Tx = −B

  @staticmethod
  def from_focal_baseline(focal_px: float, baseline_m: float, height: int, width: int) -> "Calibration":
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return Calibration(np.array([[1, 0, 0, -cx], [0, 1, 0, -cy], [0, 0, 0, focal_px], [0, 0, 1 / baseline_m, 0]], np.float64))


def load_calibration(path: str, height: int, width: int) -> Calibration:
  try:
    with np.load(path) as z:
      if "Q" not in z: fail(f"calibration {path} has no 'Q' matrix (write it with stereo/calibrate_stereo.py)")
      Q = np.asarray(z["Q"], np.float64)
      names = ("map1x", "map1y", "map2x", "map2y")
      maps = tuple(np.asarray(z[n], np.float32) for n in names) if all(n in z for n in names) else None
  except FileNotFoundError: fail(f"calibration {path}: no such file")
  except (ValueError, OSError, EOFError): fail(f"calibration {path} is not an .npz file")
  if Q.shape != (4, 4) or not np.all(np.isfinite(Q)) or Q[3, 2] == 0 or Q[2, 3] <= 0:
    fail(f"calibration {path}: Q must be a finite 4x4 matrix with focal length Q[2,3] > 0 and Q[3,2] != 0")
  if maps is not None and maps[0].shape != (height, width):
    fail(f"calibration {path} was made for {maps[0].shape[1]}x{maps[0].shape[0]} images, these are {width}x{height}")
  return Calibration(Q, maps)


def remap_bilinear(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
  """out(y, x) = img(map_y(y, x), map_x(y, x)) with bilinear interpolation: applies rectification
  maps from calibrate_stereo.py without OpenCV (once per frame, so numpy is fine here)."""
  h, w = img.shape
  x0, y0 = np.floor(map_x).astype(np.int64), np.floor(map_y).astype(np.int64)
  fx, fy = map_x - x0, map_y - y0
  def at(yy, xx): return img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
  out = (1 - fx) * (1 - fy) * at(y0, x0) + fx * (1 - fy) * at(y0, x0 + 1) + (1 - fx) * fy * at(y0 + 1, x0) + fx * fy * at(y0 + 1, x0 + 1)
  return out.astype(np.float32)


# ---- 2. matching cost: a (H, W, D) volume ---------------------------------------------------------------

def shifted_views(right: Tensor, max_disp: int) -> Tensor:
  """(H, W) -> (H, W, D) with [y, x, d] = right[y, x − d] (0 left of the image): pad + unfold, a view."""
  padded = right.pad(((0, 0), (max_disp - 1, 0)))              # (H, W + D − 1)
  return padded.unfold(1, max_disp, 1).flip(2)                  # [y, x, k] = right[y, x + k − D + 1], k = D − 1 − d


def in_view(width: int, max_disp: int) -> Tensor:
  """(1, W, D) mask of the disparities whose match x − d lies inside the right image."""
  return Tensor.arange(width).reshape(1, width, 1) >= Tensor.arange(max_disp).reshape(1, 1, max_disp)


def sad_cost(left: Tensor, right: Tensor, max_disp: int) -> Tensor:
  """C(y, x, d) = |I_L(y, x) − I_R(y, x − d)|; matches outside the right image cost 255 (the maximum)."""
  cost = (left.unsqueeze(2) - shifted_views(right, max_disp)).abs()
  return in_view(left.shape[1], max_disp).where(cost, OUT_OF_VIEW * 255.0)


def census_transform(img: Tensor, window: int) -> list[Tensor]:
  """bit k of pixel (y, x) = [I(y + dy_k, x + dx_k) < I(y, x)] over the window except its centre, packed
  32 bits per uint32 word -> a list of (H, W) uint32 words. Edges replicate the border pixels."""
  h, w, r = img.shape[0], img.shape[1], window // 2
  padded = img.pad(((r, r), (r, r)), mode="replicate")
  offsets = [(dy, dx) for dy in range(window) for dx in range(window) if (dy, dx) != (r, r)]
  words = []
  for start in range(0, len(offsets), 32):
    word = Tensor.zeros(h, w, dtype=dtypes.uint32)
    for k, (dy, dx) in enumerate(offsets[start:start + 32]):
      word = word | ((padded[dy:dy + h, dx:dx + w] < img).cast(dtypes.uint32) << k)
    words.append(word.contiguous())      # once per pixel, not once per (pixel, d) inside the cost kernel
  return words


def popcount32(v: Tensor) -> Tensor:
  """Number of set bits of each uint32: add neighbouring bit counts in parallel (1 → 2 → 4 → 8 bits),
  then the multiply sums the four byte counts into the top byte."""
  v = v - ((v >> 1) & 0x55555555)
  v = (v & 0x33333333) + ((v >> 2) & 0x33333333)
  v = (v + (v >> 4)) & 0x0F0F0F0F
  return (v * 0x01010101) >> 24


def census_cost(left: Tensor, right: Tensor, max_disp: int, window: int) -> Tensor:
  """C(y, x, d) = Hamming distance between census_L(y, x) and census_R(y, x − d); outside: all bits differ."""
  cost = None
  for wl, wr in zip(census_transform(left, window), census_transform(right, window)):
    bits = popcount32(wl.unsqueeze(2) ^ shifted_views(wr, max_disp)).cast(dtypes.float32)
    cost = bits if cost is None else cost + bits
  return in_view(left.shape[1], max_disp).where(cost, OUT_OF_VIEW * (window * window - 1))


# ---- 3. aggregation -------------------------------------------------------------------------------------

def box_sum(cost: Tensor, size: int) -> Tensor:
  """Sum of the cost over a size×size window around each pixel, for every d: two 1-D passes (2·size adds
  per element instead of size²); zeros outside the image. The vertical pass is stored once so the
  horizontal pass does not recompute it."""
  h, w, r = cost.shape[0], cost.shape[1], size // 2
  padded = cost.pad(((r, r), (0, 0), (0, 0)))
  columns = sum(padded[i:i + h] for i in range(size)).contiguous()
  padded = columns.pad(((0, 0), (r, r), (0, 0)))
  return sum(padded[:, i:i + w] for i in range(size))


# The SGM path directions. A "horizontal" path steps along x with rows as lanes, a vertical one along y
# with columns as lanes; flip = the path runs backwards; lane_shift = the previous pixel sits one lane
# up (+1) or down (−1), which turns a horizontal path into a diagonal one.
#             name   horizontal flip  lane_shift
DIRECTIONS = [("→",  True,      False, 0), ("←", True, True, 0), ("↓", False, False, 0), ("↑", False, True, 0),
              ("↘",  True,      False, 1), ("↙", True, True, 1), ("↗", True, False, -1), ("↖", True, True, -1)]


class SemiGlobal:
  """Hirschmüller's SGM over G = 4 or 8 paths for one image size; call it inside a TinyJit."""
  def __init__(self, height: int, width: int, max_disp: int, paths: int, p1: float, p2: float):
    self.h, self.w, self.d, self.p1, self.p2 = height, width, max_disp, p1, p2
    self.dirs = DIRECTIONS[:paths]
    self.s = max(height, width)                     # steps per sweep = lanes per step (padded square)
    # the rearranged costs live in one persistent buffer; step i reads the view [i] of it (same kernel,
    # different address). Allocated once per matcher, reused by every frame.
    self.arranged = Tensor.empty(self.s, len(self.dirs), self.s, max_disp).contiguous().realize()
    self.step_costs = [v.reshape(v.shape[1:]).contiguous() for v in self.arranged.split(1)]
    Tensor.realize(*self.step_costs)                # views, no copies: realized in one go (it is faster)

  def arrange(self, cost: Tensor) -> Tensor:
    """(H, W, D) -> (S, G, S, D) = (step, direction, lane, d); zero cost in the padding (a path through
    zeros stays at L = 0, which is exactly how a path starts)."""
    square = cost.pad(((0, self.s - self.h), (0, self.s - self.w), (0, 0)))
    per_dir = []
    for _, horizontal, flip, _ in self.dirs:
      v = square.flip(1 if horizontal else 0) if flip else square
      per_dir.append(v.permute(1, 0, 2) if horizontal else v)
    return Tensor.stack(*per_dir, dim=1)

  def from_previous_pixel(self, prev: Tensor) -> Tensor:
    """Diagonal paths continue from the neighbouring lane; a lane entering from outside starts at 0."""
    if len(self.dirs) == 4: return prev
    down = prev[4:6].pad(((0, 0), (1, 0), (0, 0)))[:, :self.s]     # lane y continues lane y − 1
    up = prev[6:8].pad(((0, 0), (0, 1), (0, 0)))[:, 1:]            # lane y continues lane y + 1
    return prev[:4].cat(down, up, dim=0)

  def step(self, prev: Tensor, cost: Tensor) -> Tensor:
    """One step of every path at once, (G, S, D) -> (G, S, D):
    L(p, d) = C(p, d) + min(L(p−r, d), L(p−r, d±1) + P1, min_k L(p−r, k) + P2) − min_k L(p−r, k)"""
    prev = self.from_previous_pixel(prev)
    best_prev = prev.min(axis=2, keepdim=True)                        # (G, S, 1)
    d_minus = prev.pad(((0, 0), (0, 0), (1, 0)), value=BIG)[:, :, :-1]   # L(p−r, d − 1)
    d_plus = prev.pad(((0, 0), (0, 0), (0, 1)), value=BIG)[:, :, 1:]     # L(p−r, d + 1)
    return cost + prev.minimum(d_minus + self.p1).minimum(d_plus + self.p1).minimum(best_prev + self.p2) - best_prev

  def combine(self, history: Tensor) -> Tensor:
    """(S, G, S, D) path costs in sweep order -> A(y, x, d) = Σ_r L_r(y, x, d), (H, W, D)."""
    total = None
    for g, (_, horizontal, flip, _) in enumerate(self.dirs):
      v = history[:, g]
      if horizontal: v = v.permute(1, 0, 2)
      if flip: v = v.flip(1 if horizontal else 0)
      total = v if total is None else total + v
    return total[:self.h, :self.w]

  def __call__(self, cost: Tensor) -> Tensor:
    self.arranged.assign(self.arrange(cost)).realize()
    state = Tensor.zeros(len(self.dirs), self.s, self.d).contiguous()
    chunks, steps = [], []
    for step_cost in self.step_costs:               # the sequential part: S kernels, one per step
      state = self.step(state, step_cost).realize()
      steps.append(state)
      if len(steps) == 32:                          # gather in chunks: no kernel reads hundreds of buffers,
        chunks.append(Tensor.stack(*steps).realize())   # and few tensors stay alive (tinygrad's per-realize
        steps = []                                  # bookkeeping grows with the number of live tensors)
    if steps: chunks.append(Tensor.stack(*steps).realize())
    return self.combine(Tensor.cat(*chunks))


# ---- 4. disparity selection -----------------------------------------------------------------------------

def winner_take_all(agg: Tensor) -> tuple[Tensor, Tensor]:
  """-> best cost (H, W, 1) and the first disparity reaching it (H, W, 1), int."""
  d_index = Tensor.arange(agg.shape[2]).reshape(1, 1, -1)
  best = agg.min(axis=2, keepdim=True)
  return best, (agg == best).where(d_index, agg.shape[2]).min(axis=2, keepdim=True)


def subpixel_offset(agg: Tensor, best: Tensor, d_best: Tensor) -> Tensor:
  """Vertex of the parabola through A(d*−1), A(d*), A(d*+1), in [−0.5, 0.5]; 0 at the range ends."""
  d_index = Tensor.arange(agg.shape[2]).reshape(1, 1, -1)
  c_minus = (d_index == d_best - 1).where(agg, 0).sum(axis=2, keepdim=True)
  c_plus = (d_index == d_best + 1).where(agg, 0).sum(axis=2, keepdim=True)
  curvature = c_minus - 2 * best + c_plus
  inside = (d_best > 0) & (d_best < agg.shape[2] - 1) & (curvature > 0)
  return inside.where((c_minus - c_plus) / (2 * curvature.maximum(1e-6)), 0).clip(-0.5, 0.5)


def is_unique(agg: Tensor, best: Tensor, d_best: Tensor, ratio_pct: float) -> Tensor:
  """OpenCV's rule: keep when every d with |d − d*| > 1 costs more than best / (1 − ratio)."""
  d_index = Tensor.arange(agg.shape[2]).reshape(1, 1, -1)
  second = ((d_index - d_best).abs() > 1).where(agg, BIG).min(axis=2, keepdim=True)
  return best * 100 <= second * (100 - ratio_pct)


def right_view_costs(agg: Tensor) -> Tensor:
  """A_R(y, x, d) = A(y, x + d, d): the same matches seen from the right image, by shearing the volume.
  Flattened, row d of the transposed volume padded to length W + D + 1 starts d elements later, so a
  reshape + shrink reads [d, x + d] without a gather."""
  h, w, d = agg.shape
  t = agg.permute(0, 2, 1).pad(((0, 0), (0, 0), (0, d)), value=BIG)          # (H, D, W + D), BIG beyond the image
  flat = t.reshape(h, d * (w + d)).pad(((0, 0), (0, d)), value=BIG)           # (H, D·(W + D + 1))
  return flat.reshape(h, d, w + d + 1)[:, :, :w].permute(0, 2, 1)             # [y, x, d] = t[y, d, x + d]


def left_right_consistent(agg: Tensor, d_best: Tensor, max_diff: float) -> Tensor:
  """|d_L(x) − d_R(x − d_L(x))| ≤ max_diff, with d_R the right view's winner-take-all."""
  _, d_right = winner_take_all(right_view_costs(agg))
  d_index = Tensor.arange(agg.shape[2]).reshape(1, 1, -1)
  d_right_at_match = (d_index == d_best).where(shifted_views(d_right[:, :, 0].float(), agg.shape[2]), 0).sum(axis=2, keepdim=True)
  return (d_best.float() - d_right_at_match).abs() <= max_diff


def median3x3(img: Tensor) -> Tensor:
  """3×3 median: of the 9 neighbours, the one with exactly 4 smaller (ties broken by position)."""
  h, w = img.shape
  padded = img.pad(((1, 1), (1, 1)), mode="replicate")
  nbrs = Tensor.stack(*[padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], dim=2)   # (H, W, 9)
  i, j = Tensor.arange(9).reshape(1, 1, 9, 1), Tensor.arange(9).reshape(1, 1, 1, 9)
  a, b = nbrs.unsqueeze(3), nbrs.unsqueeze(2)
  rank = ((b < a) | ((b == a) & (j < i))).sum(axis=3)                        # (H, W, 9)
  return (rank == 4).where(nbrs, 0).sum(axis=2)


# ---- the matcher: steps 2–4 in one TinyJit ---------------------------------------------------------------

@dataclass
class MatchConfig:
  max_disp: int = 64
  cost: str = "census"
  census_window: int = 5
  aggregation: str = "sgm"
  block: int = 5
  paths: int = 8
  p1: float | None = None        # None: a default scaled to the cost (see resolved_penalties)
  p2: float | None = None
  uniqueness: float = 10.0
  lr_max_diff: float = 1.0       # < 0 turns the check off
  subpixel: bool = True
  median: bool = True

  def resolved_penalties(self) -> tuple[float, float]:
    """Default P1, P2 in units of the matching cost: census counts bits (w² − 1 of them), SAD grey levels."""
    unit = (self.census_window ** 2 - 1) / 24 if self.cost == "census" else 255 / 24
    return (self.p1 if self.p1 is not None else 2.0 * unit, self.p2 if self.p2 is not None else 16.0 * unit)

  def describe(self) -> str:
    agg = f"SGM {self.paths} paths P1={self.resolved_penalties()[0]:.3g} P2={self.resolved_penalties()[1]:.3g}" if self.aggregation == "sgm" else f"box {self.block}x{self.block}"
    cost = f"census {self.census_window}x{self.census_window}" if self.cost == "census" else "SAD"
    return f"{cost} + {agg}, D={self.max_disp}"


class StereoMatcher:
  """left, right (H, W) float32 Tensors -> disparity (H, W) float32 and valid (H, W) bool, one TinyJit."""
  def __init__(self, height: int, width: int, cfg: MatchConfig):
    self.h, self.w, self.cfg = height, width, cfg
    p1, p2 = cfg.resolved_penalties()
    self.sgm = SemiGlobal(height, width, cfg.max_disp, cfg.paths, p1, p2) if cfg.aggregation == "sgm" else None
    self.match = TinyJit(self._match)

  def _match(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
    cfg = self.cfg
    cost = census_cost(left, right, cfg.max_disp, cfg.census_window) if cfg.cost == "census" else sad_cost(left, right, cfg.max_disp)
    agg = self.sgm(cost.contiguous()) if self.sgm is not None else box_sum(cost, cfg.block)
    agg = agg.contiguous()        # read many times below: compute it once
    best, d_best = winner_take_all(agg)
    disparity = d_best.float() + (subpixel_offset(agg, best, d_best) if cfg.subpixel else 0)
    valid = is_unique(agg, best, d_best, cfg.uniqueness) if cfg.uniqueness > 0 else best >= 0
    if cfg.lr_max_diff >= 0: valid = valid & left_right_consistent(agg, d_best, cfg.lr_max_diff)
    valid = valid & (d_best <= Tensor.arange(self.w).reshape(1, -1, 1))      # the match lies inside the right image
    disparity = disparity[:, :, 0]
    if cfg.median: disparity = median3x3(disparity)
    return disparity.contiguous().realize(), valid[:, :, 0].contiguous().realize()


# ---- 5. depth and what a robot needs from it ------------------------------------------------------------

def depth_from_disparity(disparity: Tensor, valid: Tensor, Q: np.ndarray) -> tuple[Tensor, Tensor]:
  """[X Y Z W]ᵀ = Q·[x y d 1]ᵀ -> Z / W in metres (the Z row of Q does not depend on x, y for a
  rectified pair, but the general form costs nothing); invalid where d is invalid or W ≤ 0."""
  h, w = disparity.shape
  Q = np.asarray(Q, np.float64).tolist()       # Python floats: numpy scalars would hijack the Tensor ops
  x, y = Tensor.arange(w).reshape(1, w).float(), Tensor.arange(h).reshape(h, 1).float()
  Z = Q[2][0] * x + Q[2][1] * y + Q[2][2] * disparity + Q[2][3]
  W = Q[3][0] * x + Q[3][1] * y + Q[3][2] * disparity + Q[3][3]
  ok = valid & (W > 1e-9)
  return ok.where(Z / ok.where(W, 1.0), float("nan")), ok


def obstacle_summary(depth: np.ndarray, valid: np.ndarray, rows: int, cols: int, focal_px: float, cx: float):
  """Nearest valid depth per grid cell (NaN: unknown) and a suggested heading: the column whose nearest
  obstacle is farthest away, as an angle from the optical axis (None when nothing is known)."""
  h, w = depth.shape
  grid = np.full((rows, cols), np.nan)
  for r in range(rows):
    for c in range(cols):
      cell_valid = valid[r * h // rows:(r + 1) * h // rows, c * w // cols:(c + 1) * w // cols]
      if cell_valid.any(): grid[r, c] = depth[r * h // rows:(r + 1) * h // rows, c * w // cols:(c + 1) * w // cols][cell_valid].min()
  clearance = np.array([np.nanmin(col) if np.isfinite(col).any() else np.nan for col in grid.T])
  if not np.isfinite(clearance).any(): return grid, clearance, None
  best = int(np.nanargmax(clearance))
  centre_x = (best + 0.5) * w / cols
  return grid, clearance, math.degrees(math.atan2(centre_x - cx, focal_px))


# ---- 6. evaluation --------------------------------------------------------------------------------------

def fill_invalid(disparity: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Each invalid pixel takes the smaller (farther) of the nearest valid disparities to its left and right
  on the same row (occlusions belong to the background); rows with nothing valid stay as they are."""
  h, w = disparity.shape
  cols = np.broadcast_to(np.arange(w), (h, w))
  left_idx = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
  right_idx = np.flip(np.minimum.accumulate(np.flip(np.where(valid, cols, w), 1), axis=1), 1)
  rows = np.arange(h)[:, None]
  from_left = np.where(left_idx >= 0, disparity[rows, np.clip(left_idx, 0, w - 1)], np.inf)
  from_right = np.where(right_idx < w, disparity[rows, np.clip(right_idx, 0, w - 1)], np.inf)
  filled = np.minimum(from_left, from_right)
  return np.where(valid, disparity, np.where(np.isfinite(filled), filled, disparity)).astype(np.float32)


def evaluate(disparity: np.ndarray, valid: np.ndarray, gt: np.ndarray, known: np.ndarray, border: int = 0) -> dict:
  """bad-t % = share of pixels with known ground truth whose |d − d_gt| > t. 'dense' fills the invalid
  pixels first (fill_invalid); 'kept' scores only the pixels the checks kept."""
  mask = known.copy()
  if border > 0:
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = False, False, False, False
  if not mask.any(): fail("no pixel with known ground truth inside the evaluation border")
  dense_err = np.abs(fill_invalid(disparity, valid) - gt)[mask]
  kept = mask & valid
  kept_err = np.abs(disparity - gt)[kept]
  out = {"pixels": int(mask.sum()), "density_pct": 100.0 * kept.sum() / mask.sum(), "mean_abs_err": float(dense_err.mean())}
  for t in (0.5, 1.0, 2.0):
    out[f"bad{t}_pct"] = 100.0 * float((dense_err > t).mean())
    out[f"kept_bad{t}_pct"] = 100.0 * float((kept_err > t).mean()) if kept_err.size else float("nan")
  return out


def colorize(values: np.ndarray, valid: np.ndarray, lo: float, hi: float, cmap: str = "turbo") -> np.ndarray:
  """Float map -> RGB uint8 through a matplotlib colour map; invalid pixels black."""
  from matplotlib import colormaps
  t = np.clip((np.nan_to_num(values) - lo) / max(hi - lo, 1e-9), 0, 1)
  rgb = (colormaps[cmap](t)[..., :3] * 255).astype(np.uint8)
  rgb[~valid] = 0
  return rgb


# ---- 7. --bench -----------------------------------------------------------------------------------------

def parse_sizes(text: str, smallest: int = 8) -> list[tuple[int, int]]:
  import argparse
  sizes = []
  for item in text.split(","):
    try: w, h = (int(v) for v in item.lower().split("x"))
    except ValueError: raise argparse.ArgumentTypeError(f"{item!r} is not WIDTHxHEIGHT")
    if w < smallest or h < smallest: raise argparse.ArgumentTypeError(f"{item!r}: at least {smallest}x{smallest}")
    sizes.append((w, h))
  return sizes


def opencv_matchers(max_disp: int):
  """StereoBM and StereoSGBM configured like the tinygrad matchers (None without OpenCV)."""
  try: import cv2
  except ImportError: return None
  bm = cv2.StereoBM_create(numDisparities=max_disp, blockSize=15)
  sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=max_disp, blockSize=5, P1=8 * 25, P2=32 * 25,
                               disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=0, mode=cv2.STEREO_SGBM_MODE_HH)
  def run(matcher):
    def disparity(left_u8, right_u8):
      d = matcher.compute(left_u8, right_u8).astype(np.float32) / 16.0   # fixed point, 4 fractional bits
      return d, d >= 0
    return disparity
  return {"OpenCV StereoBM 15x15": run(bm), "OpenCV StereoSGBM 5x5 HH": run(sgbm)}, cv2.__version__


def bench_configs(args) -> dict[str, MatchConfig]:
  return {"census+box": MatchConfig(cost=args.cost, census_window=args.census_window, aggregation="box", block=args.block),
          "census+SGM": MatchConfig(cost=args.cost, census_window=args.census_window, aggregation="sgm", paths=args.paths)}


def run_bench(args, eval_pair) -> int:
  from common.bench import Bench
  sizes = args.sizes or ([(64, 48)] if args.quick else [(320, 240), (640, 480), (1280, 720)])
  disparities = args.disparities or ([16] if args.quick else [64, 128])
  if any(w <= d for w, _ in sizes for d in disparities): fail("--sizes: every width must exceed every --disparities value")
  iters, max_s = (3, 5.0) if args.quick else (10, 20.0)
  bench, accuracy = Bench(PROJECT), []
  cv = opencv_matchers(disparities[0])
  cv_bench = Bench(PROJECT, device="opencv:CPU", renderer=f"opencv {cv[1]}") if cv else None
  if cv is None: print("OpenCV not installed (pip install opencv-python-headless): StereoBM/StereoSGBM rows skipped")

  # the torch_reference.py workload: SAD cost volume, 5x5 box, argmin; 640x480 D64 (--quick: first size and D)
  (w0, h0), d0 = sizes[0] if args.quick else (640, 480), disparities[0] if args.quick else 64
  left, right, _, _ = render_scene(make_scene("boxes", h0, w0, d0, args.seed), h0, w0, 2.0, args.seed)
  L, R = Tensor(left).realize(), Tensor(right).realize()
  sad_argmin = TinyJit(lambda l, r: winner_take_all(box_sum(sad_cost(l, r, d0), 5))[1].realize())
  bench.run(f"SAD 5x5 box + argmin {w0}x{h0} D{d0}", lambda: sad_argmin(L, R), rate=(1, "frames/s"), iters=iters, max_seconds=max_s)

  for (w, h) in sizes:
    for d in disparities:
      left, right, _, _ = render_scene(make_scene("boxes", h, w, d, args.seed), h, w, 2.0, args.seed)
      L, R = Tensor(left).realize(), Tensor(right).realize()
      for name, cfg in bench_configs(args).items():
        cfg.max_disp = d
        t0 = time.perf_counter()
        matcher = StereoMatcher(h, w, cfg)
        setup_s = time.perf_counter() - t0
        bench.run(f"{name} {w}x{h} D{d}", lambda: matcher.match(L, R), rate=(1, "frames/s"), iters=iters, max_seconds=max_s,
                  setup_s=setup_s, config=cfg.describe())
        print(f"  {name} {w}x{h} D{d}: {bench.records[-1]['median_ms']:.1f} ms/frame", file=sys.stderr)
      if cv is not None:
        cvm, _ = opencv_matchers(d)
        l8, r8 = left.round().clip(0, 255).astype(np.uint8), right.round().clip(0, 255).astype(np.uint8)
        for name, fn in cvm.items():
          cv_bench.run(f"{name} {w}x{h} D{d}", lambda: fn(l8, r8), rate=(1, "frames/s"), iters=iters, max_seconds=max_s, sync=lambda: None)

  if eval_pair is not None:     # accuracy (and speed) on the evaluation pair, every method, same D
    left, right, gt, known, occluded = eval_pair
    def score(disp, valid):
      out = evaluate(disp, valid, gt, known, args.eval_border)
      if occluded is not None: out["visible_bad1.0_pct"] = evaluate(disp, valid, gt, known & ~occluded, args.eval_border)["bad1.0_pct"]
      return out
    h, w = left.shape
    d = args.max_disp
    L, R = Tensor(left).realize(), Tensor(right).realize()
    for name, cfg in bench_configs(args).items():
      cfg.max_disp = d
      matcher = StereoMatcher(h, w, cfg)
      rec = bench.run(f"{name} eval pair {w}x{h} D{d}", lambda: matcher.match(L, R), rate=(1, "frames/s"), iters=iters, max_seconds=max_s)
      disp, valid = (t.numpy() for t in matcher.match(L, R))
      scores = score(disp, valid)
      rec.update({f"eval_{k}": v for k, v in scores.items()})
      accuracy.append((name, rec["median_ms"], scores))
    if cv is not None:
      cvm, _ = opencv_matchers(d)
      l8, r8 = left.round().clip(0, 255).astype(np.uint8), right.round().clip(0, 255).astype(np.uint8)
      for name, fn in cvm.items():
        rec = cv_bench.run(f"{name} eval pair {w}x{h} D{d}", lambda: fn(l8, r8), rate=(1, "frames/s"), iters=iters, max_seconds=max_s, sync=lambda: None)
        scores = score(*fn(l8, r8))
        rec.update({f"eval_{k}": v for k, v in scores.items()})
        accuracy.append((name, rec["median_ms"], scores))

  bench.print("stereo matching (tinygrad)")
  if cv_bench is not None and cv_bench.records: cv_bench.print("stereo matching (OpenCV, CPU)")
  if accuracy:
    print(f"\n### accuracy on the evaluation pair ({eval_pair[0].shape[1]}x{eval_pair[0].shape[0]}, D={args.max_disp}, all pixels with known ground truth)\n")
    print("| method | ms/frame | bad-0.5 % | bad-1.0 % | bad-2.0 % | mean err px | bad-1.0 % visible px | kept % | bad-1.0 % of kept |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, ms, s in accuracy:
      visible = f"{s['visible_bad1.0_pct']:.1f}" if "visible_bad1.0_pct" in s else "-"
      print(f"| {name} | {ms:.1f} | {s['bad0.5_pct']:.1f} | {s['bad1.0_pct']:.1f} | {s['bad2.0_pct']:.1f} | {s['mean_abs_err']:.2f} | {visible} | {s['density_pct']:.1f} | {s['kept_bad1.0_pct']:.1f} |")
  if args.json:     # one file for both devices (tinygrad's and OpenCV's records), in the harness's schema
    from common.bench import SCHEMA
    save_json({"schema": SCHEMA, "records": bench.records + (cv_bench.records if cv_bench else [])}, args.json)
    print(f"\nwrote {args.json}")
  return 0


# ---- main -----------------------------------------------------------------------------------------------

def parse_args(argv=None):
  p = common.project_parser(PROJECT, __doc__, quick_help="tiny synthetic scene and disparity range (seconds)")
  g = p.add_argument_group("input")
  g.add_argument("--left", metavar="PATH", help="left image (any format Pillow reads); default: a synthetic scene")
  g.add_argument("--right", metavar="PATH", help="right image, same size as --left")
  g.add_argument("--calib", metavar="NPZ", help="calibration from stereo/calibrate_stereo.py (Q matrix, rectification maps)")
  g.add_argument("--focal-px", type=positive_float, default=None, help="focal length in pixels without --calib (default: the IMX219's 2.6 mm lens, 0.708 × image width)")
  g.add_argument("--baseline-m", type=positive_float, default=0.06, help="camera baseline in metres without --calib")
  g.add_argument("--scene", choices=["boxes", "fronto", "slanted"], default="boxes", help="synthetic scene when no --left/--right")
  g.add_argument("--size", type=parse_sizes, default=None, help="synthetic scene size WIDTHxHEIGHT (default 320x240, --quick 128x96)")
  g.add_argument("--noise", type=nonnegative_float, default=2.0, help="synthetic camera noise, grey levels (σ)")
  g = p.add_argument_group("matching")
  g.add_argument("--max-disp", type=positive_int, default=None, help="disparities searched, 0..D−1 (default 64, --quick 16)")
  g.add_argument("--cost", choices=["census", "sad"], default="census", help="matching cost")
  g.add_argument("--census-window", type=int, choices=[3, 5, 7], default=5, help="census window (w²−1 bits)")
  g.add_argument("--aggregation", choices=["sgm", "box"], default="sgm", help="cost aggregation")
  g.add_argument("--block", type=int, choices=[3, 5, 7, 9, 11, 13, 15], default=5, help="box window for --aggregation box")
  g.add_argument("--paths", type=int, choices=[4, 8], default=8, help="SGM path directions")
  g.add_argument("--p1", type=nonnegative_float, default=None, help="SGM penalty for a ±1 disparity step (default: census 2 × (w²−1)/24 bits, SAD 21 grey levels)")
  g.add_argument("--p2", type=nonnegative_float, default=None, help="SGM penalty for a larger jump (default: 8 × the P1 default)")
  g.add_argument("--uniqueness", type=nonnegative_float, default=10.0, help="uniqueness ratio %% (0: off)")
  g.add_argument("--lr-max-diff", type=float, default=1.0, help="left–right check tolerance in px (negative: off)")
  g.add_argument("--no-subpixel", action="store_true", help="integer disparities only")
  g.add_argument("--no-median", action="store_true", help="skip the 3x3 median filter")
  g = p.add_argument_group("evaluation and output")
  g.add_argument("--gt", metavar="PATH", help="ground-truth disparity of the left view (PNG with --gt-scale, or PFM)")
  g.add_argument("--gt-right", metavar="PATH", help="ground truth of the right view (same format): adds the score on visible (non-occluded) pixels")
  g.add_argument("--gt-scale", type=positive_float, default=1.0, help="PNG ground truth stores scale × disparity (Middlebury 2003: 4)")
  g.add_argument("--eval-border", type=int, default=0, help="ignore this many pixels at each image edge when scoring")
  g.add_argument("--target-bad1", type=positive_float, default=None, help="PASS when bad-1.0 %% ≤ this (default: 3 on the visible pixels of a synthetic scene, 14 on all known pixels with --gt)")
  g.add_argument("--grid", type=lambda t: parse_sizes(t, smallest=1), default="8x3", help="obstacle grid COLUMNSxROWS")
  g.add_argument("--repeat", type=positive_int, default=None, help="run the matcher this many times to show the JIT replay time (default 3, --quick 1)")
  g = p.add_argument_group("--bench")
  g.add_argument("--sizes", type=parse_sizes, default=None, help="bench image sizes, e.g. 320x240,640x480")
  g.add_argument("--disparities", type=int_list, default=None, help="bench disparity counts, e.g. 64,128")
  args = p.parse_args(argv)
  if (args.left is None) != (args.right is None): p.error("--left and --right go together")
  if args.gt and args.left is None: p.error("--gt needs --left/--right (synthetic scenes carry their own ground truth)")
  if args.gt_right and not args.gt: p.error("--gt-right goes with --gt")
  if args.eval_border < 0: p.error("--eval-border must be >= 0")
  args.max_disp = args.max_disp or (16 if args.quick else 64)
  if args.max_disp < 4: p.error("--max-disp must be at least 4")
  return args


def load_inputs(args):
  """-> left, right (H, W) float32, ground truth (or None), known mask, occlusion mask (synthetic only),
  and a description."""
  if args.left is None:
    w, h = args.size[0] if args.size else ((128, 96) if args.quick else (320, 240))
    if w <= args.max_disp: fail(f"--size {w}x{h} is narrower than --max-disp {args.max_disp}")
    planes = make_scene(args.scene, h, w, args.max_disp, args.seed)
    left, right, gt, occluded = render_scene(planes, h, w, args.noise, args.seed)
    return left, right, gt, np.ones_like(gt, bool), occluded, f"synthetic '{args.scene}' scene {w}x{h}"
  left, right = to_gray(read_image(args.left)), to_gray(read_image(args.right))
  if left.shape != right.shape:
    fail(f"image sizes differ: {args.left} is {left.shape[1]}x{left.shape[0]}, {args.right} is {right.shape[1]}x{right.shape[0]}")
  if left.shape[1] <= args.max_disp: fail(f"images are {left.shape[1]} px wide, not wider than --max-disp {args.max_disp}")
  gt, known = load_ground_truth(args.gt, args.gt_scale, left.shape) if args.gt else (None, None)
  occluded = occlusion_from_ground_truth(gt, known, *load_ground_truth(args.gt_right, args.gt_scale, left.shape)) if args.gt_right else None
  return left, right, gt, known, occluded, f"{args.left} + {args.right} ({left.shape[1]}x{left.shape[0]})"


def main() -> int:
  args = parse_args()
  seed_all(args.seed)
  open_device()
  left, right, gt, known, occluded, what = load_inputs(args)
  h, w = left.shape
  if args.bench: return run_bench(args, (left, right, gt, known, occluded) if gt is not None else None)

  calib = load_calibration(args.calib, h, w) if args.calib else \
    Calibration.from_focal_baseline(args.focal_px or 0.708 * w, args.baseline_m, h, w)
  if calib.maps is not None:
    left, right = remap_bilinear(left, *calib.maps[:2]), remap_bilinear(right, *calib.maps[2:])
  cfg = MatchConfig(max_disp=args.max_disp, cost=args.cost, census_window=args.census_window, aggregation=args.aggregation,
                    block=args.block, paths=args.paths, p1=args.p1, p2=args.p2, uniqueness=args.uniqueness,
                    lr_max_diff=args.lr_max_diff, subpixel=not args.no_subpixel, median=not args.no_median)
  out = out_dir(args.out)
  print(f"input: {what}")
  print(f"matcher: {cfg.describe()}")
  print(f"depth range: nearest measurable {calib.focal_px * calib.baseline_m / (args.max_disp - 1):.3f} m (d = {args.max_disp - 1}), "
        f"d = 1 px at {calib.focal_px * calib.baseline_m:.2f} m  (f = {calib.focal_px:.1f} px, B = {calib.baseline_m * 1000:.1f} mm)")

  if args.load:
    state, meta = load_checkpoint(args.load)
    check_state_matches({"disparity": Tensor.empty(h, w), "valid": Tensor.empty(h, w)}, state, f"disparity file {args.load}")
    disparity, valid = state["disparity"].float(), state["valid"] > 0.5
    print(f"loaded disparity from {args.load} ({meta.get('matcher', '?')})")
  else:
    t0 = time.perf_counter()
    matcher = StereoMatcher(h, w, cfg)
    setup_s = time.perf_counter() - t0
    L, R = Tensor(left).realize(), Tensor(right).realize()
    times = []
    for _ in common.progress(range(args.repeat or (1 if args.quick else 3)), desc="matching"):
      t0 = time.perf_counter()
      disparity, valid = matcher.match(L, R)
      synchronize()
      times.append(time.perf_counter() - t0)
    print(f"matched: setup {setup_s:.2f} s, first call {times[0]:.2f} s (compile + schedule)" +
          (f", JIT replay {times[-1] * 1e3:.1f} ms/frame" if len(times) >= 3 else ""))

  depth, depth_ok = depth_from_disparity(disparity, valid, calib.Q)
  disp_np, valid_np = disparity.numpy(), valid.numpy().astype(bool)
  depth_np, depth_ok_np = depth.numpy(), depth_ok.numpy().astype(bool)
  summary = {"input": what, "matcher": cfg.describe(), "valid_pct": 100.0 * valid_np.mean(),
             "focal_px": calib.focal_px, "baseline_m": calib.baseline_m,
             "nearest_measurable_m": calib.focal_px * calib.baseline_m / (args.max_disp - 1)}
  print(f"valid pixels: {summary['valid_pct']:.1f} % (the rest failed the uniqueness or left–right check)")

  # obstacle summary: nearest valid depth per cell, and where the most room is
  cols, rows = args.grid[0]
  grid, clearance, heading = obstacle_summary(depth_np, depth_ok_np, rows, cols, calib.focal_px, -calib.Q[0, 3])
  print(f"nearest obstacle per cell (m), {rows}x{cols} grid:")
  for r in range(rows): print("  " + " ".join(f"{v:7.2f}" if np.isfinite(v) else "unknown" for v in grid[r]))
  print(f"suggested heading: {'unknown (no valid depth)' if heading is None else f'{heading:+.1f} deg'}")
  summary.update(obstacle_grid_m=[[float(v) if np.isfinite(v) else None for v in row] for row in grid],
                 suggested_heading_deg=heading)

  # artifacts
  lo, hi = 0.0, float(args.max_disp - 1)
  save_image(colorize(disp_np, valid_np, lo, hi), out / "disparity.png")
  write_pfm(np.where(valid_np, disp_np, np.inf), out / "disparity.pfm")
  # depth colours span the 2nd..98th percentile of the valid depths (bright = near)
  near, far = np.percentile(depth_np[depth_ok_np], [2, 98]) if depth_ok_np.any() else (0.0, 1.0)
  save_image(colorize(-depth_np, depth_ok_np, -far, -near, cmap="magma"), out / "depth.png")
  ok = True
  if gt is not None:
    scores = evaluate(disp_np, valid_np, gt, known, args.eval_border)
    summary["evaluation"] = scores
    print(f"evaluation on {scores['pixels']} pixels with known ground truth (invalid pixels filled from their row):")
    print(f"  bad-0.5 {scores['bad0.5_pct']:.2f} %   bad-1.0 {scores['bad1.0_pct']:.2f} %   bad-2.0 {scores['bad2.0_pct']:.2f} %   mean error {scores['mean_abs_err']:.3f} px")
    print(f"  kept pixels only ({scores['density_pct']:.1f} %): bad-1.0 {scores['kept_bad1.0_pct']:.2f} %")
    target = args.target_bad1 or (14.0 if args.left else 3.0)
    measured, what_px = scores["bad1.0_pct"], "all pixels with known ground truth"
    if occluded is not None:      # known occlusions (synthetic scene, or --gt-right): score the visible pixels too
      visible_scores = evaluate(disp_np, valid_np, gt, known & ~occluded, args.eval_border)
      flagged = 100.0 * (~valid_np)[occluded].mean() if occluded.any() else float("nan")
      print(f"  visible (non-occluded) pixels: bad-1.0 {visible_scores['bad1.0_pct']:.2f} %, mean error {visible_scores['mean_abs_err']:.3f} px")
      print(f"  occluded pixels flagged invalid by the checks: {flagged:.1f} % of {int(occluded.sum())}")
      summary.update(evaluation_visible=visible_scores, occluded_flagged_pct=flagged)
      if args.left is None: measured, what_px = visible_scores["bad1.0_pct"], "visible pixels of the synthetic scene"
    err = np.abs(fill_invalid(disp_np, valid_np) - gt)
    save_image(colorize(np.minimum(err, 4.0), known, 0.0, 4.0, cmap="inferno"), out / "error.png")
    ok = check(f"bad-1.0 ({what_px})", measured, target, higher_is_better=False, unit=" %")
  else:
    print("no ground truth given (--gt): nothing to check")

  from common.plots import figure, save_figure
  panels = [("left", left / 255.0), ("disparity", colorize(disp_np, valid_np, lo, hi)), ("depth", colorize(-depth_np, depth_ok_np, -far, -near, cmap="magma"))]
  if gt is not None: panels.insert(2, ("ground truth", colorize(gt, known, lo, hi)))
  fig, axes = figure(1, len(panels), size=(3.6 * len(panels), 3.2))
  for ax, (title, img) in zip(axes, panels):
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title); ax.axis("off")
  save_figure(fig, out / "overview.png")
  if args.save:
    save_checkpoint({"disparity": Tensor(disp_np), "valid": Tensor(valid_np.astype(np.float32))}, args.save,
                    metadata={"matcher": cfg.describe(), "input": what})
    print(f"saved disparity to {args.save}")
  save_json(summary, out / "summary.json")
  print(f"wrote {out}/disparity.png, depth.png, overview.png, disparity.pfm, summary.json" + (", error.png" if gt is not None else ""))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
