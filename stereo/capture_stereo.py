#!/usr/bin/env python3
"""Synchronized capture from two cameras, for stereo/live.py (the live depth loop) or to save pairs.

WHY PAIRING MATTERS
  Depth from a moving robot assumes both images show the same instant. Two free-running cameras deliver
  frames at slightly different times, sometimes drop one, sometimes stall. So every frame carries a
  timestamp (taken when it arrives) and frames are paired by timestamp, not by arrival order:
    each left frame is matched to the right frame nearest in time, each frame used at most once;
    a pair is kept when its skew |t_R − t_L| ≤ --max-skew-ms, otherwise the older frame is dropped.
  The skew of every pair and the frames dropped on each side are counted (Pairer). A frame is also
  dropped ("stale") when the consumer is slower than the cameras: the live loop wants the newest pair,
  not a growing backlog (CaptureThread keeps a queue of 2).

SOURCES (--source)
  sim          a synthetic scene rendered with exact ground truth (stereo/scene.py MovingScene: the rig
               drives forward past boxes), 30 frames/s of virtual time, the right camera's timestamps
               jittered by up to ±3 ms and, with --sim-drop P, a frame dropped with probability P on either
               side, so the pairing is exercised; no OpenCV needed.
  folder:PATH  pairs saved by this script (left_NNNNNN.png, right_NNNNNN.png, pairs.jsonl with their
               timestamps), played in order; no OpenCV needed.
  argus        the Jetson CSI cameras (dual IMX219): GStreamer nvarguscamerasrc sensor-id=0 and 1 through
               OpenCV's GStreamer backend (--gst-pipeline overrides the pipeline string).
  v4l2         USB/V4L2 cameras /dev/video0 and /dev/video1 (--left-device/--right-device) through OpenCV.
  The camera sources need OpenCV (pip install opencv-python-headless has no GStreamer: on a Jetson use the
  system's python3-opencv, which has it). No camera answering is one line naming what was tried, exit 2.

OUTPUT (this script): --out DIR (default out/stereo/captures): left_NNNNNN.png, right_NNNNNN.png (8-bit grey,
  atomic), pairs.jsonl (one line per pair, flushed: index, t_left, t_right, skew_ms), capture_summary.json.
RUN
  python3 stereo/capture_stereo.py --source sim --frames 30                (no camera; ground truth known)
  python3 stereo/capture_stereo.py --source argus --frames 100 --size 640x480   (Jetson, dual IMX219)
  python3 stereo/depth_map.py --live --source folder:out/stereo/captures     (replay them through the live loop)
"""
import common  # first, like every script here (device flags)

import json, os, queue, signal, sys, threading, time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import fail, project_parser
from common.cli import check_out_dir, float_range, nonnegative_int, positive_int, probability
from common.files import read_image, save_image, save_json

FPS_SIM = 30.0


@dataclass
class Frame:
  t: float                  # seconds (camera arrival time, or the virtual clock of the simulated rig)
  image: np.ndarray         # (H, W) uint8 grey
  truth: dict | None = None


@dataclass
class StereoPair:
  index: int
  left: np.ndarray          # (H, W) uint8
  right: np.ndarray
  t_left: float
  t_right: float
  truth: dict | None = None  # simulated source: {"frame", "gt", "occluded", "clearance_true_m"}

  @property
  def skew_ms(self) -> float: return 1e3 * (self.t_right - self.t_left)


# ---- pairing by timestamp ---------------------------------------------------------------------------------

