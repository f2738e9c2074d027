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
     (pad + unfold: no copy, [y, x, d] = right[y, x − d]).
       --cost sad      C = |I_L(y, x) − I_R(y, x − d)|                        (grey levels 0..255)
       --cost census   each pixel becomes a bit string, bit k = [I(neighbour k) < I(centre)] over a
                       w×w window (--census-window, w² − 1 bits packed in uint32 words), and
                       C = popcount(census_L(y, x) XOR census_R(y, x − d))  (Hamming distance; the
                       popcount is the classic SWAR bit trick). Census only compares, so it ignores
                       gain and exposure differences between the two cameras.
     A match outside the right image (x − d < 0) has nothing to compare with. It costs a fixed
     --out-of-view fraction of the largest cost (default 0.25: 64 grey levels, or a quarter of the
     census bits), not the maximum: a moderate cost lets SGM's paths carry the disparity of a surface
     into the left border band, where the maximum would push the winner to a wrong in-view match.
     Such a winner is still marked invalid (its match lies outside the right image).
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
       median            optional 3×3 median (--no-median turns it off) against isolated outliers.
     Rejected pixels are marked invalid (a mask; NaN depth, inf in disparity.pfm, black in the images); they
     are never silently set to zero.
  4. Depth: with a calibration (.npz from calibrate_stereo.py: the 4×4 matrix Q of OpenCV's
     stereoRectify), [X Y Z W]ᵀ = Q·[x y d 1]ᵀ and the point is (X, Y, Z)/W; without one, Z = f·B/d
     with --focal-px and --baseline-m. An obstacle summary splits the image into a coarse grid, reports
     the nearest valid depth per cell ("unknown" where no pixel is valid) and suggests the heading of
     the column with the most clearance.

INPUTS, EVALUATION, OUTPUTS
  Default: a synthetic scene rendered with exact ground truth (textured planes; --scene slanted|fronto|boxes).
  --left/--right take any images Pillow reads, 8- or 16-bit, grey or colour (scaled by their real range to
  grey levels 0..255). --gt: ground truth, a PNG holding --gt-scale × d with 0 = unknown (Middlebury 2003:
  scale 4), or a PFM; scored as bad-0.5/1.0/2.0 % and mean error over the pixels with known ground truth,
  invalid pixels filled from their row neighbours (the Middlebury convention for sparse methods), and over
  the kept pixels alone. PASS when bad-1.0 ≤ --target-bad1 (3 % on the visible pixels of a synthetic scene,
  14 % over all known pixels with --gt); FAIL exits with status 1.
  Under --out (default out/stereo/, checked before any work): disparity.png, depth.png, overview.png,
  disparity.pfm, summary.json, error.png (with ground truth). --save-disparity PATH writes the disparity and
  its mask (safetensors), which --load-disparity PATH scores again; --json PATH the matcher's timing records.

RUN
  Jetson:  NV=1 python3 stereo/depth_map.py                         (synthetic scene, writes out/stereo/)
           NV=1 python3 stereo/depth_map.py --left L.png --right R.png --calib out/stereo/calib.npz
  Laptop:  python3 stereo/depth_map.py [--quick]
  Teddy:   python3 stereo/depth_map.py --left ../shared/data/stereo/teddy/im2.png \\
             --right ../shared/data/stereo/teddy/im6.png --gt ../shared/data/stereo/teddy/disp2.png --gt-scale 4
  Bench:   python3 stereo/depth_map.py --bench [--json out.json] [--sizes 640x480 --disparities 64]
           (stereo_bench.py: box and SGM per size and D, OpenCV beside them when installed, accuracy on the
           evaluation pair: the synthetic scene, or --left/--right with --gt)
  Live:    python3 stereo/depth_map.py --live --source sim|argus|v4l2|folder:PATH [--frames N] [--calib calib.npz]
           (stereo/live.py: capture → rectify → match → depth → obstacles → heading per frame; --bench: the pipeline)
  Try:     JITBEAM=2 (kernel search for the replayed kernels), --paths 4, --cost sad, --p2 60, --no-median.

