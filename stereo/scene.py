"""Synthetic stereo scenes with exact ground truth, for stereo/depth_map.py's demo, bench and tests.

A scene is a few textured planes, each with disparity d(x, y) = a + b·x + c·y over a rectangle of the
left image. Both views are rendered from the same continuous texture (painted at left-image
coordinates), so the right view can be sampled at sub-pixel positions exactly: the ground-truth
disparity is exact, and so is the occlusion mask (left pixels whose match is hidden or outside).
"""
import math
from dataclasses import dataclass

import numpy as np


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
    def corner(du, dv): return lattice_noise(iu + du, iv + dv, seed + cell)
    out = out + amplitude * ((1 - fu) * (1 - fv) * corner(0, 0) + fu * (1 - fv) * corner(1, 0) +
                             (1 - fu) * fv * corner(0, 1) + fu * fv * corner(1, 1))
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


def visible(planes, x, y, right_view: bool, shade: bool = True):
  """Disparity and intensity of the nearest surface (largest disparity) at each pixel of one view. The
  texture is evaluated only where a plane wins (shade=False: disparity only, intensity stays 0)."""
  shape = np.broadcast(x, y).shape
  x, y = np.broadcast_to(x, shape), np.broadcast_to(y, shape)
  disp, inten = np.full(shape, -np.inf), np.zeros(shape)
  for p in planes:
    xl = p.left_x(x, y) if right_view else x
    d = p.disparity(xl, y)
    take = p.contains(xl, y) & (d > disp)
    disp = np.where(take, d, disp)
    if shade: inten[take] = texture(xl[take], y[take], p.seed)
  return disp, inten


def render_scene(planes, height: int, width: int, noise: float, seed: int):
  """-> left, right (H, W) float32 in 0..255, ground-truth left disparity (H, W) and occlusion mask
  (left pixels whose match is hidden in the right view or falls outside it)."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  gt, left = visible(planes, x, y, right_view=False)
  _, right = visible(planes, x, y, right_view=True)
  seen_there, _ = visible(planes, x - gt, y, right_view=True, shade=False)
  occluded = (seen_there > gt + 1e-6) | (x - gt < 0)
  rng = np.random.default_rng(seed + 7)
  left, right = (np.clip(im + rng.normal(0, noise, im.shape), 0, 255).astype(np.float32) for im in (left, right))
  return left, right, gt.astype(np.float32), occluded


def synthetic_pair(kind: str, width: int, height: int, max_disp: int, noise: float = 2.0, seed: int = 0):
  """make_scene + render_scene: -> left, right, ground truth, occlusion mask."""
  return render_scene(make_scene(kind, height, width, max_disp, seed), height, width, noise, seed)


# ---- a moving scene for the live pipeline (stereo/live.py): the rig drives forward past boxes ------------

class MovingScene:
  """The rig drives straight ahead through boxes standing in front of a far wall; frame k shows the world
  at t = k / fps. Camera frame: x right, y down, z forward (metres), rectified rig with focal length f px
  and baseline B, so a point at depth Z has disparity d = f·B / Z and a box spanning X0..X1 at depth Z
  covers the image columns cx + f·X0/Z .. cx + f·X1/Z (a fronto-parallel Plane, exact ground truth).
  Distances are multiples of u = the depth whose disparity is 80 % of the range (u = f·B / (0.8·(D − 2))),
  so every true disparity is searchable at any image size and D: the wall at 12u, boxes from 8u down to
  1.5u (then they are passed and come back farther away, at a new lateral position), the rig moving
  0.1u per frame. `free_m` (6u) is the clearance that counts as free."""
  BOXES, SPACING = 6, 1.1

  def __init__(self, width: int, height: int, max_disp: int, focal_px: float, baseline_m: float, seed: int = 0):
    self.w, self.h, self.f, self.fb, self.seed = width, height, focal_px, focal_px * baseline_m, seed
    self.cx, self.cy = (width - 1) / 2, (height - 1) / 2
    self.u = self.fb / (0.8 * (max_disp - 2))
    self.free_m, self.wall_m = 6 * self.u, 12 * self.u

  def boxes(self, k: int) -> list[tuple[float, float, float, float, float, int]]:
    """(X0, X1, Y0, Y1, Z, texture seed) of every box in front of the rig at frame k (metres)."""
    period, travelled, out = self.BOXES * self.SPACING, 0.1 * k, []
    for b in range(self.BOXES):
      lap, pos = divmod(travelled / self.SPACING + b, self.BOXES)   # box b's distance along its lap, in spacings
      z = (1.5 + period - pos * self.SPACING) * self.u
      r = np.random.default_rng([self.seed, b, int(lap)])
      centre, half = r.uniform(-1.5, 1.5) * self.u, r.uniform(0.3, 0.6) * self.u
      out.append((centre - half, centre + half, -0.8 * self.u, 0.6 * self.u, z, self.seed + 101 * (b + 1) + 7 * int(lap)))
    return out

  def planes(self, k: int) -> list[Plane]:
    planes = [Plane(a=self.fb / self.wall_m, seed=self.seed)]
    for x0, x1, y0, y1, z, seed in self.boxes(k):
      s = self.f / z
      planes.append(Plane(a=self.fb / z, x0=self.cx + s * x0, x1=self.cx + s * x1, y0=self.cy + s * y0, y1=self.cy + s * y1, seed=seed))
    return planes

  def frame(self, k: int, noise: float = 2.0):
    """-> left, right (H, W) uint8 (what a camera delivers), ground-truth disparity (H, W) float32 and occlusion mask."""
    left, right, gt, occluded = render_scene(self.planes(k), self.h, self.w, noise, self.seed + k)
    return np.round(left).astype(np.uint8), np.round(right).astype(np.uint8), gt, occluded
