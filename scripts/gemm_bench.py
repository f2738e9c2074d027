"""One matrix product C = A @ B, (M × K) @ (K × N), in a TinyJit: its median time, TFLOP/s, and the optimizations
each of its kernels got (the heuristic's, or BEAM's under JITBEAM=N). The probe behind the tensor-core figures in
edge-deploy/README.md: how far the layout of one product, not a whole network, is from the hardware.

    DEV=CUDA python3 scripts/gemm_bench.py 4096 4096 4096 --half            # the heuristic's tensor-core layout
    DEV=CUDA JITBEAM=2 python3 scripts/gemm_bench.py 4096 4096 4096 --half  # what BEAM finds for the same product
    DEV=CUDA python3 scripts/gemm_bench.py 100352 256 2304 --half           # a patch-matrix conv: VGG-16 conv3 at b=32, 56×56

Timing: 3 warm-up calls (compile, capture, one replay), then 30 replays, each synchronized; the median is printed.
"""
from __future__ import annotations
import statistics, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import common  # noqa: E402,F401  (the repo's patches and flags, as every project gets them)
from common.cli import ArgumentParser, positive_int, run_main  # noqa: E402


def main() -> int:
  p = ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("m", type=positive_int, help="rows of A and C")
  p.add_argument("n", type=positive_int, help="columns of B and C")
  p.add_argument("k", type=positive_int, help="the sum's length: columns of A, rows of B")
  p.add_argument("--half", action="store_true", help="fp16 operands (fp32 otherwise; ALLOW_TF32=1 lets fp32 use TF32 tensor cores)")
  p.add_argument("--iters", type=positive_int, default=30, help="timed replays")
  args = p.parse_args()
  from tinygrad import Device, Tensor, TinyJit, dtypes
  from tinygrad.uop.ops import Ops
  dt = dtypes.half if args.half else dtypes.float
  a, b = Tensor.randn(args.m, args.k, dtype=dt).realize(), Tensor.randn(args.k, args.n, dtype=dt).realize()
  product = TinyJit(lambda a, b: (a @ b).realize())
  for _ in range(3): product(a, b)
  dev = Device[Device.DEFAULT]
  dev.synchronize()
  times = []
  for _ in range(args.iters):
    t0 = time.perf_counter()
    product(a, b)
    dev.synchronize()
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  print(f"{args.m}x{args.n}x{args.k} {'fp16' if args.half else 'fp32'} on {Device.DEFAULT}: median {med * 1e3:.3f} ms, "
        f"{2 * args.m * args.n * args.k / med / 1e12:.1f} TFLOP/s")
  kernels = [u.arg for u in product.captured._linear.toposort() if u.op is Ops.SINK and getattr(u.arg, "applied_opts", None)]
  for opts in dict.fromkeys(" ".join(f"{o.op.name}({o.axis},{o.arg})" for o in k.applied_opts) for k in kernels):
    print("  kernel opts:", opts)
  return 0


if __name__ == "__main__":
  sys.exit(run_main(main))