WHAT TO EXPECT (measured on this code; commands, machines and full tables in stereo/README.md)
  Teddy (450×375, 64 levels), the defaults (census 5×5 + SGM 8 paths): bad-1.0 13.3 % over all pixels with
  known ground truth, 7.0 % over the visible ones; OpenCV StereoSGBM 21.3 % / 13.0 %, StereoBM 26.7 % / 18.7 %.
  Default synthetic scene: 0.7 % on the visible pixels. Loaded 2-core CPU: SGM ~1 s per 320×240 frame
  (OpenCV SGBM ~28 ms), box ~0.2 s. H200 (DEV=CUDA), 640×480 D64: SGM 6.6 ms, box 0.77 ms. Jetson Orin: not
  measured; expected to be bound by the S sequential SGM steps (two small launches each, JIT-replayed).
"""
import common  # first: turns NV=1 / CUDA=1 into DEV=... before tinygrad reads it

import math, os, sys, time
from pathlib import Path
from dataclasses import dataclass, replace

import numpy as np
from tinygrad import Tensor, TinyJit, dtypes

from common import fail, check, seed_all
from common.cli import check_out_dir
from common.device import synchronize
from common.files import save_checkpoint, save_json
# plumbing kept beside this script: the demo scene, the file readers and writers, the command line
from scene import synthetic_pair
from stereo_cli import parse_args
from stereo_files import load_calibration, load_ground_truth, read_grey, read_saved_disparity, remap_bilinear, write_maps

PROJECT, SCRIPT = "stereo", "stereo/depth_map.py"
# Cost of a match outside the right image (x − d < 0), as a fraction of the largest cost. Not the maximum:
# a moderate cost lets SGM's paths carry a surface's disparity into the left border band instead of
# forcing a wrong in-view match there (see the tuning table in stereo/README.md, --out-of-view).
OUT_OF_VIEW = 0.25
BIG = 1e9   # "no such neighbour" in the SGM recurrence: larger than any cost, small enough to add to


@dataclass
class MatchConfig:
  """Everything the matcher computes with (steps 1-3 of the docstring)."""
  max_disp: int = 64             # D: disparities 0..D−1 are searched
  cost: str = "census"           # "census" or "sad"
  census_window: int = 5
  aggregation: str = "sgm"       # "sgm" or "box"
  block: int = 5                 # box window
  paths: int = 8                 # SGM directions, 4 or 8
  p1: float | None = None        # None: a default scaled to the cost (see resolved_penalties)
  p2: float | None = None
  uniqueness: float = 10.0       # % (0: off)
  lr_max_diff: float = 1.0       # px; < 0 turns the check off
  out_of_view: float = OUT_OF_VIEW
  subpixel: bool = True
  median: bool = True

  def resolved_penalties(self) -> tuple[float, float]:
    """Default P1, P2 in units of the matching cost: census counts bits (w² − 1 of them), SAD grey levels."""
    unit = (self.census_window ** 2 - 1) / 24 if self.cost == "census" else 255 / 24
    return (self.p1 if self.p1 is not None else 2.0 * unit, self.p2 if self.p2 is not None else 16.0 * unit)

  def describe(self) -> str:
    p1, p2 = self.resolved_penalties()
    agg = f"SGM {self.paths} paths P1={p1:.3g} P2={p2:.3g}" if self.aggregation == "sgm" else f"box {self.block}x{self.block}"
    cost = f"census {self.census_window}x{self.census_window}" if self.cost == "census" else "SAD"
    return f"{cost} + {agg}, D={self.max_disp}"

  def bytes_needed(self, height: int, width: int) -> int:
    """Rough peak memory of one match: a few (H, W, D) float volumes, and for SGM the (S, G, S, D)
    rearranged costs, the step history and its gathered copy."""
    volumes = 4 * 4 * height * width * self.max_disp
    if self.aggregation != "sgm": return volumes
    s = max(height, width)
    return volumes + 3 * 4 * s * self.paths * s * self.max_disp


# ---- 1. matching cost: a (H, W, D) volume ---------------------------------------------------------------

def shifted_views(right: Tensor, max_disp: int) -> Tensor:
  """(H, W) -> (H, W, D) with [y, x, d] = right[y, x − d] (0 left of the image): pad + unfold, a view."""
  padded = right.pad(((0, 0), (max_disp - 1, 0)))              # (H, W + D − 1)
  return padded.unfold(1, max_disp, 1).flip(2)                  # [y, x, k] = right[y, x + k − D + 1], k = D − 1 − d


def in_view(width: int, max_disp: int) -> Tensor:
  """(1, W, D) mask of the disparities whose match x − d lies inside the right image."""
  return Tensor.arange(width).reshape(1, width, 1) >= Tensor.arange(max_disp).reshape(1, 1, max_disp)


def sad_cost(left: Tensor, right: Tensor, max_disp: int, out_of_view: float = OUT_OF_VIEW) -> Tensor:
  """C(y, x, d) = |I_L(y, x) − I_R(y, x − d)|; a match outside the right image costs out_of_view × 255."""
  cost = (left.unsqueeze(2) - shifted_views(right, max_disp)).abs()
  return in_view(left.shape[1], max_disp).where(cost, out_of_view * 255.0)


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


def census_cost(left: Tensor, right: Tensor, max_disp: int, window: int, out_of_view: float = OUT_OF_VIEW) -> Tensor:
  """C(y, x, d) = Hamming distance between census_L(y, x) and census_R(y, x − d); a match outside the
  right image costs out_of_view × (w² − 1) bits."""
  cost = None
  for wl, wr in zip(census_transform(left, window), census_transform(right, window)):
    bits = popcount32(wl.unsqueeze(2) ^ shifted_views(wr, max_disp)).cast(dtypes.float32)
    cost = bits if cost is None else cost + bits
  return in_view(left.shape[1], max_disp).where(cost, out_of_view * (window * window - 1))
# ---- 2. aggregation -------------------------------------------------------------------------------------

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


# ---- 3. disparity selection -----------------------------------------------------------------------------

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


# ---- the matcher: steps 1–3 in one TinyJit ---------------------------------------------------------------

class StereoMatcher:
  """left, right (H, W) float32 Tensors -> disparity (H, W) float32 and valid (H, W) bool, one TinyJit."""
  def __init__(self, height: int, width: int, cfg: MatchConfig):
    self.h, self.w, self.cfg = height, width, cfg
    p1, p2 = cfg.resolved_penalties()
    self.sgm = SemiGlobal(height, width, cfg.max_disp, cfg.paths, p1, p2) if cfg.aggregation == "sgm" else None
    self.match = TinyJit(self._match)

  def _match(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
    cfg = self.cfg
    if cfg.cost == "census": cost = census_cost(left, right, cfg.max_disp, cfg.census_window, cfg.out_of_view)
    else: cost = sad_cost(left, right, cfg.max_disp, cfg.out_of_view)
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


# ---- 4. depth and what a robot needs from it ------------------------------------------------------------

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
      cell = (slice(r * h // rows, (r + 1) * h // rows), slice(c * w // cols, (c + 1) * w // cols))
      if valid[cell].any(): grid[r, c] = depth[cell][valid[cell]].min()
  clearance = np.array([np.nanmin(col) if np.isfinite(col).any() else np.nan for col in grid.T])
  if not np.isfinite(clearance).any(): return grid, clearance, None
  best = int(np.nanargmax(clearance))
  centre_x = (best + 0.5) * w / cols
  return grid, clearance, math.degrees(math.atan2(centre_x - cx, focal_px))


# ---- 5. evaluation and the success check ------------------------------------------------------------------

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


def evaluation_mask(known: np.ndarray, border: int) -> np.ndarray:
  """The pixels that are scored: known ground truth, at least `border` pixels from every edge."""
  mask = known.copy()
  if border > 0:
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = False, False, False, False
  if not mask.any(): fail(f"no pixel with known ground truth lies inside --eval-border {border}")
  return mask


def evaluate(disparity: np.ndarray, valid: np.ndarray, gt: np.ndarray, known: np.ndarray, border: int = 0) -> dict:
  """bad-t % = share of pixels with known ground truth whose |d − d_gt| > t. 'dense' fills the invalid
  pixels first (fill_invalid); 'kept' scores only the pixels the checks kept."""
  mask = evaluation_mask(known, border)
  dense_err = np.abs(fill_invalid(disparity, valid) - gt)[mask]
  kept = mask & valid
  kept_err = np.abs(disparity - gt)[kept]
  out = {"pixels": int(mask.sum()), "density_pct": 100.0 * kept.sum() / mask.sum(), "mean_abs_err": float(dense_err.mean())}
  for t in (0.5, 1.0, 2.0):
    out[f"bad{t}_pct"] = 100.0 * float((dense_err > t).mean())
    out[f"kept_bad{t}_pct"] = 100.0 * float((kept_err > t).mean()) if kept_err.size else float("nan")
  return out


def occlusion_from_ground_truth(gt_left, known_left, gt_right, known_right) -> np.ndarray:
  """Left pixels whose match is not visible in the right view: the match falls outside, or the right
  view's ground truth there disagrees by more than 1 px (another surface is in front)."""
  h, w = gt_left.shape
  x_right = np.round(np.arange(w)[None, :] - gt_left).astype(np.int64)
  inside = x_right >= 0
  rows, xr = np.arange(h)[:, None], np.clip(x_right, 0, w - 1)
  agrees = known_right[rows, xr] & (np.abs(gt_right[rows, xr] - gt_left) <= 1.0)
  return known_left & ~(inside & agrees)


