"""The live depth loop behind `python3 stereo/depth_map.py --live`: capture → rectify → disparity → depth →
obstacle grid → heading, frame after frame, each stage timed.

THE LOOP (per frame; shapes for H×W frames, D disparities, a ROWS×COLS obstacle grid)
  capture      a thread (stereo/capture_stereo.py) pairs the two cameras' frames by timestamp and hands
               the newest pair over through a queue of 2, so the next capture overlaps this frame's compute.
               "capture wait" is the time the loop waited for a pair: ≈ 0 while compute is the bottleneck.
  upload       the two (H, W) uint8 frames into device buffers (a quarter of the bytes of float32).
  ┌ one TinyJit (JIT-replayed from the 3rd frame, so JITBEAM=N applies to every kernel) ─────────────────┐
  │ rectify    out(y, x) = bilinear sample of the raw frame at (map_y, map_x) from calibrate_stereo.py's │
  │            maps; the 4 neighbour indices and weights are computed once, a frame costs 4 gathers.    │
  │            The simulated source is rectified already (identity).                                   │
  │ match      depth_map.py's matcher (census + box or SGM, checks, median) -> disparity, valid (H, W)  │
  │ post       depth Z = Q·[x y d 1] (m); a max filter over --dilate px removes isolated near outliers; │
  │            per grid cell the nearest valid depth and the share of valid pixels -> (ROWS, COLS) × 2. │
  └──────────────────────────────────────────────────────────────────────────────────────────────────────┘
  download     the (2, ROWS, COLS) grid every frame; the disparity map only for a snapshot, --video or scoring.
  host         obstacle avoidance (below), the jsonl record, snapshots, the status line.
  In the live loop the jitted stages are timed together as "device"; --bench also times rectify, match and
  post each in its own TinyJit, so their split is measured too.

OBSTACLE AVOIDANCE (HeadingFilter, numpy on the (ROWS, COLS) grids)
  clearance c_b of column band b = nearest obstacle over its cells, capped at --range-m (farther counts as
  free); a band with fewer than --min-valid valid pixels is unknown this frame.
  smoothing    s_b ← α·c_b + (1 − α)·s_b  (α = --smoothing); an unknown band keeps s_b for a few frames.
  heading      the band with the largest s_b (ties: the one nearer the current heading); the heading only
               moves when the new band is better by --hysteresis: s_new > (1 + h)·s_current, so it does not
               flicker between two nearly equal gaps. "unknown" when fewer than half the bands are known.
  Angle of band b: atan((x_b − cx) / f), x_b its centre column.
  Success check (simulated source, whose true disparities are known): a frame is safe when the true
  clearance of the chosen band is ≥ 80 % of the best true clearance; PASS when ≥ --target-safe-pct of the
  frames are safe, and the disparity meets depth_map.py's own bar (bad-1.0 ≤ 3 % of visible pixels).

OUTPUTS under --out: live.jsonl (one line per frame, flushed: heading, nearest obstacle, per-stage ms),
  snapshot_NNNNNN.png every --snapshot-every frames (left | disparity, clearance bar below; atomic),
  --video PATH (MJPEG AVI through OpenCV, renamed into place when the run ends), live_summary.json at the end,
  a window only with --window on a display. Ctrl-C (or SIGTERM) ends the current frame and writes the summary:
  exit 130 (143), every file complete. --frames N stops after N frames (exit 0, or 1 when the check fails).
"""
import json, math, signal, sys, time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tinygrad import Tensor, TinyJit, dtypes

import depth_map as dm
from capture_stereo import CaptureThread, open_source
from common import check, fail
from common.bench import Bench, Timing, percentile, time_fn
from common.device import copy_into, synchronize
from common.files import atomic_path, save_image, save_json
from stereo_files import colorize, load_calibration

STAGES = ("capture_wait", "upload", "device", "download", "host")
LIVE_TARGET_SAFE = 90.0          # % of frames steering into a truly free band
DISPARITY_TARGET_BAD1 = 3.0      # depth_map.py's own bar on the visible pixels of a synthetic scene
SCORE_EVERY = 5          # simulated source: the disparity map is downloaded and scored every 5th frame


