"""Convolution training cost, layer by layer: tinygrad's conv2d vs common.conv (with and without the
split weight gradient) vs PyTorch, for the layer shapes the projects train.

    DEV=CUDA python3 scripts/conv_bench.py [--layers unet,ae,vgg] [--dtype fp32|fp16] [--torch]

Each case times one JIT'd forward + backward (∂L/∂x and ∂L/∂w of L = Σ y·g) with common.bench
(device synchronized, warm-up apart, median). --torch times the same with torch.nn.functional.conv2d
and autograd (cuDNN; TF32 off) in the same process, so ratios are fair. --profile prints the top
kernels of each tinygrad case (common.profile).
"""
import math, sys
import common  # noqa: F401  (before tinygrad: device flags)
from common.bench import Bench
from common.cli import ArgumentParser, UserError, check_writable, int_list, positive_float, positive_int, run_main

#            name                  batch  cin cout  hw  k stride upsample
LAYERS = {"unet": [("unet conv_in 1->64 @28", 128, 1, 64, 28, 3, 1, False),
                   ("unet 64->64 @28", 128, 64, 64, 28, 3, 1, False),
                   ("unet down 64->64 s2 @28", 128, 64, 64, 28, 3, 2, False),
                   ("unet 128->128 @14", 128, 128, 128, 14, 3, 1, False),
                   ("unet up 128->128 @14->28", 128, 128, 128, 14, 3, 1, True),
                   ("unet 1x1 64->192 @28", 128, 64, 192, 28, 1, 1, False)],
          "ae": [("ae enc1 3->32 s2 @32", 128, 3, 32, 32, 3, 2, False),
                 ("ae enc2 32->64 s2 @16", 128, 32, 64, 16, 3, 2, False),
                 ("ae dec1 64->32 @8->16", 128, 64, 32, 8, 3, 1, True),
                 ("ae dec2 32->3 @16->32", 128, 32, 3, 16, 3, 1, True)],
          "vgg": [("vgg 64->64 @512", 1, 64, 64, 512, 3, 1, False),
                  ("vgg 128->128 @256", 1, 128, 128, 256, 3, 1, False),
                  ("vgg 256->256 @128", 1, 256, 256, 128, 3, 1, False),
                  ("vgg 512->512 @64", 1, 512, 512, 64, 3, 1, False)]}


def flops(b, cin, cout, hw, k, stride, up) -> float:
  out = (hw * (2 if up else 1)) // stride
  return 3 * 2 * b * cin * cout * k * k * out * out        # forward, input gradient, weight gradient


