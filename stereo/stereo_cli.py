"""The command line of stereo/depth_map.py: its flags (with the matcher's defaults taken from its MatchConfig),
the --quick preset, and the rules that refuse, in one line before any work, a flag combination that could
not do what it says (a flag that would be ignored in this mode, or one that contradicts another).
"""
import argparse

from common.cli import finite_float, float_range, int_list, nonnegative_int, positive_float, positive_int, project_parser
from common.files import writable_file
from capture_stereo import add_source_flags


def parse_sizes(text: str, smallest: int = 8) -> list[tuple[int, int]]:
  import argparse
  sizes = []
  for item in text.split(","):
    try: w, h = (int(v) for v in item.lower().split("x"))
    except ValueError: raise argparse.ArgumentTypeError(f"{item!r} is not WIDTHxHEIGHT")
    if w < smallest or h < smallest: raise argparse.ArgumentTypeError(f"{item!r}: at least {smallest}x{smallest}")
    sizes.append((w, h))
  return sizes


def parse_grid(text: str) -> list[tuple[int, int]]: return parse_sizes(text, smallest=1)


def add_matching_flags(g, d) -> None:
  """The matcher's flags, with the defaults of MatchConfig `d`."""
  g.add_argument("--max-disp", type=positive_int, default=d.max_disp, help="disparities searched, 0..D−1 (--quick: 16)")
  g.add_argument("--cost", choices=["census", "sad"], default=d.cost, help="matching cost")
  g.add_argument("--census-window", type=int, choices=[3, 5, 7], default=d.census_window, help="census window (w²−1 bits)")
  g.add_argument("--aggregation", choices=["sgm", "box"], default=d.aggregation, help="cost aggregation (--bench: both unless given)")
  g.add_argument("--block", type=int, choices=[3, 5, 7, 9, 11, 13, 15], default=d.block, help="box window for --aggregation box")
  g.add_argument("--paths", type=int, choices=[4, 8], default=d.paths, help="SGM path directions")
  g.add_argument("--p1", type=float_range(0, 1e6), default=None,
                 help="SGM penalty for a ±1 disparity step; None: census 2 × (w²−1)/24 bits, SAD 21 grey levels")
  g.add_argument("--p2", type=float_range(0, 1e6), default=None, help="SGM penalty for a larger jump, >= P1; None: 8 × the P1 default")
  g.add_argument("--uniqueness", type=float_range(0, 99), default=d.uniqueness, help="uniqueness ratio %% (0: off)")
  g.add_argument("--lr-max-diff", type=finite_float, default=d.lr_max_diff, help="left–right check tolerance in px (negative: off)")
  g.add_argument("--out-of-view", type=float_range(0, 1), default=d.out_of_view,
                 help="cost of a match outside the right image (x − d < 0), as a fraction of the largest cost")
  g.add_argument("--no-subpixel", action="store_true", help="integer disparities only")
  g.add_argument("--no-median", action="store_true", help="skip the 3x3 median filter")


