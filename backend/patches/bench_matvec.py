"""fp16 matrix-vector product, with and without the matvec heuristic fix (backend/patches/matvec.py).

y[1, N] = x[1, N] @ W[N, N] in fp16 reads the N*N*2-byte matrix once, so it is memory bound: the figure of merit is
GB/s = 2*N*N bytes / time. Each (N, fix) case runs in a fresh interpreter (the fix must be in place before the first
kernel is compiled, and tinygrad caches compiled programs per process), warms up separately, then times `--iters` calls
of a TinyJit'd matvec, synchronizing the device after each call.

  DEV=CUDA python3 -m backend.patches.bench_matvec                 # the H200 / Orin measurement: N = 4096 and 8192
  DEV=CPU python3 -m backend.patches.bench_matvec --sizes 256,512  # a quick check that it runs anywhere

For comparison: PyTorch (cuBLAS) takes 0.023 ms at N = 4096 on an H200 (the project's reference figures).
"""
import argparse, json, os, subprocess, sys, time

def measure(n:int, iters:int, warmup:int) -> dict:
  """Runs inside the child process: time one configuration and return the statistics."""
  import numpy as np
  from tinygrad import Tensor, Device, TinyJit
  dev = Device[Device.DEFAULT]
  rng = np.random.default_rng(0)
  x = Tensor(rng.standard_normal((1, n), dtype=np.float32).astype(np.float16)).realize()
  w = Tensor((rng.standard_normal((n, n), dtype=np.float32) / np.sqrt(n)).astype(np.float16)).realize()
  @TinyJit
  def matvec(x, w): return (x @ w).realize()
  for _ in range(warmup): matvec(x, w)
  dev.synchronize()
  times = []
  for _ in range(iters):
    st = time.perf_counter()
    matvec(x, w)
    dev.synchronize()
    times.append(time.perf_counter() - st)
  ref = (x.numpy().astype(np.float32) @ w.numpy().astype(np.float32))
  err = float(np.abs(matvec(x, w).numpy().astype(np.float32) - ref).max())
  ms = np.array(times) * 1e3
  med = float(np.median(ms))
  return {"n": n, "device": dev.device, "median_ms": med, "p90_ms": float(np.percentile(ms, 90)), "gbps": 2 * n * n / (med * 1e-3) / 1e9,
          "max_abs_err": err}

def run_case(n:int, fix:bool, iters:int, warmup:int) -> dict:
  env = {**os.environ, "MATVEC_FIX": "1" if fix else "0"}
  code = ("import json, sys\nimport backend\nif sys.argv[1] == '1': backend.install_matvec_fix()\n"
          "from backend.patches.bench_matvec import measure\n"
          "print('RESULT', json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))")
  p = subprocess.run([sys.executable, "-c", code, "1" if fix else "0", str(n), str(iters), str(warmup)], env=env, capture_output=True, text=True)
  if p.returncode != 0: raise SystemExit(f"N={n} fix={fix} failed:\n{p.stderr[-3000:]}")
  return json.loads(next(l for l in p.stdout.splitlines() if l.startswith("RESULT"))[len("RESULT "):])

def main():
  ap = argparse.ArgumentParser(description="fp16 matvec GB/s with and without the matvec fix")
  ap.add_argument("--sizes", default="4096,8192", help="comma-separated N for 1xN @ NxN (default: 4096,8192)")
  ap.add_argument("--iters", type=int, default=200, help="timed calls per case (default: 200)")
  ap.add_argument("--warmup", type=int, default=20, help="untimed calls first, incl. JIT capture (default: 20)")
  args = ap.parse_args()
  rows = []
  for n in [int(s) for s in args.sizes.split(",")]:
    for fix in (False, True): rows.append((fix, run_case(n, fix, args.iters, args.warmup)))
  print(f"\nfp16 matvec 1xN @ NxN on {rows[0][1]['device']}, {args.iters} timed calls after {args.warmup} warm-up, device-synchronized\n")
  print("| N | matvec fix | median ms | p90 ms | GB/s | max abs err |")
  print("|---:|:---|---:|---:|---:|---:|")
  for fix, r in rows:
    print(f"| {r['n']} | {'on' if fix else 'off'} | {r['median_ms']:.4f} | {r['p90_ms']:.4f} | {r['gbps']:.1f} | {r['max_abs_err']:.2e} |")

if __name__ == "__main__": main()
