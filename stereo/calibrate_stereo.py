#!/usr/bin/env python3
"""Stereo calibration and rectification from checkerboard views, for stereo/depth_map.py (needs OpenCV).

WHY
  Block matching assumes a rectified pair: the same scene point on the same row in both images, the
  right one shifted left by the disparity d. Real cameras (two IMX219 modules ≈ 60 mm apart) have lens
  distortion, slightly different focal lengths and a small rotation between them. Calibration measures
  all of it from views of a checkerboard of known square size, rectification warps both images so the
  assumption holds.

STEPS (each printed as it runs)
  1. Find the inner corners of the board (--board COLSxROWS, --square-mm) in every left/right pair and
     keep only the pairs where BOTH cameras found the whole board (a pair with one view is useless for
     the stereo geometry).
  2. Calibrate each camera alone (cv2.calibrateCamera): intrinsics K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
     and distortion; the per-view reprojection error (RMS px between detected and re-projected corners)
     is printed, so a blurred or misdetected view stands out.
  3. Stereo calibration (cv2.stereoCalibrate, intrinsics fixed): rotation R and translation T of the
     right camera; |T| is the baseline.
  4. Rectification (cv2.stereoRectify): rotations R1, R2, new projections P1, P2 and the 4×4 matrix Q with
     [X Y Z W]ᵀ = Q·[x y d 1]ᵀ; remap tables map1x/map1y/map2x/map2y for every pixel.
  5. Save everything to <--out>/calib.npz (atomically) that depth_map.py --calib reads (it applies the
     maps with numpy and turns disparity into metres with Q).

INPUT
  --left-glob 'calib/left_*.png' --right-glob 'calib/right_*.png'   pairs matched by sorted order
  --capture N   grab N pairs from two cameras first (saved under <--out>/captures): --source v4l2 (/dev/video0 and 1,
                --left-device/--right-device) or --source argus (a GStreamer nvarguscamerasrc pipeline,
                the Jetson CSI cameras, sensor-id 0 and 1); a clear message when no camera answers
  --synthetic   render views of a board seen by a virtual rig (f = 700 px, B = 60 mm, 640×480) and
                calibrate those: checks the whole chain without a camera (PASS when |B − 60 mm| < 1 mm);
                --quick renders 6 views instead of 12 (--views)

OUTPUT
  --out DIR (default out/stereo/, checked before any work): calib.npz, and captures/ with --capture.
  --bench and --json have nothing to time here and say so; depth_map.py --bench times the matcher.

RUN
  Jetson:  python3 stereo/calibrate_stereo.py --capture 20 --source argus --board 9x6 --square-mm 25
           NV=1 python3 stereo/depth_map.py --left L.png --right R.png --calib out/stereo/calib.npz
  Laptop:  python3 stereo/calibrate_stereo.py --synthetic
  Needs:   pip install opencv-python-headless (an optional extra; depth_map.py itself does not need it)
"""
import common  # first, like every script here (device flags)

import argparse, glob, os, sys, time
from pathlib import Path

import numpy as np

from common import fail, check, project_parser
from common.cli import check_out_dir, float_range, nonnegative_int, positive_int
from common.files import atomic_path, read_image, save_image, writable_file


def need_cv2():
  os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")    # OpenCV's own warnings would break the one-line errors
  try:
    import cv2
    return cv2
  except ImportError:
    fail("calibrate_stereo.py needs OpenCV: pip install opencv-python-headless")


def parse_board(text: str) -> tuple[int, int]:
  try: cols, rows = (int(v) for v in text.lower().split("x"))
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not COLSxROWS (inner corners, e.g. 9x6)")
  if not (3 <= cols <= 50 and 3 <= rows <= 50): raise argparse.ArgumentTypeError(f"{text!r}: need 3 to 50 inner corners each way")
  return cols, rows


def parse_capture_size(text: str) -> tuple[int, int]:
  try: w, h = (int(v) for v in text.lower().split("x"))
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT")
  if not (64 <= w <= 8192 and 64 <= h <= 8192): raise argparse.ArgumentTypeError(f"{text!r}: 64 to 8192 px each way")
  return w, h


# ---- input: synthetic views, files, or cameras ----------------------------------------------------------