def parse_args(argv, doc: str, defaults) -> argparse.Namespace:
  """depth_map.py's flags; `defaults` is a MatchConfig() (the matcher's defaults live there, once)."""
  p = project_parser("stereo", doc, save_help=None,
                     quick_help="tiny synthetic scene and disparity range: 128x96, D=16, one call; --bench: 64x48, D=16")
  g = p.add_argument_group("input")
  g.add_argument("--left", metavar="PATH", help="left image (any format Pillow reads, 8- or 16-bit); default: a synthetic scene")
  g.add_argument("--right", metavar="PATH", help="right image, same size as --left")
  g.add_argument("--calib", metavar="NPZ", help="calibration from stereo/calibrate_stereo.py (Q matrix, rectification maps)")
  g.add_argument("--focal-px", type=float_range(1, 1e5), default=None,
                 help="focal length in pixels without --calib; None: the IMX219's 2.6 mm lens, 0.708 × image width")
  g.add_argument("--baseline-m", type=float_range(0.001, 100), default=0.06, help="camera baseline in metres without --calib")
  g.add_argument("--scene", choices=["boxes", "fronto", "slanted"], default="boxes", help="synthetic scene when no --left/--right")
  g.add_argument("--size", type=parse_sizes, default="320x240", help="synthetic scene size WIDTHxHEIGHT (--quick: 128x96)")
  g.add_argument("--noise", type=float_range(0, 255), default=2.0, help="synthetic camera noise, grey levels (σ)")
  add_matching_flags(p.add_argument_group("matching"), defaults)
  g = p.add_argument_group("evaluation and output")
  g.add_argument("--gt", metavar="PATH", help="ground-truth disparity of the left view (PNG with --gt-scale, or PFM)")
  g.add_argument("--gt-right", metavar="PATH", help="ground truth of the right view (same format): adds the score on visible (non-occluded) pixels")
  g.add_argument("--gt-scale", type=positive_float, default=1.0, help="PNG ground truth stores scale × disparity (Middlebury 2003: 4)")
  g.add_argument("--eval-border", type=nonnegative_int, default=0, help="ignore this many pixels at each image edge when scoring")
  g.add_argument("--target-bad1", type=float_range(0, 100), default=None,
                 help="PASS when bad-1.0 %% ≤ this; None: 3 on the visible pixels of a synthetic scene, 14 on all known pixels with --gt")
  g.add_argument("--grid", type=parse_grid, default="8x3", help="obstacle grid COLUMNSxROWS")
  g.add_argument("--repeat", type=positive_int, default=3,
                 help="run the matcher this many times to show the JIT replay time (--quick: 1; with --json at least 3)")
  g.add_argument("--save-disparity", metavar="PATH", default=None, help="write the disparity map and its valid mask here (safetensors), atomically")
  g.add_argument("--load-disparity", metavar="PATH", default=None, help="score and write a disparity saved by --save-disparity instead of matching")
  add_live_flags(p.add_argument_group("--live (stereo/live.py; sources: stereo/capture_stereo.py)"))
  g = p.add_argument_group("--bench")
  g.add_argument("--sizes", type=parse_sizes, default="320x240,640x480,1280x720", help="bench image sizes (--quick: 64x48)")
  g.add_argument("--disparities", type=int_list, default="64,128", help="bench disparity counts (--quick: 16)")
  p.preset("quick", size=[(128, 96)], max_disp=16, repeat=1, sizes=[(64, 48)], disparities=[16])
  args = p.parse_args(argv)
  problem = flag_problem(args)
  if problem: p.error(problem)
  if args.save_disparity: writable_file(args.save_disparity, "--save-disparity")
  if args.video: writable_file(args.video, "--video")
  return args


def add_live_flags(g) -> None:
  g.add_argument("--live", action="store_true", help="run the live loop: capture, rectify (--calib), match, depth, obstacles, heading")
  add_source_flags(g)
  g.add_argument("--frames", type=positive_int, default=None, help="stop after N frames; None: sim 60 (--quick: 12), folder: all, cameras: Ctrl-C")
  g.add_argument("--snapshot-every", type=nonnegative_int, default=30, help="write snapshot_NNNNNN.png every N frames (0: none)")
  g.add_argument("--video", metavar="PATH", default=None, help="also write an MJPEG AVI of the snapshots here (needs OpenCV)")
  g.add_argument("--window", action="store_true", help="show the frames in a window (needs a display and OpenCV with a GUI)")
  g.add_argument("--smoothing", type=float_range(0.01, 1), default=0.5, help="α of the exponential smoothing of each band's clearance")
  g.add_argument("--hysteresis", type=float_range(0, 10), default=0.15, help="the heading moves only to a band this much clearer (fraction)")
  g.add_argument("--range-m", type=float_range(0.05, 1000), default=None, help="clearance cap (farther is free); None: 3 m, sim: the scene's 6u")
  g.add_argument("--min-valid", type=float_range(0, 1), default=0.1, help="share of valid pixels below which a band is unknown")


DEMO_ONLY = ("calib", "repeat", "grid", "target_bad1", "save_disparity", "load_disparity")
SYNTHETIC_ONLY = ("scene", "size", "noise")
MATCHING = ("max_disp", "cost", "census_window", "aggregation", "block", "paths", "p1", "p2", "uniqueness", "lr_max_diff",
            "out_of_view", "no_subpixel", "no_median", "repeat")


def flags(dests) -> str: return "/".join("--" + d.replace("_", "-") for d in dests)


