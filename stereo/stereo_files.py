"""Files for stereo/depth_map.py: camera images as grey levels, ground truth (PNG or PFM), the calibration
.npz written by calibrate_stereo.py, rectification, the output maps, and saved disparities. Every reader turns
a missing, unreadable or mismatched file into one line (common.UserError), before any matching starts.
"""
import math

import numpy as np

from common import UserError, fail
from common.files import atomic_path, load_checkpoint, read_image, save_image


def read_grey(path: str) -> np.ndarray:
  """Any image -> (H, W) float32 grey levels 0..255 (8-bit, 16-bit and float images by their real range)."""
  rgb = read_image(path, channels=3)
  return 255.0 * (rgb @ np.array([0.299, 0.587, 0.114], np.float32))


def read_pfm(path: str) -> np.ndarray:
  """Portable float map (Middlebury's format for float disparities): header, then rows bottom to top."""
  try:
    with open(path, "rb") as f:
      kind, dims, scale = f.readline().strip(), f.readline().split(), float(f.readline().strip())
      if kind not in (b"Pf", b"PF") or len(dims) != 2 or not math.isfinite(scale) or scale == 0: raise ValueError
      w, h = int(dims[0]), int(dims[1])
      data = np.frombuffer(f.read(), dtype="<f4" if scale < 0 else ">f4")
  except FileNotFoundError: fail(f"ground truth {path}: no such file")
  except (ValueError, OSError): fail(f"ground truth {path} is not a PFM file")
  channels = 3 if kind == b"PF" else 1
  if w <= 0 or h <= 0 or data.size != w * h * channels:
    fail(f"ground truth {path}: PFM data is {data.size} values, header says {w}x{h}x{channels}")
  return np.flipud(data.reshape(h, w, channels)[..., 0]).astype(np.float32)


def write_pfm(disparity: np.ndarray, dest) -> None:
  h, w = disparity.shape
  with atomic_path(dest) as tmp, open(tmp, "wb") as f:
    f.write(f"Pf\n{w} {h}\n-1.0\n".encode())
    f.write(np.flipud(disparity).astype("<f4").tobytes())


def load_ground_truth(path: str, scale: float, shape) -> tuple[np.ndarray, np.ndarray]:
  """-> (disparity, known mask). PNG (8- or 16-bit, read unscaled): value / scale with 0 = unknown;
  PFM: non-finite or ≤ 0 = unknown."""
  if path.lower().endswith(".pfm"):
    gt = read_pfm(path)
    known = np.isfinite(gt) & (gt > 0)
  else:
    stored = read_image(path, channels=1, raw=True)
    gt, known = stored / scale, np.isfinite(stored) & (stored > 0)
  if gt.shape != tuple(shape): fail(f"ground truth {path} is {gt.shape[1]}x{gt.shape[0]}, the images are {shape[1]}x{shape[0]}")
  if not known.any(): fail(f"ground truth {path} has no known pixel (every value is 0 or not finite)")
  return np.where(known, gt, 0).astype(np.float32), known


MAP_NAMES = ("map1x", "map1y", "map2x", "map2y")


def load_calibration(path: str, height: int, width: int) -> tuple[np.ndarray, tuple | None]:
  """The .npz from calibrate_stereo.py: Q, and the four rectification maps if present. Every map must be
  made for this image size (left and right alike) and finite."""
  try:
    with np.load(path) as z:
      if "Q" not in z: fail(f"calibration {path} has no 'Q' matrix (write it with stereo/calibrate_stereo.py)")
      present = [n for n in MAP_NAMES if n in z]
      if present and len(present) < 4: fail(f"calibration {path} has {', '.join(present)} but not all of {', '.join(MAP_NAMES)}")
      Q = np.asarray(z["Q"], np.float64)
      maps = tuple(np.asarray(z[n], np.float32) for n in MAP_NAMES) if present else None
  except FileNotFoundError: fail(f"calibration {path}: no such file")
  except UserError: raise
  except Exception as e: fail(f"calibration {path} is not an .npz file of numbers ({type(e).__name__})")
  if Q.shape != (4, 4) or not np.all(np.isfinite(Q)) or Q[3, 2] == 0 or Q[2, 3] <= 0:
    fail(f"calibration {path}: Q must be a finite 4x4 matrix with focal length Q[2,3] > 0 and Q[3,2] != 0")
  for name, m in zip(MAP_NAMES, maps or ()):
    if m.shape != (height, width):
      size = f"{m.shape[1]}x{m.shape[0]}" if m.ndim == 2 else f"shape {m.shape}"
      fail(f"calibration {path} was made for {size} images ({name}), these are {width}x{height}")
    if not np.all(np.isfinite(m)): fail(f"calibration {path}: {name} holds values that are not finite")
  return Q, maps