def render_synthetic_views(cv2, board, square_m, n_views, seed, size=(640, 480), focal=700.0, baseline=0.06):
  """Views of a checkerboard by a virtual rectified rig: left camera at the origin, right at +B along x."""
  rng = np.random.default_rng(seed)
  w, h = size
  K = np.array([[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1]])
  cols, rows = board
  px = 40                                                   # texture pixels per square
  squares = (np.indices((rows + 1, cols + 1)).sum(0) % 2) * 255
  texture = np.kron(squares, np.ones((px, px))).astype(np.uint8)
  texture = np.pad(texture, px, constant_values=255)        # white margin: corners need a border
  # texture pixel (u, v) -> board plane point (metres), origin at the first inner corner
  to_board = np.array([[square_m / px, 0, -2 * square_m], [0, square_m / px, -2 * square_m], [0, 0, 1]])
  pairs = []
  for _ in range(n_views):
    rvec = rng.uniform(-0.35, 0.35, 3)
    R, _ = cv2.Rodrigues(rvec)
    centre = np.array([rng.uniform(-0.08, 0.08), rng.uniform(-0.06, 0.06), rng.uniform(0.45, 0.7)])
    t = centre - R @ np.array([(cols - 1) * square_m / 2, (rows - 1) * square_m / 2, 0])
    views = []
    for cam_x in (0.0, baseline):
      Hm = K @ np.column_stack([R[:, 0], R[:, 1], t - np.array([cam_x, 0, 0])]) @ to_board
      img = cv2.warpPerspective(texture, Hm, (w, h), flags=cv2.INTER_AREA, borderValue=128)
      views.append(np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8))
    pairs.append(tuple(views))
  return pairs, baseline


def read_pairs(left_glob: str, right_glob: str):
  lefts, rights = sorted(glob.glob(left_glob)), sorted(glob.glob(right_glob))
  if not lefts: fail(f"--left-glob {left_glob!r} matches no file")
  if len(lefts) != len(rights): fail(f"{len(lefts)} left images but {len(rights)} right images: they are paired by sorted order")
  pairs = []
  for l, r in zip(lefts, rights):
    a, b = (np.round(read_image(p, channels=1) * 255).astype(np.uint8) for p in (l, r))   # OpenCV's corner finder wants 8 bits
    if a.shape != b.shape: fail(f"{l} is {a.shape[1]}x{a.shape[0]} but {r} is {b.shape[1]}x{b.shape[0]}")
    pairs.append((a, b))
  if any(p[0].shape != pairs[0][0].shape for p in pairs): fail("the calibration images do not all have the same size")
  return pairs, [os.path.basename(l) for l in lefts]


def argus_pipeline(sensor_id: int, width: int, height: int) -> str:
  return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM),width={width},height={height},framerate=30/1 ! "
          "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")


def capture_pairs(cv2, args):
  """Grab --capture pairs, one every --interval seconds, and save them under --out/captures."""
  w, h = args.capture_size
  if args.source == "argus":
    caps = [cv2.VideoCapture(argus_pipeline(i, w, h), cv2.CAP_GSTREAMER) for i in (0, 1)]
    where = "nvarguscamerasrc sensor-id=0 and 1 (GStreamer)"
  else:
    caps = [cv2.VideoCapture(i, cv2.CAP_V4L2) for i in (args.left_device, args.right_device)]
    for c in caps:
      c.set(cv2.CAP_PROP_FRAME_WIDTH, w)
      c.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
    where = f"/dev/video{args.left_device} and /dev/video{args.right_device} (V4L2)"
  if not all(c.isOpened() for c in caps):
    fail(f"no stereo camera found at {where}; check the cable/driver, or calibrate from files with --left-glob/--right-glob")
  folder = Path(args.out) / "captures"
  pairs = []
  for k in range(args.capture):
    time.sleep(args.interval)
    frames = [c.read() for c in caps]
    if not all(ok for ok, _ in frames): fail(f"camera stopped delivering frames after {k} pairs ({where})")
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for _, f in frames]
    save_image(gray[0], folder / f"left_{k:03d}.png")
    save_image(gray[1], folder / f"right_{k:03d}.png")
    pairs.append(tuple(gray))
    print(f"captured pair {k + 1}/{args.capture}")
  for c in caps: c.release()
  return pairs, [f"capture {k:03d}" for k in range(len(pairs))]


