"""Device microbenchmarks: the first thing to run on a new Jetson (`python3 -m common.device --bench`).

What each number means, and the ceiling to hold it against:
  matmul GFLOP/s   C = A·B with A, B of N×N: 2·N³ floating-point operations per call. fp16 inputs
                   accumulate in fp32 (tensor cores where the renderer uses them). For the Orin AGX,
                   2048 CUDA cores × 2 FLOP × ~1.3 GHz gives ~5.3 TFLOP/s fp32 as a ceiling (expected,
                   not measured here).
  copy GB/s        b = 2·a over 1 GiB of float32 (64 MiB on a CPU): bytes read + bytes written per second. On the Orin this is
                   bounded by LPDDR5 (204.8 GB/s peak; ~100 GB/s is typical in practice).
  triad GB/s       a = b + 2.5·c (STREAM's triad): two reads and one write per element.
  launch latency   one tiny kernel through TinyJit replay, host submit to device done. This is what a
                   small model's per-layer cost bottoms out at.
  JIT replay       a TinyJit'd chain of 16 small dependent kernels: the cost of replaying a captured graph.
  eager dispatch   the same one-kernel op without TinyJit: scheduling and lowering on the host every call.

Every case synchronizes the device around each call and keeps warm-up (compile, JIT capture) apart.
"""
from __future__ import annotations
from common.bench import Bench
from common.device import report
from common.train import on_cpu as _on_cpu


def run_microbenchmarks(quick: bool = False, json_path: str | None = None) -> Bench:
  from tinygrad import Tensor, TinyJit, dtypes
  on_cpu = _on_cpu()
  if quick: sizes, iters = [128, 256], 5
  elif on_cpu: sizes, iters = [256, 512, 1024], 10
  else: sizes, iters = [1024, 2048, 4096, 8192], 20
  bench = Bench("device")

  for dtype, name in ((dtypes.float32, "fp32"), (dtypes.float16, "fp16")):
    for n in sizes:
      a, b = Tensor.rand(n, n, dtype=dtype).realize(), Tensor.rand(n, n, dtype=dtype).realize()
      matmul = TinyJit(lambda x, y: (x @ y).realize())
      bench.run(f"matmul {name} {n}", lambda: matmul(a, b), rate=(2 * n ** 3 / 1e9, "GFLOP/s"), warmup=3, iters=iters, max_seconds=10)

  # big enough that launch and sync overhead vanish: on a discrete GPU 64 MiB moves in ~30 µs
  elems = (1 << 20) if quick else (16 << 20) if on_cpu else (1 << 28)   # 4 MiB / 64 MiB / 1 GiB of float32
  src, other = Tensor.rand(elems).realize(), Tensor.rand(elems).realize()
  scale = TinyJit(lambda x: (x * 2).realize())
  triad = TinyJit(lambda x, y: (x + 2.5 * y).realize())
  gb = elems * 4 / 1e9
  bench.run("copy b=2a", lambda: scale(src), rate=(2 * gb, "GB/s"), iters=iters * 2, max_seconds=10)
  bench.run("triad a=b+s*c", lambda: triad(src, other), rate=(3 * gb, "GB/s"), iters=iters * 2, max_seconds=10)

  tiny = Tensor.rand(16).realize()
  one_kernel = TinyJit(lambda x: (x + 1).realize())
  bench.run("launch latency (1 kernel, JIT)", lambda: one_kernel(tiny), iters=200 if not quick else 20, max_seconds=10)

  def chain(x: Tensor) -> Tensor:
    for _ in range(16): x = (x * 1.0001 + 1).contiguous()   # contiguous: one kernel per step, not one fused kernel
    return x.realize()
  chain_jit = TinyJit(chain)
  bench.run("JIT replay (16 kernels)", lambda: chain_jit(tiny), iters=100 if not quick else 10, max_seconds=10)
  bench.run("eager dispatch (1 kernel)", lambda: (tiny + 1).realize(), iters=100 if not quick else 10, max_seconds=10)

  bench.print("device microbenchmarks")
  bench.write_json(json_path)
  return bench


def main(argv: list[str] | None = None) -> int:
  from common.cli import run_main, ArgumentParser
  p = ArgumentParser(prog="python3 -m common.device", description="Print what device tinygrad will use; --bench runs microbenchmarks.")
  p.add_argument("--bench", action="store_true", help="run matmul, bandwidth and launch-latency microbenchmarks")
  p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (seconds)")
  p.add_argument("--json", type=str, default=None, help="also write one JSON record per benchmark case to this path")
  args = p.parse_args(argv)

  def run() -> int:
    rows = report()
    width = max(len(k) for k, _ in rows)
    for k, v in rows: print(f"{k:<{width}}  {v}")
    if args.bench:
      print()
      run_microbenchmarks(quick=args.quick, json_path=args.json)
    return 0
  return run_main(run)