def remap_bilinear(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
  """out(y, x) = img(map_y(y, x), map_x(y, x)) with bilinear interpolation: applies rectification
  maps from calibrate_stereo.py without OpenCV (once per frame, so numpy is fine here)."""
  h, w = img.shape
  x0, y0 = np.floor(map_x).astype(np.int64), np.floor(map_y).astype(np.int64)
  fx, fy = map_x - x0, map_y - y0
  def at(yy, xx): return img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
  out = (1 - fx) * (1 - fy) * at(y0, x0) + fx * (1 - fy) * at(y0, x0 + 1) + (1 - fx) * fy * at(y0 + 1, x0) + fx * fy * at(y0 + 1, x0 + 1)
  return out.astype(np.float32)


def colorize(values: np.ndarray, valid: np.ndarray, lo: float, hi: float, cmap: str = "turbo") -> np.ndarray:
  """Float map -> RGB uint8 through a matplotlib colour map; invalid pixels black."""
  from matplotlib import colormaps
  t = np.clip((np.nan_to_num(values) - lo) / max(hi - lo, 1e-9), 0, 1)
  rgb = (colormaps[cmap](t)[..., :3] * 255).astype(np.uint8)
  rgb[~valid] = 0
  return rgb


def write_maps(out, left, max_disp: int, disp, valid, depth, depth_ok, gt=None, known=None, error=None) -> list[str]:
  """disparity.png, depth.png, disparity.pfm, overview.png (+ error.png with ground truth) -> their names.
  Disparity colours span 0..D−1, depth colours the 2nd..98th percentile of the valid depths (bright = near)."""
  from common.plots import figure, save_figure
  disp_rgb = colorize(disp, valid, 0.0, float(max_disp - 1))
  near, far = np.percentile(depth[depth_ok], [2, 98]) if depth_ok.any() else (0.0, 1.0)
  depth_rgb = colorize(-depth, depth_ok, -far, -near, cmap="magma")
  save_image(disp_rgb, out / "disparity.png")
  save_image(depth_rgb, out / "depth.png")
  write_pfm(np.where(valid, disp, np.inf), out / "disparity.pfm")
  names = ["disparity.png", "depth.png", "disparity.pfm", "overview.png"]
  panels = [("left", left / 255.0), ("disparity", disp_rgb), ("depth", depth_rgb)]
  if gt is not None:
    panels.insert(2, ("ground truth", colorize(gt, known, 0.0, float(max_disp - 1))))
    save_image(colorize(np.minimum(error, 4.0), known, 0.0, 4.0, cmap="inferno"), out / "error.png")
    names.append("error.png")
  fig, axes = figure(1, len(panels), size=(3.6 * len(panels), 3.2))
  for ax, (title, img) in zip(axes, panels):
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
  save_figure(fig, out / "overview.png")
  return names


def read_saved_disparity(path: str, script: str) -> tuple[dict, dict]:
  """A file `script` wrote with --save-disparity -> ({"disparity", "valid"} numpy arrays, metadata)."""
  state, meta = load_checkpoint(path, script=script, model="disparity", required_meta=("matcher", "max_disp", "input"))
  if sorted(state) != ["disparity", "valid"] or state["disparity"].shape != state["valid"].shape or len(state["valid"].shape) != 2:
    fail(f"disparity file {path}: expected 'disparity' and 'valid' maps of one (H, W) shape, found {sorted(state)}")
  if not isinstance(meta["max_disp"], int) or meta["max_disp"] < 4: fail(f"disparity file {path}: max_disp {meta['max_disp']!r} is not an int >= 4")
  disp, valid = state["disparity"].float().numpy(), state["valid"].numpy() > 0.5
  if not np.all(np.isfinite(disp[valid]) & (disp[valid] >= -0.5) & (disp[valid] <= meta["max_disp"] - 0.5)):
    fail(f"disparity file {path}: valid disparities outside 0..{meta['max_disp'] - 1} or not finite")
  return {"disparity": disp, "valid": valid}, meta