# ---- calibration ------------------------------------------------------------------------------------------

def find_corners(cv2, img, board):
  found, corners = cv2.findChessboardCorners(img, board, cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
  if not found: return None
  return cv2.cornerSubPix(img, corners, (5, 5), (-1, -1), (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4))


def per_view_errors(cv2, objpoints, imgpoints, K, dist, rvecs, tvecs):
  """RMS reprojection error (px) of each view."""
  out = []
  for obj, img, r, t in zip(objpoints, imgpoints, rvecs, tvecs):
    proj, _ = cv2.projectPoints(obj, r, t, K, dist)
    out.append(float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img.reshape(-1, 2)) ** 2, axis=1)))))
  return out


def calibrate(cv2, pairs, names, board, square_m):
  cols, rows = board
  obj = np.zeros((cols * rows, 3), np.float32)
  obj[:, :2] = np.indices((cols, rows)).T.reshape(-1, 2) * square_m
  used, left_pts, right_pts = [], [], []
  for name, (l, r) in zip(names, pairs):
    cl, cr = find_corners(cv2, l, board), find_corners(cv2, r, board)
    status = "both" if cl is not None and cr is not None else ("left only" if cl is not None else ("right only" if cr is not None else "none"))
    print(f"  {name}: board found in {status}")
    if cl is not None and cr is not None:
      used.append(name)
      left_pts.append(cl)
      right_pts.append(cr)
  if len(used) < 3: fail(f"the board ({cols}x{rows} inner corners) was found in both images of only {len(used)} pairs; need at least 3")
  (err_l, err_r), calib = stereo_calibrate(cv2, [obj] * len(used), left_pts, right_pts, pairs[0][0].shape[::-1])
  print(f"per-view reprojection error (px), {len(used)} pairs with the board in both cameras:")
  print("| view | left | right |\n|---|---:|---:|")
  for n, a, b in zip(used, err_l, err_r): print(f"| {n} | {a:.3f} | {b:.3f} |")
  return {**calib, "views_used": np.array(used)}


def stereo_calibrate(cv2, objpoints, left_pts, right_pts, size):
  """Per-camera intrinsics, then the rig (R, T) with the intrinsics fixed, then the rectification."""
  rms_l, K1, D1, rv1, tv1 = cv2.calibrateCamera(objpoints, left_pts, size, None, None)
  rms_r, K2, D2, rv2, tv2 = cv2.calibrateCamera(objpoints, right_pts, size, None, None)
  errors = per_view_errors(cv2, objpoints, left_pts, K1, D1, rv1, tv1), per_view_errors(cv2, objpoints, right_pts, K2, D2, rv2, tv2)
  rms, K1, D1, K2, D2, R, T, _, _ = cv2.stereoCalibrate(objpoints, left_pts, right_pts, K1, D1, K2, D2, size, flags=cv2.CALIB_FIX_INTRINSIC,
                                                        criteria=(cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-6))
  R1, R2, P1, P2, Q, _, _ = cv2.stereoRectify(K1, D1, K2, D2, size, R, T, alpha=0)
  maps = [cv2.initUndistortRectifyMap(K, D, Rr, P, size, cv2.CV_32FC1) for K, D, Rr, P in ((K1, D1, R1, P1), (K2, D2, R2, P2))]
  return errors, dict(K1=K1, D1=D1, K2=K2, D2=D2, R=R, T=T, R1=R1, R2=R2, P1=P1, P2=P2, Q=Q,
                      map1x=maps[0][0], map1y=maps[0][1], map2x=maps[1][0], map2y=maps[1][1],
                      image_size=np.array(size), rms_left=rms_l, rms_right=rms_r, rms_stereo=rms,
                      baseline_m=float(np.linalg.norm(T)), focal_px=float(Q[2, 3]))


