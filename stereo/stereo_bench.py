"""`python3 stereo/depth_map.py --bench`: frames/s of the tinygrad matchers (box and SGM) per image size and
disparity count, OpenCV's StereoBM and StereoSGBM beside them when opencv-python-headless is installed,
the torch_reference.py workload (SAD + 5x5 box + argmin), and the accuracy of every method on the
evaluation pair (the synthetic scene, or --left/--right with --gt). Timed with common.bench: device
synchronized, warm-up apart from the steady state; --json writes every record.
"""
import sys, time
from dataclasses import replace

import numpy as np
from tinygrad import Tensor, TinyJit

import depth_map as dm
from common.bench import SCHEMA, Bench
from common.files import save_json
from scene import synthetic_pair


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


def bench_configs(args) -> dict[str, dm.MatchConfig]:
  """Both aggregations with the matching flags given (or only --aggregation's when it was typed)."""
  cfg = dm.match_config(args)
  kinds = [cfg.aggregation] if "aggregation" in args.given else ["box", "sgm"]
  name = "census" if cfg.cost == "census" else "SAD"
  return {f"{name}+{'SGM' if k == 'sgm' else 'box'}": replace(cfg, aggregation=k) for k in kinds}


class StereoBench:
  """The --bench cases: tinygrad's matchers (and OpenCV's, when installed) per size and D, then accuracy."""
  def __init__(self, args):
    self.args, self.iters, self.max_s = args, *((3, 5.0) if args.quick else (10, 20.0))
    self.bench, self.accuracy = Bench(dm.PROJECT), []
    self.cv = opencv_matchers(16)
    self.cv_bench = Bench(dm.PROJECT, device="opencv:CPU", renderer=f"opencv {self.cv[1]}") if self.cv else None
    if self.cv is None: print("OpenCV not installed (pip install opencv-python-headless): StereoBM/StereoSGBM rows skipped")

  def time_tinygrad(self, case: str, left, right, cfg: dm.MatchConfig) -> dict:
    h, w = left.shape
    t0 = time.perf_counter()
    matcher = dm.StereoMatcher(h, w, cfg)
    setup_s = time.perf_counter() - t0
    L, R = Tensor(left).realize(), Tensor(right).realize()
    rec = self.bench.run(case, lambda: matcher.match(L, R), rate=(1, "frames/s"), iters=self.iters, max_seconds=self.max_s,
                         setup_s=setup_s, config=cfg.describe())
    rec["result"] = [t.numpy() for t in matcher.match(L, R)]
    print(f"  {case}: {rec['median_ms']:.1f} ms/frame", file=sys.stderr)
    return rec

  def time_opencv(self, suffix: str, left, right, max_disp: int) -> list[tuple[str, dict, tuple]]:
    if self.cv is None: return []
    l8, r8 = (im.round().clip(0, 255).astype(np.uint8) for im in (left, right))
    out = []
    for name, fn in opencv_matchers(max_disp)[0].items():
      rec = self.cv_bench.run(f"{name} {suffix}", lambda: fn(l8, r8), rate=(1, "frames/s"), iters=self.iters, max_seconds=self.max_s,
                              sync=lambda: None)
      out.append((name, rec, fn(l8, r8)))
    return out

  def sad_reference(self, w: int, h: int, d: int) -> None:
    """The torch_reference.py workload: SAD cost volume, 5x5 box, argmin."""
    left, right, _, _ = synthetic_pair("boxes", w, h, d, 2.0, self.args.seed)
    L, R = Tensor(left).realize(), Tensor(right).realize()
    sad_argmin = TinyJit(lambda l, r: dm.winner_take_all(dm.box_sum(dm.sad_cost(l, r, d), 5))[1].realize())
    self.bench.run(f"SAD 5x5 box + argmin {w}x{h} D{d}", lambda: sad_argmin(L, R), rate=(1, "frames/s"), iters=self.iters, max_seconds=self.max_s)

  def sizes(self, cfgs: dict[str, dm.MatchConfig]) -> None:
    for (w, h) in self.args.sizes:
      for d in self.args.disparities:
        left, right, _, _ = synthetic_pair("boxes", w, h, d, 2.0, self.args.seed)
        for name, cfg in cfgs.items(): self.time_tinygrad(f"{name} {w}x{h} D{d}", left, right, replace(cfg, max_disp=d)).pop("result")
        self.time_opencv(f"{w}x{h} D{d}", left, right, d)

  def eval_pair(self, inp: dm.StereoInput, cfgs: dict[str, dm.MatchConfig]) -> None:
    """Accuracy (and speed) of every method on the evaluation pair, with the same D."""
    def score(disp, valid):
      out = dm.evaluate(disp, valid, inp.gt, inp.known, self.args.eval_border)
      if inp.occluded is not None:
        out["visible_bad1.0_pct"] = dm.evaluate(disp, valid, inp.gt, inp.known & ~inp.occluded, self.args.eval_border)["bad1.0_pct"]
      return out
    h, w = inp.left.shape
    d = next(iter(cfgs.values())).max_disp
    results = [(name, self.time_tinygrad(f"{name} eval pair {w}x{h} D{d}", inp.left, inp.right, cfg)) for name, cfg in cfgs.items()]
    results = [(name, rec, rec.pop("result")) for name, rec in results] + self.time_opencv(f"eval pair {w}x{h} D{d}", inp.left, inp.right, d)
    for name, rec, (disp, valid) in results:
      scores = score(disp, valid.astype(bool))
      rec.update({f"eval_{k}": v for k, v in scores.items()})
      self.accuracy.append((name, rec["median_ms"], scores))

  def report(self, inp: dm.StereoInput, max_disp: int) -> None:
    self.bench.print("stereo matching (tinygrad)")
    if self.cv_bench is not None and self.cv_bench.records: self.cv_bench.print("stereo matching (OpenCV, CPU)")
    h, w = inp.left.shape
    print(f"\n### accuracy on the evaluation pair ({w}x{h}, D={max_disp}, all pixels with known ground truth)\n")
    print("| method | ms/frame | bad-0.5 % | bad-1.0 % | bad-2.0 % | mean err px | bad-1.0 % visible px | kept % | bad-1.0 % of kept |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, ms, s in self.accuracy:
      visible = f"{s['visible_bad1.0_pct']:.1f}" if "visible_bad1.0_pct" in s else "-"
      print(f"| {name} | {ms:.1f} | {s['bad0.5_pct']:.1f} | {s['bad1.0_pct']:.1f} | {s['bad2.0_pct']:.1f} | {s['mean_abs_err']:.2f} | {visible} "
            f"| {s['density_pct']:.1f} | {s['kept_bad1.0_pct']:.1f} |")
    if self.args.json:     # one file for both devices (tinygrad's and OpenCV's records), in the harness's schema
      save_json({"schema": SCHEMA, "records": self.bench.records + (self.cv_bench.records if self.cv_bench else [])}, self.args.json)
      print(f"\nwrote {self.args.json}")


def run_bench(args) -> int:
  cfgs = bench_configs(args)
  for (w, h) in args.sizes: dm.check_size(w, h, [replace(c, max_disp=d) for c in cfgs.values() for d in args.disparities], f"--sizes {w}x{h}")
  inp = dm.load_inputs(args, list(cfgs.values()))          # the evaluation pair: the synthetic scene, or --left/--right with --gt
  b = StereoBench(args)
  b.sad_reference(*(args.sizes[0] if args.quick else (640, 480)), args.disparities[0] if args.quick else 64)
  b.sizes(cfgs)
  b.eval_pair(inp, cfgs)
  b.report(inp, args.max_disp)
  return 0