def score_and_check(args, inp, disp: np.ndarray, valid: np.ndarray, summary: dict) -> bool:
  """Print the scores, add them to the summary, and check bad-1.0 against the target: over the visible
  pixels for a synthetic scene (its occlusions are known exactly), over all known pixels with --gt."""
  scores = summary["evaluation"] = evaluate(disp, valid, inp.gt, inp.known, args.eval_border)
  print(f"evaluation on {scores['pixels']} pixels with known ground truth (invalid pixels filled from their row):")
  print(f"  bad-0.5 {scores['bad0.5_pct']:.2f} %   bad-1.0 {scores['bad1.0_pct']:.2f} %   bad-2.0 {scores['bad2.0_pct']:.2f} %"
        f"   mean error {scores['mean_abs_err']:.3f} px")
  print(f"  kept pixels only ({scores['density_pct']:.1f} %): bad-1.0 {scores['kept_bad1.0_pct']:.2f} %")
  measured, what_px = scores["bad1.0_pct"], "all pixels with known ground truth"
  if inp.occluded is not None:      # known occlusions (synthetic scene, or --gt-right): score the visible pixels too
    visible = summary["evaluation_visible"] = evaluate(disp, valid, inp.gt, inp.known & ~inp.occluded, args.eval_border)
    flagged = summary["occluded_flagged_pct"] = 100.0 * (~valid)[inp.occluded].mean() if inp.occluded.any() else float("nan")
    print(f"  visible (non-occluded) pixels: bad-1.0 {visible['bad1.0_pct']:.2f} %, mean error {visible['mean_abs_err']:.3f} px")
    print(f"  occluded pixels flagged invalid by the checks: {flagged:.1f} % of {int(inp.occluded.sum())}")
    if inp.synthetic: measured, what_px = visible["bad1.0_pct"], "visible pixels of the synthetic scene"
  target = args.target_bad1 if args.target_bad1 is not None else (3.0 if inp.synthetic else 14.0)
  summary["check"] = {"bad1.0_pct": measured, "over": what_px, "target_pct": target}
  return check(f"bad-1.0 ({what_px})", measured, target, higher_is_better=False, unit=" %")