def parse_args(argv=None) -> argparse.Namespace:
  p = project_parser("stereo", __doc__, quick_help="with --synthetic: 6 views instead of 12", save_help=None)
  g = p.add_argument_group("input (choose one)")
  g.add_argument("--left-glob", help="left calibration images, e.g. 'calib/left_*.png'")
  g.add_argument("--right-glob", help="right calibration images, paired with the left ones by sorted order")
  g.add_argument("--capture", type=positive_int, default=None, help="grab this many pairs from cameras first (saved under --out/captures)")
  g.add_argument("--synthetic", action="store_true", help="calibrate rendered views of a virtual 60 mm rig (no camera needed)")
  g = p.add_argument_group("cameras (--capture)")
  g.add_argument("--source", choices=["v4l2", "argus"], default="argus", help="camera access for --capture")
  g.add_argument("--left-device", type=nonnegative_int, default=0, help="V4L2 index of the left camera")
  g.add_argument("--right-device", type=nonnegative_int, default=1, help="V4L2 index of the right camera")
  g.add_argument("--capture-size", type=parse_capture_size, default="1280x720", help="WIDTHxHEIGHT to capture")
  g.add_argument("--interval", type=float_range(0, 60), default=1.5, help="seconds between captured pairs (move the board)")
  g = p.add_argument_group("board and synthetic views")
  g.add_argument("--board", type=parse_board, default="9x6", help="inner corners COLSxROWS")
  g.add_argument("--square-mm", type=float_range(1, 1000), default=25.0, help="checkerboard square size in mm")
  g.add_argument("--views", type=positive_int, default=12, help="synthetic views (3 to 100)")
  p.preset("quick", views=6)
  args = p.parse_args(argv)
  if (problem := flag_problem(args)): p.error(problem)
  return args


def flag_problem(args) -> str | None:
  """The first flag that could not do what it says here, as one line (None: all fine)."""
  typed = args.given
  if args.bench or args.json:
    return f"{'--bench' if args.bench else '--json'}: calibrate_stereo.py times nothing (depth_map.py --bench times the matcher)"
  if sum([bool(args.left_glob or args.right_glob), args.capture is not None, args.synthetic]) != 1:
    return "choose one input: --left-glob/--right-glob, --capture N, or --synthetic"
  if bool(args.left_glob) != bool(args.right_glob): return "--left-glob and --right-glob go together"
  camera = [f for f in ("source", "left_device", "right_device", "capture_size", "interval") if f in typed]
  if camera and args.capture is None: return f"--{camera[0].replace('_', '-')} is a camera setting for --capture"
  synthetic = [f for f in ("views", "quick", "seed") if f in typed]
  if synthetic and not args.synthetic: return f"--{synthetic[0]} goes with --synthetic"
  if not 3 <= args.views <= 100: return f"--views {args.views}: calibration needs 3 to 100 views"
  return None


def main(argv=None) -> int:
  args = parse_args(argv)
  check_out_dir(args)
  dest = writable_file(Path(args.out) / "calib.npz", "calibration file")
  cv2 = need_cv2()
  truth = None
  if args.synthetic:
    pairs, truth = render_synthetic_views(cv2, args.board, args.square_mm / 1000, args.views, args.seed)
    names = [f"synthetic {k:02d}" for k in range(len(pairs))]
  elif args.capture:
    pairs, names = capture_pairs(cv2, args)
  else:
    pairs, names = read_pairs(args.left_glob, args.right_glob)
  print(f"{len(pairs)} pairs of {pairs[0][0].shape[1]}x{pairs[0][0].shape[0]}, board {args.board[0]}x{args.board[1]} inner corners, "
        f"{args.square_mm} mm squares")
  try: calib = calibrate(cv2, pairs, names, args.board, args.square_mm / 1000)
  except cv2.error as e: fail(f"OpenCV could not calibrate from these views ({' '.join(str(e).split())[-120:]})")
  print(f"RMS reprojection error: left {calib['rms_left']:.3f} px, right {calib['rms_right']:.3f} px, stereo {calib['rms_stereo']:.3f} px")
  print(f"baseline {calib['baseline_m'] * 1000:.2f} mm, rectified focal length {calib['focal_px']:.1f} px")
  with atomic_path(dest) as tmp, open(tmp, "wb") as f: np.savez(f, **calib)
  print(f"wrote {dest} (depth_map.py --calib {dest})")
  if truth is not None:
    return 0 if check("baseline error (mm)", abs(calib["baseline_m"] - truth) * 1000, 1.0, higher_is_better=False) else 1
  return 0


if __name__ == "__main__":
  sys.exit(common.run_main(main))
