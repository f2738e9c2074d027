#!/usr/bin/env python3
"""PyTorch reference for depth_map.py's box-aggregated pipeline: SAD cost volume, 5×5 box sum, argmin over
disparities, on the same synthetic images and shapes (default 640×480, 64 disparities), timed with the same
harness (common.bench) so `common.compare` can put the two side by side.

  C(y, x, d) = |I_L(y, x) − I_R(y, x − d)|   (out-of-view matches cost depth_map.OUT_OF_VIEW × 255)
  A = 5×5 box sum of C,   d* = argmin_d A        shapes: (H, W) → (H, W, D) → (H, W, D) → (H, W)

It also checks that both frameworks pick the same disparities (agreement in % of pixels: ties between
equal costs may be broken differently, nothing else should differ).

RUN (PyTorch is not a dependency of the project: pip install torch for this script only)
  python3 stereo/torch_reference.py [--json out.json] [--size 640x480 --max-disp 64]   (--quick: 64x48, D=16)
  On the GPU machine: DEV=CUDA python3 stereo/torch_reference.py  (torch uses cuda when available)
"""
import common  # first: the tinygrad side of the agreement check reads DEV

import sys

import numpy as np

from common import fail
from common.cli import positive_int
from depth_map import OUT_OF_VIEW, PROJECT, box_sum, sad_cost, winner_take_all
from scene import synthetic_pair
from stereo_cli import parse_sizes


def parse_args(argv=None):
  p = common.project_parser(PROJECT, __doc__, quick_help="64x48, 16 disparities, 5 timed calls", save_help=None)
  p.add_argument("--size", type=parse_sizes, default="640x480", help="image size WIDTHxHEIGHT")
  p.add_argument("--max-disp", type=positive_int, default=64, help="disparities 0..D−1")
  p.preset("quick", size=[(64, 48)], max_disp=16)
  args = p.parse_args(argv)
  if "out" in args.given: p.error("--out: torch_reference.py writes only --json")
  if len(args.size) != 1: p.error("--size takes one WIDTHxHEIGHT")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    import torch
    import torch.nn.functional as F
  except ImportError:
    fail("torch_reference.py needs PyTorch (pip install torch); the tinygrad scripts do not")
  from common.bench import Bench
  (w, h), D = args.size[0], args.max_disp
  if w <= D: fail(f"--size {w}x{h} is narrower than --max-disp {D}")
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

  left, right, _, _ = synthetic_pair("boxes", w, h, D, 2.0, args.seed)
  L, R = torch.from_numpy(left).to(dev), torch.from_numpy(right).to(dev)
  x_minus_d_inside = (torch.arange(w, device=dev).view(1, w, 1) >= torch.arange(D, device=dev).view(1, 1, D))

  @torch.no_grad()
  def sad_box_argmin(left, right):
    shifted = F.pad(right, (D - 1, 0)).unfold(1, D, 1).flip(2)             # (H, W, D): right[y, x − d]
    cost = torch.where(x_minus_d_inside, (left.unsqueeze(2) - shifted).abs(), OUT_OF_VIEW * 255.0)
    box = F.avg_pool2d(cost.permute(2, 0, 1).unsqueeze(0), 5, stride=1, padding=2, count_include_pad=True) * 25
    return box[0].argmin(0)                                                   # (H, W)

  bench = Bench(PROJECT, device="torch:" + dev, renderer="torch " + torch.__version__)
  bench.run(f"SAD 5x5 box + argmin {w}x{h} D{D}", lambda: sad_box_argmin(L, R), rate=(1, "frames/s"), sync=sync,
            iters=5 if args.quick else 50, min_seconds=0 if args.quick else 1.0)
  bench.print("PyTorch reference")

  from tinygrad import Tensor
  ours = winner_take_all(box_sum(sad_cost(Tensor(left), Tensor(right), D), 5))[1][:, :, 0].numpy()
  agree = 100.0 * float(np.mean(sad_box_argmin(L, R).cpu().numpy() == ours))
  print(f"\ndisparities equal to tinygrad's (depth_map.py) on {agree:.2f} % of pixels")
  bench.records[-1]["agreement_with_tinygrad_pct"] = agree
  bench.write_json(args.json)
  return 0 if agree > 99.0 else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