def flag_problem(args) -> str | None:
  """The first flag combination that could not do what it says, as one line (None: all fine)."""
  given = args.given
  def typed(dests): return [d for d in dests if d in given]
  if args.live: return live_flag_problem(args, typed)
  if typed(LIVE): return f"{flags(typed(LIVE))} go with --live"
  if (args.left is None) != (args.right is None): return "--left and --right go together"
  if args.gt and args.left is None: return "--gt needs --left/--right (synthetic scenes carry their own ground truth)"
  if args.gt_right and not args.gt: return "--gt-right goes with --gt"
  if args.left and typed(SYNTHETIC_ONLY): return f"{flags(typed(SYNTHETIC_ONLY))} describe the synthetic scene, not used with --left/--right"
  if args.left is None and args.calib: return "--calib rectifies camera images: give --left/--right"
  if args.calib and typed(("focal_px", "baseline_m")): return f"{flags(typed(('focal_px', 'baseline_m')))}: with --calib its Q matrix gives them"
  if args.left and not args.gt and typed(("gt_scale", "eval_border", "target_bad1")):
    return f"{flags(typed(('gt_scale', 'eval_border', 'target_bad1')))} score against ground truth: give --gt"
  if args.gt and args.gt.lower().endswith(".pfm") and "gt_scale" in given: return "--gt-scale is for PNG ground truth; a PFM stores d itself"
  if len(args.size) != 1: return "--size takes one WIDTHxHEIGHT (--sizes is for --bench)"
  if args.max_disp < 4: return "--max-disp must be at least 4"
  if args.bench: return bench_flag_problem(args, typed)
  if typed(("sizes", "disparities")): return f"{flags(typed(('sizes', 'disparities')))} choose the --bench cases; add --bench"
  if args.load_disparity:
    if typed(MATCHING): return f"--load-disparity scores a saved disparity: {flags(typed(MATCHING))} would have no effect"
    if args.save_disparity: return "--save-disparity with --load-disparity would write back the file just read"
    if args.json: return "--json records the matcher's timing; with --load-disparity nothing is matched"
    return None
  if args.json and args.repeat < 3:
    if "repeat" in given: return "--json records the JIT replay time, which needs --repeat 3 or more"
    args.repeat = 3
  return aggregation_problem(args, typed, {args.aggregation})


def bench_flag_problem(args, typed) -> str | None:
  if typed(DEMO_ONLY): return f"{flags(typed(DEMO_ONLY))} belong to the demo; --bench times the matchers and writes only --json"
  if args.left and not args.gt: return "--bench uses --left/--right as its evaluation pair, which needs --gt"
  return aggregation_problem(args, typed, {args.aggregation} if "aggregation" in args.given else {"box", "sgm"})


def aggregation_problem(args, typed, aggregations: set[str]) -> str | None:
  if "box" not in aggregations and "block" in args.given: return "--block is the window of --aggregation box"
  if "sgm" not in aggregations and typed(("paths", "p1", "p2")): return f"{flags(typed(('paths', 'p1', 'p2')))} are for SGM; --aggregation is box"
  if args.cost != "census" and "census_window" in args.given: return "--census-window goes with --cost census"
  return None


LIVE = ("source", "max_skew_ms", "left_device", "right_device", "gst_pipeline", "sim_drop", "frames", "snapshot_every", "video", "window",
        "smoothing", "hysteresis", "range_m", "min_valid")
NOT_LIVE = ("left", "right", "gt", "gt_right", "gt_scale", "eval_border", "target_bad1", "repeat", "save_disparity", "load_disparity", "scene")


def live_flag_problem(args, typed) -> str | None:
  """--live: the frames come from --source; flags of the single-pair demo would do nothing."""
  import os
  src = args.source
  if typed(NOT_LIVE): return f"{flags(typed(NOT_LIVE))}: --live reads its frames from --source"
  if len(args.size) != 1: return "--size takes one WIDTHxHEIGHT (--sizes is for --bench)"
  if args.max_disp < 4: return "--max-disp must be at least 4"
  if src not in ("sim", "argus", "v4l2") and not src.startswith("folder:"): return f"--source {src!r}: choose sim, argus, v4l2 or folder:PATH"
  if src == "sim" and args.calib: return "--calib rectifies camera frames; --source sim renders rectified pairs with exact ground truth"
  if args.calib and typed(("focal_px", "baseline_m")): return f"{flags(typed(('focal_px', 'baseline_m')))}: with --calib its Q matrix gives them"
  for dests, only in ((("sim_drop", "noise"), "sim"), (("gst_pipeline",), "argus"), (("left_device", "right_device"), "v4l2")):
    if src != only and typed(dests): return f"{flags(typed(dests))} go with --source {only}"
  if args.bench:
    if src != "sim": return "--live --bench runs on the simulated source (--source sim)"
    if run_only := typed(("frames", "snapshot_every", "video", "window", "calib", "size")):
      return f"{flags(run_only)} belong to the live run; --live --bench takes --sizes/--disparities"
    return aggregation_problem(args, typed, {args.aggregation} if "aggregation" in args.given else {"box", "sgm"})
  if typed(("sizes", "disparities")): return f"{flags(typed(('sizes', 'disparities')))} choose the --bench cases; add --bench"
  if args.window and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    return "--window: no display here (DISPLAY is not set); live.jsonl, the snapshots and --video are written without one"
  return aggregation_problem(args, typed, {args.aggregation})