# --- plumbing --------------------------------------------------------------------------------------------
# Below: the inputs (the demo scene from scene.py, files through stereo_files.py, every size checked before
# any matching), the demo's stages, the command line and main. The benchmark is stereo_bench.py.

@dataclass
class StereoInput:
  """A rectified pair in grey levels 0..255 and what is known about it."""
  left: np.ndarray                       # (H, W) float32
  right: np.ndarray
  what: str                              # for the log and summary.json
  calib: Calibration
  synthetic: bool = False
  gt: np.ndarray | None = None           # (H, W) ground-truth disparity of the left view
  known: np.ndarray | None = None        # where gt is known
  occluded: np.ndarray | None = None     # left pixels not visible in the right view (synthetic, or --gt-right)


def check_size(width: int, height: int, cfgs: list[MatchConfig], what: str) -> None:
  """Refuse a pair the matchers cannot handle: no wider than D, or too large for this machine's memory."""
  try: have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError): have = None
  for cfg in cfgs:
    if width <= cfg.max_disp: fail(f"{what} is {width} px wide, not wider than the {cfg.max_disp} disparities searched (--max-disp)")
    if have and (need := cfg.bytes_needed(height, width)) > have:
      hint = ", or --paths 4" if cfg.aggregation == "sgm" and cfg.paths == 8 else ""
      fail(f"{what} ({width}x{height}) with {cfg.describe()} needs about {need / 2**30:.1f} GiB, more than the "
           f"{have / 2**30:.1f} GiB here; use a smaller size or --max-disp{hint}")