def tinygrad_cases(bench, layers, dtype_name, profile, which, splits=None, gemm_splits=(1,)):
  from tinygrad import Tensor, TinyJit, dtypes
  from common.conv import conv, conv2d, conv2d_gemm, default_split
  dt = dtypes.half if dtype_name == "fp16" else dtypes.float
  for name, b, cin, cout, hw, k, s, up in layers:
    x = Tensor.randn(b, cin, hw, hw, dtype=dt).realize()
    w = (Tensor.randn(cout, cin, k, k, dtype=dt) * (1 / math.sqrt(cin * k * k))).realize()
    h_in = hw * 2 if up else hw
    out = (h_in + 2 * (k // 2) - k) // s + 1
    g = Tensor.randn(b, cout, out, out, dtype=dt).realize()
    split = default_split(b, cout * cin * k * k, b * out * out)
    variants = {"tinygrad conv2d": lambda x, w: x.conv2d(w, stride=s, padding=k // 2)} if "conv2d" in which else {}
    for sp in sorted({1, split} if splits is None else {v for v in splits if b % v == 0}):
      if splits is not None or ("split1" if sp == 1 else "split") in which:
        variants[f"common.conv split={sp}"] = lambda x, w, sp=sp: conv2d(x, w, stride=s, padding=k // 2, split=sp)
    if "gemm" in which:
      for sp in [v for v in gemm_splits if (b * out * out) % v == 0]:
        variants[f"common.conv gemm split={sp}"] = lambda x, w, sp=sp: conv2d_gemm(x, w, stride=s, padding=k // 2, split=sp)
    if "auto" in which:      # what the projects call: the form conv_form picks, an upsampled layer as phase convolutions
      variants["common.conv auto"] = lambda x, w: conv(x, w, stride=s, padding=k // 2, upsample=2 if up else 1)
    for label, fn in variants.items():
      def step(x, w, g, fn=fn, upsample_here=up and label != "common.conv auto"):
        xi = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) if upsample_here else x
        gx, gw = (fn(xi, w) * g).sum().gradient(x, w)
        return gx.realize(), gw.realize()
      jit = TinyJit(step)
      bench.run(f"{name} | {label}", lambda: jit(x, w, g), rate=(flops(b, cin, cout, hw, k, s, up) / 1e9, "GFLOP/s"), warmup=3, iters=10,
                max_seconds=5)
      if profile:
        from common.profile import profile_step, print_profile
        print(f"\n{name} | {label}")
        print_profile(*profile_step(step, x, w, g), top=6)


def torch_cases(bench, layers, dtype_name):
  import torch
  import torch.nn.functional as F
  torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
  dt = torch.float16 if dtype_name == "fp16" else torch.float32
  for name, b, cin, cout, hw, k, s, up in layers:
    x = torch.randn(b, cin, hw, hw, device="cuda", dtype=dt, requires_grad=True)
    w = torch.randn(cout, cin, k, k, device="cuda", dtype=dt, requires_grad=True)
    h_in = hw * 2 if up else hw
    g = torch.randn(b, cout, (h_in + 2 * (k // 2) - k) // s + 1, (h_in + 2 * (k // 2) - k) // s + 1, device="cuda", dtype=dt)
    def step():
      xi = F.interpolate(x, scale_factor=2, mode="nearest") if up else x
      return torch.autograd.grad((F.conv2d(xi, w, stride=s, padding=k // 2) * g).sum(), (x, w))
    bench.run(f"{name} | torch eager", step, rate=(flops(b, cin, cout, hw, k, s, up) / 1e9, "GFLOP/s"), warmup=3, iters=10,
              max_seconds=5, sync=torch.cuda.synchronize)


def main() -> int:
  p = ArgumentParser(prog="scripts/conv_bench.py", description=__doc__.split("\n\n")[0])
  p.add_argument("--layers", default="unet,ae,vgg", help="comma-separated groups: " + ", ".join(LAYERS))
  p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
  p.add_argument("--torch", action="store_true", help="also time PyTorch (CUDA) in the same run")
  p.add_argument("--profile", action="store_true", help="print the top kernels of each tinygrad case")
  p.add_argument("--json", default=None)
  p.add_argument("--only", default=None, help="comma-separated substrings: only layers whose name holds one")
  p.add_argument("--variants", default="conv2d,split1,split",
                 help="which tinygrad variants: conv2d, split1, split, gemm, auto (common.conv.conv as the projects call it)")
  p.add_argument("--gemm-splits", type=int_list, default=[1, 8, 32], help="the gemm variant's weight-gradient splits")
  p.add_argument("--beam-minutes", type=positive_float, default=None, help="BEAM budget (with JITBEAM=N)")
  p.add_argument("--splits", type=int_list, default=None, help="time common.conv with these splits (divisors of the batch) instead")
  p.add_argument("--batch", type=positive_int, default=None, help="every layer at this batch (default: the project's)")
  args = p.parse_args()
  if args.json:
    try: check_writable(args.json, "--json")
    except UserError as e: p.error(str(e))
  layers = [layer for group in args.layers.split(",") for layer in LAYERS[group] if not args.only or any(o in layer[0] for o in args.only.split(","))]
  if args.batch: layers = [(name, args.batch, *rest) for name, _, *rest in layers]
  from common import beam
  if beam.beam_level() > 0: beam.install("conv-bench", args.beam_minutes)

  def run() -> int:
    bench = Bench("conv")
    tinygrad_cases(bench, layers, args.dtype, args.profile, args.variants.split(","), args.splits, args.gemm_splits)
    bench.print(f"conv layers, {args.dtype}")
    if args.torch:
      bench_torch = Bench("conv", device="torch:cuda", renderer="cudnn")
      torch_cases(bench_torch, layers, args.dtype)
      bench_torch.print(f"PyTorch conv layers, {args.dtype}")
      bench.records += bench_torch.records
    bench.write_json(args.json)
    return 0
  return run_main(run)


if __name__ == "__main__":
  sys.exit(main())