@dataclass
class AvoidConfig:
  rows: int = 3
  cols: int = 8
  smoothing: float = 0.5       # α of the exponential smoothing of each band's clearance
  hysteresis: float = 0.15     # the heading moves only to a band this much better (fraction)
  range_m: float = 3.0         # clearance is capped here: farther counts as free
  min_valid: float = 0.1       # share of valid pixels below which a band is unknown this frame
  max_age: int = 5             # frames an unknown band keeps its smoothed clearance
  dilate: int = 5              # max filter over depth (px): an obstacle narrower than this is ignored as noise
  safe_fraction: float = 0.8   # success check: chosen band's true clearance ≥ this × the best true clearance


# ---- the device part: rectify, match, depth, obstacle grid (one TinyJit) -----------------------------------

class Rectifier:
  """out(y, x) = bilinear sample of img at (map_y(y, x), map_x(y, x)), edges clamped like stereo_files.remap_bilinear."""
  def __init__(self, map_x: np.ndarray, map_y: np.ndarray):
    h, w = map_x.shape
    x0, y0 = np.floor(map_x).astype(np.int64), np.floor(map_y).astype(np.int64)
    fx, fy = (map_x - x0).astype(np.float32), (map_y - y0).astype(np.float32)
    corners = [(0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)]
    self.shape = (h, w)
    self.index = [Tensor((np.clip(y0 + dy, 0, h - 1) * w + np.clip(x0 + dx, 0, w - 1)).astype(np.int32).ravel()).realize() for dy, dx, _ in corners]
    self.weight = [Tensor(wt.astype(np.float32)).realize() for _, _, wt in corners]

  def __call__(self, img: Tensor) -> Tensor:
    flat = img.flatten()
    return sum(flat[i].reshape(self.shape) * wt for i, wt in zip(self.index, self.weight))