def rig(args, width: int, height: int) -> Calibration:
  return Calibration.from_focal_baseline(args.focal_px or 0.708 * width, args.baseline_m, height, width)


def read_pair(args, cfgs: list[MatchConfig]) -> StereoInput:
  """--left/--right (+ --calib to rectify them, --gt, --gt-right)."""
  left, right = read_grey(args.left), read_grey(args.right)
  if left.shape != right.shape:
    fail(f"image sizes differ: {args.left} is {left.shape[1]}x{left.shape[0]}, {args.right} is {right.shape[1]}x{right.shape[0]}")
  h, w = left.shape
  check_size(w, h, cfgs, f"the pair {args.left}")
  calib = Calibration(*load_calibration(args.calib, h, w)) if args.calib else rig(args, w, h)
  if calib.maps is not None: left, right = remap_bilinear(left, *calib.maps[:2]), remap_bilinear(right, *calib.maps[2:])
  gt, known = load_ground_truth(args.gt, args.gt_scale, left.shape) if args.gt else (None, None)
  occluded = occlusion_from_ground_truth(gt, known, *load_ground_truth(args.gt_right, args.gt_scale, left.shape)) if args.gt_right else None
  return StereoInput(left, right, f"{args.left} + {args.right} ({w}x{h})", calib, False, gt, known, occluded)


def load_inputs(args, cfgs: list[MatchConfig]) -> StereoInput:
  """The synthetic scene (default) or the files; what the demo will need of them is checked here."""
  if args.left is None:
    (w, h), = args.size
    check_size(w, h, cfgs, "--size")
    left, right, gt, occluded = synthetic_pair(args.scene, w, h, cfgs[0].max_disp, args.noise, args.seed)
    inp = StereoInput(left, right, f"synthetic '{args.scene}' scene {w}x{h} (seed {args.seed}, noise {args.noise:g})", rig(args, w, h),
                      True, gt, np.ones_like(gt, bool), occluded)
  else:
    inp = read_pair(args, cfgs)
  if inp.gt is not None: evaluation_mask(inp.known, args.eval_border)        # something is left to score
  (cols, rows), (h, w) = args.grid[0], inp.left.shape
  if cols > w or rows > h: fail(f"--grid {cols}x{rows} has more cells than the {w}x{h} image has pixels")
  return inp