@dataclass
class Pairer:
  """Nearest-neighbour pairing of two timestamped streams, each frame used at most once, |skew| ≤ max_skew_s.
  push() returns the pairs that can be decided now; flush() decides the rest at the end of the streams.
  With every frame buffered (flush), a pair is made only when neither side has a later frame closer to it."""
  max_skew_s: float
  buf: dict = field(default_factory=lambda: {"left": deque(), "right": deque()})
  dropped: dict = field(default_factory=lambda: {"left": 0, "right": 0})
  skews_ms: list = field(default_factory=list)
  made: int = 0

  def push(self, side: str, frame: Frame) -> list[StereoPair]:
    self.buf[side].append(frame)
    return self._drain(final=False)

  def flush(self) -> list[StereoPair]:
    out = self._drain(final=True)
    for side in ("left", "right"):
      self.dropped[side] += len(self.buf[side])
      self.buf[side].clear()
    return out

  def _drop(self, side: str) -> None:
    self.buf[side].popleft()
    self.dropped[side] += 1

  def _drain(self, final: bool) -> list[StereoPair]:
    L, R, out = self.buf["left"], self.buf["right"], []
    while L and R:
      l, r = L[0], R[0]
      dt = r.t - l.t
      if dt < -self.max_skew_s: drop = "right"                    # too old for this left frame and every later one
      elif dt > self.max_skew_s: drop = "left"
      elif len(R) > 1 and abs(R[1].t - l.t) < abs(dt): drop = "right"   # a later right frame fits this left one better
      elif len(L) > 1 and abs(L[1].t - r.t) < abs(dt): drop = "left"
      else: drop = None
      if drop is not None:
        self._drop(drop)
        continue
      L.popleft(), R.popleft()
      out.append(StereoPair(self.made, l.image, r.image, l.t, r.t, l.truth))
      self.skews_ms.append(1e3 * dt)
      self.made += 1
    return out

  def stats(self) -> dict:
    s = np.abs(np.array(self.skews_ms)) if self.skews_ms else np.zeros(1)
    return {"pairs": self.made, "dropped_left": self.dropped["left"], "dropped_right": self.dropped["right"],
            "skew_ms_median": float(np.median(s)), "skew_ms_max": float(s.max()), "max_skew_ms": 1e3 * self.max_skew_s}


# ---- sources ------------------------------------------------------------------------------------------------

class SimSource:
  """MovingScene frames as two camera streams with jittered timestamps (and drops), paired like real ones.
  prerender=N renders N frames once and cycles them (the bench times the pipeline, not the renderer)."""
  def __init__(self, width, height, max_disp, focal_px, baseline_m, seed=0, drop=0.0, max_skew_s=0.010, prerender=0, noise=2.0):
    from scene import MovingScene
    self.scene, self.noise, self.drop, self.seed = MovingScene(width, height, max_disp, focal_px, baseline_m, seed), noise, drop, seed
    self.pairer, self.what = Pairer(max_skew_s), f"simulated rig {width}x{height} (stereo/scene.py MovingScene, seed {seed})"
    self.cache = [self.render(k) for k in range(prerender)]

  def render(self, k: int):
    left, right, gt, occluded = self.scene.frame(k, self.noise)
    return left, right, {"frame": k, "gt": gt, "occluded": occluded}

  def frames(self):
    rng = np.random.default_rng(self.seed + 1)
    k = 0
    while True:
      left, right, truth = self.cache[k % len(self.cache)] if self.cache else self.render(k)
      t = k / FPS_SIM
      if rng.uniform() >= self.drop: yield "left", Frame(t, left, truth)
      if rng.uniform() >= self.drop: yield "right", Frame(t + rng.uniform(-0.003, 0.003), right, truth)
      k += 1

  def pairs(self):
    for side, frame in self.frames(): yield from self.pairer.push(side, frame)

  def close(self): pass