def obstacle_cells(depth: Tensor, ok: Tensor, rows: int, cols: int, dilate: int) -> tuple[Tensor, Tensor]:
  """-> nearest valid depth per cell (inf: no valid pixel) and share of valid pixels per cell, (rows, cols) each.
  Depth is max-filtered first (invalid pixels count as 0 there), so a lone wrong near pixel does not block a band."""
  h, w = depth.shape
  d = ok.where(depth, 0.0)
  # .contiguous(): the filter is its own kernel over every pixel. Fused into the reductions below it made
  # ROWS·COLS = 24 GPU threads read 25 pixels per pixel each, the slowest kernel of a 640×480 frame.
  if dilate > 1: d = d.reshape(1, 1, h, w).max_pool2d((dilate, dilate), stride=1, padding=dilate // 2)[0, 0, :h, :w].contiguous()
  ch, cw = -(-h // rows), -(-w // cols)                      # cells of ceil(H/ROWS) × ceil(W/COLS) px, padded with nothing
  pad = ((0, ch * rows - h), (0, cw * cols - w))
  # in two steps (along each cell's rows first, then down its columns), so the first has ROWS·CH·COLS outputs to spread
  near = ok.where(d, math.inf).pad(pad, value=math.inf).reshape(rows, ch, cols, cw).min(axis=3).contiguous().min(axis=1)
  share = ok.float().pad(pad).reshape(rows, ch, cols, cw).sum(axis=3).contiguous().sum(axis=1) / float(ch * cw)
  return near, share


def true_cells(gt: np.ndarray, focal_px: float, baseline_m: float, rows: int, cols: int) -> np.ndarray:
  """The same grid from the exact disparities of the simulated scene (every pixel known, no filter)."""
  h, w = gt.shape
  ch, cw = -(-h // rows), -(-w // cols)
  depth = np.pad(focal_px * baseline_m / gt, ((0, ch * rows - h), (0, cw * cols - w)), constant_values=np.inf)
  return depth.reshape(rows, ch, cols, cw).min(axis=(1, 3))


class LivePipeline:
  """(H, W) uint8 frames -> disparity, valid (H, W) and the obstacle grids (ROWS, COLS), one TinyJit."""
  def __init__(self, h: int, w: int, cfg: dm.MatchConfig, calib: dm.Calibration, avoid: AvoidConfig):
    self.cfg, self.calib, self.avoid = cfg, calib, avoid
    self.matcher = dm.StereoMatcher(h, w, cfg)
    self.rectifiers = (Rectifier(*calib.maps[:2]), Rectifier(*calib.maps[2:])) if calib.maps is not None else None
    self.step = TinyJit(self._step)
    # the frames land in these two device buffers every frame (common.device.copy_into: one copy each, no graph)
    self.inputs = tuple(Tensor.zeros(h, w, dtype=dtypes.uint8).contiguous().realize() for _ in range(2))

  def upload(self, left: np.ndarray, right: np.ndarray) -> tuple[Tensor, Tensor]:
    return copy_into(self.inputs[0], left), copy_into(self.inputs[1], right)

  def rectify(self, left_u8: Tensor, right_u8: Tensor) -> tuple[Tensor, Tensor]:
    left, right = left_u8.float(), right_u8.float()
    if self.rectifiers is not None: left, right = self.rectifiers[0](left), self.rectifiers[1](right)
    return left.contiguous(), right.contiguous()

  def post(self, disparity: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    depth, ok = dm.depth_from_disparity(disparity, valid, self.calib.Q)
    return obstacle_cells(depth, ok, self.avoid.rows, self.avoid.cols, self.avoid.dilate)

  def _step(self, left_u8: Tensor, right_u8: Tensor):
    """-> disparity, valid (H, W) and the grid (2, ROWS, COLS): nearest depth and valid share per cell, one download."""
    disparity, valid = self.matcher._match(*self.rectify(left_u8, right_u8))
    out = (disparity, valid, Tensor.stack(*self.post(disparity, valid)).contiguous())
    Tensor.realize(*out)
    return out


# ---- obstacle avoidance with temporal smoothing (host, numpy) ------------------------------------------------

class HeadingFilter:
  """Smoothed clearance per column band and a heading with hysteresis (see the module docstring)."""
  def __init__(self, cfg: AvoidConfig, width: int, focal_px: float, cx: float):
    self.cfg, self.smooth, self.age, self.band = cfg, np.full(cfg.cols, np.nan), np.zeros(cfg.cols, int), None
    self.angles = np.degrees(np.arctan2((np.arange(cfg.cols) + 0.5) * width / cfg.cols - cx, focal_px))

  def band_clearance(self, near: np.ndarray, share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = (share.mean(axis=0) >= self.cfg.min_valid) & np.isfinite(near).any(axis=0)
    return np.minimum(near.min(axis=0), self.cfg.range_m), known

  def update(self, near: np.ndarray, share: np.ndarray) -> dict:
    clear, known = self.band_clearance(near, share)
    out = self.update_bands(clear, known)
    seen = np.where(np.isfinite(near), near, np.inf)
    r, b = np.unravel_index(int(np.argmin(seen)), seen.shape)
    return {**out, "nearest_m": float(seen[r, b]) if np.isfinite(seen[r, b]) else None, "nearest_deg": float(self.angles[b]),
            "raw_clearance_m": [round(float(v), 3) if k else None for v, k in zip(clear, known)]}

  def update_bands(self, clear: np.ndarray, known: np.ndarray) -> dict:
    c, a = self.cfg, self.cfg.smoothing
    fresh = np.isnan(self.smooth)
    self.smooth = np.where(known, np.where(fresh, clear, a * clear + (1 - a) * np.nan_to_num(self.smooth)), self.smooth)
    self.age = np.where(known, 0, self.age + 1)
    self.smooth[self.age > c.max_age] = np.nan
    finite = np.isfinite(self.smooth)
    if finite.mean() < 0.5: self.band = None
    else:
      ref = self.band if self.band is not None else (c.cols - 1) / 2
      score = np.where(finite, self.smooth, -np.inf)
      best = int(np.argmax(score - 1e-3 * np.abs(np.arange(c.cols) - ref)))       # ties: nearer the current heading
      if self.band is None or not finite[self.band] or score[best] > (1 + c.hysteresis) * score[self.band]: self.band = best
    return {"heading": "unknown" if self.band is None else "ok", "band": self.band,
            "heading_deg": None if self.band is None else float(self.angles[self.band]),
            "clearance_m": [None if not np.isfinite(v) else round(float(v), 3) for v in self.smooth]}


# ---- the loop ------------------------------------------------------------------------------------------------

def snapshot_image(left: np.ndarray, disparity: np.ndarray, valid: np.ndarray, max_disp: int, result: dict, range_m: float) -> np.ndarray:
  """left | disparity (colour, invalid black), with a clearance bar below: green free .. red near, grey unknown, heading white."""
  h, w = left.shape
  top = np.concatenate([np.repeat(left[:, :, None], 3, axis=2), colorize(disparity, valid, 0.0, float(max_disp - 1))], axis=1)
  bar = np.full((max(8, h // 12), w, 3), 80, np.uint8)            # under each panel, aligned with its columns
  edges = np.linspace(0, w, len(result["clearance_m"]) + 1).astype(int)
  for b, v in enumerate(result["clearance_m"]):
    if v is not None: bar[:, edges[b]:edges[b + 1]] = (np.array([1 - v / range_m, v / range_m, 0.1]).clip(0, 1) * 255).astype(np.uint8)
    if b == result["band"]: bar[: bar.shape[0] // 3, edges[b]:edges[b + 1]] = 255
  return np.concatenate([top, np.concatenate([bar, bar], axis=1)], axis=0)


class LiveOutputs:
  """live.jsonl (a complete line per frame), snapshots, the optional video and window."""
  def __init__(self, args, size):
    self.out, self.every, self.log = Path(args.out), args.snapshot_every, open(Path(args.out) / "live.jsonl", "w")
    self.video = self.video_ctx = self.window = None
    if args.video or args.window:
      from capture_stereo import need_cv2
      self.cv2 = need_cv2("--video" if args.video else "--window")
    if args.video:
      self.video_ctx = atomic_path(args.video)
      tmp = self.video_ctx.__enter__()
      w, h = size
      self.video = self.cv2.VideoWriter(str(tmp), self.cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (2 * w, h + max(8, h // 12)))
      if not self.video.isOpened(): fail(f"--video {args.video}: OpenCV cannot write an MJPEG AVI here")
    self.window = args.window

  def wants_maps(self, k: int) -> bool:
    return self.video is not None or self.window or (self.every > 0 and k % self.every == 0)

  def write(self, record: dict, image: np.ndarray | None) -> None:
    self.log.write(json.dumps(record) + "\n")
    self.log.flush()
    if image is None: return
    k = record["frame"]
    if self.every > 0 and k % self.every == 0: save_image(image, self.out / f"snapshot_{k:06d}.png")
    if self.video is not None: self.video.write(image[:, :, ::-1].copy())
    if self.window:
      self.cv2.imshow("stereo live", image[:, :, ::-1])
      self.cv2.waitKey(1)

  def close(self, ok: bool) -> None:
    self.log.close()
    if self.video is not None:
      self.video.release()
      self.video_ctx.__exit__(*((None,) * 3 if ok else (KeyboardInterrupt, KeyboardInterrupt(), None)))


class StopFlag:
  """Ctrl-C / SIGTERM end the loop after the current frame (a second Ctrl-C interrupts at once)."""
  def __init__(self):
    self.signal = None
    self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

  def handle(self, signum, frame):
    if self.signal is not None: raise KeyboardInterrupt
    self.signal = signum

  def restore(self):
    for s, h in self.previous.items(): signal.signal(s, h)


def status_line(k: int, fps: float, ms: dict, result: dict) -> str:
  heading = "unknown" if result["band"] is None else f"{result['heading_deg']:+.1f} deg"
  near = "-" if result["nearest_m"] is None else f"{result['nearest_m']:.2f} m at {result['nearest_deg']:+.0f} deg"
  return (f"frame {k} {fps:.2f} FPS | " + " ".join(f"{s.replace('capture_', '')} {ms[s]:.1f}" for s in STAGES) +
          f" ms | heading {heading} | nearest {near}")


def run_frames(pipe: LivePipeline, cap: CaptureThread, limit: int | None, on_frame, stop: StopFlag | None = None) -> int:
  """The loop itself: wait for a pair, upload, one jitted step, download, then on_frame(pair, near, share, maps, ms)."""
  k, clock = 0, time.perf_counter
  while (limit is None or k < limit) and (stop is None or stop.signal is None):
    t0 = clock()
    pair = cap.get(give_up=lambda: stop is not None and stop.signal is not None)
    if pair is None: break
    t1 = clock()
    left, right = pipe.upload(pair.left, pair.right)
    synchronize()
    t2 = clock()
    disparity, valid, grid = pipe.step(left, right)
    synchronize()
    t3 = clock()
    near_np, share_np = grid.numpy()
    maps = (disparity.numpy(), valid.numpy().astype(bool)) if on_frame.wants_maps(k, pair) else None
    t4 = clock()
    ms = {"capture_wait": 1e3 * (t1 - t0), "upload": 1e3 * (t2 - t1), "device": 1e3 * (t3 - t2), "download": 1e3 * (t4 - t3)}
    on_frame(k, pair, near_np, share_np, maps, ms, t4)
    k += 1
  return k


class FrameHandler:
  """What the live run does with each frame: avoidance, scoring against the simulated truth, outputs, status."""
  def __init__(self, args, pipe: LivePipeline, outputs: LiveOutputs | None, avoid: AvoidConfig, width: int):
    calib = pipe.calib
    self.args, self.pipe, self.outputs, self.avoid = args, pipe, outputs, avoid
    self.filter = HeadingFilter(avoid, width, calib.focal_px, -calib.Q[0, 3])
    self.records, self.safe, self.bad1, self.last_status, self.last_done, self.scoring = [], [], [], 0.0, None, True

  def wants_maps(self, k, pair) -> bool:
    return (self.outputs is not None and self.outputs.wants_maps(k)) or (self.scoring and pair.truth is not None and k % SCORE_EVERY == 0)

  def __call__(self, k, pair, near, share, maps, ms, done):
    t0 = time.perf_counter()
    result = self.filter.update(near, share)
    rec = {"frame": k, "t_left": pair.t_left, "skew_ms": round(pair.skew_ms, 3), **result}
    if self.scoring and pair.truth is not None: self.score(rec, pair, maps)
    image = snapshot_image(pair.left, *maps, self.pipe.cfg.max_disp, result, self.avoid.range_m) if maps is not None and self.outputs else None
    ms["host"] = 1e3 * (time.perf_counter() - t0)
    rec["ms"] = {s: round(v, 3) for s, v in ms.items()}
    rec["period_ms"] = None if self.last_done is None else round(1e3 * (done - self.last_done), 3)
    self.last_done = done
    if self.outputs is not None: self.outputs.write(rec, image)
    self.records.append(rec)
    self.status(k, ms, result, done)

  def score(self, rec: dict, pair, maps) -> None:
    truth, calib = pair.truth, self.pipe.calib
    cells = true_cells(truth["gt"], calib.focal_px, calib.baseline_m, self.avoid.rows, self.avoid.cols)
    true_clear = np.minimum(cells.min(axis=0), self.avoid.range_m)
    rec["true_clearance_m"], rec["true_best_band"] = [round(float(v), 3) for v in true_clear], int(np.argmax(true_clear))
    rec["safe"] = rec["band"] is not None and bool(true_clear[rec["band"]] >= self.avoid.safe_fraction * true_clear.max())
    self.safe.append(rec["safe"])
    if maps is not None:
      rec["bad1_visible_pct"] = dm.evaluate(*maps, truth["gt"], ~truth["occluded"])["bad1.0_pct"]
      self.bad1.append(rec["bad1_visible_pct"])

  def status(self, k, ms, result, done) -> None:
    periods = [r["period_ms"] for r in self.records[-20:] if r["period_ms"]]
    fps = 1e3 / np.mean(periods) if periods else 0.0
    if sys.stderr.isatty(): print("\r" + status_line(k, fps, ms, result)[:160].ljust(160), end="", file=sys.stderr, flush=True)
    elif done - self.last_status > 2.0 or k == 0:
      print(status_line(k, fps, ms, result), file=sys.stderr, flush=True)
      self.last_status = done


# ---- entry points: the live run and its bench ------------------------------------------------------------------

def avoid_config(args, scene_free_m: float | None) -> AvoidConfig:
  (cols, rows), = args.grid
  range_m = args.range_m if args.range_m is not None else (scene_free_m or 3.0)
  return AvoidConfig(rows=rows, cols=cols, smoothing=args.smoothing, hysteresis=args.hysteresis, range_m=range_m, min_valid=args.min_valid)


def open_live(args, cfg: dm.MatchConfig, prerender: int = 0, identity_maps: bool = False, size=None):
  """The source, the calibration (--calib, or the rig from --focal-px/--baseline-m) and the pipeline, all checked first."""
  (w, h) = size or args.size[0]
  dm.check_size(w, h, [cfg], f"--size {w}x{h}")
  calib = dm.Calibration(*load_calibration(args.calib, h, w)) if args.calib else dm.rig(args, w, h)
  if identity_maps:            # the bench: rectification costs what real maps cost, and leaves the simulated pair exact
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    calib = dm.Calibration(calib.Q, (grid_x, grid_y, grid_x, grid_y))
  src = open_source(args.source, w, h, max_disp=cfg.max_disp, focal_px=calib.focal_px, baseline_m=calib.baseline_m, seed=args.seed,
                    drop=args.sim_drop, max_skew_ms=args.max_skew_ms, devices=(args.left_device, args.right_device),
                    pipeline=args.gst_pipeline, prerender=prerender)
  if hasattr(src, "shape") and src.shape != (h, w): fail(f"{src.what}: frames are not --size {w}x{h}")
  avoid = avoid_config(args, src.scene.free_m if hasattr(src, "scene") else None)
  return src, calib, avoid, LivePipeline(h, w, cfg, calib, avoid)


def summarize(handler: FrameHandler, src, cap, frames: int) -> dict:
  recs = handler.records
  periods = [r["period_ms"] for r in recs if r["period_ms"]][2:] or [r["period_ms"] for r in recs if r["period_ms"]]
  summary = {"source": src.what, "matcher": handler.pipe.cfg.describe(), "frames": frames, **src.pairer.stats(), "stale": cap.stale,
             "fps_median": 1e3 / percentile(periods, 50) if periods else None,
             "stage_ms_median": {s: percentile([r["ms"][s] for r in recs[2:] or recs], 50) for s in STAGES} if recs else {}}
  if handler.safe:
    summary["safe_pct"] = 100.0 * float(np.mean(handler.safe))
    summary["heading_switches"] = int(sum(a["band"] != b["band"] for a, b in zip(recs, recs[1:])))
  if handler.bad1: summary["bad1_visible_pct_mean"] = float(np.mean(handler.bad1))
  return summary


def run_live(args) -> int:
  from common.cli import check_out_dir
  check_out_dir(args)
  cfg = dm.match_config(args)
  src, calib, avoid, pipe = open_live(args, cfg)
  limit = args.frames if args.frames is not None else (None if args.source in ("argus", "v4l2") or args.source.startswith("folder:")
                                                        else (12 if args.quick else 60))
  snapshots = f", snapshots every {args.snapshot_every}" if args.snapshot_every else ""
  print(f"live: {src.what}\nmatcher: {cfg.describe()}; rectify: {'calibration maps' if pipe.rectifiers else 'none (rectified source)'}; "
        f"grid {avoid.cols}x{avoid.rows}, clearance capped at {avoid.range_m:.2f} m\n"
        f"frames: {limit or 'until Ctrl-C'}; writing {args.out}/live.jsonl{snapshots}")
  outputs, stop, lossless = LiveOutputs(args, args.size[0]), StopFlag(), args.source == "sim" or args.source.startswith("folder:")
  handler, cap, ok, frames = FrameHandler(args, pipe, outputs, avoid, args.size[0][0]), CaptureThread(src, None, lossless), False, 0
  try:
    frames = run_frames(pipe, cap, limit, handler, stop)
    ok = True
  finally:
    stop.restore()
    cap.close()
    outputs.close(ok)
  if sys.stderr.isatty(): print(file=sys.stderr)
  summary = summarize(handler, src, cap, frames)
  summary["interrupted"] = stop.signal is not None
  passed = live_check(summary) if "safe_pct" in summary else True
  save_json(summary, Path(args.out) / "live_summary.json")
  if args.json:
    bench, periods = Bench(dm.PROJECT), [r["period_ms"] / 1e3 for r in handler.records if r["period_ms"]]
    if len(periods) >= 3: bench.add(f"live {cfg.describe()} {args.size[0][0]}x{args.size[0][1]}", Timing(periods[:2], periods[2:]),
                                    rate=(1, "frames/s"), stage_ms_median=summary["stage_ms_median"], source=src.what)
    bench.write_json(args.json)
  st = summary.get("stage_ms_median", {})
  print(f"{frames} frames, {summary['fps_median'] or 0:.2f} FPS (median period); median ms: " + ", ".join(f"{s} {v:.1f}" for s, v in st.items()) +
        f"\npairs: dropped {summary['dropped_left']} left / {summary['dropped_right']} right frames, {cap.stale} stale; skew median "
        f"{summary['skew_ms_median']:.2f} ms, max {summary['skew_ms_max']:.2f} ms\nwrote {args.out}/live.jsonl, live_summary.json")
  if stop.signal is not None:
    print(f"interrupted after {frames} frames: the files written are complete", file=sys.stderr)
    return 130 if stop.signal == signal.SIGINT else 143
  return 0 if passed else 1


def live_check(summary: dict) -> bool:
  ok = check("frames whose heading is truly free (chosen band ≥ 80 % of the best true clearance)", summary["safe_pct"], LIVE_TARGET_SAFE, unit=" %")
  if "bad1_visible_pct_mean" in summary:
    bad1 = summary["bad1_visible_pct_mean"]
    ok = check("disparity bad-1.0 on visible pixels (scored frames, mean)", bad1, DISPARITY_TARGET_BAD1, higher_is_better=False, unit=" %") and ok
  return ok


def run_live_bench(args) -> int:
  """The whole pipeline on the simulated source (3 pre-rendered frames cycled, identity rectification maps):
  FPS and per-stage ms per size, D and aggregation; each jitted stage also timed alone."""
  bench, iters, rows = Bench(dm.PROJECT), 4 if args.quick else 12, []
  base = dm.match_config(args)
  kinds = [base.aggregation] if "aggregation" in args.given else ["box", "sgm"]
  for (w, h) in args.sizes:
    for d in args.disparities:
      for kind in kinds:
        cfg = dm.replace(base, max_disp=d, aggregation=kind)
        src, calib, avoid, pipe = open_live(args, cfg, prerender=3, identity_maps=True, size=(w, h))
        handler, cap = FrameHandler(args, pipe, None, avoid, w), CaptureThread(src, None, lossless=True)
        handler.scoring, handler.status = False, lambda *a: None
        t0 = time.perf_counter()
        try: frames = run_frames(pipe, cap, 3 + iters, handler, None)
        finally: cap.close()
        recs = handler.records[3:]
        split = split_stages(pipe, src, w, h)
        case = f"live {'SGM' if kind == 'sgm' else 'box'} {w}x{h} D{d}"
        periods = [r["period_ms"] / 1e3 for r in handler.records[1:]]
        rec = bench.add(case, Timing(periods[:2], periods[2:]), rate=(1, "frames/s"), frames=frames, wall_s=time.perf_counter() - t0,
                        stage_ms_median={s: percentile([r["ms"][s] for r in recs], 50) for s in STAGES}, split_ms=split, config=cfg.describe())
        rows.append((case, rec))
        print(f"  {case}: {rec['value']:.2f} FPS", file=sys.stderr)
  print_bench(rows)
  bench.write_json(args.json)
  return 0


def realized(*ts: Tensor) -> tuple[Tensor, ...]:
  Tensor.realize(*ts)
  return ts


def split_stages(pipe: LivePipeline, src, w: int, h: int) -> dict:
  """rectify, match and post each in its own TinyJit (median ms of 5 calls after 3 warm-up calls)."""
  left, right, _ = src.cache[0]
  L, R = Tensor(left).realize(), Tensor(right).realize()
  rect = TinyJit(lambda a, b: realized(*pipe.rectify(a, b)))
  lr = rect(L, R)
  disp, valid = pipe.matcher.match(*lr)
  post = TinyJit(lambda d, v: realized(*(t.contiguous() for t in pipe.post(d, v))))
  fns = {"rectify": lambda: rect(L, R), "match": lambda: pipe.matcher.match(*lr), "post": lambda: post(disp, valid)}
  return {name: 1e3 * time_fn(fn, warmup=3, iters=5, max_seconds=5.0).median for name, fn in fns.items()}


def print_bench(rows) -> None:
  print("\n### live pipeline, simulated source (median ms per frame; rectify/match/post timed alone)\n")
  print("| case | FPS | capture wait | upload | device (one JIT) | download | host | rectify | match | post |")
  print("|---|" + "---:|" * 9)
  for case, r in rows:
    cells = [r["stage_ms_median"][k] for k in STAGES] + [r["split_ms"][k] for k in ("rectify", "match", "post")]
    print(f"| {case} | {r['value']:.2f} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