# ---- the demo: match (or load), depth, score, write ------------------------------------------------------

def match_pair(inp: StereoInput, cfg: MatchConfig, repeat: int) -> tuple[np.ndarray, np.ndarray, dict]:
  """Run the matcher `repeat` times (the first call compiles, the second captures the JIT, the rest replay)."""
  h, w = inp.left.shape
  t0 = time.perf_counter()
  matcher = StereoMatcher(h, w, cfg)
  setup_s = time.perf_counter() - t0
  L, R = Tensor(inp.left).realize(), Tensor(inp.right).realize()
  times = []
  for _ in common.progress(range(repeat), desc="matching"):
    t0 = time.perf_counter()
    disparity, valid = matcher.match(L, R)
    synchronize()
    times.append(time.perf_counter() - t0)
  print(f"matched: setup {setup_s:.2f} s, first call {times[0]:.2f} s (compile + schedule)" +
        (f", JIT replay {times[-1] * 1e3:.1f} ms/frame" if len(times) >= 3 else ""))
  return disparity.numpy(), valid.numpy().astype(bool), {"setup_s": setup_s, "calls_s": times}


def use_saved(path: str, saved: tuple[dict, dict], inp: StereoInput) -> tuple[np.ndarray, np.ndarray, None]:
  (state, meta), (h, w) = saved, inp.left.shape
  if state["disparity"].shape != (h, w):
    fail(f"disparity file {path} is for {state['disparity'].shape[1]}x{state['disparity'].shape[0]} images, the input is {w}x{h}")
  if meta["input"] != inp.what: print(f"warning: {path} was computed from {meta['input']}, not from {inp.what}", file=sys.stderr)
  print(f"loaded disparity from {path}")
  return state["disparity"], state["valid"], None


def depth_and_obstacles(inp: StereoInput, disp: np.ndarray, valid: np.ndarray, grid_size, summary: dict) -> tuple[np.ndarray, np.ndarray]:
  """Depth in metres from the disparity, and the obstacle grid a robot would steer by."""
  depth, depth_ok = (t.numpy() for t in depth_from_disparity(Tensor(disp), Tensor(valid), inp.calib.Q))
  depth_ok = depth_ok.astype(bool)
  (cols, rows), = grid_size
  grid, _, heading = obstacle_summary(depth, depth_ok, rows, cols, inp.calib.focal_px, -inp.calib.Q[0, 3])
  print(f"valid pixels: {100.0 * valid.mean():.1f} % (the rest failed the uniqueness or left–right check, or match outside the right image)")
  print(f"nearest obstacle per cell (m), {rows}x{cols} grid:")
  for r in range(rows): print("  " + " ".join(f"{v:7.2f}" if np.isfinite(v) else "unknown" for v in grid[r]))
  print(f"suggested heading: {'unknown (no valid depth)' if heading is None else f'{heading:+.1f} deg'}")
  summary.update(valid_pct=100.0 * valid.mean(), obstacle_grid_m=[[float(v) if np.isfinite(v) else None for v in row] for row in grid],
                 suggested_heading_deg=heading)
  return depth, depth_ok