class FolderSource:
  """Pairs saved by capture_stereo.py (or any left_*/right_* PNG pairs, 30 frames/s assumed without pairs.jsonl)."""
  def __init__(self, folder: str, size=None):
    root = Path(folder)
    if not root.is_dir(): fail(f"--source folder:{folder}: no such folder")
    self.lefts, self.rights = sorted(root.glob("left_*.png")), sorted(root.glob("right_*.png"))
    if not self.lefts: fail(f"--source folder:{folder} holds no left_*.png / right_*.png pairs")
    if len(self.lefts) != len(self.rights): fail(f"--source folder:{folder}: {len(self.lefts)} left images but {len(self.rights)} right images")
    stamps = root / "pairs.jsonl"
    try: self.stamps = [json.loads(line) for line in stamps.read_text().splitlines() if line.strip()] if stamps.exists() else None
    except (ValueError, OSError) as e: fail(f"{stamps} is not a JSON-lines file ({type(e).__name__})")
    if self.stamps is not None and len(self.stamps) < len(self.lefts): fail(f"{stamps} has {len(self.stamps)} lines for {len(self.lefts)} pairs")
    first = self.read(self.lefts[0])
    if size is not None and first.shape != (size[1], size[0]):
      fail(f"--source folder:{folder} holds {first.shape[1]}x{first.shape[0]} images, --size says {size[0]}x{size[1]}")
    self.shape, self.what = first.shape, f"folder {folder} ({len(self.lefts)} pairs, {first.shape[1]}x{first.shape[0]})"
    self.pairer = Pairer(1.0)

  @staticmethod
  def read(path) -> np.ndarray:
    return np.round(read_image(path, channels=1) * 255).astype(np.uint8)

  def pairs(self):
    for k, (lp, rp) in enumerate(zip(self.lefts, self.rights)):
      left, right = self.read(lp), self.read(rp)
      if left.shape != self.shape or right.shape != self.shape:
        fail(f"{lp.name}/{rp.name} are not {self.shape[1]}x{self.shape[0]} like the first pair")
      s = self.stamps[k] if self.stamps else {"t_left": k / FPS_SIM, "t_right": k / FPS_SIM}
      self.pairer.made, self.pairer.skews_ms = self.pairer.made + 1, self.pairer.skews_ms + [1e3 * (s["t_right"] - s["t_left"])]
      yield StereoPair(k, left, right, float(s["t_left"]), float(s["t_right"]))

  def close(self): pass


def need_cv2(source: str):
  os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
  try:
    import cv2
    return cv2
  except ImportError:
    fail(f"--source {source} needs OpenCV (pip install opencv-python-headless, or python3-opencv with GStreamer on a Jetson); "
         "--source sim and folder:PATH work without it")


def argus_pipeline(sensor_id: int, width: int, height: int) -> str:
  """The CSI camera through the ISP (nvarguscamerasrc), scaled and converted to 8-bit grey by nvvidconv."""
  return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=60/1 ! "
          f"nvvidconv ! video/x-raw,width={width},height={height},format=GRAY8 ! appsink drop=1 max-buffers=2 sync=false")


class CameraSource:
  """Two OpenCV captures, one reader thread each stamping frames on arrival, paired by timestamp."""
  def __init__(self, kind: str, width: int, height: int, max_skew_s: float, devices=(0, 1), pipeline: str | None = None):
    cv2 = self.cv2 = need_cv2(kind)
    if kind == "argus":
      text = pipeline or argus_pipeline(0, width, height).replace("sensor-id=0", "sensor-id={sensor}")
      gst = "YES" in next((ln for ln in cv2.getBuildInformation().splitlines() if "GStreamer" in ln), "NO")
      self.caps = [cv2.VideoCapture(text.format(sensor=i, width=width, height=height), cv2.CAP_GSTREAMER) for i in (0, 1)] if gst else []
      tried = f"nvarguscamerasrc sensor-id=0 and 1 through OpenCV's GStreamer backend{'' if gst else ' (this OpenCV was built without GStreamer)'}"
    else:
      self.caps = [cv2.VideoCapture(i, cv2.CAP_V4L2) for i in devices]
      for c in self.caps: c.set(cv2.CAP_PROP_FRAME_WIDTH, width), c.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
      tried = f"/dev/video{devices[0]} and /dev/video{devices[1]} through OpenCV's V4L2 backend"
    if not self.caps or not all(c.isOpened() for c in self.caps):
      self.close()
      fail(f"no stereo camera: tried {tried}; check the cables and drivers, or use --source sim / folder:PATH")
    self.size, self.what, self.pairer = (width, height), f"{kind} cameras ({tried}), {width}x{height}", Pairer(max_skew_s)
    self.frames_q, self.stop = queue.Queue(maxsize=8), threading.Event()
    self.readers = [threading.Thread(target=self.read_loop, args=(side, c), daemon=True) for side, c in zip(("left", "right"), self.caps)]
    for r in self.readers: r.start()

  def read_loop(self, side: str, cap) -> None:
    while not self.stop.is_set():
      ok, img = cap.read()
      t = time.monotonic()
      if not ok: return self.frames_q.put((side, None))
      if img.ndim == 3: img = self.cv2.cvtColor(img, self.cv2.COLOR_BGR2GRAY)
      if img.shape != self.size[::-1]: img = self.cv2.resize(img, self.size, interpolation=self.cv2.INTER_AREA)
      self.frames_q.put((side, Frame(t, img)))

  def pairs(self):
    while True:
      side, frame = self.frames_q.get()
      if frame is None: fail(f"the {side} camera stopped delivering frames after {self.pairer.made} pairs")
      yield from self.pairer.push(side, frame)

  def close(self) -> None:
    if hasattr(self, "stop"): self.stop.set()
    for c in self.caps: c.release()