def write_extras(args, inp: StereoInput, cfg: MatchConfig, disp, valid, timing: dict | None) -> None:
  """--save-disparity (the map and its mask, safetensors) and --json (the matcher's calls as one bench
  record: the first two calls, compile and JIT capture, as warm-up; the replays as samples)."""
  if args.save_disparity:
    save_checkpoint({"disparity": disp.astype(np.float32), "valid": valid.astype(np.float32)}, args.save_disparity,
                    {"matcher": cfg.describe(), "max_disp": cfg.max_disp, "input": inp.what}, script=SCRIPT, model="disparity")
    print(f"saved disparity to {args.save_disparity}")
  if args.json:
    from common.bench import Bench, Timing
    bench, (h, w) = Bench(PROJECT), inp.left.shape
    bench.add(f"{cfg.describe()} {w}x{h} (demo input)", Timing(timing["calls_s"][:2], timing["calls_s"][2:]), rate=(1, "frames/s"),
              setup_s=timing["setup_s"], config=cfg.describe(), input=inp.what)
    bench.write_json(args.json)


def run_demo(args) -> int:
  check_out_dir(args)
  cfg, saved = match_config(args), None
  if args.load_disparity:
    saved = read_saved_disparity(args.load_disparity, SCRIPT)
    cfg = replace(cfg, max_disp=saved[1]["max_disp"])
  inp = load_inputs(args, [cfg])
  f, b, nearest = inp.calib.focal_px, inp.calib.baseline_m, inp.calib.focal_px * inp.calib.baseline_m / (cfg.max_disp - 1)
  summary = {"input": inp.what, "matcher": saved[1]["matcher"] if saved else cfg.describe(), "focal_px": f, "baseline_m": b,
             "nearest_measurable_m": nearest}
  print(f"input: {inp.what}\nmatcher: {summary['matcher']}\ndepth range: nearest measurable {nearest:.3f} m (d = {cfg.max_disp - 1}), "
        f"d = 1 px at {f * b:.2f} m  (f = {f:.1f} px, B = {b * 1000:.1f} mm)")
  disp, valid, summary["timing"] = use_saved(args.load_disparity, saved, inp) if saved else match_pair(inp, cfg, args.repeat)
  depth, depth_ok = depth_and_obstacles(inp, disp, valid, args.grid, summary)
  ok = score_and_check(args, inp, disp, valid, summary) if inp.gt is not None else True
  if inp.gt is None: print("no ground truth given (--gt): nothing to check")
  error = np.abs(fill_invalid(disp, valid) - inp.gt) if inp.gt is not None else None    # what the dense score counts
  names = write_maps(Path(args.out), inp.left, cfg.max_disp, disp, valid, depth, depth_ok, inp.gt, inp.known, error)
  write_extras(args, inp, cfg, disp, valid, summary["timing"])
  save_json(summary, Path(args.out) / "summary.json")
  print(f"wrote {args.out}/{', '.join(names + ['summary.json'])}")
  return 0 if ok else 1


# ---- main ---------------------------------------------------------------------------------------------------

def match_config(args) -> MatchConfig:
  """The matcher's settings from the command line; SGM needs P2 >= P1 (a jump may not cost less than a ±1 step)."""
  cfg = MatchConfig(max_disp=args.max_disp, cost=args.cost, census_window=args.census_window, aggregation=args.aggregation,
                    block=args.block, paths=args.paths, p1=args.p1, p2=args.p2, uniqueness=args.uniqueness,
                    lr_max_diff=args.lr_max_diff, out_of_view=args.out_of_view, subpixel=not args.no_subpixel, median=not args.no_median)
  p1, p2 = cfg.resolved_penalties()
  if p2 < p1: fail(f"SGM needs --p2 >= --p1 (a jump may not cost less than a ±1 step): P1 = {p1:g}, P2 = {p2:g}")
  return cfg


def main(argv=None) -> int:
  args = parse_args(argv, __doc__, MatchConfig())
  seed_all(args.seed)
  if args.live:                     # the camera loop: stereo/live.py
    import live
    return live.run_live_bench(args) if args.bench else live.run_live(args)
  if args.bench:
    from stereo_bench import run_bench
    return run_bench(args)
  return run_demo(args)


if __name__ == "__main__":
  sys.exit(common.run_main(main))