def open_source(spec: str, width: int, height: int, *, max_disp=64, focal_px=None, baseline_m=0.06, seed=0, drop=0.0, max_skew_ms=10.0,
                devices=(0, 1), pipeline=None, prerender=0):
  """--source text -> a source with .pairs() (a generator of StereoPair), .pairer, .what and .close()."""
  if spec == "sim":
    return SimSource(width, height, max_disp, focal_px or 0.708 * width, baseline_m, seed, drop, max_skew_ms / 1e3, prerender)
  if spec.startswith("folder:"): return FolderSource(spec[len("folder:"):], (width, height))
  if spec in ("argus", "v4l2"): return CameraSource(spec, width, height, max_skew_ms / 1e3, devices, pipeline)
  fail(f"--source {spec!r}: choose sim, argus, v4l2 or folder:PATH")


class CaptureThread:
  """Runs source.pairs() in a thread so capture overlaps compute; get() hands over the next pair.
  lossless (sim, folder): the producer waits for the consumer. Otherwise (cameras) a full queue drops its
  oldest pair (counted as stale): the consumer always gets a recent pair."""
  def __init__(self, source, limit: int | None, lossless: bool, depth: int = 2):
    self.source, self.limit, self.lossless, self.stale, self.error = source, limit, lossless, 0, None
    self.q, self.stop = queue.Queue(maxsize=depth), threading.Event()
    self.thread = threading.Thread(target=self.run, daemon=True)
    self.thread.start()

  def run(self) -> None:
    try:
      for n, pair in enumerate(self.source.pairs()):
        if self.stop.is_set() or (self.limit is not None and n >= self.limit): break
        while not self.lossless and self.q.full():
          try: self.q.get_nowait()
          except queue.Empty: continue
          self.stale += 1
        while not self.stop.is_set():
          try: self.q.put(pair, timeout=0.1)
          except queue.Full: continue
          break
    except BaseException as e: self.error = e         # re-raised in the consumer's thread (one-line errors stay one line)
    finally: self.q.put(None)

  def get(self, give_up=lambda: False) -> StereoPair | None:
    """The next pair, or None when the source ended or give_up() turned true while waiting (a stalled camera
    must not keep Ctrl-C from ending the loop). An error in the capture thread is raised here."""
    while True:
      try:
        item = self.q.get(timeout=0.1)
        break
      except queue.Empty:
        if give_up(): return None
    if item is None:
      self.q.put(None)
      if self.error is not None: raise self.error
    return item

  def close(self) -> None:
    self.stop.set()
    while True:                                       # unblock a producer waiting on a full queue
      try: self.q.get_nowait()
      except queue.Empty: break
    self.thread.join(timeout=2.0)
    self.source.close()


# --- plumbing: this script's command line (save pairs) ---------------------------------------------------------

def parse_size(text: str):
  from stereo_cli import parse_sizes
  (size,) = parse_sizes(text, smallest=16)
  return size


def add_source_flags(g) -> None:
  """The capture flags, shared with depth_map.py --live."""
  g.add_argument("--source", default="sim", help="sim, argus (CSI IMX219 pair via GStreamer), v4l2 (/dev/videoN) or folder:PATH")
  g.add_argument("--max-skew-ms", type=float_range(0.1, 1000), default=10.0, help="largest |t_right − t_left| of a pair")
  g.add_argument("--left-device", type=nonnegative_int, default=0, help="V4L2 index of the left camera (--source v4l2)")
  g.add_argument("--right-device", type=nonnegative_int, default=1, help="V4L2 index of the right camera (--source v4l2)")
  g.add_argument("--gst-pipeline", default=None, help="--source argus: pipeline string with {sensor}, {width}, {height} (default: nvarguscamerasrc)")
  g.add_argument("--sim-drop", type=probability, default=0.0, help="--source sim: probability that a camera drops a frame")


def parse_args(argv=None):
  p = project_parser("stereo", __doc__, quick_help="4 pairs of 128x96", save_help=None)
  p.set_defaults(out=os.path.join("out", "stereo", "captures"))
  g = p.add_argument_group("capture")
  add_source_flags(g)
  g.add_argument("--frames", type=positive_int, default=30, help="pairs to save (cameras: stops earlier on Ctrl-C)")
  g.add_argument("--size", type=parse_size, default="640x480", help="frame size WIDTHxHEIGHT")
  g.add_argument("--max-disp", type=positive_int, default=64, help="--source sim: disparity range the scene is made for")
  p.preset("quick", frames=4, size=(128, 96), max_disp=16)
  args = p.parse_args(argv)
  if args.bench or args.json: p.error(f"{'--bench' if args.bench else '--json'}: capture_stereo.py times nothing (depth_map.py --live --bench does)")
  if args.source.startswith("folder:"): p.error("--source folder: plays pairs saved here; capture from sim, argus or v4l2")
  if args.source not in ("sim", "argus", "v4l2"): p.error(f"--source {args.source!r}: choose sim, argus or v4l2")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  check_out_dir(args)
  (w, h), out = args.size, Path(args.out)
  src = open_source(args.source, w, h, max_disp=args.max_disp, seed=args.seed, drop=args.sim_drop, max_skew_ms=args.max_skew_ms,
                    devices=(args.left_device, args.right_device), pipeline=args.gst_pipeline)
  print(f"capturing {args.frames} pairs from {src.what} into {out}")
  stop = []
  previous = signal.signal(signal.SIGINT, lambda *_: stop.append(1))
  cap, saved = CaptureThread(src, args.frames, lossless=True), 0
  try:
    with open(out / "pairs.jsonl", "w") as log:
      while not stop and (pair := cap.get()) is not None:
        save_image(pair.left, out / f"left_{pair.index:06d}.png")
        save_image(pair.right, out / f"right_{pair.index:06d}.png")
        log.write(json.dumps({"index": pair.index, "t_left": pair.t_left, "t_right": pair.t_right, "skew_ms": pair.skew_ms}) + "\n")
        log.flush()
        saved += 1
  finally:
    signal.signal(signal.SIGINT, previous)
    cap.close()
  stats = {"source": src.what, **src.pairer.stats(), "pairs": saved, "stale": cap.stale, "interrupted": bool(stop)}
  save_json(stats, out / "capture_summary.json")
  print(f"{stats['pairs']} pairs, dropped {stats['dropped_left']} left / {stats['dropped_right']} right frames, skew median "
        f"{stats['skew_ms_median']:.2f} ms, max {stats['skew_ms_max']:.2f} ms; wrote {out}/")
  return 130 if stop else 0


if __name__ == "__main__":
  sys.exit(common.run_main(main))
